"""Progress display for the CLI: a plugin that draws one rich progress bar per stage."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .executor import RunInfo, RunSummary
from .plugin_manager import hookimpl


class RichProgress:
    """Observer plugin: prints the placement, then a bar per stage while the run goes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.lock = threading.Lock()

    @hookimpl
    def aigc_run_start(self, run: RunInfo) -> None:
        self.console.print(f"pipeline '{run.name}': {run.rows} rows → {run.out_dir}  [devices: {run.devices}]",
                           highlight=False, markup=False)
        for stage_id, device in run.placement.items():
            self.tasks[stage_id] = self.progress.add_task(f"{stage_id} ({device})", total=run.rows)
        self.progress.start()

    @hookimpl
    def aigc_stage_progress(self, stage_id: str, done: int, total: int) -> None:
        with self.lock:
            self.progress.update(self.tasks[stage_id], completed=done, total=total)

    @hookimpl
    def aigc_run_finish(self, summary: RunSummary) -> None:
        self.progress.stop()
