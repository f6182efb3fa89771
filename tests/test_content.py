"""Content types: which port types connect, NUMBER included, checked when the pipeline is loaded."""

from __future__ import annotations

import pytest

from aigc_pipeline import ANY, NUMBER, RECORD, TEXT, PipelineFileError, Stage, StageItem, hookimpl
from aigc_pipeline.testing import fake_engine


def test_number_connects_to_number_record_and_any_only() -> None:
    assert NUMBER.accepts(NUMBER) and RECORD.accepts(NUMBER) and ANY.accepts(NUMBER) and NUMBER.accepts(ANY)
    assert not TEXT.accepts(NUMBER) and not NUMBER.accepts(TEXT) and not NUMBER.accepts(RECORD)


class LengthStage(Stage):
    type_name = "test.length"
    inputs = {"text": TEXT}
    outputs = {"length": NUMBER}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["length"] = len(item.inputs["text"])
        return batch


class LengthPlugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [LengthStage]


PIPELINE = """
name: lengths
inputs: {text: str}
stages:
  size: {uses: test.length, inputs: {text: inputs.text}}
  echo: {uses: test.echo, inputs: {text: size.length}}
"""


def test_a_number_into_a_text_port_is_rejected_at_load_time() -> None:
    engine = fake_engine(LengthPlugin())
    with pytest.raises(PipelineFileError, match=r"'size.length' is number but the port takes text"):
        engine.load_text(PIPELINE, "<test>")
    engine.load_text(PIPELINE.replace("test.echo, inputs: {text:", "test.noop, inputs: {value:"), "<test>")
