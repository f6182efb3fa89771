"""Defect 10: on Ray the driver is the run store's only writer.

Workers read `run.sqlite` through a read-only connection and send the results they would record
back with their batches; the driver commits them. A Ray run still gives the local executor's
results, and resumes from what it stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.store import NewResult, RunStore
from aigc_pipeline.testing import fake_engine, run_text
from aigc_pipeline.worker_store import WorkerStore, commit_to

IDENTITY = {"pipeline": "p", "inputs": {"text": "str"}}
PIPELINE = """
name: ray_store
inputs: {text: str}
seed: 5
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  slow: {uses: test.slow, inputs: {text: prompt.text}, with: {seconds_per_item: 0}, batch_size: 4}
  picture: {uses: test.image, inputs: {text: slow.text}}
outputs: {text: slow.text, image: picture.image}
"""


def test_a_worker_reads_and_the_driver_writes(tmp_path: Path) -> None:
    driver = RunStore.open(tmp_path, IDENTITY)
    driver.finish("s", [NewResult("k1", 1, "done", None, '{"text": "a"}', [])], ["k1"])
    driver.flush()  # the driver commits quick batches together
    worker = WorkerStore.attach(tmp_path)
    assert set(worker.lookup(["k1", "k2"])) == {"k1"}
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        worker._db.execute("INSERT INTO meta VALUES ('x', 'y')")
    worker.begin("s", [("k2", 2)])
    worker.finish("s", [NewResult("k2", 2, "done", None, '{"text": "b"}', [])], ["k2"])
    assert set(driver.lookup(["k2"])) == set()  # nothing written by the worker
    assert worker._db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    commit_to(driver, worker.take())
    assert set(driver.lookup(["k1", "k2"])) == {"k1", "k2"} and worker.take() == []
    worker.close()
    driver.close()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.usefixtures("ray_instance")
def test_on_ray_every_stored_result_was_committed_by_the_driver(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from aigc_pipeline.executors.ray import RayExecutor

    committed: list[str] = []
    original = RunStore.finish

    def counted(self: RunStore, stage_id: str, results: list[NewResult], keys: list[str]) -> Any:
        committed.extend(result.key for result in results)  # in this process: the driver
        return original(self, stage_id, results, keys)

    monkeypatch.setattr(RunStore, "finish", counted)
    rows = [{"text": f"r{i}"} for i in range(24)]
    local = run_text(PIPELINE, rows, tmp_path / "local")
    committed.clear()  # the local run committed the same keys in this process
    on_ray = run_text(PIPELINE, rows, tmp_path / "ray", fake_engine(), backend=RayExecutor())
    assert on_ray.results_path.read_text() == local.results_path.read_text()
    with sqlite3.connect(tmp_path / "ray" / "run.sqlite") as db:
        stored = {key for (key,) in db.execute("SELECT key FROM results")}
    assert len(stored) == 2 * 24, len(stored)  # the template renders again on a re-run: not stored
    assert stored <= set(committed), f"{len(stored - set(committed))} results were not committed by the driver"
    again = run_text(PIPELINE, rows, tmp_path / "ray", fake_engine(), backend=RayExecutor())
    assert all(stats.cached == 24 for stats in again.summary.stages.values() if stats.type_name != "template")
