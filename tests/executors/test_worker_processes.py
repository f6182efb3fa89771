"""executors/worker_processes.py: CPU-bound stages in forked workers give the results threads give."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from aigc_pipeline import hookimpl
from aigc_pipeline.content import TEXT
from aigc_pipeline.devices import Device
from aigc_pipeline.executors.local import LocalExecutor
from aigc_pipeline.executors.worker_processes import cpu_segment, worker_count
from aigc_pipeline.planning import make_plan
from aigc_pipeline.stage import DeviceNeeds, Stage, StageItem
from aigc_pipeline.testing import CPU_ONLY, RecordingPlugin, fake_engine, run_text

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are forked")


class PidParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    load_error: str | None = None


class PidStage(Stage[PidParams]):
    """Says which process ran each row; "boom" raises, "flag" flags, "die" kills its process."""

    type_name = "test.pid"
    Params = PidParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT, "pid": TEXT}
    default_batch_size = 16

    @classmethod
    def cpu_parallel(cls, params: PidParams) -> bool:
        return True

    def load(self, device: Device) -> bool | None:
        if self.params.load_error:
            raise RuntimeError(self.params.load_error)
        return False

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            text = item.inputs["text"]
            if "boom" in text:
                raise ValueError(f"boom in row {item.id}")
            if "die" in text:
                os.kill(os.getpid(), signal.SIGKILL)
            if "flag" in text:
                item.flag("looked odd")
            item.outputs.update(text=text.upper(), pid=str(os.getpid()))
        return batch


class ModelCheck(Stage[PidParams]):
    """A stage with a model: never forked."""

    type_name = "test.model_check"
    Params = PidParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    @classmethod
    def cpu_parallel(cls, params: PidParams) -> bool:
        return True

    @classmethod
    def needs(cls, params: PidParams) -> DeviceNeeds:
        return DeviceNeeds(kind="any", memory_bytes=1 << 20)

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [PidStage, ModelCheck]


ALL_IN_WORKERS = """
name: workers
inputs: {text: str}
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  tag: {uses: test.pid, inputs: {text: prompt.text}}
  check: {uses: filter.text, inputs: {text: tag.text}, with: {blocklist: [drop], on_fail: drop}}
outputs: {text: check.text, pid: tag.pid}
"""

MIXED = """
name: mixed
inputs: {text: str}
stages:
  up: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "<"}}
  left: {uses: template, with: {template: "L {{ text }}"}}
  right: {uses: test.pid, inputs: {text: up.text}}
  after: {uses: test.echo, inputs: {text: right.text}, with: {prefix: ">"}}
  again: {uses: template, inputs: {x: after.text}, with: {template: "{{ x }}!"}}
outputs: {left: left.text, right: right.text, again: again.text, pid: right.pid}
"""


def rows(count: int) -> list[str]:
    words = ["boom", "drop", "flag"]
    return [f"r{i} {words[i % 7]}" if i % 7 < 3 else f"r{i}" for i in range(count)]


@dataclass
class Outcome:
    """What a test reads of a run made in another interpreter."""

    rows: list[tuple[Any, ...]]  # each row's status, outputs (without the process id), error and flags
    counts: dict[str, tuple[int, ...]]  # per stage: done, filtered, failed, flagged
    devices: dict[str, str]  # per stage: where the summary says it ran
    pids: set[str]  # the processes that ran `test.pid`
    engine_pid: str  # the process that ran the engine
    ok: bool
    error: str | None
    progress: dict[str, tuple[int, int]]  # per stage: its last report (done, total)


def outcome(pipeline: str, texts: list[str] | list[dict[str, Any]], out: Path, workers: int) -> Outcome:
    recorder = RecordingPlugin()
    rows = [{"text": text} if isinstance(text, str) else text for text in texts]
    result = run_text(pipeline, rows, out, engine=fake_engine(Stages(), recorder),
                      backend=LocalExecutor(workers=workers), keep_results=True)
    return Outcome(
        [(r.status, {k: v for k, v in r.outputs.items() if k != "pid"}, r.error, r.flags) for r in result.results],
        {sid: (s.done, s.filtered, s.failed, s.flagged) for sid, s in result.summary.stages.items()},
        {sid: s.device for sid, s in result.summary.stages.items()},
        {r.outputs["pid"] for r in result.results if "pid" in r.outputs}, str(os.getpid()), result.summary.ok,
        result.summary.error, {sid: (done, total) for sid, done, total in recorder.progress},
    )


def fresh(pipeline: str, texts: list[str] | list[dict[str, Any]], out: Path, workers: int) -> Outcome:
    """`outcome(...)` in a new interpreter: this one may run other tests' threads (Ray's, a served
    model's loop), and a run forks workers only from a process that runs none."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(outcome, pipeline, texts, out, workers).result(timeout=600)


