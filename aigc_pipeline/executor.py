"""Running a checked graph over rows: the run plan, per-item state, phases, the summary.

The flow of one run: read rows (bad rows are rejected with their line) -> place stages and plan
residency phases -> hand each phase to an executor backend (`executors/`), which drives
`stage_runner.StageRunner` over micro-batches -> reducing stages, then the group phase -> write
`results.jsonl` in input order, always, also when the run stops early, so no work is lost.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pluggy

from .devices import Device, Inventory, probe_inventory
from .errors import AigcError, PreflightError, StageError
from .gpu_busy import BusySampler
from .graph import PipelineGraph
from .plugin_manager import hookimpl, notify
from .records import (
    DONE,
    REJECTED,
    STATUSES,
    ExecutorBackend,
    ItemResult,
    ItemState,
    RunInfo,
    RunPlan,
    RunSummary,
    StageStats,
    item_result,
    result_keys,
    usage_keys,
)
from .residency import (
    MemoryCap,
    budgets,
    cap_inventory,
    fit_replicas,
    oversized,
    plan_phases,
    read_peaks,
    reset_peaks,
    within,
)
from .sinks import ArtifactWriter
from .sources import InputRow
from .stage import DeviceNeeds, Stage, StageItem
from .store import RunStore
from .streaming import ChunkFeed

WINDOW_ROWS = 8192  # rows a streaming run holds at most (in chunks), beside what stages keep


@hookimpl(trylast=True)
def aigc_process_batch(stage: Stage, batch: list[StageItem]) -> list[StageItem]:
    """The engine's own implementation of the stage-call hook: run the stage."""
    return stage.process(batch)


def make_plan(
    graph: PipelineGraph,
    pm: pluggy.PluginManager,
    device: Device | None = None,
    inventory: Inventory | None = None,
    gpu_memory: MemoryCap | None = None,
) -> RunPlan:
    """Instantiate stages (cheap: no model loads), place them, plan residency. Raises PlacementError early.

    `gpu_memory` caps what the run may use on each GPU (placement and residency both see the cap).
    """
    from .device_scheduler import place_stages, plan_replicas

    spec = graph.pipeline.spec
    stages: dict[str, Stage] = {}
    requests: dict[str, Any] = {}
    needs_of: dict[str, DeviceNeeds] = {}
    preflight(graph)
    for stage_id in graph.order:
        cls = graph.stage_class(stage_id)
        params = graph.pipeline.params[stage_id]
        needs = needs_of[stage_id] = cls.needs(params)
        own = spec.stages[stage_id].device
        requested = Device.parse(own) if own else (device if needs.kind != "cpu" else None)
        requests[stage_id] = (cls.type_name, needs, requested)
        stages[stage_id] = cls(params)
    if inventory is None:
        wants_gpu = any(needs.kind != "cpu" for _, needs, _ in requests.values())
        inventory = probe_inventory() if wants_gpu else Inventory()
    inventory = cap_inventory(inventory, gpu_memory)
    placement = place_stages(requests, inventory, pm)
    batch_sizes = {sid: spec.stages[sid].batch_size or type(stages[sid]).batch_size_for(graph.pipeline.params[sid])
                   for sid in graph.order}
    memory = {sid: needs.memory_bytes for sid, needs in needs_of.items()}
    budget = budgets(inventory)
    residency = _residency(graph, placement, memory, budget)
    asked = {sid: None if (count := spec.stages[sid].replicas) == "auto" else count for sid in graph.order}
    splittable = [sid for sid in graph.order if _splittable(graph, sid)]
    wanted = plan_replicas(requests, placement, inventory, asked, splittable)
    replicas, dropped = fit_replicas(residency, placement, wanted, memory, budget)
    stats = {sid: StageStats(type(stages[sid]).type_name, "+".join(map(str, replicas[sid])), memory_bytes=memory[sid])
             for sid in graph.order}
    plan = RunPlan(graph, stages, placement, batch_sizes, pm, stats, residency=residency, replicas=replicas,
                   needs=needs_of)
    plan.warnings.extend(oversized(placement, memory, budget) + dropped)
    return plan


