"""Running a planned graph over rows: the run context, phases, reducers, the summary.

The flow of one run: read rows (bad rows are rejected with their line) -> place stages and plan
residency phases (`planning.make_plan`) -> hand each phase to an executor backend (`executors/`), which drives
`stage_runner.StageRunner` over micro-batches -> reducing stages, then the group phase -> write
`results.jsonl` in input order, always, also when the run stops early, so no work is lost.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pluggy

from .devices import Device
from .errors import AigcError
from .gpu_busy import BusySampler
from .planning import split_phases
from .plugin_manager import hookimpl, notify
from .records import (
    DONE,
    REJECTED,
    STATUSES,
    ExecutorBackend,
    ItemResult,
    ItemState,
    OnFinished,
    RunContext,
    RunInfo,
    RunPlan,
    RunSummary,
    StageStats,
    item_result,
    result_keys,
    usage_keys,
)
from .residency import (
    read_peaks,
    reset_peaks,
    within,
)
from .sinks import ArtifactWriter
from .sources import InputRow
from .stage import Stage, StageItem
from .store import RunStore
from .streaming import ChunkFeed

WINDOW_ROWS = 8192  # rows a streaming run holds at most (in chunks), beside what stages keep


@hookimpl(trylast=True)
def aigc_process_batch(stage: Stage, batch: list[StageItem]) -> list[StageItem]:
    """The engine's own implementation of the stage-call hook: run the stage."""
    return stage.process(batch)


def execute(
    plan: RunPlan,
    rows: Iterable[InputRow],
    out_dir: Path,
    backend: ExecutorBackend | None = None,
    store: RunStore | None = None,
    sink: Callable[[ItemResult], None] | None = None,
    total: int | None = None,
) -> tuple[RunSummary, list[ItemResult], list[ItemResult]]:
    """Run the plan over rows: (summary, one result per row, one per group). Also when it stops early.

    With a `store`, stored results are reused and new ones recorded (see store.py). With a `sink`,
    each row's result goes to it as soon as its row (and every row before it) finished, in input
    order, and the returned list of row results is empty: a backend that streams (the local
    executor) then holds a bounded window of rows, not all of them (see streaming.py). `total`:
    the number of rows, when `rows` is not a list.
    """
    from .executors.local import LocalExecutor
    from .groups import group_result

    graph, pm = plan.graph, plan.pm
    run = _start(plan, out_dir, store)
    if total is None:
        rows = rows if isinstance(rows, list) else list(rows)
        total = len(rows)
    column_keys = {column: f"inputs.{column}" for column in graph.pipeline.spec.inputs}
    states: Iterable[ItemState] = RowStates(rows, column_keys)
    keys = result_keys(graph)
    phases = split_phases(graph)
    info = _run_info(plan, run, phases, total, out_dir)
    started = time.perf_counter()
    notify(pm, "aigc_run_start", run.warnings.append, run=info)
    results = _Results(pm, keys, sink, run.warnings.append, usage_keys(graph))
    groups, error, trace = _run_rows(backend or LocalExecutor(), plan, run, states, total, results)
    group_keys = result_keys(graph, "group")
    group_results: list[ItemResult] = [group_result(state, group_keys) for state in groups]
    summary = RunSummary(results.counts, run.stats, time.perf_counter() - started, run.warnings, error, trace,
                         _counts(group_results) if phases.reducers else None)
    notify(pm, "aigc_run_finish", run.warnings.append, run=info, summary=summary)
    return summary, results.kept, group_results


def _start(plan: RunPlan, out_dir: Path, store: RunStore | None) -> RunContext:
    run = RunContext.start(plan, ArtifactWriter(out_dir), store)
    if store is not None and store.crashed_items:
        run.warnings.append(f"the previous run in {out_dir} died with {store.crashed_items} item(s) in flight; "
                            "they run again, one at a time")
    return run


