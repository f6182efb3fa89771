"""executor: micro-batches, per-item isolation, item states, seeds, the run summary, observers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.content import RECORD, TEXT
from aigc_pipeline.records import ItemResult
from aigc_pipeline.row_identity import row_identity
from aigc_pipeline.stage import Stage, StageItem, item_seed
from aigc_pipeline.testing import BatchLog, EchoStage, RecordingPlugin, RunResult, fake_engine, run_text

CHAIN = """
name: chain
inputs: {text: str}
seed: 7
stages:
  first: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "1"}, batch_size: 4}
  check: {uses: test.raise_on, inputs: {text: first.text}, with: {needle: boom}}
  last: {uses: test.echo, inputs: {text: check.text}, with: {prefix: "3"}}
outputs: {text: last.text}
"""


def rows(*texts: str) -> list[dict[str, Any]]:
    return [{"text": text} for text in texts]


def texts(count: int) -> list[dict[str, Any]]:
    return rows(*(f"r{i}" for i in range(count)))


def statuses(result: RunResult) -> list[str]:
    return [r.status for r in result.results]


class Stages:
    """A plugin registering stage classes defined in a test."""

    def __init__(self, *classes: type[Stage]) -> None:
        self.classes = list(classes)

    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return self.classes


def one_stage(uses: str, batch_size: int = 4) -> str:
    return f"""
name: one
inputs: {{text: str}}
stages:
  s: {{uses: {uses}, inputs: {{text: inputs.text}}, batch_size: {batch_size}}}
