"""Run history: every run over one output folder keeps its manifest, so a re-run erases nothing.

Each run has an id (`20261203T081502-3f9a`: its UTC start, then 4 random hex digits) and writes its
manifest twice, when it starts and when it ends: `out/manifest.json` (the latest run) and
`out/runs/<run id>/manifest.json` (kept). `aigc history OUT` lists the kept runs.

Each stage of a finished run says what this run made and what it reused (`made_now`, `reused`)
and which runs made the results it holds in the store (`made_by`: run id -> results). A stored
result carries the time it was committed; the run whose start and end enclose that time made it
("unknown" for results older than the history, e.g. from before this version).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .sinks import write_atomic

RUNS_DIR = "runs"
MANIFEST_FILE = "manifest.json"
STORE_FILE = "run.sqlite"  # store.STORE_FILE; read here without the store's writer (no lock taken)
UNKNOWN = "unknown"


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time and never collides in one folder."""
    started = now or datetime.now(UTC)
    return f"{started:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def keep_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the run's copy of its manifest under runs/<run id>/."""
    run_id = manifest.get("run_id")
    if isinstance(run_id, str) and run_id:
        path = out_dir / RUNS_DIR / run_id / MANIFEST_FILE
        write_atomic(path, [json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"])


def list_runs(out_dir: Path) -> list[dict[str, Any]]:
    """The kept manifests of every run in `out_dir`, oldest first (unreadable ones left out)."""
    runs = []
    for path in sorted((out_dir / RUNS_DIR).glob(f"*/{MANIFEST_FILE}")):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict):
            runs.append(manifest)
    return sorted(runs, key=lambda m: str(m.get("started_at") or ""))


def add_made_by(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ended run's manifest with, per stage, `made_now`, `reused` and `made_by` (see above)."""
    windows = _windows([*(m for m in list_runs(out_dir) if m.get("run_id") != manifest.get("run_id")), manifest])
    made_by = _made_by(out_dir, windows)
    stages = {}
    for sid, stats in (manifest.get("stages") or {}).items():
        ran = stats.get("done", 0) + stats.get("filtered", 0) + stats.get("failed", 0)
        stages[sid] = {**stats, "made_now": ran - stats.get("cached", 0), "reused": stats.get("cached", 0),
                       "made_by": made_by.get(sid, {})}
    return {**manifest, "stages": stages}


def _windows(manifests: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(run id, start, end) per run; a run killed before its end lasted until the next one started."""
    ordered = sorted(manifests, key=lambda m: _time(m.get("started_at")))
    windows = []
    for number, manifest in enumerate(ordered):
        end = _time(manifest.get("ended_at")) + 0.001 if manifest.get("ended_at") else 0.0  # ms-truncated
        if not end:
            end = _time(ordered[number + 1].get("started_at")) if number + 1 < len(ordered) else float("inf")
        windows.append((str(manifest.get("run_id") or UNKNOWN), _time(manifest.get("started_at")), end))
    return windows


def _made_by(out_dir: Path, windows: list[tuple[str, float, float]]) -> dict[str, dict[str, int]]:
    """Per stage, how many stored results each run made: a result goes to the first window (in
    `windows` order) that encloses the time it was committed, else to "unknown" (empty without a
    store). Counted by SQLite: a million-row store is never read into memory."""
    path = out_dir / STORE_FILE
    if not path.exists():
        return {}
    cases = " ".join("WHEN at BETWEEN ? AND ? THEN ?" for _ in windows)
    which = f"CASE {cases} ELSE -1 END" if windows else "-1"
    query = f"SELECT stage, {which} AS run, COUNT(*) FROM results GROUP BY stage, run"  # noqa: S608 (? marks)
    values = [value for number, (_, start, end) in enumerate(windows) for value in (start, end, number)]
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as db:
            counted = db.execute(query, values).fetchall()
    except sqlite3.Error:
        return {}
    made_by: dict[str, dict[str, int]] = {}
    for stage, number, count in counted:
        run = windows[number][0] if number >= 0 else UNKNOWN
        made_by.setdefault(stage, {})[run] = made_by.get(stage, {}).get(run, 0) + count
    return made_by


def _time(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def history_rows(out_dir: Path) -> list[dict[str, Any]]:
    """One summary per kept run, oldest first: what `aigc history` prints."""
    rows = []
    for manifest in list_runs(out_dir):
        stages = manifest.get("stages") or {}
        rows.append({
            "run_id": manifest.get("run_id"), "status": manifest.get("status"),
            "started_at": manifest.get("started_at"), "seconds": manifest.get("seconds"),
            "rows": (manifest.get("input") or {}).get("rows"), "counts": manifest.get("counts") or {},
            "made_now": sum(s.get("made_now", 0) for s in stages.values()),
            "reused": sum(s.get("reused", 0) for s in stages.values()),
            "loads": sum(s.get("loads", 0) for s in stages.values()),
        })
    return rows