def _run_rows(
    runner: ExecutorBackend, plan: RunPlan, run: RunContext, states: Iterable[ItemState], total: int,
    results: _Results,
) -> tuple[list[Any], str | None, str | None]:
    """Run every row (and group): (the groups, why the run stopped or None, its traceback)."""
    from .groups import run_reducers

    phases = split_phases(plan.graph)
    streams = _streams(runner, plan, phases, states)
    held = [] if streams else list(states)  # a run that cannot stream holds every row
    groups: list[Any] = []
    error = trace = None
    try:
        if streams:
            _run_streaming(runner, plan, run, states, total, results, phases.rows)
        else:
            run_in_phases(runner, plan, run, held, results.finished if results.observed else None, phases.rows)
            if phases.reducers:
                groups = run_reducers(plan, run, held, phases.reducers)
                run_in_phases(runner, plan, run, groups, None, phases.groups)
        if run.store is not None:
            run.store.flush()  # every stored result is committed before the results file is
    except AigcError as exc:
        error, trace = str(exc), "".join(traceback.format_exception(exc))
    except KeyboardInterrupt as exc:  # signals.StopSignal says which signal
        error = str(exc) or "interrupted; rows not finished are marked not_run"
    results.rest(held)
    return groups, error, trace


def _run_info(plan: RunPlan, run: RunContext, phases: Any, rows: int, out_dir: Path) -> RunInfo:
    # A run with an aggregate always has a row phase and a group phase; more than that is a swap.
    swaps = len(plan.residency) > sum(1 for part in (phases.rows, phases.groups) if part)
    return RunInfo(plan.graph.pipeline.spec.name, plan.graph.pipeline.file, rows, str(out_dir),
                   {sid: "+".join(map(str, plan.devices_of(sid))) for sid in plan.placement}, _devices(plan),
                   {sid: s.memory_bytes for sid, s in run.stats.items() if s.memory_bytes}, plan.residency, swaps)


def _streams(runner: Any, plan: RunPlan, phases: Any, states: Iterable[ItemState]) -> bool:
    """Whether rows can stream: a backend that can (`streams`, or `streams(states)` for these rows),
    no reducing stage (it needs every row), and one residency phase (with several, every row passes
    the first phase before the second loads)."""
    streams = getattr(runner, "streams", False)
    if callable(streams):
        streams = streams(states)
    return bool(streams) and not phases.reducers and len(within(plan.residency, phases.rows)) <= 1


class RowStates:
    """The item states of `rows`, made as they are iterated; `rows` stays reachable (ChunkFeed.origin)."""

    def __init__(self, rows: Iterable[InputRow], column_keys: dict[str, str]) -> None:
        self.rows, self.column_keys = rows, column_keys

    def __iter__(self) -> Iterator[ItemState]:
        column_keys = self.column_keys
        return (ItemState(row, column_keys) for row in self.rows)


