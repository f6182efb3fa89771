"""Pipelining on the CPU: two stages that do not compete for one resource overlap.

Gate (../shared/BENCHMARKING.md): "two stages that do not compete for the same resource:
wall <= 1.15x the slower stage alone". Each scenario has a CPU stage `a` and a "model" stage `b`
of similar cost, chained `a -> b`, run three ways over the same rows, interleaved:

    a alone, b alone, a -> b, [a -> b under each --compare-interval], two plain threads x2
                                      (then again, --repeats times)

and reports ratio = median(a -> b) / max(median(a alone), median(b alone)); 1.0 is perfect
overlap, 2.0 is none (the sum). The torch scenario also runs a -> b with the engine's run switch
interval (`aigc_pipeline.engine.RUN_SWITCH_INTERVAL`) set to each `--compare-interval` (default
5 ms: Python's default, what the engine ran under before it lowered it), and the two stages'
work in two plain threads (no engine) under Python's interval and under the engine's.

Scenarios:
- `sleep`:  both stages sleep per item (`test.slow`): the floor, pure engine scheduling.
- `torch`:  `a` is pure Python holding the GIL (a busy loop: templating/filtering-like work);
            `b` is a torch matmul loop on one thread (torch releases the GIL while it computes),
            standing in for a model stage. Needs 2 cores and torch; skipped without torch.
            `b` also clocks its matmul calls (`ThreadClock`): per call, the time spent waiting
            for the GIL and for a core, and torch's thread count in its thread.

Time is `summary.seconds` (in-engine: first stage call to last row done) and the whole
`engine.run` (read input, run, write results). The local executor cuts rows into chunks of the
model stage's micro-batch (16), so the overlap costs about one micro-batch of the slower stage.

    .venv/bin/python benchmarks/pipelining.py                 # 1024 rows, 5 repeats, both scenarios
    .venv/bin/python benchmarks/pipelining.py --quick         # 256 rows, 3 repeats
Results: stdout and benchmarks/results/pipelining-<date>[-quick][-<label>].json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from aigc_pipeline import TEXT, Stage, hookimpl  # noqa: E402
from aigc_pipeline.stage import DeviceNeeds, StageItem  # noqa: E402
from aigc_pipeline.testing import fake_engine, write_jsonl  # noqa: E402

TARGET = 1.15


class WorkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms_per_item: float = Field(1.0, ge=0)
    matmul_ms: float = Field(0.0, ge=0, description="torch stage: measured milliseconds of one matmul")
    size: int = Field(768, ge=8, description="torch stage: square matrix size")


class BusyPython(Stage):
    """CPU work that holds the GIL: a pure-Python loop for `ms_per_item` per item."""

    type_name = "bench.busy_python"
    Params = WorkParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 16

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        seconds = self.params.ms_per_item / 1000 * len(batch)  # type: ignore[attr-defined]
        end, spins = time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            spins += 1
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class ThreadClock:
    """The calling thread's CPU time (`time.thread_time`) and its time spent waiting for a core
    (runnable, not running: `run_delay` in Linux's `/proc/thread-self/schedstat`; nan elsewhere).

    Both are read without letting go of the GIL (`ctypes.PyDLL` calls keep it; a Python `open()`
    would not), since taking it back is exactly the wait being measured. The CPU time does not
    come from schedstat, whose figure for a running thread lags by up to a scheduler tick. A matmul
    on one torch thread does not sleep, so its wall time less both figures is the time it slept
    waiting to take the GIL back (plus any time the hypervisor took the CPU away: steal).
    """

    def __init__(self) -> None:
        import ctypes

        self.buffer = ctypes.create_string_buffer(128)
        self.libc = ctypes.PyDLL(None) if os.path.exists("/proc/thread-self/schedstat") else None

    def read(self) -> tuple[float, float]:
        if self.libc is None:
            return time.thread_time(), float("nan")
        handle = self.libc.open(b"/proc/thread-self/schedstat", os.O_RDONLY)
        size = self.libc.read(handle, self.buffer, len(self.buffer) - 1)
        self.libc.close(handle)
        return time.thread_time(), int(self.buffer.raw[:size].split()[1]) / 1e9


THREAD_CLOCK = ThreadClock()


class TorchMatmul(Stage):
    """A stand-in model stage: matmuls on one torch thread (the GIL is released while they compute).

    It keeps a clock of its matmul calls (`ThreadClock`): wall time, time on a CPU, time waiting
    for a core, and the rest: waiting to take the GIL back, twice per call (when `torch.mm`
    returns, and when the discarded result is freed: `THPVariable_clear` lets go of the GIL too).
    `TorchMatmul.last` is the instance most recently loaded (the engine creates one per run).
    """

    type_name = "bench.torch_matmul"
    Params = WorkParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 16
    last: TorchMatmul | None = None

    @classmethod
    def needs(cls, params: BaseModel) -> DeviceNeeds:
        return DeviceNeeds(kind="any")

    def load(self, device: Any) -> None:
        import torch

        torch.set_num_threads(1)
        size = self.params.size  # type: ignore[attr-defined]
        generator = torch.Generator().manual_seed(0)
        self.a = torch.randn(size, size, generator=generator)
        self.b = torch.randn(size, size, generator=generator)
        self.owed = 0.5  # matmuls owed but not yet run: rounds the total, not each batch
        self.clock = {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0, "core_wait_s": 0.0, "torch_threads": 0,
                      "switch_interval_s": 0.0}
        TorchMatmul.last = self

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        import torch

        p: WorkParams = self.params  # type: ignore[assignment]
        # A few large calls per batch. The fraction is carried over: rounding each batch instead
        # made a 16-row batch of 1 ms rows one 10.9 ms matmul but two 10.6 ms ones (b's cost x2).
        self.owed += p.ms_per_item * len(batch) / p.matmul_ms
        count, self.owed = int(self.owed), self.owed % 1
        clock = self.clock
        clock["torch_threads"] = torch.get_num_threads()  # in the stage's thread: 1, as load() set it
        clock["switch_interval_s"] = sys.getswitchinterval()  # what the engine runs stages under
        cpu, core_wait = THREAD_CLOCK.read()
        wall = time.perf_counter()
        with torch.inference_mode():
            for _ in range(count):
                torch.mm(self.a, self.b)
        clock["wall_s"] += time.perf_counter() - wall
        cpu_after, core_wait_after = THREAD_CLOCK.read()
        clock["cpu_s"] += cpu_after - cpu
        clock["core_wait_s"] += core_wait_after - core_wait
        clock["calls"] += count
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch

    def clock_report(self) -> dict[str, float]:
        clock = dict(self.clock)
        calls = max(1, int(clock["calls"]))
        clock["wall_ms_per_call"] = clock["wall_s"] / calls * 1000
        clock["core_wait_ms_per_call"] = clock["core_wait_s"] / calls * 1000
        clock["gil_wait_ms_per_call"] = (clock["wall_s"] - clock["cpu_s"] - clock["core_wait_s"]) / calls * 1000
        return clock


class BenchStages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [BusyPython, TorchMatmul]


def pipeline(a: str | None, b: str | None) -> str:
    stages, last = [], "inputs.text"
    for name, stage in (("a", a), ("b", b)):
        if stage:
            stages.append(f"  {name}: {{{stage.replace('INPUT', last)}}}")
            last = f"{name}.text"
    return "name: pipelining\ninputs: {text: str}\nstages:\n" + "\n".join(stages) + "\n"


def scenarios(ms: float, matmul_ms: float, size: int) -> dict[str, tuple[str, str]]:
    slow = "uses: test.slow, inputs: {text: INPUT}, with: {seconds_per_item: %s, device: %s}, batch_size: 16"
    out = {"sleep": (slow % (ms / 1000, "cpu"), slow % (ms / 1000, "any"))}
    if matmul_ms:
        out["torch"] = (
            f"uses: bench.busy_python, inputs: {{text: INPUT}}, with: {{ms_per_item: {ms}}}",
            f"uses: bench.torch_matmul, inputs: {{text: INPUT}}, "
            f"with: {{ms_per_item: {ms}, matmul_ms: {matmul_ms:.4f}, size: {size}}}",
        )
    return out


def calibrate(size: int) -> float:
    """Milliseconds of one `size` x `size` matmul on one torch thread (0.0 without torch)."""
    try:
        import torch
    except ImportError:
        return 0.0
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(20):
        torch.mm(a, b)
    blocks, count = [], 10
    for _ in range(7):  # the median of 7 blocks: one noisy block (a shared machine) does not set it
        started = time.perf_counter()
        for _ in range(count):
            torch.mm(a, b)
        blocks.append((time.perf_counter() - started) / count * 1000)
    return statistics.median(blocks)


@contextmanager
def engine_switch_interval(seconds: float | None) -> Iterator[None]:
    """Run the engine under `seconds` instead of its own run switch interval (None: its own)."""
    import aigc_pipeline.engine as engine_module

    if seconds is None:
        yield
        return
    if not hasattr(engine_module, "RUN_SWITCH_INTERVAL"):
        raise SystemExit("--compare-interval: this engine has no RUN_SWITCH_INTERVAL to override")
    previous = engine_module.RUN_SWITCH_INTERVAL
    engine_module.RUN_SWITCH_INTERVAL = seconds
    try:
        yield
    finally:
        engine_module.RUN_SWITCH_INTERVAL = previous


def timed_run(
    engine: Any, text: str, rows_path: Path, work: Path, label: str, interval: float | None = None
) -> dict[str, Any]:
    graph = engine.load_text(text, "<bench>")
    out = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    options = {"cache": False} if "cache" in inspect.signature(engine.run).parameters else {}
    TorchMatmul.last = None
    gc.collect()
    with engine_switch_interval(interval):
        started = time.perf_counter()
        result = engine.run(graph, rows_path, out, **options)
        whole = time.perf_counter() - started
    statuses = {r.status for r in result.results}
    if statuses != {"done"}:
        raise SystemExit(f"{label}: not every row done: {statuses} ({result.summary.error})")
    sample: dict[str, Any] = {"in_engine": result.summary.seconds, "whole": whole}
    if TorchMatmul.last is not None:
        sample["b_clock"] = TorchMatmul.last.clock_report()
    return sample


def threads_reference(engine: Any, text: str, rows: int, interval: float) -> dict[str, Any]:
    """Both stages' work in two plain threads, no engine and no dependency between them, under the
    switch interval `interval`: the best overlap this machine allows right now (a shared 2-core
    machine may not give a second core)."""
    import threading

    graph = engine.load_text(text, "<bench>")
    stages = [graph.stage_class(sid)(graph.pipeline.params[sid]) for sid in ("a", "b")]
    for stage in stages:
        stage.load(None)

    def work(stage: Stage) -> None:
        for start in range(0, rows, 16):
            stage.process([StageItem(i, {"text": "x"}, (0, "s")) for i in range(start, min(rows, start + 16))])

    threads = [threading.Thread(target=work, args=(stage,)) for stage in stages]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        sys.setswitchinterval(previous)
    sample: dict[str, Any] = {"seconds": seconds}
    if isinstance(stages[1], TorchMatmul):
        sample["b_clock"] = stages[1].clock_report()
    return sample


def run_interval() -> float:
    """The switch interval the engine runs stages under (the process's own for an older engine)."""
    import aigc_pipeline.engine as engine_module

    return min(getattr(engine_module, "RUN_SWITCH_INTERVAL", 1.0), sys.getswitchinterval())


def measure(
    name: str, a: str, b: str, rows_path: Path, repeats: int, work: Path, rows: int, compare: list[float]
) -> dict[str, Any]:
    """Interleaved repeats of: a alone, b alone, a -> b, a -> b under each `compare` interval,
    then the plain-threads reference under the process's switch interval and under the engine's."""
    engine = fake_engine(BenchStages())
    both = pipeline(a, b)
    arms: dict[str, tuple[str, float | None]] = {
        "a_alone": (pipeline(a, None), None),
        "b_alone": (pipeline(None, b), None),
        "a_then_b": (both, None),
        **{f"a_then_b_at_{seconds * 1000:g}ms": (both, seconds) for seconds in compare},
    }
    references = {"threads_reference": sys.getswitchinterval(), "threads_reference_at_run_interval": run_interval()}
    for arm, (text, interval) in arms.items():  # untimed warm-up of each arm
        timed_run(engine, text, rows_path, work, f"{name}-{arm}-warmup", interval)
    samples: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    threads: dict[str, list[dict[str, Any]]] = {ref: [] for ref in references}
    for _ in range(repeats):
        for arm, (text, interval) in arms.items():
            samples[arm].append(timed_run(engine, text, rows_path, work, f"{name}-{arm}", interval))
        for ref, interval in references.items():
            threads[ref].append(threads_reference(engine, both, rows, interval))
    report: dict[str, Any] = {
        "samples": samples,
        "threads_reference_s": [t["seconds"] for t in threads["threads_reference"]],
        "threads_samples": threads,
        "intervals_s": {"process": references["threads_reference"], "engine_run": references[
            "threads_reference_at_run_interval"], "compare": compare},
    }
    reference = {ref: statistics.median(t["seconds"] for t in found) for ref, found in threads.items()}
    for figure in ("in_engine", "whole"):
        medians = {arm: statistics.median(s[figure] for s in samples[arm]) for arm in arms}
        slower = max(medians["a_alone"], medians["b_alone"])
        report[figure] = {
            "medians_s": medians,
            "spread_s": {arm: [min(s[figure] for s in found), max(s[figure] for s in found)]
                         for arm, found in samples.items()},
            "ratio_to_slower_alone": medians["a_then_b"] / slower,
            "ratio_to_sum": medians["a_then_b"] / (medians["a_alone"] + medians["b_alone"]),
            "ratio_to_threads_reference": medians["a_then_b"] / reference["threads_reference"],
            "compare_ratio_to_slower_alone": {arm: medians[arm] / slower for arm in arms if "_at_" in arm},
            "threads_ratio_to_slower_alone": {ref: seconds / slower for ref, seconds in reference.items()},
        }
    report["threads_median_s"] = reference
    clocks = {key: [s["b_clock"] for s in found if "b_clock" in s] for key, found in {**samples, **threads}.items()}
    for part in ("wall", "gil_wait", "core_wait"):
        report[f"b_{part}_ms_per_call"] = {
            key: statistics.median(c[f"{part}_ms_per_call"] for c in found) for key, found in clocks.items() if found
        }
    report["b_torch_threads"] = sorted({int(c["torch_threads"]) for found in clocks.values() for c in found})
    return report


def print_report(name: str, report: dict[str, Any]) -> None:
    figure = report["in_engine"]
    m = figure["medians_s"]
    threads = report["threads_median_s"]
    print(f"{name:6} a alone {m['a_alone']:.3f}s  b alone {m['b_alone']:.3f}s  a->b {m['a_then_b']:.3f}s  "
          f"ratio to slower {figure['ratio_to_slower_alone']:.3f} (target <= {TARGET}), "
          f"to sum {figure['ratio_to_sum']:.3f}; whole run ratio {report['whole']['ratio_to_slower_alone']:.3f}")
    for arm, ratio in figure["compare_ratio_to_slower_alone"].items():
        print(f"       {arm}: {m[arm]:.3f}s, ratio to slower {ratio:.3f}")
    for ref, seconds in threads.items():
        print(f"       two plain threads ({ref}): {seconds:.3f}s, "
              f"ratio to slower {figure['threads_ratio_to_slower_alone'][ref]:.3f}")
    for key, wall in report["b_wall_ms_per_call"].items():
        print(f"       b's matmuls, {key}: {wall:.2f} ms per call, of which waiting for the GIL "
              f"{report['b_gil_wait_ms_per_call'][key]:.2f}, for a core {report['b_core_wait_ms_per_call'][key]:.2f}")
    if report["b_torch_threads"]:
        print(f"       torch threads in b's thread: {report['b_torch_threads']}")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "pydantic", "pluggy", "aigc-pipeline"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "aigc_pipeline"], cwd=REPO, capture_output=True,
                               text=True)
        return commit.stdout.strip() + (" (uncommitted changes in aigc_pipeline/)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ms-per-item", type=float, default=1.0, help="cost of each stage per row")
    parser.add_argument("--size", type=int, default=768, help="torch scenario: matrix size")
    parser.add_argument("--only", choices=["sleep", "torch"], help="run one scenario")
    parser.add_argument("--quick", action="store_true", help="256 rows, 3 repeats")
    parser.add_argument("--compare-interval", type=float, nargs="*", default=[0.005], metavar="SECONDS",
                        help="torch scenario: also a -> b with the engine's run switch interval set to each of "
                             "these (default 0.005: Python's default, the engine before it lowered it; none: skip)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--label", default="", help="result file pipelining-<date>-<label>.json")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 256, 3
    matmul_ms = calibrate(args.size) if args.only != "sleep" else 0.0
    work = Path(tempfile.mkdtemp(prefix="aigc-pipelining-"))
    rows_path = write_jsonl(work / "rows.jsonl", [{"text": f"row {i}"} for i in range(args.rows)])
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    for name, (a, b) in scenarios(args.ms_per_item, matmul_ms, args.size).items():
        if args.only and name != args.only:
            continue
        compare = args.compare_interval if name == "torch" else []
        results[name] = measure(name, a, b, rows_path, args.repeats, work, args.rows, compare)
        print_report(name, results[name])
    record = {
        "benchmark": "pipelining", "date": dt.date.today().isoformat(), "commit": git_commit(),
        "config": {"rows": args.rows, "repeats": args.repeats, "ms_per_item": args.ms_per_item, "size": args.size,
                   "matmul_ms": matmul_ms, "switch_interval_s": sys.getswitchinterval(),
                   "engine_run_switch_interval_s": run_interval(), "compare_intervals_s": args.compare_interval,
                   "batch_size": 16, "chunk": 16},
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before,
                    "loadavg": os.getloadavg()},
        "versions": versions(), "target": TARGET, "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + (f"-{args.label}" if args.label else "")
    path = args.out / f"pipelining-{record['date']}{suffix}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