@pytest.mark.parametrize("pipeline", [ALL_IN_WORKERS, MIXED])
def test_workers_give_the_rows_and_counts_that_threads_give(tmp_path: Path, pipeline: str) -> None:
    threaded = fresh(pipeline, rows(700), tmp_path / "threads", workers=0)
    forked = fresh(pipeline, rows(700), tmp_path / "workers", workers=2)
    assert forked.rows == threaded.rows
    assert forked.counts == threaded.counts
    assert {row[0] for row in forked.rows} >= {"done", "failed"}
    assert any(row[3] for row in forked.rows)  # flags came back too
    assert threaded.pids == {threaded.engine_pid}
    assert len(forked.pids) == 2 and forked.engine_pid not in forked.pids
    failed = next(row for row in forked.rows if row[0] == "failed")
    assert "ValueError: boom in row" in failed[2]["reason"]
    assert forked.progress == threaded.progress and set(forked.progress.values()) == {(700, 700)}
    segment = {"prompt", "tag", "check"} if pipeline is ALL_IN_WORKERS else {"left", "right"}
    assert forked.devices == {sid: "cpu×2" if sid in segment else "cpu" for sid in threaded.devices}
    assert set(threaded.devices.values()) == {"cpu"}


BOMB = """
name: bomb
inputs: {text: str, width: int}
stages:
  ad: {uses: template, with: {template: "{{ text|center(width) }}"}}
  shell:
    uses: template
    with: {template: "{{ self.__init__.__globals__.__builtins__.__import__('os').system(text) }}"}
outputs: {ad: ad.text, shell: shell.text}
"""


def test_the_sandbox_and_its_budgets_hold_in_a_worker(tmp_path: Path) -> None:
    mark = tmp_path / "pwned"
    rows = [{"text": f"touch {mark}", "width": 2_000_000 if i % 5 == 0 else 40} for i in range(300)]
    forked = fresh(BOMB, rows, tmp_path / "workers", workers=2)
    assert forked.devices == {"ad": "cpu×2", "shell": "cpu×2"}
    assert [row[0] for row in forked.rows] == ["failed"] * 300  # the shell command: every row
    assert {row[2]["stage"] for row in forked.rows} == {"ad", "shell"}
    bombs = [row[2]["reason"] for i, row in enumerate(forked.rows) if i % 5 == 0]
    assert all(reason.startswith("template blocked by the sandbox") for reason in bombs), bombs[:2]
    assert forked.counts["ad"] == (240, 0, 60, 0) and forked.counts["shell"] == (0, 0, 300, 0)
    assert not mark.exists()


def test_the_segment_leaves_out_models_and_what_depends_on_it_through_other_stages() -> None:
    engine = fake_engine(Stages())
    plan = make_plan(engine.load_text(MIXED), engine.pm, inventory=CPU_ONLY)
    assert cpu_segment(plan, plan.graph.order) == ["left", "right"]  # `again` waits on `after`, outside
    model = engine.load_text(ALL_IN_WORKERS.replace("test.pid", "test.model_check").replace(", pid: tag.pid", ""))
    # `check` follows the model stage, which follows `prompt`: one segment cannot hold both
    assert cpu_segment(make_plan(model, engine.pm, inventory=CPU_ONLY), model.order) == ["prompt"]
    dedupe = engine.load_text(ALL_IN_WORKERS.replace("on_fail: drop", "on_fail: drop, dedupe: {}"))
    assert "check" not in cpu_segment(make_plan(dedupe, engine.pm, inventory=CPU_ONLY), dedupe.order)


def test_how_many_workers() -> None:
    if threading.active_count() > 1:  # (other tests' threads): never forked, whatever is asked
        assert worker_count(3, 10**6) == 0
        return
    assert worker_count(0, 10**6) == 0
    assert worker_count(3, 10) == 3  # asked for: also for a small run
    assert worker_count(None, 10) == 0  # too few rows to pay for forking
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    automatic = min(cores, 8) if cores > 1 and sys.platform.startswith("linux") else 0
    assert worker_count(None, 10**6) == automatic