def _splittable(graph: PipelineGraph, stage_id: str) -> bool:
    """Whether copies of the stage may share its rows: each item's result depends on that item alone
    (a stage says otherwise by being run-wide, not cacheable, or reducing)."""
    cls, params = graph.stage_class(stage_id), graph.pipeline.params[stage_id]
    return cls.cacheable(params) and not cls.run_wide(params) and not cls.reduces


def _residency(
    graph: PipelineGraph, placement: dict[str, Device], memory: dict[str, int], budget: dict[Device, int]
) -> list[list[str]]:
    """Residency phases of the per-row stages, then of the per-group stages (reducers run between)."""
    from .groups import split_phases

    parts = split_phases(graph)
    upstream = {sid: list(graph.graph.predecessors(sid)) for sid in graph.order}
    return [phase for part in (parts.rows, parts.groups) if part
            for phase in plan_phases(part, upstream, placement, memory, budget)]


def preflight(graph: PipelineGraph) -> None:
    """Every stage's cheap checks (models present, programs installed) before anything loads.

    One failing stage raises its StageError; several raise one PreflightError that lists them all,
    so a user fixing a pipeline sees every missing model at once, not one per attempt."""
    problems: list[StageError] = []
    for stage_id in graph.order:
        cls = graph.stage_class(stage_id)
        try:
            cls.preflight(graph.pipeline.params[stage_id])
        except AigcError as exc:
            problem = StageError(stage_id, cls.type_name, str(exc))
            problem.__cause__ = exc
            problems.append(problem)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise PreflightError(problems)


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
    from .groups import group_result, split_phases

    graph, pm = plan.graph, plan.pm
    plan.artifacts = ArtifactWriter(out_dir)
    plan.store = store
    if store is not None and store.crashed_items:
        plan.warnings.append(f"the previous run in {out_dir} died with {store.crashed_items} item(s) in flight; "
                             "they run again, one at a time")
    rows = rows if isinstance(rows, list) or total is not None else list(rows)
    total = len(rows) if total is None else total  # type: ignore[arg-type]
    column_keys = {column: f"inputs.{column}" for column in graph.pipeline.spec.inputs}
    states: Iterable[ItemState] = (ItemState(row, column_keys) for row in rows)
    keys = result_keys(graph)
    phases = split_phases(graph)
    info = _run_info(plan, phases, total, out_dir)
    started = time.perf_counter()
    notify(pm, "aigc_run_start", plan.warnings.append, run=info)
    results = _Results(pm, keys, sink, plan.warnings.append, usage_keys(graph))
    groups, error, trace = _run_rows(backend or LocalExecutor(), plan, states, total, results)
    group_keys = result_keys(graph, "group")
    group_results: list[ItemResult] = [group_result(state, group_keys) for state in groups]
    summary = RunSummary(results.counts, plan.stats, time.perf_counter() - started, plan.warnings, error, trace,
                         _counts(group_results) if phases.reducers else None)
    notify(pm, "aigc_run_finish", plan.warnings.append, run=info, summary=summary)
    return summary, results.kept, group_results


def _run_rows(
    runner: ExecutorBackend, plan: RunPlan, states: Iterable[ItemState], total: int, results: _Results
) -> tuple[list[Any], str | None, str | None]:
    """Run every row (and group): (the groups, why the run stopped or None, its traceback)."""
    from .groups import run_reducers, split_phases

    phases = split_phases(plan.graph)
    streams = _streams(runner, plan, phases)
    held = [] if streams else list(states)  # a run that cannot stream holds every row
    groups: list[Any] = []
    error = trace = None
    try:
        if streams:
            _run_streaming(runner, plan, states, total, results, phases.rows)
        else:
            run_in_phases(runner, plan, held, results.finished if results.observed else None, phases.rows)
            if phases.reducers:
                groups = run_reducers(plan, held, phases.reducers)
                run_in_phases(runner, plan, groups, None, phases.groups)
    except AigcError as exc:
        error, trace = str(exc), "".join(traceback.format_exception(exc))
    except KeyboardInterrupt as exc:  # signals.StopSignal says which signal
        error = str(exc) or "interrupted; rows not finished are marked not_run"
    results.rest(held)
    return groups, error, trace


