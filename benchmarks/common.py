"""Helpers every benchmark script shares: GC pause timing, spreads, versions, git state, machine."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class GcTimer:
    """Counts the garbage collector's pauses (per generation) and their total time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def spread(samples: list[float]) -> dict[str, Any]:
    median = statistics.median(samples)
    return {
        "median": median,
        "min": min(samples),
        "max": max(samples),
        "spread_pct": (max(samples) - min(samples)) / median * 100 if median else 0.0,
        "samples": samples,
    }


def package_versions(names: list[str]) -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version()} | {name: version(name) for name in names}


def git_state(untracked: bool = True) -> dict[str, Any]:
    """The commit, and whether the package had uncommitted changes when the benchmark ran."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    flags = [] if untracked else ["--untracked-files=no"]
    status = git("status", "--porcelain", *flags, "--", "aigc_pipeline")
    return {"commit": git("rev-parse", "HEAD"), "package_modified": bool(status) if status is not None else None}


def import_seconds(code: str, repeats: int = 3, env: dict[str, str] | None = None) -> float | None:
    """Median wall time of running `code` (imports) in a fresh process (whole-process cost)."""
    timed = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    samples = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
        if done.returncode != 0:
            return None
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def machine() -> dict[str, Any]:
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": cpu_model, "platform": platform.platform()}
