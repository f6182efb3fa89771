"""The shape of a pipeline file (phase 1 of its validation: the envelope, `extra="forbid"`), and
`Pipeline`, a file that passed both phases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .content import COLUMN_TYPES
from .spec_yaml import Locator

STAGE_ID_PATTERN = r"^[a-z_][a-z0-9_]*$"

ColumnType = Literal[tuple(COLUMN_TYPES)]  # type: ignore[valid-type]
StageId = Annotated[str, StringConstraints(pattern=STAGE_ID_PATTERN)]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class StageSpec(BaseModel):
    """One entry under `stages:`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str = Field(description="stage type, e.g. 'template' or 'llm.text' ('aigc stages' lists all)")
    inputs: dict[str, str] = Field(default_factory=dict, description="port -> 'inputs.<column>' or '<stage>.<port>'")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the stage type's params")
    device: str | None = Field(None, description="'cpu', 'cuda' or 'cuda:N'; default: the scheduler decides")
    batch_size: int | None = Field(None, ge=1, le=100_000, description="items per micro-batch")
    timeout: float | None = Field(None, gt=0, description="seconds per row a call may take, after which its "
                                  "rows fail; default: none for built-in stages, 600 for plugins' stages")
    replicas: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="copies of a GPU stage, one per GPU, sharing its rows; 'auto': the scheduler decides")
    description: str = ""

    @field_validator("replicas", mode="before")
    @classmethod
    def _one_replicas_message(cls, value: Any) -> Any:
        # Checked here, once: the union alone would report one error per member ("not an int", "not 'auto'").
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be 'auto' or a whole number, at least 1 (one copy per GPU)")


class PipelineSpec(BaseModel):
    """The envelope of a pipeline file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    inputs: dict[ColumnName, ColumnType] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="columns every row must have")
    seed: int = 0
    key: list[ColumnName] = Field(  # type: ignore[valid-type]
        default_factory=list, description="the input columns that identify a row (default: all its input values)")
    plugins: list[str] = Field(default_factory=list, description="plugins by registered (entry-point) name")
    stages: dict[StageId, StageSpec] = Field(min_length=1)
    outputs: dict[str, str] = Field(default_factory=dict, description="result name -> '<stage>.<port>'")


@dataclass
class Pipeline:
    """A pipeline file that passed both validation phases."""

    spec: PipelineSpec
    params: dict[str, BaseModel]
    locator: Locator
    source_text: str

    @property
    def file(self) -> str:
        return self.locator.file