def _run_info(plan: RunPlan, phases: Any, rows: int, out_dir: Path) -> RunInfo:
    # A run with an aggregate always has a row phase and a group phase; more than that is a swap.
    swaps = len(plan.residency) > sum(1 for part in (phases.rows, phases.groups) if part)
    return RunInfo(plan.graph.pipeline.spec.name, plan.graph.pipeline.file, rows, str(out_dir),
                   {sid: "+".join(map(str, _devices_of(plan, sid))) for sid in plan.placement}, _devices(plan),
                   {sid: s.memory_bytes for sid, s in plan.stats.items() if s.memory_bytes}, plan.residency, swaps)


def _streams(runner: Any, plan: RunPlan, phases: Any) -> bool:
    """Whether rows can stream: a backend that can, no reducing stage (it needs every row), and one
    residency phase (with several, every row passes the first phase before the second loads)."""
    return bool(getattr(runner, "streams", False)) and not phases.reducers and len(
        within(plan.residency, phases.rows)) <= 1


def _run_streaming(
    runner: Any, plan: RunPlan, states: Iterable[ItemState], total: int, results: _Results, stage_ids: list[str]
) -> None:
    """Rows through the per-row stages in a bounded window of chunks (see streaming.py)."""
    from .executors.local import chunk_size

    size = getattr(runner, "chunk_size", None) or chunk_size(plan, stage_ids)
    feed = ChunkFeed(states, size, total, window=max(len(stage_ids) + 2, WINDOW_ROWS // size))
    results.feed = feed
    run_in_phases(runner, plan, feed, results.finished, stage_ids)  # type: ignore[arg-type]


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
            self._emit(item_result(state, self.keys, self.usage))

    def _emit(self, result: ItemResult) -> None:
        self.counts[result.status] += 1
        if self.sink is not None:
            self.sink(result)
        else:
            self.kept.append(result)


def run_in_phases(
    runner: ExecutorBackend, plan: RunPlan, states: list[Any], on_finished: Any, stage_ids: list[str]
) -> None:
    """Run `stage_ids` over `states` one residency phase at a time (one phase when the models fit).

    Each phase is one backend call, so each stage loads once, at the start of its phase, and every
    pending item passes it before its models unload. Between phases an item that passed a phase is
    pending again (not done yet); one failed or filtered there is finished and reported then.
    """
    parts = within(plan.residency, stage_ids)
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        gpus = {device for sid in part for device in _devices_of(plan, sid) if device.is_gpu}
        reset_peaks(gpus)
        busy = BusySampler(gpus)
        try:
            with busy:
                runner.execute(plan, states, on_finished if last else _pending_again(on_finished), part)
        finally:
            if not last:  # a backend that stopped early may have marked items done: they are not
                for state in states:
                    if state.status == DONE:
                        state.status = None
            peaks = read_peaks(gpus)
            for sid in part:
                stats = plan.stats[sid]
                peak = max(peaks.get(device, 0) for device in _devices_of(plan, sid))
                stats.peak_memory_bytes = max(stats.peak_memory_bytes, peak)
            record_busy(plan, part, busy.fractions())


def record_busy(plan: RunPlan, stage_ids: list[str], fractions: dict[Device, float]) -> None:
    """Each stage's GPU busy fraction: that of its GPU(s) in its phase (the mean over its copies)."""
    for sid in stage_ids:
        values = [fractions[device] for device in _devices_of(plan, sid) if device in fractions]
        if values:
            plan.stats[sid].gpu_busy = sum(values) / len(values)


def _pending_again(on_finished: Any) -> Any:
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


def _devices_of(plan: RunPlan, stage_id: str) -> list[Device]:
    """Where a stage runs: its device, then those of its copies (replicas), if any."""
    return plan.replicas.get(stage_id) or [plan.placement[stage_id]]


def _devices(plan: RunPlan) -> str:
    return ", ".join(sorted({str(device) for sid in plan.placement for device in _devices_of(plan, sid)})) or "cpu"


def _counts(results: list[ItemResult]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result.status] += 1
    return counts
