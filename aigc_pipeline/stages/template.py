"""`template`: render a Jinja2 template per row, in a sandbox.

The template is part of the pipeline file, so it is rendered by Jinja2's immutable sandbox with
no globals but `range`, `StrictUndefined` (a missing variable is an item error naming it), and
guards on `*` and `**` so a template cannot exhaust memory or CPU. Row values and upstream
outputs are passed as data and never rendered as templates themselves.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..content import ANY, TEXT
from ..plugin_manager import hookimpl
from ..stage import Stage, StageItem

MAX_OUTPUT_CHARS = 1_000_000
MAX_REPEAT = 100_000
MAX_EXPONENT = 1_000


class GuardedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on operators that can blow up memory or time."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
            return left**right
        sized = left if isinstance(left, (str, list, tuple)) else right if isinstance(right, (str, list, tuple)) else None
        count = right if sized is left else left
        if sized is not None and isinstance(count, int) and len(sized) * count > MAX_REPEAT:
            raise SecurityError(f"repetition to {len(sized) * count} elements is too large (limit {MAX_REPEAT})")
        return left * right


def make_environment() -> GuardedSandbox:
    env = GuardedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals = {"range": env.globals["range"]}  # drop cycler, joiner, lipsum, namespace, dict
    return env


ENVIRONMENT = make_environment()


class TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, description="Jinja2 text; sees the row's columns and this stage's inputs")
    strip: bool = Field(True, description="strip leading and trailing whitespace from the result")

    @field_validator("template")
    @classmethod
    def _parses(cls, template: str) -> str:
        try:
            ENVIRONMENT.parse(template)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error on line {exc.lineno} of the template: {exc.message}") from None
        return template


class TemplateStage(Stage):
    type_name = "template"
    description = "Render a sandboxed Jinja2 template per row (row columns and named inputs as variables)."
    Params = TemplateParams
    inputs: dict = {}
    variadic_inputs = ANY
    outputs = {"text": TEXT}
    default_batch_size = 256

    def __init__(self, params: TemplateParams) -> None:
        super().__init__(params)
        self.template = ENVIRONMENT.from_string(params.template)

    @classmethod
    def variables(cls, params: BaseModel) -> set[str]:
        names = meta.find_undeclared_variables(ENVIRONMENT.parse(params.template))  # type: ignore[attr-defined]
        return {name for name in names if name not in ENVIRONMENT.globals}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            try:
                text = self.template.render(item.inputs)
            except UndefinedError as exc:
                item.fail(f"template variable: {exc.message}")
                continue
            except SecurityError as exc:
                item.fail(f"template blocked by the sandbox: {exc}")
                continue
            if len(text) > MAX_OUTPUT_CHARS:
                item.fail(f"template output is {len(text)} characters (limit {MAX_OUTPUT_CHARS})")
                continue
            item.outputs["text"] = text.strip() if self.params.strip else text  # type: ignore[attr-defined]
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [TemplateStage]
