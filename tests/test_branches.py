"""A finished run costs nothing to re-run, whatever was filtered or failed (branches.py, store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigc_pipeline.content import TEXT
from aigc_pipeline.devices import Device
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.testing import fake_engine, run_text


class Gate(Stage):
    """Drops texts with 'drop'."""

    type_name = "test.gate"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            text = item.inputs["text"]
            if "drop" in text:
                item.drop("said drop")
            else:
                item.outputs["text"] = text
        return batch


class Model(Stage):
    """A stage with a model: counts loads and processed items; fails 'bad' (its verdict: final) and
    raises on 'boom' (not final)."""

    type_name = "test.model_count"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    loads = 0
    processed: list[str] = []

    def load(self, device: Device) -> None:
        Model.loads += 1

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            Model.processed.append(item.inputs["text"])
            if "boom" in item.inputs["text"]:
                raise RuntimeError("boom")
            if "bad" in item.inputs["text"]:
                item.fail("said bad")
                continue
            item.outputs["text"] = item.inputs["text"] + "!"
        return batch


class Plugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [Gate, Model]


PIPELINE = """
name: branches
inputs: {text: str}
stages:
  copy: {uses: test.model_count, inputs: {text: inputs.text}, batch_size: 4}
  checked: {uses: test.gate, inputs: {text: copy.text}}
  hero: {uses: test.model_count, inputs: {text: inputs.text}, batch_size: 4}
  voice: {uses: test.model_count, inputs: {text: checked.text}}
outputs: {copy: checked.text, hero: hero.text, voice: voice.text}
"""

ROWS = [{"text": t} for t in ("one", "please drop", "two", "bad row", "three")]


def reset() -> None:
    Model.loads, Model.processed = 0, []


def counts(result: Any) -> dict[str, tuple[int, int, int, int]]:
    return {sid: (s.done, s.filtered, s.failed, s.cached) for sid, s in result.summary.stages.items()}


def test_a_rerun_of_a_finished_run_with_filtered_and_failed_rows_loads_nothing(tmp_path: Path) -> None:
    engine = fake_engine(Plugin())
    reset()
    first = run_text(PIPELINE, ROWS, tmp_path / "out", engine=engine)
    assert [r.status for r in first.results] == ["done", "filtered", "done", "failed", "done"]
    # hero is another branch: it draws every row, also those checked ended, and keeps them beside the verdict
    dropped = first.results[1]
    assert dropped.outputs["hero"] == "please drop!" and dropped.error == {"stage": "checked", "reason": "said drop"}
    assert sorted(Model.processed).count("please drop") == 2  # copy and hero; voice never got it
    reset()
    again = run_text(PIPELINE, ROWS, tmp_path / "out", engine=engine)
    assert (Model.loads, Model.processed) == (0, [])
    assert counts(again) == {"copy": (4, 0, 1, 5), "checked": (3, 1, 0, 4), "hero": (4, 0, 1, 5),
                             "voice": (3, 0, 0, 3)}
    assert [r.as_dict() for r in again.results] == [r.as_dict() for r in first.results]


def test_a_failure_from_an_exception_is_tried_again_a_declared_one_is_not(tmp_path: Path) -> None:
    engine = fake_engine(Plugin())
    rows = [{"text": "boom"}, {"text": "bad"}, {"text": "fine"}]
    reset()
    first = run_text(PIPELINE, rows, tmp_path / "out", engine=engine)
    assert [(r.status, r.error and r.error["stage"]) for r in first.results] == [
        ("failed", "copy"), ("failed", "copy"), ("done", None)]
    reset()
    run_text(PIPELINE, rows, tmp_path / "out", engine=engine)
    assert sorted(Model.processed) == ["boom", "boom"]  # copy and hero try the raising row again, nothing else
