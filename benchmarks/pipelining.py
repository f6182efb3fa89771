"""Pipelining on the CPU: two stages that do not compete for one resource overlap.

Gate (../shared/BENCHMARKING.md): "two stages that do not compete for the same resource:
wall <= 1.15x the slower stage alone". Each scenario has a CPU stage `a` and a "model" stage `b`
of similar cost, chained `a -> b`, run three ways over the same rows, interleaved:

    a alone, b alone, a -> b          (then again, --repeats times)

and reports ratio = median(a -> b) / max(median(a alone), median(b alone)); 1.0 is perfect
overlap, 2.0 is none (the sum).

Scenarios:
- `sleep`:  both stages sleep per item (`test.slow`): the floor, pure engine scheduling.
- `torch`:  `a` is pure Python holding the GIL (a busy loop: templating/filtering-like work);
            `b` is a torch matmul loop on one thread (torch releases the GIL while it computes),
            standing in for a model stage. Needs 2 cores and torch; skipped without torch.

Time is `summary.seconds` (in-engine: first stage call to last row done) and the whole
`engine.run` (read input, run, write results). Rows are cut into chunks of 64 by the local
executor, so the overlap costs about one chunk of the slower stage.

    .venv/bin/python benchmarks/pipelining.py                 # 1024 rows, 5 repeats, both scenarios
    .venv/bin/python benchmarks/pipelining.py --quick         # 256 rows, 3 repeats
Results: stdout and benchmarks/results/pipelining-<date>[-quick].json.
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


class TorchMatmul(Stage):
    """A stand-in model stage: matmuls on one torch thread (the GIL is released while they compute)."""

    type_name = "bench.torch_matmul"
    Params = WorkParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 16

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

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        import torch

        p: WorkParams = self.params  # type: ignore[assignment]
        count = max(1, round(p.ms_per_item * len(batch) / p.matmul_ms))  # a few large calls per batch
        with torch.inference_mode():
            for _ in range(count):
                torch.mm(self.a, self.b)
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


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
    started, count = time.perf_counter(), 50
    for _ in range(count):
        torch.mm(a, b)
    return (time.perf_counter() - started) / count * 1000


def timed_run(engine: Any, text: str, rows_path: Path, work: Path, label: str) -> dict[str, float]:
    graph = engine.load_text(text, "<bench>")
    out = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    options = {"cache": False} if "cache" in inspect.signature(engine.run).parameters else {}
    gc.collect()
    started = time.perf_counter()
    result = engine.run(graph, rows_path, out, **options)
    whole = time.perf_counter() - started
    statuses = {r.status for r in result.results}
    if statuses != {"done"}:
        raise SystemExit(f"{label}: not every row done: {statuses} ({result.summary.error})")
    return {"in_engine": result.summary.seconds, "whole": whole}


def threads_reference(engine: Any, text: str, rows: int) -> float:
    """Both stages' work in two plain threads, no engine and no dependency between them: the best
    overlap this machine allows right now (a shared 2-core machine may not give a second core)."""
    import threading

    graph = engine.load_text(text, "<bench>")
    stages = [graph.stage_class(sid)(graph.pipeline.params[sid]) for sid in ("a", "b")]
    for stage in stages:
        stage.load(None)

    def work(stage: Stage) -> None:
        for start in range(0, rows, 16):
            stage.process([StageItem(i, {"text": "x"}, (0, "s")) for i in range(start, min(rows, start + 16))])

    threads = [threading.Thread(target=work, args=(stage,)) for stage in stages]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def measure(name: str, a: str, b: str, rows_path: Path, repeats: int, work: Path, rows: int) -> dict[str, Any]:
    engine = fake_engine(BenchStages())
    arms = {"a_alone": pipeline(a, None), "b_alone": pipeline(None, b), "a_then_b": pipeline(a, b)}
    for arm, text in arms.items():  # untimed warm-up of each arm
        timed_run(engine, text, rows_path, work, f"{name}-{arm}-warmup")
    samples: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    reference: list[float] = []
    for _ in range(repeats):
        for arm, text in arms.items():
            samples[arm].append(timed_run(engine, text, rows_path, work, f"{name}-{arm}"))
        reference.append(threads_reference(engine, arms["a_then_b"], rows))
    report: dict[str, Any] = {"samples": samples, "threads_reference_s": reference}
    for figure in ("in_engine", "whole"):
        medians = {arm: statistics.median(s[figure] for s in samples[arm]) for arm in arms}
        slower = max(medians["a_alone"], medians["b_alone"])
        report[figure] = {
            "medians_s": medians,
            "spread_s": {arm: [min(s[figure] for s in samples[arm]), max(s[figure] for s in samples[arm])]
                         for arm in arms},
            "ratio_to_slower_alone": medians["a_then_b"] / slower,
            "ratio_to_sum": medians["a_then_b"] / (medians["a_alone"] + medians["b_alone"]),
            "ratio_to_threads_reference": medians["a_then_b"] / statistics.median(reference),
        }
    return report


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
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 256, 3
    matmul_ms = calibrate(args.size) if args.only != "sleep" else 0.0
    work = Path(tempfile.mkdtemp(prefix="aigc-pipelining-"))
    rows_path = write_jsonl(work / "rows.jsonl", [{"text": f"row {i}"} for i in range(args.rows)])
    results: dict[str, Any] = {}
    for name, (a, b) in scenarios(args.ms_per_item, matmul_ms, args.size).items():
        if args.only and name != args.only:
            continue
        results[name] = measure(name, a, b, rows_path, args.repeats, work, args.rows)
        figure = results[name]["in_engine"]
        m = figure["medians_s"]
        print(f"{name:6} a alone {m['a_alone']:.3f}s  b alone {m['b_alone']:.3f}s  a->b {m['a_then_b']:.3f}s  "
              f"ratio to slower {figure['ratio_to_slower_alone']:.3f} (target <= {TARGET}), "
              f"to sum {figure['ratio_to_sum']:.3f}; "
              f"whole run ratio {results[name]['whole']['ratio_to_slower_alone']:.3f}; "
              f"two plain threads {statistics.median(results[name]['threads_reference_s']):.3f}s "
              f"(a->b / threads {figure['ratio_to_threads_reference']:.3f})")
    record = {
        "benchmark": "pipelining", "date": dt.date.today().isoformat(), "commit": git_commit(),
        "config": {"rows": args.rows, "repeats": args.repeats, "ms_per_item": args.ms_per_item, "size": args.size,
                   "matmul_ms": matmul_ms, "switch_interval_s": sys.getswitchinterval(), "batch_size": 16,
                   "chunk": 64},
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()},
        "versions": versions(), "target": TARGET, "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pipelining-{record['date']}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
