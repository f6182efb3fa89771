"""`item.ready()`: an item a stage says is done is in the run store before its batch returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

from aigc_pipeline.content import TEXT
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.store import STORE_FILE
from aigc_pipeline.testing import fake_engine, run_text

PIPELINE = """
name: early
inputs: {text: str}
stages:
  answer: {uses: test.one_by_one, inputs: {text: inputs.text}, batch_size: 4}
outputs: {text: answer.text}
"""


def stored_on_disk(out: Path) -> dict[int, str]:
    """The stage's results as another process sees them: committed ones only."""
    with sqlite3.connect(f"file:{out / STORE_FILE}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT item, outputs FROM results WHERE stage = 'answer'").fetchall())


class OneByOneStage(Stage):
    """Answers its batch's items one by one, saying each is ready, and looks at the store each time
    (as a server's answers arrive). 'bad' gets a number on its text port, 'no' fails."""

    type_name = "test.one_by_one"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    out: ClassVar[Path]
    seen: ClassVar[list[list[list[int]]]] = []  # rows on disk after each ready(), per batch
    calls: ClassVar[int] = 0

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        OneByOneStage.calls += len(batch)
        seen: list[list[int]] = []
        for item in batch:
            text = item.inputs["text"]
            if text == "no":
                item.fail("said no")
            else:
                item.outputs["text"] = 7 if text == "bad" else text.upper()
            item.ready()
            seen.append(sorted(stored_on_disk(self.out)))
        OneByOneStage.seen.append(seen)
        return batch


class Plugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [OneByOneStage]


def run(out: Path, rows: list[dict[str, Any]]) -> Any:
    OneByOneStage.out, OneByOneStage.seen, OneByOneStage.calls = out, [], 0
    return run_text(PIPELINE, rows, out, engine=fake_engine(Plugin()))


def test_each_ready_item_is_committed_before_the_next_is_answered(tmp_path: Path) -> None:
    result = run(tmp_path / "out", [{"text": f"r{i}"} for i in range(8)])
    assert result.summary.counts["done"] == 8
    assert OneByOneStage.seen == [[[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]],
                                  [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6], list(range(8))]]
    assert [row.outputs["text"] for row in result.results] == [f"R{i}" for i in range(8)]
    again = run(tmp_path / "out", [{"text": f"r{i}"} for i in range(8)])
    assert OneByOneStage.calls == 0 and again.summary.stages["answer"].cached == 8  # each stored once, reused


def test_only_clean_passes_are_stored_early_the_rest_as_the_batch_says(tmp_path: Path) -> None:
    result = run(tmp_path / "out", [{"text": "a"}, {"text": "bad"}, {"text": "no"}, {"text": "b"}])
    assert OneByOneStage.seen == [[[0], [0], [0], [0, 3]]]  # a wrong type and a verdict are not stored early
    assert [row.status for row in result.results] == ["done", "failed", "failed", "done"]
    assert "text" in str(result.results[1].error)  # the port check failed it, as without ready()
    assert sorted(stored_on_disk(tmp_path / "out")) == [0, 2, 3]  # its own verdict is stored with the batch