"""


# ---------------------------------------------------------------- micro-batches


def test_every_row_runs_in_micro_batches_of_the_stage_batch_size(tmp_path: Path) -> None:
    log = BatchLog()
    result = run_text(CHAIN, texts(10), tmp_path / "out", engine=fake_engine(log))
    assert statuses(result) == ["done"] * 10
    assert log.sizes("first") == [4, 4, 2]  # batch_size: 4 from the pipeline file
    assert log.sizes("check") == [8, 2]  # test.raise_on's default_batch_size
    assert log.sizes("last") == [1] * 10  # Stage.default_batch_size
    assert [r.outputs["text"] for r in result.results] == [f"31r{i}" for i in range(10)]


def test_echo_stage_records_its_batch_sizes(tmp_path: Path) -> None:
    EchoStage.batch_sizes_seen.clear()
    run_text(CHAIN.replace("batch_size: 4", "batch_size: 3"), texts(7), tmp_path / "out")
    assert EchoStage.batch_sizes_seen.count(3) == 2 and EchoStage.batch_sizes_seen.count(1) == 7 + 1


def test_results_have_one_line_per_row_in_input_order(tmp_path: Path) -> None:
    result = run_text(CHAIN, texts(5) + [{"nope": 1}], tmp_path / "out")
    lines = result.results_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    assert [r.row for r in result.results] == list(range(6))
    assert result.results[0].as_dict() == {"row": 0, "line": 1, "status": "done", "outputs": {"text": "31r0"}}
    assert result.results[5].as_dict() == {
        "row": 5,
        "line": 6,
        "status": "rejected",
        "outputs": {},
        "error": {"stage": "input", "reason": "line 6: missing value for column 'text'"},
    }


# ---------------------------------------------------------------- isolation


def test_a_raising_batch_fails_only_the_guilty_row(tmp_path: Path) -> None:
    log = BatchLog()
    result = run_text(CHAIN, rows("a", "b", "boom", "c", "d"), tmp_path / "out", engine=fake_engine(log))
    assert statuses(result) == ["done", "done", "failed", "done", "done"]
    assert result.results[2].error == {"stage": "check", "reason": "ValueError: found 'boom' in row 2"}
    assert result.results[2].outputs == {}
    # the batch of 5 raised, then each item ran alone; the failed row never reaches 'last'
    assert log.sizes("check") == [5, 1, 1, 1, 1, 1]
    assert sorted(id for call in log.calls if call.stage_id == "last" for id in call.ids) == [0, 1, 3, 4]
    stats = result.summary.stages
    assert (stats["check"].done, stats["check"].failed) == (4, 1)
    assert (stats["last"].done, stats["last"].failed) == (4, 0)
    assert result.summary.counts == {"done": 4, "filtered": 0, "failed": 1, "rejected": 0, "not_run": 0}
    assert result.summary.ok


def test_a_failed_row_keeps_its_traceback_for_errors_log(tmp_path: Path) -> None:
    result = run_text(CHAIN, rows("a", "boom"), tmp_path / "out")
    trace = result.results[1].trace
    assert trace is not None and trace.startswith("Traceback") and "ValueError: found 'boom' in row 1" in trace
    assert result.results[0].trace is None
    assert "trace" not in result.results[1].as_dict()  # results.jsonl stays one short line per row


class ShortList(Stage):
    type_name = "test.short_list"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch[:-1]


class ForgetsPort(Stage):
    type_name = "test.forgets_port"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT, "score": RECORD}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"]  # 'score' is never set
            if item.inputs["text"] == "good":
                item.outputs["score"] = 1
        return batch


class Reverses(Stage):
    type_name = "test.reverses"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"].upper()
        return batch[::-1]  # e.g. sorted by length for padding: the engine matches items by id


class ReturnsNone(Stage):
    type_name = "test.returns_none"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> Any:
        for item in batch:
            item.outputs["text"] = item.inputs["text"]


def test_a_wrong_length_list_fails_the_items_with_a_clear_reason(tmp_path: Path) -> None:
    result = run_text(one_stage("test.short_list"), texts(3), tmp_path / "out", engine=fake_engine(Stages(ShortList)))
    assert statuses(result) == ["failed"] * 3
    assert result.results[0].error == {
        "stage": "s",
        "reason": "process() returned a list of 0 items for a batch of 1; it must return every item it got",
    }


def test_returning_none_fails_the_items(tmp_path: Path) -> None:
    engine = fake_engine(Stages(ReturnsNone))
    result = run_text(one_stage("test.returns_none"), texts(2), tmp_path / "out", engine=engine)
    assert statuses(result) == ["failed"] * 2
    assert result.results[0].error is not None
    assert result.results[0].error["reason"].startswith("process() returned NoneType for a batch of 1")


def test_a_forgotten_output_port_fails_the_item_naming_the_port(tmp_path: Path) -> None:
    engine = fake_engine(Stages(ForgetsPort))
    pipeline = one_stage("test.forgets_port") + "outputs: {text: s.text, score: s.score}\n"
    result = run_text(pipeline, rows("bad", "good"), tmp_path / "out", engine=engine)
    assert statuses(result) == ["failed", "done"]
    assert result.results[0].error == {"stage": "s", "reason": "stage did not set output port(s) score"}
    assert result.results[0].outputs == {}  # no half-written outputs from the failing stage
    assert result.results[1].outputs == {"text": "good", "score": 1}


def test_returned_items_are_matched_to_rows_by_id_not_position(tmp_path: Path) -> None:
    result = run_text(one_stage("test.reverses"), texts(5), tmp_path / "out", engine=fake_engine(Stages(Reverses)))
    assert [r.outputs["s.text"] for r in result.results] == ["R0", "R1", "R2", "R3", "R4"]


def test_a_stage_exiting_stops_the_run_instead_of_hanging_it(tmp_path: Path) -> None:
    class Exits(Stage):
        type_name = "test.exits"
        inputs = {"text": TEXT}
        outputs = {"text": TEXT}

        def process(self, batch: list[StageItem]) -> list[StageItem]:
            raise SystemExit(3)

    done: list[RunResult] = []
    engine = fake_engine(Stages(Exits))
    worker = threading.Thread(
        target=lambda: done.append(run_text(one_stage("test.exits"), texts(2), tmp_path / "out", engine=engine)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60)  # a guard against a hang, not a timing assertion
    assert done, "the run hung after a stage raised SystemExit"
    assert done[0].summary.error == "stage 's' (test.exits): stopped the run: SystemExit: 3"
    assert statuses(done[0]) == ["not_run"] * 2


# ---------------------------------------------------------------- filters and flags

GATED = """
name: gated
inputs: {text: str}
stages:
  gate: {uses: filter.text, inputs: {text: inputs.text}, with: {blocklist: [cure], on_fail: ON_FAIL}}
  after: {uses: test.echo, inputs: {text: gate.text}, with: {prefix: ">"}}
