"""The sandbox templates render in: Jinja2's immutable sandbox with no globals but `range`,
`StrictUndefined` (a missing variable is an error naming it), and the budgets of
template_budgets.py charged on every loop step, call, operator, filter and output.

Used by every stage that renders a template from the pipeline file (template, compose, aggregate).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from ..limits import MAX_TEMPLATE_NESTING, template_nesting
from .fast_bind import Binder
from .template_budgets import (
    FILTER_GROWTH,
    MAX_CHARS,
    METHOD_GROWTH,
    built,
    check_bits,
    check_size,
    checked_join,
    counted,
    format_size,
    printf_size,
    size_of,
    sized,
    step,
)


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    """Bind a call's arguments, turning iterators into lists so they can be measured and still used."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    for name, value in bound.arguments.items():
        if isinstance(value, Iterator):
            bound.arguments[name] = list(value)
    return bound


def _guard_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: check its growth bound (if it has one) before it runs, and its result after."""
    signature, growth = inspect.signature(original), FILTER_GROWTH.get(name)
    # Jinja's async-capable wrappers (`slice`, `list`) take an eval context their signature lacks.
    extra = int(hasattr(original, "jinja_pass_arg") and not hasattr(inspect.unwrap(original), "jinja_pass_arg"))

    binder = Binder(signature)

    @wraps(original)  # copies `jinja_pass_arg`, so Jinja still passes the context first
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if growth is not None:
            arguments = binder(args[extra:], kwargs)
            if arguments is None:  # iterators to turn into lists, or a call that does not bind
                bound = _bind(signature, args[extra:], kwargs)
                arguments = bound.arguments
                args, kwargs = (*args[:extra], *bound.args), bound.kwargs
            check_size(growth(arguments), f"the '{name}' filter")
        return built(original(*args, **kwargs), f"the '{name}' filter")

    return guarded


class _Guards(NodeTransformer):
    """Rewrites a parsed template: loops count their steps; literals and `~` are measured, and the
    parts of `~` are checked as `{{ }}` output is (`_printable`)."""

    def _filter(self, node: nodes.Node, name: str) -> nodes.Filter:
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._filter(node.iter, "_aigc_counted")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._filter(part, "_aigc_printable") for part in node.nodes]
        return self._filter(node, "_aigc_built")

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:  # (a target of `for a, b in` stays as it is)
        self.generic_visit(node)
        return self._filter(node, "_aigc_sized") if getattr(node, "ctx", "load") == "load" else node

    visit_List = visit_Dict = visit_Tuple  # type: ignore[assignment]  # (neither has a `ctx`: always "load")


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Here, not in visit_For: the code generator looks up the filters a template uses up front.
        super().visit_Template(_Guards().visit(node), frame)


class GuardedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the time and memory budgets of the module docstring."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(checked_join)  # type: ignore[assignment]

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            check_bits(abs(left).bit_length() * right)
        elif operator == "*" and isinstance(left, int) and isinstance(right, int):
            check_bits(left.bit_length() + right.bit_length())
        elif operator == "*":
            times, seq = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(times, int):
                check_size(size_of(seq) * times, "repetition with '*'")
        elif operator == "%" and isinstance(left, str):
            check_size(printf_size(left, right), "formatting with '%'")
        return built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        step()
        growth, owner = METHOD_GROWTH.get(getattr(__obj, "__name__", "")), getattr(__obj, "__self__", None)
        if growth is not None and isinstance(owner, (str, bytes, int)):
            bound = _bind(inspect.signature(getattr(type(owner), __obj.__name__)), (owner, *args), kwargs)
            check_size(growth(*bound.args), f"'{__obj.__name__}'")
            args, kwargs = bound.args[1:], bound.kwargs
        return built(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map`, sandboxed by Jinja, with widths and repeated fields bounded."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, by_name = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            by_map = by_name and args and isinstance(args[0], Mapping)
            values = args[0].values() if by_map else [*args, *kwargs.values()]
            check_size(format_size(fmt, values), "str.format")
            return wrapper(*args, **kwargs)

        return checked


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # Python's default repr of an object


def _printable(value: Any) -> Any:
    """`finalize` (and parts of `~`), before a value becomes text: small enough, and not a function
    or a default object repr: those show internals, an address (and `{{ x.upper }}` or
    `{{ xs|map('upper') }}` is a mistake anyway)."""
    if type(value) is str and len(value) <= MAX_CHARS:  # most output: a short string, nothing else to check
        return value
    sized(value)
    if callable(value) and not isinstance(value, Undefined):  # (Undefined is callable: it raises)
        raise SecurityError(f"cannot print the function '{getattr(value, '__name__', '?')}'; did you mean to call it?")
    if not isinstance(value, (str, int, float, Undefined)) and _ADDRESS.search(str(value)):
        raise SecurityError("cannot print an object's internals; for a generator, add |list or |join")
    return value


def make_environment() -> GuardedSandbox:
    env = GuardedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=_printable)
    env.globals = {"range": env.globals["range"]}  # drop cycler, joiner, lipsum, namespace, dict
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(_aigc_counted=counted, _aigc_sized=sized, _aigc_built=built, _aigc_printable=_printable)
    return env


ENVIRONMENT = make_environment()


class SandboxedTemplate:
    """A template compiled once in the sandbox, rendered per row or group.

    `render(values)` is `Template.render(values)` without its per-call walks through the
    template's globals: Jinja merges them into each call's variables, and lists their names for
    the context, by iterating a ChainMap twice (a tenth of product_copy's run). Here they are
    copied once and each call's variables laid over them (a column named like a global hides it,
    as before).
    """

    def __init__(self, text: str) -> None:
        self.template = ENVIRONMENT.from_string(text)
        self.globals = dict(self.template.globals)
        self.root: Callable[[Context], Iterator[str]] = vars(self.template)["root_render_func"]  # (set per template)

    def render(self, values: Mapping[str, Any]) -> str:
        template, names = self.template, self.globals
        environment = template.environment
        context = environment.context_class(environment, {**names, **values}, template.name, template.blocks,
                                            globals=names)
        try:
            return environment.concat(self.root(context))
        except Exception:
            environment.handle_exception()  # as Template.render: the template's own lines in the traceback


def template_variables(template: str) -> set[str]:
    """The variables a template reads (not its globals); ValueError naming the line if it does not parse."""
    if template_nesting(template) > MAX_TEMPLATE_NESTING:  # Jinja parses and compiles recursively
        raise ValueError(f"the template nests brackets more than {MAX_TEMPLATE_NESTING} deep; simplify the expression")
    try:
        names = meta.find_undeclared_variables(ENVIRONMENT.parse(template))
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno} of the template: {exc.message}") from None
    except RecursionError:  # deep without brackets, e.g. thousands of unary minus signs
        raise ValueError("the template's expressions nest too deeply; simplify them") from None
    return {name for name in names if name not in ENVIRONMENT.globals}