def test_a_process_running_another_thread_is_not_forked(tmp_path: Path) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        result = outcome(ALL_IN_WORKERS, rows(40), tmp_path / "out", workers=2)
    finally:
        release.set()
        other.join()
    assert result.pids == {str(os.getpid())}


def test_a_stage_that_fails_to_load_in_a_worker_stops_the_run_as_on_a_thread(tmp_path: Path) -> None:
    broken = ALL_IN_WORKERS.replace("inputs: {text: prompt.text}}",
                                    "inputs: {text: prompt.text}, with: {load_error: no weights}}")
    threaded = fresh(broken, rows(50), tmp_path / "threads", workers=0)
    forked = fresh(broken, rows(50), tmp_path / "workers", workers=2)
    assert not forked.ok and forked.error == threaded.error
    assert "failed to load" in (forked.error or "") and "no weights" in (forked.error or "")


def test_a_worker_that_dies_stops_the_run_with_what_happened_and_keeps_finished_rows(tmp_path: Path) -> None:
    texts = [f"r{i}" for i in range(600)]
    texts[500] = "die here"
    result = fresh(ALL_IN_WORKERS, texts, tmp_path / "out", workers=2)
    assert not result.ok
    error = result.error or ""
    assert "worker process running stage(s) prompt, tag, check was killed by SIGKILL" in error
    assert "--workers 0" in error
    statuses = [row[0] for row in result.rows]
    assert statuses[:256] == ["done"] * 256  # the chunks before the one that died are written
    assert set(statuses) == {"done", "not_run"}

SLOW = """
name: slow_workers
inputs: {text: str}
seed: 3
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  slow:
    uses: test.slow
    inputs: {text: prompt.text}
    with: {seconds_per_item: 0.003, cpu_parallel: true}
    batch_size: 16
outputs: {text: slow.text}
"""


def start_cli(folder: Path, out: str, rows: int) -> subprocess.Popen[bytes]:
    """`aigc run` with two workers, in a session of its own (a terminal's Ctrl-C reaches its whole group)."""
    (folder / "pipeline.yaml").write_text(SLOW, encoding="utf-8")
    if not (folder / "rows.jsonl").exists():
        (folder / "rows.jsonl").write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(rows)),
                                           encoding="utf-8")
    command = [sys.executable, "-c", "from aigc_pipeline.cli import main; main()", "run", "pipeline.yaml",
               "-i", "rows.jsonl", "-o", out, "-q", "--plugin", "aigc_pipeline.testing", "--workers", "2"]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (a zombie, waiting for its parent to read its status, is not live)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(condition: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


@linux_only
def test_killing_the_main_process_leaves_no_worker_behind_and_the_same_command_resumes(tmp_path: Path) -> None:
    process = start_cli(tmp_path, "out", 3000)
    assert wait_until(lambda: len(children(process.pid)) == 2), process.communicate()[0].decode()
    workers = children(process.pid)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 15.0), "workers outlived the killed run"
    resumed, reference = start_cli(tmp_path, "out", 3000), start_cli(tmp_path, "reference", 3000)
    for run in (resumed, reference):
        output = run.communicate(timeout=120)[0].decode()
        assert run.returncode == 0, output
    assert (tmp_path / "out" / "results.jsonl").read_bytes() == (tmp_path / "reference" / "results.jsonl").read_bytes()


@linux_only
def test_a_stop_with_workers_writes_finished_rows_and_the_same_command_resumes_them(tmp_path: Path) -> None:
    reference = start_cli(tmp_path, "reference", 3000)
    output = reference.communicate()[0].decode()
    assert reference.returncode == 0, output
    stopped = start_cli(tmp_path, "out", 3000)
    assert wait_until(lambda: len(children(stopped.pid)) == 2 and (tmp_path / "out" / "run.sqlite").exists())
    time.sleep(1.0)
    os.killpg(stopped.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the workers get it too, and ignore it
    output = stopped.communicate(timeout=60)[0].decode()
    assert stopped.returncode == 130, output
    statuses = [json.loads(line)["status"] for line in (tmp_path / "out" / "results.jsonl").open()]
    assert "done" in statuses and "not_run" in statuses
    resumed = start_cli(tmp_path, "out", 3000)
    output = resumed.communicate(timeout=120)[0].decode()
    assert resumed.returncode == 0, output
    assert (tmp_path / "out" / "results.jsonl").read_bytes() == (tmp_path / "reference" / "results.jsonl").read_bytes()
