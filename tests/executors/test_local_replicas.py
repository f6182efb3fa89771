"""executors/local.py with replicas: copies of a stage on a fake 2-GPU inventory, run on the CPU.

The fake model stages ignore the device they are given, so copies "on cuda:0 and cuda:1" run here
as two threads, each with its own stage instance. `Rendezvous` makes sharing certain rather than
likely: a copy's first micro-batch waits until the other copy has one too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.devices import Device
from aigc_pipeline.engine import RunResult
from aigc_pipeline.executors.local import LocalExecutor
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.testing import TWO_GPUS_80GB, ModelStage, RecordingPlugin, fake_engine, run_text

PIPELINE = """
name: replicated
inputs: {text: str}
stages:
  prep: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "<"}}
  model:
    {uses: MODEL, inputs: {text: prep.text}, with: {name: llm, memory_gib: 10, oom_on: boom}, batch_size: 4REPLICAS}
  after: {uses: test.echo, inputs: {text: model.text}, with: {prefix: ">"}}
outputs: {text: after.text}
"""
ROWS = [{"text": "boom" if i % 7 == 3 else f"row{i}"} for i in range(40)]  # 'boom': out of memory, alone too


def pipeline(model: str = "test.model", replicas: str = "") -> str:
    return PIPELINE.replace("MODEL", model).replace("REPLICAS", f", replicas: {replicas}" if replicas else "")


class Rendezvous(ModelStage):
    """`test.model` whose copies each wait, on their first micro-batch, until both copies have one."""

    type_name = "test.rendezvous"
    barrier = threading.Barrier(2, timeout=20)  # a guard against a hang, not a timing assertion

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.met = False

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        if not self.met:
            self.met = True
            Rendezvous.barrier.wait()
        return super().process(batch)


class SecondLoadFails(Rendezvous):
    """The second copy to load fails (out of memory there, say); the first is left waiting for it."""

    type_name = "test.second_load_fails"
    loads: list[str] = []

    def load(self, device: Device) -> None:
        SecondLoadFails.loads.append(str(device))
        if len(SecondLoadFails.loads) == 2:
            Rendezvous.barrier.abort()  # the first copy stops waiting for a partner that will never come
            raise OSError(f"no memory left on {device}")
        super().load(device)


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [Rendezvous, SecondLoadFails]


class ByInstance:
    """Which stage instance was called with which items, for stage 'model'."""

    def __init__(self) -> None:
        self.items: dict[Stage, set[int]] = {}
        self._lock = threading.Lock()

    @hookimpl(wrapper=True)
    def aigc_process_batch(self, stage_id: str, stage: Stage, batch: list[StageItem]) -> Any:
        if stage_id == "model":
            with self._lock:
                self.items.setdefault(stage, set()).update(item.id for item in batch)
        return (yield)


@pytest.fixture(autouse=True)
def fresh_fakes() -> Iterator[None]:
    ModelStage.log.clear()
    SecondLoadFails.loads.clear()
    Rendezvous.barrier.reset()
    yield
    ModelStage.log.clear()


def run(text: str, out: Path, *plugins: Any, rows: list[dict[str, Any]] = ROWS) -> RunResult:
    engine = fake_engine(Stages(), *plugins)
    return run_text(text, rows, out, engine=engine, backend=LocalExecutor(chunk_size=8), inventory=TWO_GPUS_80GB)


def test_copies_share_the_rows_and_give_the_same_results_as_one_instance(tmp_path: Path) -> None:
    reference = run(pipeline(replicas="1"), tmp_path / "one")
    ModelStage.log.clear()
    by_instance, recorder = ByInstance(), RecordingPlugin()
    result = run(pipeline("test.rendezvous"), tmp_path / "two", by_instance, recorder)

    stats = result.summary.stages["model"]
    assert stats.device == "cuda:1+cuda:0" and reference.summary.stages["model"].device == "cuda:1"
    assert [r.as_dict() for r in result.results] == [r.as_dict() for r in reference.results]
    assert result.results_path.read_bytes() == reference.results_path.read_bytes()
    statuses = [r.status for r in result.results]
    assert statuses.count("failed") == 6 and statuses.count("done") == 34  # the 'boom' rows fail alone
    assert result.results[0].outputs == {"text": "><row0+llm"}

    # each copy loaded once, on its own device, and both worked on rows no other copy saw
    assert sorted(device for event, _, device in ModelStage.log if event == "load") == ["cuda:0", "cuda:1"]
    assert (stats.loads, stats.unloads) == (2, 2)
    handled = list(by_instance.items.values())
    assert len(handled) == 2 and all(handled)
    assert not handled[0] & handled[1] and handled[0] | handled[1] == set(range(40))

    # the counts of both copies add up to the counts of one instance
    one = reference.summary.stages["model"]
    assert (stats.done, stats.failed, stats.filtered) == (one.done, one.failed, one.filtered) == (34, 6, 0)
    assert stats.batches >= 10 and stats.oom_retries >= 1  # 40 rows in batches of 4 or fewer (out of memory: halved)
    assert [p for p in recorder.progress if p[0] == "model"] == [("model", n, 40) for n in (8, 16, 24, 32, 40)]
    assert [r.row for r in recorder.finished] == list(range(40))


def test_a_copy_that_fails_to_load_stops_the_run_without_a_hang_or_a_lost_row(tmp_path: Path) -> None:
    result = run(pipeline("test.second_load_fails"), tmp_path / "out")
    assert result.summary.error is not None
    assert result.summary.error.startswith("stage 'model' (test.second_load_fails): failed to load: OSError: "
                                           "no memory left on cuda:")
    # the copy that failed never ran its micro-batch, so 'model' finished no chunk: no row is done
    # (a 'boom' row the other copy ran alone has failed, as it would have without a stop)
    assert {r.status for r in result.results} <= {"not_run", "failed"}
    assert {ROWS[r.row]["text"] for r in result.results if r.status == "failed"} <= {"boom"}
    stats = result.summary.stages["model"]
    assert stats.loads == 1 and stats.unloads == 2  # unload() is called after every load attempted


def test_a_rerun_takes_every_result_from_the_store_and_loads_no_copy(tmp_path: Path) -> None:
    rows = [row for row in ROWS if row["text"] != "boom"]  # a failed row is not stored: it would run again
    first = run(pipeline(), tmp_path / "out", rows=rows)
    assert first.summary.stages["model"].loads >= 1
    ModelStage.log.clear()
    again = run(pipeline(), tmp_path / "out", rows=rows)
    stats = again.summary.stages["model"]
    assert stats.device == "cuda:1+cuda:0"
    assert (stats.loads, stats.unloads, stats.cached, stats.done) == (0, 0, 34, 34)
    assert ModelStage.log == []
    assert [r.as_dict() for r in again.results] == [r.as_dict() for r in first.results]
