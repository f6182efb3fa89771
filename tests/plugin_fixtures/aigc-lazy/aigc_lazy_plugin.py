"""A plugin that records each import of itself in $AIGC_TEST_IMPORT_MARKER (when set)."""

import os

from aigc_pipeline import TEXT, Stage, StageItem, hookimpl

_marker = os.environ.get("AIGC_TEST_IMPORT_MARKER")
if _marker:
    with open(_marker, "a", encoding="utf-8") as file:
        file.write("imported aigc_lazy_plugin\n")


class LazyStage(Stage):
    type_name = "lazy.stage"
    description = "copy the text (exists to be imported lazily)"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = "lazy:" + item.inputs["text"]
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [LazyStage]
