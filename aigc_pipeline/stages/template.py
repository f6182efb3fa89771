"""`template`: render a Jinja2 template per row, in a sandbox.

The template is part of the pipeline file, so it is rendered by Jinja2's immutable sandbox with
no globals but `range` and `StrictUndefined` (a missing variable is an item error naming it).
Row values and upstream outputs are passed as data and never rendered as templates themselves.

The sandbox stops code from escaping, not work from piling up, so `GuardedSandbox` adds budgets
per render (a failing budget fails the item, with the reason):
- steps: loop iterations plus calls (macros, methods, `loop(...)`), `MAX_STEPS`;
- size: every string or list a template builds (by `*`, `+`, `~`, `%`, a literal, a filter, a
  method, a block, the output) stays under `MAX_CHARS`, and all of them together under
  `MAX_BUILT`; operations that can multiply their input (`center(10**9)`, `'%999999999d'`,
  `replace`, `join`, ...) are checked *before* they run;
- integers built by `*` and `**` stay under `MAX_INT_BITS`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from string import Formatter
from typing import Any, ClassVar

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..content import ANY, TEXT, ContentType
from ..limits import MAX_TEMPLATE_NESTING, template_nesting
from ..plugin_manager import hookimpl
from ..stage import Stage, StageItem
from .fast_bind import Binder

MAX_CHARS = 1_000_000  # the rendered text, and any one string or list a template builds
MAX_BUILT = 20_000_000  # all strings and lists a template builds, per render (bounds its CPU time)
MAX_STEPS = 100_000  # loop iterations plus calls, per render
MAX_INT_BITS = 10_000  # integers built by * and ** (about 3,000 digits)


@dataclass(slots=True)
class _Render:
    """Budgets of one render. `sizes` measures each container once (and keeps it alive, so its id
    is not reused), so a list holding the same big list twice is cheap to measure."""

    steps: int = 0
    built: int = 0
    sizes: dict[int, tuple[Any, int]] = field(default_factory=dict)


_RENDER: ContextVar[_Render | None] = ContextVar("aigc_template_render", default=None)


def _render() -> _Render:
    return _RENDER.get() or _Render()  # outside `render()` (a bare check): budgets of its own


def _size(value: Any) -> int:
    """Roughly how many characters `value` prints as: string lengths, summed through containers."""
    if type(value) is str:  # the common case first: this runs on every value a render touches
        return len(value)
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if not isinstance(value, (list, tuple, set, frozenset, dict)):
        return len(value) if isinstance(value, range) else 1
    sizes = _render().sizes
    if id(value) not in sizes:
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = (value, len(value) + sum(map(_size, items)))
    return sizes[id(value)][1]


def _check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise SecurityError(f"{what} would build about {size:,} characters (limit {MAX_CHARS:,})")


def _sized(value: Any) -> Any:
    """Pass `value` on if it is within MAX_CHARS (list, tuple and dict literals; parts of `~`)."""
    _check_size(_size(value), "the template")
    return value


def _built(value: Any, what: str = "the template") -> Any:
    """Pass on a value an operation built, charging its size to this render's budget."""
    size, render = _size(value), _render()
    _check_size(size, what)
    render.built += size
    if render.built > MAX_BUILT:
        raise SecurityError(f"the template built more than {MAX_BUILT:,} characters in all")
    return value


