"""kill -9 at random moments of a product_copy run, then resume: the same results as a run never killed.

An uninterrupted run writes the reference `results.jsonl`. A second output folder is then run
again and again (`aigc run ...` without --fresh: a run over a folder resumes it) and killed with
SIGKILL at `--kills` random moments (seeded), then let finish. After each kill the folder's
results.jsonl must be absent (no run finished yet) or a complete earlier file, never a torn one.
At the end its results.jsonl must equal the reference byte for byte, hold every row exactly once,
and its run store as many stored results as the reference's.

    .venv/bin/python benchmarks/kill_resume.py --rows 1000000 --kills 3

Results: stdout and `results/kill-resume-<date>[-<tag>].json`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_state  # noqa: E402
from scale import engine_command, make_rows  # noqa: E402


def run_until(command: list[str], log: Path, kill_after: float | None) -> dict[str, Any]:
    """Run `command`; with `kill_after`, SIGKILL it then (unless it ended before): what happened."""
    started = time.perf_counter()
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=kill_after)
            killed = False
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            code, killed = process.wait(), True
    return {"seconds": round(time.perf_counter() - started, 1), "killed": killed, "exit": code}


def results_state(out: Path) -> dict[str, Any]:
    """results.jsonl after a kill: absent, or complete (every line a JSON object, rows 0..n-1 once)."""
    path = out / "results.jsonl"
    if not path.exists():
        return {"results_file": "absent"}
    rows = check_rows(path)
    return {"results_file": "complete" if rows["complete"] else "TORN", "lines": rows["lines"]}


def check_rows(path: Path) -> dict[str, Any]:
    """Lines, distinct rows, duplicates, and whether the rows are exactly 0..n-1 in order."""
    seen: set[int] = set()
    lines = duplicates = 0
    in_order = True
    with path.open(encoding="utf-8") as handle:
        for text in handle:
            try:
                row = json.loads(text)["row"]
            except (ValueError, KeyError, TypeError):
                return {"lines": lines + 1, "complete": False, "duplicates": duplicates, "in_order": False}
            duplicates += row in seen
            in_order = in_order and row == lines
            seen.add(row)
            lines += 1
    return {"lines": lines, "distinct_rows": len(seen), "duplicates": duplicates, "in_order": in_order,
            "complete": in_order and not duplicates}


def same_bytes(a: Path, b: Path, block: int = 1 << 20) -> bool:
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(block), right.read(block)
            if x != y:
                return False
            if not x:
                return True


def stored_results(out: Path) -> int:
    with sqlite3.connect(f"{(out / 'run.sqlite').resolve().as_uri()}?mode=ro", uri=True) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM results").fetchone()
    db.close()
    return int(count)


def killed_runs(data: Path, out: Path, kills: int, reference_s: float, rng: random.Random) -> list[dict[str, Any]]:
    """Run over `out` until it finishes, killing the first `kills` runs at random moments."""
    attempts: list[dict[str, Any]] = []
    while True:
        fresh = ["--fresh"] if not attempts else []
        command = [part for part in engine_command(data, out, []) if part != "--fresh"] + fresh
        kill_after = rng.uniform(0.05, 0.6) * reference_s if len(attempts) < kills else None
        attempt = run_until(command, out.parent / f"{out.name}.log", kill_after)
        attempt["kill_after_s"] = None if kill_after is None else round(kill_after, 1)
        attempt.update(results_state(out))
        attempts.append(attempt)
        print(f"  attempt {len(attempts)}: {attempt}", flush=True)
        if not attempt["killed"]:
            if attempt["exit"] != 0:
                raise SystemExit(f"the run failed ({attempt['exit']}); see {out}.log")
            return attempts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/aigc-kill-resume"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = args.work_dir / f"rows-{args.rows}.csv"
    if not data.exists():
        make_rows(data, args.rows)
    reference, resumed = args.work_dir / "reference", args.work_dir / "resumed"
    shutil.rmtree(resumed, ignore_errors=True)  # from nothing: a killed first run then leaves no results.jsonl
    load_start = os.getloadavg()
    first = run_until(engine_command(data, reference, []), args.work_dir / "reference.log", None)
    print(f"reference: {first}", flush=True)
    attempts = killed_runs(data, resumed, args.kills, first["seconds"], random.Random(args.seed))
    report = {"benchmark": "kill_resume", "date": date.today().isoformat(), "git": git_state(),
              "rows": args.rows, "seed": args.seed, "load_avg": [load_start, os.getloadavg()],
              "reference": first, "attempts": attempts,
              "identical_bytes": same_bytes(reference / "results.jsonl", resumed / "results.jsonl"),
              "rows_check": check_rows(resumed / "results.jsonl"),
              "stored_results": {"reference": stored_results(reference), "resumed": stored_results(resumed)}}
    print(json.dumps({k: report[k] for k in ("identical_bytes", "rows_check", "stored_results")}), flush=True)
    name = f"kill-resume-{report['date']}{'-' + args.tag if args.tag else ''}.json"
    path = Path(__file__).resolve().parent / "results" / name
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