"""


def test_filtered_rows_skip_downstream_stages(tmp_path: Path) -> None:
    log = BatchLog()
    result = run_text(
        GATED.replace("ON_FAIL", "drop"), rows("ok", "a cure", "fine"), tmp_path / "o", engine=fake_engine(log)
    )
    assert statuses(result) == ["done", "filtered", "done"]
    assert result.results[1].error == {"stage": "gate", "reason": "blocked term(s): cure"}
    assert [id for call in log.calls if call.stage_id == "after" for id in call.ids] == [0, 2]
    gate, after = result.summary.stages["gate"], result.summary.stages["after"]
    assert (gate.done, gate.filtered, after.done) == (2, 1, 2)


def test_flags_are_recorded_and_the_row_goes_on(tmp_path: Path) -> None:
    result = run_text(GATED.replace("ON_FAIL", "flag"), rows("ok", "a cure"), tmp_path / "out")
    assert statuses(result) == ["done", "done"]
    assert result.results[1].flags == [{"stage": "gate", "reason": "blocked term(s): cure"}]
    assert result.results[1].as_dict()["outputs"] == {"after.text": ">a cure"}
    assert result.summary.stages["gate"].flagged == 1
    assert "flags" not in result.results[0].as_dict()


# ---------------------------------------------------------------- seeds and determinism


class SeedStage(Stage):
    type_name = "test.seed"
    inputs = {"text": TEXT}
    outputs = {"seed": RECORD}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["seed"] = item.seed
        return batch


SEEDED = """
name: seeded
inputs: {text: str}
seed: 1234
stages:
  s: {uses: test.seed, inputs: {text: inputs.text}, batch_size: BATCH}
"""


def test_item_seeds_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    engine = fake_engine(Stages(SeedStage))
    seeds = {
        batch: [
            r.outputs["s.seed"]
            for r in run_text(
                SEEDED.replace("BATCH", str(batch)), texts(10), tmp_path / str(batch), engine=engine
            ).results
        ]
        for batch in (1, 8)
    }
    # seeds derive from the row's identity (a hash of its input values), not its position
    assert seeds[1] == seeds[8] == [item_seed(1234, row_identity({"text": f"r{i}"}), "s") for i in range(10)]
    assert len(set(seeds[1])) == 10


def test_item_seeds_do_not_depend_on_failures_in_the_batch(tmp_path: Path) -> None:
    pipeline = """
name: seeded
inputs: {text: str}
seed: 1234
stages:
  gate: {uses: test.raise_on, inputs: {text: inputs.text}, with: {needle: boom}}
  s: {uses: test.seed, inputs: {text: gate.text}, batch_size: 8}
"""
    result = run_text(pipeline, rows("a", "boom", "b"), tmp_path / "out", engine=fake_engine(Stages(SeedStage)))
    seeds = [item_seed(1234, row_identity({"text": text}), "s") for text in ("a", "b")]
    assert [r.outputs.get("s.seed") for r in result.results] == [seeds[0], None, seeds[1]]


# ---------------------------------------------------------------- summary and observers


def test_the_summary_has_counts_and_time_per_stage(tmp_path: Path) -> None:
    pipeline = one_stage("test.slow").replace("batch_size: 4}", "batch_size: 4, with: {seconds_per_item: 0.001}}")
    result = run_text(pipeline, texts(6), tmp_path / "out")
    stats = result.summary.stages["s"]
    assert (stats.type_name, stats.device, stats.done, stats.filtered, stats.failed, stats.batches) == (
        "test.slow",
        "cpu",
        6,
        0,
        0,
        2,
    )
    assert stats.seconds > 0 and stats.load_seconds >= 0 and result.summary.seconds > 0


def test_observers_see_the_run(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    result = run_text(CHAIN, texts(3) + rows("boom") + [{}], tmp_path / "out", engine=fake_engine(recorder))
    [info] = recorder.started
    assert (info.name, info.rows, info.placement) == ("chain", 5, {"first": "cpu", "check": "cpu", "last": "cpu"})
    # every row that went into the graph, in input order here (one chunk); the rejected row did not
    assert [(r.row, r.status) for r in recorder.finished] == [(0, "done"), (1, "done"), (2, "done"), (3, "failed")]
    assert ("last", 4, 4) in recorder.progress
    assert recorder.summary is result.summary


def test_a_failing_observer_is_a_warning_and_the_run_goes_on(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def aigc_item_finished(self, result: ItemResult) -> None:
            raise RuntimeError("observer bug")

    result = run_text(CHAIN, texts(2), tmp_path / "out", engine=fake_engine(Broken()))
    assert statuses(result) == ["done", "done"]
    assert result.summary.ok
    assert len(result.summary.warnings) == 2
    assert "raised in aigc_item_finished: RuntimeError: observer bug" in result.summary.warnings[0]


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_output_does_not_depend_on_batch_size(tmp_path: Path, batch: int) -> None:
    pipeline = CHAIN.replace("batch_size: 4", f"batch_size: {batch}")
    result = run_text(pipeline, rows("a", "boom", "b", "c", "boom again", "d"), tmp_path / "out")
    assert [r.as_dict() for r in result.results] == [
        r.as_dict() for r in run_text(CHAIN, rows("a", "boom", "b", "c", "boom again", "d"), tmp_path / "ref").results
    ]