def _step() -> None:
    """Count one loop iteration or call against this render's budget."""
    render = _render()
    render.steps += 1
    if render.steps > MAX_STEPS:
        raise SecurityError(f"the template ran more than {MAX_STEPS:,} loop iterations and calls")


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` iterates through this (see `_Guards`)."""
    for item in iterable:
        _step()
        yield item


def _checked_join(parts: Iterable[str]) -> str:
    """`Environment.concat`: joins the output (and blocks, macro results) up to MAX_CHARS.

    The outermost call is a whole render, so it holds that render's budgets.
    """
    token = _RENDER.set(_Render()) if _RENDER.get() is None else None
    try:
        kept: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            if size > MAX_CHARS:
                _check_size(size, "the template output")
            kept.append(part)
        return "".join(kept)
    finally:
        if token is not None:
            _RENDER.reset(token)


def _width(value: Any) -> int:
    """A width or count argument in characters (`indent` also takes a string)."""
    return len(value) if isinstance(value, str) else value if isinstance(value, int) else 0


def _count(value: Any) -> int:
    return len(value) if isinstance(value, Sized) else 0


def _replace_size(text: Any, old: Any, new: Any) -> int:
    return _size(text) + str(text).count(str(old)) * _size(new)


def _translate_size(text: Any, table: Any) -> int:
    longest = max(map(_size, table.values()), default=0) if isinstance(table, Mapping) else 1
    return _size(text) * (1 + longest)


def _format_size(fmt: str, values: Iterable[Any]) -> int:
    """Upper bound on the size of `fmt.format(...)`; a spec taking its width from a field is refused."""
    specs = [spec or "" for _, name, spec, _ in Formatter().parse(fmt) if name is not None]
    if any("{" in spec for spec in specs):
        raise SecurityError("a format spec may not contain a nested {field}")
    widths = sum(int(number) for spec in specs for number in re.findall(r"\d+", spec))
    return len(fmt) + widths + len(specs) * max(map(_size, values), default=0)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?")


def _printf_size(fmt: str, values: Any) -> int:
    """Upper bound on the size of `fmt % values`; a '*' width (taken from the values) is refused."""
    widths, count = _printf_specs(fmt)
    items = values.values() if isinstance(values, Mapping) else values if isinstance(values, tuple) else [values]
    return len(fmt) + widths + count * max(map(_size, items), default=0)


@lru_cache(maxsize=256)  # a template's format strings are few and used on every row
def _printf_specs(fmt: str) -> tuple[int, int]:
    """(the widths and precisions written in `fmt`, summed; how many conversions it has)."""
    specs = _PRINTF_SPEC.findall(fmt)
    if any("*" in spec for spec in specs):
        raise SecurityError("a '*' width or precision in a format string is not allowed")
    return sum(int(number) for spec in specs for number in spec if number), len(specs)


# Upper bounds on the result of the filters that can grow their input by more than a small factor,
# computed from their bound arguments before they run. Every filter's result is also checked after.
_FILTER_GROWTH: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: max(_size(a["value"]), _width(a["width"])),
    "indent": lambda a: (_size(a["s"]) + 1) * (1 + _width(a["width"])),
    "wordwrap": lambda a: _size(a["s"]) * (1 + _size(a["wrapstring"] or "\n")),
    "replace": lambda a: _replace_size(a["s"], a["old"], a["new"]),
    "join": lambda a: _size(a["value"]) + _count(a["value"]) * _size(a["d"]),
    "format": lambda a: _printf_size(str(a["value"]), a["kwargs"] or a["args"]),
    "batch": lambda a: _size(a["value"]) + (_width(a["linecount"]) if a["fill_with"] is not None else 0),
    "slice": lambda a: _size(a["value"]) + _width(a["slices"]),
    "tojson": lambda a: _size(a["value"]) * (1 + _width(a["indent"])),
    "urlize": lambda a: _size(a["value"]) * (8 + _size(a["target"]) + _size(a["rel"])),
    "sum": lambda a: _size(a["iterable"]) * (1 if isinstance(a["start"], (int, float)) else 1 + _count(a["iterable"])),
}

# The same for builtin methods of str, bytes and int, from the positional arguments (self first).
_METHOD_GROWTH: dict[str, Callable[..., int]] = {
    "center": lambda s, width, *_: max(_size(s), _width(width)),
    "ljust": lambda s, width, *_: max(_size(s), _width(width)),
    "rjust": lambda s, width, *_: max(_size(s), _width(width)),
    "zfill": lambda s, width, *_: max(_size(s), _width(width)),
    "expandtabs": lambda s, tabsize, *_: (_size(s) + 1) * (1 + _width(tabsize)),
    "replace": lambda s, old, new, *_: _replace_size(s, old, new),
    "join": lambda s, items, *_: _size(items) + _count(items) * _size(s),
    "translate": lambda s, table, *_: _translate_size(s, table),
    "to_bytes": lambda n, length, *_: _width(length),
}


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
    signature, growth = inspect.signature(original), _FILTER_GROWTH.get(name)
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
            _check_size(growth(arguments), f"the '{name}' filter")
        return _built(original(*args, **kwargs), f"the '{name}' filter")

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
    concat = staticmethod(_checked_join)  # type: ignore[assignment]

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            _check_bits(abs(left).bit_length() * right)
        elif operator == "*" and isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
        elif operator == "*":
            times, seq = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(times, int):
                _check_size(_size(seq) * times, "repetition with '*'")
        elif operator == "%" and isinstance(left, str):
            _check_size(_printf_size(left, right), "formatting with '%'")
        return _built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        growth, owner = _METHOD_GROWTH.get(getattr(__obj, "__name__", "")), getattr(__obj, "__self__", None)
        if growth is not None and isinstance(owner, (str, bytes, int)):
            bound = _bind(inspect.signature(getattr(type(owner), __obj.__name__)), (owner, *args), kwargs)
            _check_size(growth(*bound.args), f"'{__obj.__name__}'")
            args, kwargs = bound.args[1:], bound.kwargs
        return _built(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map`, sandboxed by Jinja, with widths and repeated fields bounded."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, by_name = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            by_map = by_name and args and isinstance(args[0], Mapping)
            values = args[0].values() if by_map else [*args, *kwargs.values()]
            _check_size(_format_size(fmt, values), "str.format")
            return wrapper(*args, **kwargs)

        return checked


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(f"an integer of about {bits:,} bits is too large (limit {MAX_INT_BITS:,})")


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # Python's default repr of an object


