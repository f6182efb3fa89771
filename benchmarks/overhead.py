"""No-op stage overhead: aigc-pipeline's engine against Haystack's `Pipeline.run`, in the same run.

Both arms do the same work: 5 chained no-op stages (one input, one output) over the same rows.

- engine:   a pipeline file of 5 `test.noop` stages (`aigc_pipeline.testing.NoopStage`, default
            batch 1024), `engine.run(graph, input.jsonl, out_dir)`. Two figures:
            *whole run* = the `engine.run` call (reads and checks the input JSONL, runs the stages,
            writes results.jsonl with fsync), and *in-engine* = `result.summary.seconds` (executing
            the stages: from the first stage call to the last row marked done).
- haystack: 5 chained no-op `@component`s, `Pipeline.run({"s1": {"value": v}})` once per row, the
            outputs collected into a list (no file reading or writing).

Figures are per item-stage (one row through one stage): seconds / (rows x stages).
Arms are interleaved (engine, haystack, engine, haystack, ...) after one untimed warm-up of each,
and we report medians, the ratio of medians and the spread (min..max), as
../shared/BENCHMARKING.md asks. CPU time (all threads of this process) is reported beside wall
time, because the shared 2-core machines are noisy.

Haystack is NOT a dependency of the package. Install it into a separate virtual environment that
also has the package (editable) and run the benchmark with that environment's Python:

    python3 -m venv benchmarks/.venv-bench
    benchmarks/.venv-bench/bin/pip install -e '.[bench]' 'haystack-ai==3.4.0' \\
        pydantic==2.14.3 pluggy==1.7.0      # same pydantic/pluggy as .venv, so the engine is alike
    benchmarks/.venv-bench/bin/python benchmarks/overhead.py            # 100,000 rows, 3 repeats
    benchmarks/.venv-bench/bin/python benchmarks/overhead.py --quick    # 10,000 / 2,000 rows

(haystack-ai 3.4.1 needs certifi>=2026.10.19, which the index here lacks; 3.4.0 installs.)
Results go to stdout and to benchmarks/results/overhead-<date>[-quick].json.
`--profile` adds one untimed engine run under cProfile (main thread and every stage thread) and
prints the top costs.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import GcTimer, git_state, import_seconds, machine, package_versions, spread

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # before haystack is imported: no posthog calls

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 1234
INSTALL_HINT = (
    "haystack-ai is not importable from this Python. It is installed only for the benchmark, e.g.:\n"
    "  python3 -m venv benchmarks/.venv-bench\n"
    "  benchmarks/.venv-bench/bin/pip install -e '.[bench]' 'haystack-ai==3.4.0' pydantic==2.14.3 pluggy==1.7.0\n"
    "  benchmarks/.venv-bench/bin/python benchmarks/overhead.py\n"
    "(or pass --engine-only)"
)


# ---------------------------------------------------------------------------------------------
# inputs


def make_values(rows: int, seed: int = SEED) -> list[int]:
    """Deterministic row values (a seeded generator); both arms use the same ones."""
    rng = random.Random(seed)
    return [rng.randrange(1_000_000) for _ in range(rows)]


def pipeline_yaml(stages: int, store: bool = False) -> str:
    """No-op stages do not use the run store (recomputing is cheaper); `store` makes them use it."""
    lines = ["name: noop_overhead", "inputs: {value: int}", "stages:"]
    previous = "inputs.value"
    extra = ", with: {store: true}" if store else ""
    for n in range(1, stages + 1):
        lines.append(f"  s{n}: {{uses: test.noop, inputs: {{value: {previous}}}{extra}}}")
        previous = f"s{n}.value"
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# measuring


def _prepare() -> None:
    """Same starting state for every timed run: no garbage left by the previous one."""
    gc.collect()


# ---------------------------------------------------------------------------------------------
# engine arm


class EngineArm:
    def __init__(self, stages: int, work: Path, values: list[int], store: bool = False) -> None:
        from aigc_pipeline import Engine
        from aigc_pipeline.testing import FakeStages

        self.stages = stages
        self.engine = Engine()
        self.engine.register(FakeStages(), name="fakes")
        started = time.perf_counter()
        self.graph = self.engine.load_text(pipeline_yaml(stages, store), "<overhead benchmark>")
        self.load_seconds = time.perf_counter() - started
        self.work = work
        self.inputs: dict[int, Path] = {}
        self.values = values

    def input_file(self, rows: int) -> Path:
        if rows not in self.inputs:
            path = self.work / f"input-{rows}.jsonl"
            path.write_text("".join(f'{{"value": {v}}}\n' for v in self.values[:rows]), encoding="utf-8")
            self.inputs[rows] = path
        return self.inputs[rows]

    def run(self, rows: int) -> dict[str, Any]:
        input_path = self.input_file(rows)
        out_dir = self.work / "out"
        _prepare()
        with GcTimer() as gct:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = self.engine.run(self.graph, input_path, out_dir, fresh=True)  # a first run, every repeat
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        summary = result.summary
        self._check(result, rows)
        item_stages = rows * self.stages
        record = {
            "rows": rows,
            "run_s": wall,
            "in_engine_s": summary.seconds,
            "cpu_s": cpu,
            "run_us_per_item_stage": wall / item_stages * 1e6,
            "in_engine_us_per_item_stage": summary.seconds / item_stages * 1e6,
            "cpu_us_per_item_stage": cpu / item_stages * 1e6,
            "gc_s": gct.seconds,
            "gc_collections": gct.collections,
            "stage_seconds": {sid: round(st.seconds, 4) for sid, st in summary.stages.items()},
            "stage_batches": {sid: st.batches for sid, st in summary.stages.items()},
        }
        del result
        return record

    def _check(self, result: Any, rows: int) -> None:
        summary = result.summary
        if summary.error or summary.counts.get("done") != rows:
            raise SystemExit(f"engine run went wrong: error={summary.error!r} counts={summary.counts}")
        last = f"s{self.stages}.value"
        for index in (0, rows // 2, rows - 1):
            got = result.results[index].outputs.get(last)
            if got != self.values[index]:
                raise SystemExit(f"engine row {index}: expected {self.values[index]}, got {got!r}")
        with result.results_path.open("rb") as handle:
            lines = sum(1 for _ in handle)
        if lines != rows:
            raise SystemExit(f"results.jsonl has {lines} lines, expected {rows}")

    def profile(self, rows: int, top: int) -> dict[str, str]:
        """One untimed run under cProfile: the calling thread, and each stage thread separately.

        The stage threads are profiled by wrapping `_Flow.run_stage` here, in the benchmark (the
        package is not changed). cProfile slows pure-Python code about 2x and time a thread spends
        waiting for the GIL shows up under lock calls: read the ranking, not the absolute times.
        """
        from aigc_pipeline.executors import local

        thread_profiles: list[cProfile.Profile] = []
        original = local._Flow.run_stage

        def profiled_run_stage(flow: Any, stage_id: str) -> None:
            profiler = cProfile.Profile()
            thread_profiles.append(profiler)
            profiler.enable()
            try:
                original(flow, stage_id)
            finally:
                profiler.disable()

        input_path = self.input_file(rows)
        main = cProfile.Profile()
        local._Flow.run_stage = profiled_run_stage  # type: ignore[method-assign,assignment]
        try:
            _prepare()
            main.enable()
            self.engine.run(self.graph, input_path, self.work / "out-profile")
            main.disable()
        finally:
            local._Flow.run_stage = original  # type: ignore[method-assign]
        texts = {"main_thread": _top(pstats.Stats(main), top)}
        merged = pstats.Stats(thread_profiles[0])
        for profiler in thread_profiles[1:]:
            merged.add(profiler)
        texts["stage_threads"] = _top(merged, top)
        return texts


def _top(stats: pstats.Stats, top: int) -> str:
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in buffer.getvalue().splitlines() if line.strip())


# ---------------------------------------------------------------------------------------------
# haystack arm


class HaystackArm:
    def __init__(self, stages: int, values: list[int]) -> None:
        from haystack import Pipeline, component

        @component
        class Noop:
            """One input socket, one output socket, returns its input."""

            @component.output_types(value=int)
            def run(self, value: int) -> dict[str, int]:
                return {"value": value}

        self.stages = stages
        self.values = values
        started = time.perf_counter()
        self.pipeline = Pipeline()
        for n in range(1, stages + 1):
            self.pipeline.add_component(f"s{n}", Noop())
        for n in range(1, stages):
            self.pipeline.connect(f"s{n}.value", f"s{n + 1}.value")
        self.build_seconds = time.perf_counter() - started
        self.last = f"s{stages}"

    def run(self, rows: int) -> dict[str, Any]:
        pipeline_run, last = self.pipeline.run, self.last
        values = self.values[:rows]
        _prepare()
        with GcTimer() as gct:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            outputs = [pipeline_run({"s1": {"value": value}})[last]["value"] for value in values]
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if outputs != values:
            raise SystemExit("haystack outputs differ from the inputs")
        item_stages = rows * self.stages
        return {
            "rows": rows,
            "run_s": wall,
            "cpu_s": cpu,
            "run_us_per_item_stage": wall / item_stages * 1e6,
            "cpu_us_per_item_stage": cpu / item_stages * 1e6,
            "gc_s": gct.seconds,
            "gc_collections": gct.collections,
        }


# ---------------------------------------------------------------------------------------------
# reporting


def versions() -> dict[str, str | None]:
    return package_versions(["aigc-pipeline", "pydantic", "pydantic-core", "pluggy", "networkx", "haystack-ai"])


def import_module_seconds(module: str) -> float | None:
    return import_seconds(f"import {module}", env={"HAYSTACK_TELEMETRY_ENABLED": "False"})


def fmt(value: float, unit: str = "") -> str:
    return f"{value:.2f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def print_report(report: dict[str, Any]) -> None:
    cfg, res = report["config"], report["results"]
    print()
    print(f"no-op overhead: {cfg['stages']} stages; engine {cfg['rows']:,} rows, "
          f"haystack {cfg['haystack_rows']:,} rows; {cfg['repeats']} interleaved repeats; "
          "medians (min..max), per item-stage")
    print(f"{'arm':<44} {'us/item-stage':>22} {'item-stages/s':>14} {'CPU us/item-stage':>22}")

    def line(label: str, wall: dict[str, float], cpu: dict[str, float] | None) -> None:
        rate = 1e6 / wall["median"]
        wall_text = f"{fmt(wall['median'])} ({fmt(wall['min'])}..{fmt(wall['max'])})"
        cpu_text = f"{fmt(cpu['median'])} ({fmt(cpu['min'])}..{fmt(cpu['max'])})" if cpu else "-"
        print(f"{label:<44} {wall_text:>22} {rate:>14,.0f} {cpu_text:>22}")

    line("engine, in-engine (summary.seconds)", res["engine_in_engine_us"], None)
    line("engine, whole engine.run (read+run+write)", res["engine_run_us"], res["engine_cpu_us"])
    if "haystack_us" in res:
        line("haystack Pipeline.run, one row at a time", res["haystack_us"], res["haystack_cpu_us"])
        r = res["ratios"]
        print()
        for key, label in (("in_engine", "in-engine"), ("whole_run", "whole run"), ("cpu", "CPU time")):
            ratio = r[key]
            print(f"haystack / engine, {label + ':':<11} {ratio['median']:.1f}x of medians "
                  f"(per pair {ratio['min']:.1f}..{ratio['max']:.1f})")
        target = report["target"]
        print(f"target >= {target['ratio']}x: in-engine {'met' if target['met_in_engine'] else 'MISSED'}, "
              f"whole run {'met' if target['met_whole_run'] else 'MISSED'}")
    gate = res["engine_in_engine_us"]["median"]
    print(f"gate (BENCHMARKING.md) no-op overhead <= 10 us per row per stage: in-engine {gate:.2f} us -> "
          f"{'met' if gate <= 10 else 'MISSED'}")
    gc_share = statistics.median(run["gc_s"] / run["run_s"] for run in report["runs"]["engine"])
    print(f"engine GC pauses: median {gc_share * 100:.0f}% of the whole run")
    print(f"setup (untimed): engine load_text {report['setup']['engine_load_text_s'] * 1e3:.1f} ms"
          + (f", haystack pipeline build {report['setup']['haystack_build_s'] * 1e3:.1f} ms"
             if "haystack_build_s" in report["setup"] else "")
          + "; fresh-process import: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in report["setup"]["import_s"].items() if v is not None))
    print(f"load average before/after: {report['load_average']['before']} / {report['load_average']['after']}")


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="engine rows (default 100000; --quick: 10000)")
    parser.add_argument("--haystack-rows", type=int, default=None,
                        help="haystack rows, the first N of the same rows (default: --rows; --quick: 2000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per arm, interleaved (default 3)")
    parser.add_argument("--stages", type=int, default=5, help="chained no-op stages (default 5)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: 10000 / 2000 rows, 3 repeats")
    parser.add_argument("--engine-only", action="store_true", help="skip the haystack arm")
    parser.add_argument("--store", action="store_true",
                        help="no-op stages keep their results in the run store (measures the store's cost)")
    parser.add_argument("--profile", action="store_true", help="also one untimed engine run under cProfile")
    parser.add_argument("--top", type=int, default=15, help="profile lines per table (default 15)")
    parser.add_argument("--target", type=float, default=20.0, help="ratio to meet (default 20)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where input/output files go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default benchmarks/results/overhead-<date>[-quick].json)")
    args = parser.parse_args(argv)
    args.rows = args.rows or (10_000 if args.quick else 100_000)
    args.haystack_rows = min(args.haystack_rows or (2_000 if args.quick else args.rows), args.rows)
    args.repeats = args.repeats or 3
    if args.rows < 1 or args.haystack_rows < 1 or args.repeats < 1 or args.stages < 1:
        parser.error("--rows, --haystack-rows, --repeats and --stages must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    date = dt.datetime.now(dt.UTC)
    if not args.engine_only:
        try:
            import haystack  # noqa: F401  (only to check that it is installed)
        except ImportError:
            print(INSTALL_HINT, file=sys.stderr)
            return 2
    load_before = os.getloadavg()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="aigc-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    values = make_values(args.rows)
    try:
        engine = EngineArm(args.stages, work, values, args.store)
        hs_arm = None if args.engine_only else HaystackArm(args.stages, values)
        # untimed warm-up of each arm (imports, first-call caches)
        engine.run(min(args.rows, 2_000))
        if hs_arm:
            hs_arm.run(min(args.haystack_rows, 200))
        runs: dict[str, list[dict[str, Any]]] = {"engine": [], "haystack": []}
        for repeat in range(args.repeats):
            record = engine.run(args.rows)
            runs["engine"].append(record)
            print(f"[{repeat + 1}/{args.repeats}] engine   {args.rows:>7,} rows: run {record['run_s']:.3f} s, "
                  f"in-engine {record['in_engine_s']:.3f} s, CPU {record['cpu_s']:.3f} s, GC {record['gc_s']:.3f} s",
                  flush=True)
            if hs_arm:
                record = hs_arm.run(args.haystack_rows)
                runs["haystack"].append(record)
                print(f"[{repeat + 1}/{args.repeats}] haystack {args.haystack_rows:>7,} rows: "
                      f"run {record['run_s']:.3f} s, CPU {record['cpu_s']:.3f} s, GC {record['gc_s']:.3f} s",
                      flush=True)
        profile = engine.profile(args.rows, args.top) if args.profile else None
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    results: dict[str, Any] = {
        "engine_in_engine_us": spread([r["in_engine_us_per_item_stage"] for r in runs["engine"]]),
        "engine_run_us": spread([r["run_us_per_item_stage"] for r in runs["engine"]]),
        "engine_cpu_us": spread([r["cpu_us_per_item_stage"] for r in runs["engine"]]),
    }
    report: dict[str, Any] = {
        "benchmark": "noop-overhead",
        "date": date.isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),  # no machine paths
        "config": {"stages": args.stages, "rows": args.rows,
                   "haystack_rows": 0 if args.engine_only else args.haystack_rows,
                   "repeats": args.repeats, "seed": SEED, "engine_batch_size": 1024, "warm_up": True,
                   "interleaved": "engine, haystack, engine, haystack, ..."},
        "versions": versions(),
        "git": git_state(untracked=False),
        "machine": machine(),
        "gc_threshold": gc.get_threshold(),
        "setup": {"engine_load_text_s": engine.load_seconds,
                  "import_s": {"aigc_pipeline": import_module_seconds("aigc_pipeline")}},
        "results": results,
        "runs": runs,
    }
    if hs_arm:
        hs = [r["run_us_per_item_stage"] for r in runs["haystack"]]
        hs_cpu = [r["cpu_us_per_item_stage"] for r in runs["haystack"]]
        results["haystack_us"] = spread(hs)
        results["haystack_cpu_us"] = spread(hs_cpu)
        in_engine = [r["in_engine_us_per_item_stage"] for r in runs["engine"]]
        whole = [r["run_us_per_item_stage"] for r in runs["engine"]]
        cpu = [r["cpu_us_per_item_stage"] for r in runs["engine"]]
        results["ratios"] = {
            # ratio of medians; min/max over the adjacent (engine_i, haystack_i) pairs
            "in_engine": {"median": results["haystack_us"]["median"] / results["engine_in_engine_us"]["median"],
                          **_pair_range(hs, in_engine)},
            "whole_run": {"median": results["haystack_us"]["median"] / results["engine_run_us"]["median"],
                          **_pair_range(hs, whole)},
            "cpu": {"median": results["haystack_cpu_us"]["median"] / results["engine_cpu_us"]["median"],
                    **_pair_range(hs_cpu, cpu)},
        }
        report["target"] = {"ratio": args.target,
                            "met_in_engine": results["ratios"]["in_engine"]["median"] >= args.target,
                            "met_whole_run": results["ratios"]["whole_run"]["median"] >= args.target}
        report["setup"]["haystack_build_s"] = hs_arm.build_seconds
        report["setup"]["import_s"]["haystack"] = import_module_seconds("haystack")
        report["haystack"] = {"telemetry": os.environ.get("HAYSTACK_TELEMETRY_ENABLED"),
                              "component": "@component Noop: run(value: int) -> {'value': value}",
                              "call": "Pipeline.run({'s1': {'value': v}}) per row"}
    if profile:
        report["profile"] = profile
    report["load_average"] = {"before": [round(x, 2) for x in load_before],
                              "after": [round(x, 2) for x in os.getloadavg()]}
    report["total_seconds"] = time.perf_counter() - started

    print_report(report)
    if profile:
        print("\nprofile, engine main thread (read rows, collect, write results), by own time:")
        print(profile["main_thread"])
        print(f"\nprofile, the {args.stages} stage threads together, by own time:")
        print(profile["stage_threads"])
    out = args.out or HERE / "results" / f"overhead-{date.date().isoformat()}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out}")
    return 0


def _pair_range(haystack_us: list[float], engine_us: list[float]) -> dict[str, Any]:
    pairs = [h / e for h, e in zip(haystack_us, engine_us, strict=True)]
    return {"min": min(pairs), "max": max(pairs), "pairs": pairs}


if __name__ == "__main__":
    sys.exit(main())
