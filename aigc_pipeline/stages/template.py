"""`template`: render a Jinja2 template per row, in a sandbox.

The template is part of the pipeline file, so it is rendered by Jinja2's immutable sandbox with
no globals but `range` and `StrictUndefined` (a missing variable is an item error naming it).
Row values and upstream outputs are passed as data and never rendered as templates themselves.
Renders are not kept in the run store (`cacheable`): a resumed run renders again.
The sandbox (template_sandbox.py) adds budgets per render (template_budgets.py): a render that
loops, calls or builds too much fails its item, with the reason.
"""

from __future__ import annotations

from typing import ClassVar

from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..content import ANY, TEXT, ContentType
from ..plugin_manager import hookimpl
from ..stage import Stage, StageItem
from .template_sandbox import SandboxedTemplate, template_variables


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
        self.template = SandboxedTemplate(params.template)

    @classmethod
    def cacheable(cls, params: TemplateParams) -> bool:
        """Never stored: a render (tens of microseconds, bounded by the budgets) costs less than
        its cache key and a store record, which tripled product_copy's time (benchmarks/scale.py).
        A resumed run renders again, to the same text (a render depends only on its inputs), so
        what follows it still finds its own stored results."""
        return False

    @classmethod
    def cpu_parallel(cls, params: TemplateParams) -> bool:
        """Pure Python in the sandbox: big runs render in worker processes, on every core."""
        return True

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
