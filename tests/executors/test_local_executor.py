"""executors/local.py: a thread per stage, chunks streaming through, stops that lose no work."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.content import TEXT
from aigc_pipeline.devices import Device
from aigc_pipeline.executors.local import LocalExecutor, chunk_size
from aigc_pipeline.planning import make_plan
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.testing import CPU_ONLY, BatchCall, BatchLog, RecordingPlugin, fake_engine, run_text

BRANCHES = """
name: branches
inputs: {text: str}
stages:
  left: {uses: test.slow, inputs: {text: inputs.text}, with: {seconds_per_item: 0.02}, batch_size: 2}
  right: {uses: test.slow, inputs: {text: inputs.text}, with: {seconds_per_item: 0.02}, batch_size: 2}
outputs: {left: left.text, right: right.text}
"""

CHAIN = """
name: chain
inputs: {text: str}
stages:
  up: {uses: test.slow, inputs: {text: inputs.text}, with: {seconds_per_item: 0.01}, batch_size: 2}
  check: {uses: test.raise_on, inputs: {text: up.text}, with: {needle: boom}, batch_size: 3}
  down: {uses: test.echo, inputs: {text: check.text}, with: {prefix: ">"}, batch_size: 2}
outputs: {text: down.text}
"""


def rows(count: int) -> list[dict[str, Any]]:
    return [{"text": "boom" if i % 4 == 1 else f"r{i}"} for i in range(count)]


def overlap(a: list[BatchCall], b: list[BatchCall]) -> bool:
    return any(x.start < y.end and y.start < x.end for x in a for y in b)


def calls(log: BatchLog, stage_id: str) -> list[BatchCall]:
    return [call for call in log.calls if call.stage_id == stage_id]


def test_independent_branches_run_at_the_same_time(tmp_path: Path) -> None:
    log = BatchLog()
    result = run_text(BRANCHES, rows(6), tmp_path / "out", engine=fake_engine(log))
    assert [r.status for r in result.results] == ["done"] * 6
    assert len(calls(log, "left")) == len(calls(log, "right")) == 3
    assert overlap(calls(log, "left"), calls(log, "right"))


def test_a_downstream_stage_works_while_its_upstream_is_still_busy(tmp_path: Path) -> None:
    log = BatchLog()
    run_text(CHAIN, rows(8), tmp_path / "out", engine=fake_engine(log), backend=LocalExecutor(chunk_size=2))
    up, down = calls(log, "up"), calls(log, "down")
    assert down[0].start < up[-1].end  # chunk 0 went on before the last chunk was through 'up'


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])
def test_output_does_not_depend_on_chunk_size(tmp_path: Path, chunk_size: int) -> None:
    fast = ["up.seconds_per_item=0"]
    reference = run_text(CHAIN, rows(11), tmp_path / "ref", overrides=fast)
    result = run_text(CHAIN, rows(11), tmp_path / "out", overrides=fast, backend=LocalExecutor(chunk_size=chunk_size))
    assert [r.as_dict() for r in result.results] == [r.as_dict() for r in reference.results]
    assert [r.status for r in result.results].count("failed") == 3
    assert result.results_path.read_bytes() == reference.results_path.read_bytes()


def test_progress_is_reported_per_stage_and_chunk_and_rows_finish_in_order(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    run_text(CHAIN, rows(5), tmp_path / "out", engine=fake_engine(recorder), backend=LocalExecutor(chunk_size=2))
    assert [p for p in recorder.progress if p[0] == "down"] == [("down", 2, 5), ("down", 4, 5), ("down", 5, 5)]
    assert [r.row for r in recorder.finished] == [0, 1, 2, 3, 4]


class Lifecycle(Stage):
    """Records load/unload calls (class-wide: one instance per stage id)."""

    type_name = "test.lifecycle"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    events: list[str] = []

    def load(self, device: Device) -> None:
        Lifecycle.events.append(f"load {device}")

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch

    def unload(self) -> None:
        Lifecycle.events.append("unload")


class BrokenLoad(Lifecycle):
    type_name = "test.broken_load"

    def load(self, device: Device) -> None:
        raise OSError("weights not found")


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [Lifecycle, BrokenLoad]


LOAD_FAILS = """
name: load_fails
inputs: {text: str}
stages:
  fine: {uses: test.lifecycle, inputs: {text: inputs.text}}
  model: {uses: test.broken_load, inputs: {text: fine.text}}
