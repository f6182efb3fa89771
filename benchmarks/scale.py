"""Dataset scale: `aigc run pipelines/product_copy.yaml` against the loop a user would write.

Both arms are whole processes over the same generated product rows (CSV): the engine's CLI
(`aigc run ... -q --fresh`) and `product_copy_loop.py` (Jinja2's immutable sandbox, csv, json).
Arms are interleaved (loop, engine, loop, engine, ...); each sample records wall seconds, CPU
seconds (user + system, from wait4) and the peak RSS of the process (ru_maxrss).

    .venv/bin/python benchmarks/scale.py                          # 10k and 100k rows, 3 repeats
    .venv/bin/python benchmarks/scale.py --rows 1000000 --repeats 1
    .venv/bin/python benchmarks/scale.py --rows 10000000 --engine-only --repeats 1   # memory at scale

Results: stdout and `results/scale-<date>[-<tag>].json`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, git_state, package_versions, spread  # noqa: E402

PIPELINE = REPO / "pipelines" / "product_copy.yaml"
LOOP = Path(__file__).resolve().parent / "product_copy_loop.py"
NOUNS = ["Lamp", "Backpack", "Kettle", "Headphones", "Desk", "Bottle", "Jacket", "Speaker", "Mug", "Tent"]
BRANDS = ["Aurora", "Trail", "Nimbus", "Cedar", "Pulse", "Vector", "Harbor", "Summit"]
AUDIENCES = ["students", "weekend hikers", "home cooks", "remote workers", "new parents", "runners"]
FEATURES = ["waterproof", "USB-C", "dimmable", "350 g", "recycled fabric", "quiet", "guaranteed fresh",
            "two-year warranty", "fits in a pocket", "dishwasher safe", "a miracle of design", "solar"]


def make_rows(path: Path, count: int, seed: int = 1234) -> None:
    """Deterministic product rows; some copy runs long or hits the blocklist (filtered)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("product,audience,features,price\n")
        for number in range(count):
            product = f"{rng.choice(BRANDS)} {rng.choice(NOUNS)} {number % 97}"
            features = "|".join(rng.sample(FEATURES, rng.randint(1, 6)))
            handle.write(f"{product},{rng.choice(AUDIENCES)},{features},{rng.randint(199, 99999) / 100:.2f}\n")


def timed(command: list[str], log: Path, pythonpath: Path | None = None) -> dict[str, float]:
    """Run a whole process; wall seconds, CPU seconds and peak RSS (MiB) from wait4. `pythonpath`:
    import aigc_pipeline from there (a baseline tree), not from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath is not None else None
    started = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed ({status}); see {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


def engine_command(rows: Path, out: Path, extra: list[str]) -> list[str]:
    aigc = Path(sys.executable).parent / "aigc"
    return [str(aigc), "run", str(PIPELINE), "-i", str(rows), "-o", str(out), "-q", "--fresh", *extra]


def same_results(engine_out: Path, loop_out: Path) -> bool:
    """The engine's and the loop's results agree line by line (status and outputs)."""
    with (engine_out / "results.jsonl").open(encoding="utf-8") as a, loop_out.open(encoding="utf-8") as b:
        for left, right in zip(a, b, strict=True):
            x, y = json.loads(left), json.loads(right)
            if x["status"] != y["status"] or (x["status"] == "done" and x["outputs"] != y["outputs"]):
                return False
    return True


def bench(rows: int, repeats: int, work: Path, engine_only: bool, extra: list[str],
          baseline: Path | None = None) -> dict[str, Any]:
    data = work / f"rows-{rows}.csv"
    if not data.exists():
        make_rows(data, rows)
    samples: dict[str, list[dict[str, float]]] = {"loop": [], "engine": []}
    if baseline is not None:
        samples["baseline"] = []
    for repeat in range(repeats):
        if not engine_only:
            samples["loop"].append(timed([sys.executable, str(LOOP), str(data), str(work / "loop.jsonl")],
                                         work / "loop.log"))
        if baseline is not None:
            shutil.rmtree(work / "baseline-out", ignore_errors=True)
            samples["baseline"].append(timed(engine_command(data, work / "baseline-out", extra),
                                             work / "baseline.log", baseline))
        shutil.rmtree(work / "engine-out", ignore_errors=True)
        samples["engine"].append(timed(engine_command(data, work / "engine-out", extra), work / "engine.log"))
        print(f"  {rows:,} rows, repeat {repeat + 1}: " + "; ".join(
            f"{arm} {s[-1]['wall_s']:.2f} s, {s[-1]['peak_rss_mib']:.0f} MiB" for arm, s in samples.items() if s),
            flush=True)
    result: dict[str, Any] = {"rows": rows, "load_avg": os.getloadavg()}
    for arm, runs in samples.items():
        if runs:
            result[arm] = {key: spread([run[key] for run in runs]) for key in runs[0]}
    if not engine_only:
        result["engine_speed_vs_loop"] = result["loop"]["wall_s"]["median"] / result["engine"]["wall_s"]["median"]
        result["same_results"] = same_results(work / "engine-out", work / "loop.jsonl")
    if baseline is not None:  # the same engine command from an older tree: this tree's speed-up over it
        result["engine_speed_vs_baseline"] = (result["baseline"]["wall_s"]["median"]
                                              / result["engine"]["wall_s"]["median"])
        result["engine_cpu_vs_baseline"] = result["engine"]["cpu_s"]["median"] / result["baseline"]["cpu_s"]["median"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine-only", action="store_true", help="no loop arm (memory at 10M rows)")
    parser.add_argument("--engine-arg", action="append", default=[], help="passed on to `aigc run`")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/aigc-scale"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a third arm: the engine imported from this tree (e.g. `git archive OLD | tar -x -C DIR`)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "scale", "date": date.today().isoformat(), "git": git_state(),
                              "versions": package_versions(["jinja2", "pydantic", "pyarrow"]),
                              "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "runs": [],
                              "baseline": str(args.baseline) if args.baseline else None}
    for rows in args.rows:
        report["runs"].append(bench(rows, args.repeats, args.work_dir, args.engine_only, args.engine_arg,
                                    args.baseline))
        run = report["runs"][-1]
        line = f"{rows:,} rows: engine {run['engine']['wall_s']['median']:.2f} s, " \
               f"{run['engine']['peak_rss_mib']['median']:.0f} MiB"
        if "loop" in run:
            loop = run["loop"]
            line += f"; loop {loop['wall_s']['median']:.2f} s, {loop['peak_rss_mib']['median']:.0f} MiB;" \
                    f" engine speed {run['engine_speed_vs_loop']:.2f}x the loop's; same results: {run['same_results']}"
        if "baseline" in run:
            line += f"; baseline {run['baseline']['wall_s']['median']:.2f} s: this engine " \
                    f"{run['engine_speed_vs_baseline']:.2f}x its speed, {run['engine_cpu_vs_baseline']:.2f}x its CPU"
        print(line, flush=True)
    report["load_avg_end"] = os.getloadavg()
    name = f"scale-{report['date']}{'-' + args.tag if args.tag else ''}.json"
    out = args.out or Path(__file__).resolve().parent / "results" / name
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {out}; load average {report['load_avg_start']} -> {report['load_avg_end']}")


if __name__ == "__main__":
    main()
