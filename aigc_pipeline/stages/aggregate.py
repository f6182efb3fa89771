"""`aggregate`: many rows into one (a daily news digest, a weekly report).

A reducing stage: it gets every row that finished the per-row stages, groups them by a field's
value (or all together), and renders one sandboxed template per group, which sees `rows` (each
row's fields as a mapping, in input order), `key` and `count`. Stages that read its outputs run
once per group, e.g. an `llm.text` that turns the digest prompt into an article.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..content import ANY, RECORD, TEXT, ContentType
from ..plugin_manager import hookimpl
from ..stage import Group, Stage, StageItem
from .template_sandbox import SandboxedTemplate, template_variables

TEMPLATE_VARIABLES = ("rows", "key", "count")
ALL = "all"


class AggregateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, description="Jinja2 text over one group: rows, key, count")
    group_by: str | None = Field(None, description="a column or input whose value groups rows; none: one group")
    fields: list[str] = Field(default_factory=list, description="row columns each entry of `rows` holds")
    max_rows: int | None = Field(None, ge=1, description="keep only the first N rows of each group")
    strip: bool = True

    @field_validator("template")
    @classmethod
    def _parses(cls, template: str) -> str:
        unknown = sorted(template_variables(template) - set(TEMPLATE_VARIABLES))
        if unknown:
            raise ValueError(f"an aggregate template sees only rows, key and count, not {', '.join(unknown)}; "
                             "read row fields as {% for row in rows %}{{ row.<field> }}{% endfor %}")
        return template


class AggregateStage(Stage[AggregateParams]):
    type_name = "aggregate"
    description = "Many rows into one: group rows and render a sandboxed template per group."
    Params = AggregateParams
    inputs: ClassVar[dict[str, ContentType]] = {}
    variadic_inputs = ANY
    outputs = {"text": TEXT, "key": TEXT, "count": RECORD}
    reduces = True

    def __init__(self, params: AggregateParams) -> None:
        super().__init__(params)
        self.template = SandboxedTemplate(params.template)

    @classmethod
    def variables(cls, params: AggregateParams) -> set[str]:
        """The row fields it reads by name: the graph wires each to an input port or a column."""
        names = set(params.fields)
        return names | {params.group_by} if params.group_by else names

    def reduce(self, items: list[StageItem]) -> list[Group]:
        grouped: dict[str, list[StageItem]] = {}
        for item in items:  # dicts keep first-appearance order: groups come out in input order
            key = ALL if self.params.group_by is None else str(item.inputs[self.params.group_by])
            grouped.setdefault(key, []).append(item)
        return [self._render(key, members) for key, members in grouped.items()]

    def _render(self, key: str, members: list[StageItem]) -> Group:
        kept = members[: self.params.max_rows] if self.params.max_rows else members
        try:
            text = self.template.render({"rows": [item.inputs for item in kept], "key": key, "count": len(members)})
        except Exception as exc:
            raise ValueError(f"group '{key}': template failed: {type(exc).__name__}: {exc}") from exc
        outputs = {"text": text.strip() if self.params.strip else text, "key": key, "count": len(members)}
        return Group(key, [item.id for item in members], outputs)


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [AggregateStage]
