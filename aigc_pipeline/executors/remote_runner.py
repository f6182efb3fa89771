"""A stage's `StageRunner` in another process, and what travels back from it.

Two backends run stages outside the driver's process: the Ray executor (its workers) and the
local executor's worker processes (`worker_processes.py`). Either way the worker runs the stage
with the engine's own `StageRunner` (same isolation, seeds and store lookups, so the same outputs
item for item) and sends back, with the items, a `StageReport`: what its runs changed in the
stage's counters, the warnings they raised and the results they would have recorded. The driver
adds the counters to the run's (`apply_report`) and, the run store's only writer, commits the
results (`worker_store.commit_to`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import StageError
from ..lifecycle import StageLifecycle
from ..records import ItemState, RunContext, StageContext
from ..stage_runner import StageRunner
from ..worker_store import Records, WorkerStore, commit_to

ADDED = ("done", "filtered", "failed", "flagged", "cached", "batches", "seconds", "load_seconds", "loads",
         "oom_retries")  # counters that add up across workers
PEAKS = ("peak_rss_bytes", "peak_memory_bytes")  # the larger wins


@dataclass
class StageReport:
    """What one remote run of a stage changed: counters, new warnings, results to record."""

    change: dict[str, Any]
    warnings: list[str]
    records: Records


class RemoteRunner:
    """A `StageRunner` that reports each run's changes (`run`), in a worker process."""

    def __init__(self, context: StageContext, lifecycle: StageLifecycle, store: WorkerStore | None) -> None:
        self.context = context
        self.store = store
        self.runner = StageRunner(context, lifecycle)

    def run(self, states: list[ItemState]) -> StageReport:
        """Run `states` (those the stage runs: `StageRunner.runs`); a failure of the stage as a
        whole (its model does not load, an engine error) is raised as a `StageError`."""
        stats, warnings = self.context.stats, self.context.warnings
        before = {name: getattr(stats, name) for name in ADDED}
        counted = dict(stats.counters)  # the stage's running totals (tokens, retries, cost): sent as changes
        warned = len(warnings)
        try:
            self.runner.run(states)
        except BaseException as exc:  # noqa: BLE001 - the driver raises it, as the local executor would
            raise as_stage_error(self.context.stage_id, stats.type_name, exc) from exc
        change: dict[str, Any] = {name: getattr(stats, name) - before[name] for name in ADDED}
        change.update({name: getattr(stats, name) for name in PEAKS})
        change["counters"] = {name: value - counted.get(name, 0) for name, value in stats.counters.items()}
        return StageReport(change, warnings[warned:], self.store.take() if self.store is not None else [])


def as_stage_error(stage_id: str, type_name: str, exc: BaseException) -> StageError:
    """Like the local executor: a load failure as is, anything else as the engine's error."""
    if isinstance(exc, StageError):
        return exc
    what = "engine error" if isinstance(exc, Exception) else "stopped the run"
    return StageError(stage_id, type_name, f"{what}: {type(exc).__name__}: {exc}")


def apply_report(run: RunContext, stage_id: str, report: StageReport) -> None:
    """The driver's side: add the changes to the stage's counters, keep the warnings, commit the results."""
    run.stats[stage_id].merge(report.change)
    run.warnings.extend(report.warnings)
    commit_to(run.store, report.records)
