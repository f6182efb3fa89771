"""Progress display for the CLI: a plugin that draws one rich progress bar per stage.

The bars are redrawn when progress is reported (at most REDRAW_EVERY_S apart), not by a refresh
thread of their own: the local executor forks worker processes for CPU-bound stages only from a
process that runs no other thread (executors/worker_processes.py).
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .plugin_manager import hookimpl
from .records import RunInfo, RunSummary
from .residency import format_bytes


def placement_lines(run: RunInfo) -> list[str]:
    """Where each stage runs, with its memory estimate; the residency phases when models swap."""
    stages = ", ".join(
        f"{sid} → {device}" + (f" (~{format_bytes(run.memory[sid])})" if sid in run.memory else "")
        for sid, device in run.placement.items()
    )
    lines = [f"placement: {stages}"]
    if run.swaps:
        steps = " then ".join("[" + ", ".join(phase) + "]" for phase in run.phases)
        lines.append(f"models do not fit in GPU memory together: {len(run.phases)} phases, each over all rows: {steps}")
    return lines


def gpu_lines(summary: RunSummary) -> list[str]:
    """"copy: weights 487 MiB, busy 93%, first batch 17.20s" for each stage that measured them on a GPU."""
    lines = []
    for stage_id, stats in summary.stages.items():
        parts = [f"weights {format_bytes(stats.model_bytes)}"] if stats.model_bytes else []
        if stats.gpu_busy is not None:
            parts.append(f"busy {stats.gpu_busy:.0%}")
        if parts and stats.first_batch_seconds is not None:
            parts.append(f"first batch {stats.first_batch_seconds:.2f}s")
        if parts:
            lines.append(f"{stage_id}: " + ", ".join(parts))
    return lines


REDRAW_EVERY_S = 0.1


class RichProgress:
    """Observer plugin: prints the placement, then a bar per stage while the run goes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, auto_refresh=False,
        )
        self.drawn = 0.0  # when the bars were last redrawn
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    @hookimpl
    def aigc_run_start(self, run: RunInfo) -> None:
        self.console.print(f"pipeline '{run.name}': {run.rows} rows → {run.out_dir}  [devices: {run.devices}]",
                           highlight=False, markup=False)
        for line in placement_lines(run):
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        for stage_id, device in run.placement.items():
            self.tasks[stage_id] = self.progress.add_task(f"{stage_id} ({device})", total=run.rows)
        self.progress.start()

    @hookimpl
    def aigc_stage_progress(self, stage_id: str, done: int, total: int) -> None:
        with self.lock:
            self.progress.update(self.tasks[stage_id], completed=done, total=total)
            now = time.monotonic()
            if now - self.drawn >= REDRAW_EVERY_S or done >= total:
                self.drawn = now
                self.progress.refresh()

    @hookimpl
    def aigc_run_finish(self, summary: RunSummary) -> None:
        self.progress.stop()
