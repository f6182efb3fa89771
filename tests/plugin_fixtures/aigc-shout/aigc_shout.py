"""A third-party stage plugin: the `shout` stage type upper-cases text."""

from pydantic import BaseModel, ConfigDict

from aigc_pipeline import TEXT, Stage, StageItem, hookimpl


class ShoutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = "!"


class Shout(Stage):
    type_name = "shout"
    description = "upper-case the text and add a suffix"
    Params = ShoutParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"].upper() + self.params.suffix  # type: ignore[attr-defined]
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [Shout]