"""


@pytest.fixture
def events() -> list[str]:
    Lifecycle.events.clear()
    return Lifecycle.events


def test_a_stage_that_fails_to_load_stops_the_run_and_loses_no_rows(tmp_path: Path, events: list[str]) -> None:
    result = run_text(LOAD_FAILS, rows(3), tmp_path / "out", engine=fake_engine(Stages()))
    assert result.summary.error == "stage 'model' (test.broken_load): failed to load: OSError: weights not found"
    assert not result.summary.ok
    lines = result.results_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all('"status": "not_run"' in line for line in lines)
    assert events[0] == "load cpu" and events[-1] == "unload"  # the stage that loaded was unloaded
    assert result.errors_path is not None
    log = result.errors_path.read_text(encoding="utf-8")
    assert log.startswith("the run stopped early: stage 'model' (test.broken_load): failed to load")
    assert "OSError: weights not found" in log


def test_nothing_loads_when_no_row_is_left_to_run(tmp_path: Path, events: list[str]) -> None:
    result = run_text(LOAD_FAILS, [{"wrong": 1}], tmp_path / "out", engine=fake_engine(Stages()))
    assert result.summary.ok and events == []
    assert [r.status for r in result.results] == ["rejected"]


def test_an_unload_error_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    def unload(self: Stage) -> None:
        raise RuntimeError("driver gone")

    monkeypatch.setattr(Lifecycle, "unload", unload)
    pipeline = LOAD_FAILS.split("  model:")[0]
    result = run_text(pipeline, rows(2), tmp_path / "out", engine=fake_engine(Stages()))
    assert [r.status for r in result.results] == ["done", "done"]
    assert result.summary.warnings == ["stage 'fine': unload failed: RuntimeError: driver gone"]


DOWN_STARTED, STOPPING = threading.Event(), threading.Event()


class StopsOnSecondBatch(Stage):
    type_name = "test.stops_on_second_batch"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.calls = 0

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        self.calls += 1
        if self.calls == 2:  # stop while 'down' is busy with the first chunk
            assert DOWN_STARTED.wait(timeout=60)  # guards against a hang, not a timing assertion
            STOPPING.set()
            raise SystemExit("stop")
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class FinishesWhileStopping(Stage):
    type_name = "test.finishes_while_stopping"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        DOWN_STARTED.set()
        assert STOPPING.wait(timeout=60)
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class StoppingStages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [StopsOnSecondBatch, FinishesWhileStopping]


STOPS = """
name: stops
inputs: {text: str}
stages:
  up: {uses: test.stops_on_second_batch, inputs: {text: inputs.text}, batch_size: 2}
  down: {uses: test.finishes_while_stopping, inputs: {text: up.text}, batch_size: 2}
"""


def test_a_chunk_that_finishes_while_the_run_stops_is_still_done(tmp_path: Path) -> None:
    DOWN_STARTED.clear()
    STOPPING.clear()
    engine = fake_engine(StoppingStages())
    result = run_text(STOPS, rows(4), tmp_path / "out", engine=engine, backend=LocalExecutor(chunk_size=2))
    assert result.summary.error == "stage 'up' (test.stops_on_second_batch): stopped the run: SystemExit: stop"
    assert [r.status for r in result.results] == ["done", "done", "not_run", "not_run"]
    assert result.results[1].outputs == {"down.text": "boom"}


SIZES = """
name: sizes
inputs: {text: str}
stages:
  prompt: {uses: test.echo, inputs: {text: inputs.text}, batch_size: 256}
  model: {uses: test.model, inputs: {text: prompt.text}, with: {device: any}, batch_size: 16}
  image: {uses: test.model, inputs: {text: model.text}, with: {name: image, device: cpu, memory_gib: 1}, batch_size: 4}
  check: {uses: test.echo, inputs: {text: image.text}, batch_size: 128}
"""


def test_chunks_are_a_micro_batch_of_the_model_stages_and_larger_for_cheap_stages() -> None:
    """A stage trails the one before it by a chunk: beside models a chunk is their largest batch
    (16 here, not the template-like stages' 256); cheap stages alone keep chunks of 64 or more."""
    engine = fake_engine()
    plan = make_plan(engine.load_text(SIZES), engine.pm, inventory=CPU_ONLY)
    assert chunk_size(plan, plan.graph.order) == 16
    assert chunk_size(plan, ["image", "check"]) == 4  # a residency phase with one model
    assert chunk_size(plan, ["prompt", "check"]) == 256
    cheap = make_plan(engine.load_text(SIZES.replace("batch_size: 256", "batch_size: 8")), engine.pm,
                      inventory=CPU_ONLY)
    assert chunk_size(cheap, ["prompt"]) == 64