def _printable(value: Any) -> Any:
    """`finalize` (and parts of `~`), before a value becomes text: small enough, and not a function
    or a default object repr: those show internals, an address (and `{{ x.upper }}` or
    `{{ xs|map('upper') }}` is a mistake anyway)."""
    if type(value) is str and len(value) <= MAX_CHARS:  # most output: a short string, nothing else to check
        return value
    _sized(value)
    if callable(value) and not isinstance(value, Undefined):  # (Undefined is callable: it raises)
        raise SecurityError(f"cannot print the function '{getattr(value, '__name__', '?')}'; did you mean to call it?")
    if not isinstance(value, (str, int, float, Undefined)) and _ADDRESS.search(str(value)):
        raise SecurityError("cannot print an object's internals; for a generator, add |list or |join")
    return value


def make_environment() -> GuardedSandbox:
    env = GuardedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=_printable)
    env.globals = {"range": env.globals["range"]}  # drop cycler, joiner, lipsum, namespace, dict
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(_aigc_counted=_counted, _aigc_sized=_sized, _aigc_built=_built, _aigc_printable=_printable)
    return env


ENVIRONMENT = make_environment()


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


class TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, description="Jinja2 text; sees the row's columns and this stage's inputs")
    strip: bool = Field(True, description="strip leading and trailing whitespace from the result")

    @field_validator("template")
    @classmethod
    def _parses(cls, template: str) -> str:
        template_variables(template)
        return template


class TemplateStage(Stage[TemplateParams]):
    type_name = "template"
    description = "Render a sandboxed Jinja2 template per row (row columns and named inputs as variables)."
    Params = TemplateParams
    inputs: ClassVar[dict[str, ContentType]] = {}
    variadic_inputs = ANY
    outputs = {"text": TEXT}
    default_batch_size = 256
    crash_proof = True  # the sandbox and its budgets: a render fails its row, never the process

    def __init__(self, params: TemplateParams) -> None:
        super().__init__(params)
        self.template = ENVIRONMENT.from_string(params.template)

    @classmethod
    def variables(cls, params: TemplateParams) -> set[str]:
        return template_variables(params.template)

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            try:
                text = self.template.render(item.inputs)
            except UndefinedError as exc:
                item.fail(f"template variable: {exc.message}")
                continue
            except (SecurityError, OverflowError) as exc:  # OverflowError: Jinja's own range() limit
                item.fail(f"template blocked by the sandbox: {exc}")
                continue
            item.outputs["text"] = text.strip() if self.params.strip else text
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [TemplateStage]
