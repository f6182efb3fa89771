"""A test-only image source: `test.canvas` turns a colour name into a solid PNG.

It exists only in these tests (brand.overlay needs an IMAGE input, and IMAGE ports are fed only
by stages). Register it with ``engine.register(canvas_stage, name="canvas")``, or on the command
line with ``--plugin canvas_stage`` (this folder on PYTHONPATH). The colour "corrupt" yields bytes
that are not an image, to test that a bad image fails only its own row.
"""

from __future__ import annotations

import io

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from aigc_pipeline import IMAGE, TEXT, ArtifactData, Stage, StageItem, hookimpl

CORRUPT = "corrupt"


class CanvasParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(96, ge=1)
    height: int = Field(64, ge=1)
    mode: str = "RGB"


class CanvasStage(Stage):
    type_name = "test.canvas"
    description = "test only: a solid image of the given colour"
    Params = CanvasParams
    inputs = {"color": TEXT}
    outputs = {"image": IMAGE}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        p = self.params
        for item in batch:
            color = item.inputs["color"]
            if color == CORRUPT:
                item.outputs["image"] = ArtifactData(b"this is not a PNG", ".png", {"color": color})
                continue
            buffer = io.BytesIO()
            Image.new(p.mode, (p.width, p.height), color).save(buffer, format="PNG")  # type: ignore[attr-defined]
            item.outputs["image"] = ArtifactData(buffer.getvalue(), ".png", {"color": color})
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [CanvasStage]