def _run_streaming(
    runner: Any, plan: RunPlan, run: RunContext, states: Iterable[ItemState], total: int, results: _Results,
    stage_ids: list[str],
) -> None:
    """Rows through the per-row stages in a bounded window of chunks (see streaming.py)."""
    from .executors.local import chunk_size

    size = getattr(runner, "chunk_size", None) or chunk_size(plan, stage_ids, run.batch_sizes)
    feed = ChunkFeed(states, size, total, window=max(len(stage_ids) + 2, WINDOW_ROWS // size))
    results.feed = feed
    run_in_phases(runner, plan, run, feed, results.finished, stage_ids)  # type: ignore[arg-type]


class _Results:
    """Row results in input order: counted, announced (`aigc_item_finished`), passed to the sink or kept."""

    def __init__(self, pm: pluggy.PluginManager, keys: list[tuple[str, str]],
                 sink: Callable[[ItemResult], None] | None, warn: Callable[[str], None],
                 usage: list[tuple[str, str]]) -> None:
        self.pm, self.keys, self.sink, self.warn, self.usage = pm, keys, sink, warn, usage
        self.observed = _observed(pm)
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.kept: list[ItemResult] = []
        self.feed: ChunkFeed | None = None  # set when rows stream: finished rows are written as they come
        self.emitted = -1  # the index of the last row emitted (rows are emitted in input order)

    def finished(self, chunk: list[ItemState]) -> None:
        """Items just finished. Streaming: a whole chunk, in order (rejected rows too: written, not announced)."""
        for state in chunk:
            if state.status == REJECTED:
                if self.feed is not None:
                    self._emit(item_result(state, self.keys, self.usage))
                continue
            result = item_result(state, self.keys, self.usage)
            if self.observed:
                notify(self.pm, "aigc_item_finished", self.warn, result=result)
            if self.feed is not None:
                self._emit(result)

    def rest(self, states: Iterable[ItemState]) -> None:
        """After the run: every row not emitted yet, in order (rows after a stop are not_run)."""
        for state in self.feed.rest() if self.feed is not None else states:
            if state.index > self.emitted:  # a stop inside `finished` leaves its chunk held, half emitted
                self._emit(item_result(state, self.keys, self.usage))

    def _emit(self, result: ItemResult) -> None:
        self.emitted = result.row
        self.counts[result.status] += 1
        if self.sink is not None:
            self.sink(result)
        else:
            self.kept.append(result)


def run_in_phases(
    runner: ExecutorBackend, plan: RunPlan, run: RunContext, states: list[Any], on_finished: OnFinished | None,
    stage_ids: list[str],
) -> None:
    """Run `stage_ids` over `states` one residency phase at a time (one phase when the models fit).

    Each phase is one backend call, so each stage loads once, at the start of its phase, and every
    pending item passes it before its models unload. Between phases an item that passed a phase is
    pending again (not done yet); one failed or filtered there is finished and reported then.
    """
    parts = within(plan.residency, stage_ids)
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        gpus = {device for sid in part for device in plan.devices_of(sid) if device.is_gpu}
        reset_peaks(gpus)
        busy = BusySampler(gpus)
        try:
            with busy:
                runner.execute(plan, run, states, on_finished if last else _pending_again(on_finished), part)
        finally:
            if not last:  # a backend that stopped early may have marked items done: they are not
                for state in states:
                    if state.status == DONE:
                        state.status = None
            peaks = read_peaks(gpus)
            for sid in part:
                stats = run.stats[sid]
                peak = max(peaks.get(device, 0) for device in plan.devices_of(sid))
                stats.peak_memory_bytes = max(stats.peak_memory_bytes, peak)
            record_busy(run.stats, {sid: plan.devices_of(sid) for sid in part}, busy.fractions())


def record_busy(
    stats: dict[str, StageStats], devices: dict[str, list[Device]], fractions: dict[Device, float]
) -> None:
    """Each stage's GPU busy fraction: that of its GPU(s) (`devices`, per stage of the phase) in its
    phase (the mean over its copies)."""
    for sid, used in devices.items():
        values = [fractions[device] for device in used if device in fractions]
        if values:
            stats[sid].gpu_busy = sum(values) / len(values)


def _pending_again(on_finished: OnFinished | None) -> OnFinished:
    def finished(chunk: list[ItemState]) -> None:
        for state in chunk:
            if state.status == DONE:
                state.status = None
        ended = [state for state in chunk if state.status is not None]
        if on_finished is not None and ended:
            on_finished(ended)

    return finished


def _observed(pm: pluggy.PluginManager) -> bool:
    return bool(pm.hook.aigc_item_finished.get_hookimpls())


def _devices(plan: RunPlan) -> str:
    return ", ".join(sorted({str(device) for sid in plan.placement for device in plan.devices_of(sid)})) or "cpu"


def _counts(results: list[ItemResult]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result.status] += 1
    return counts
