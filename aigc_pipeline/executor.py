"""Running a checked graph over rows: the run plan, per-item state, isolation, the summary.

The flow of one run: read rows (bad rows are rejected with their line) -> place stages -> hand
the plan to an executor backend (`executors/`) -> write `results.jsonl` in input order, always,
also when the run stops early, so no finished work is lost.

`StageRunner` is the one place a micro-batch meets a stage: it builds the `StageItem`s, calls the
`aigc_process_batch` hook (plugins wrap it), and isolates failures: when a batch raises, its
items are retried one at a time, and only the items that fail alone are marked failed.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pluggy

from .content import AUDIO, IMAGE, ArtifactData
from .devices import Device, Inventory, probe_inventory
from .errors import AigcError, StageError
from .graph import PipelineGraph
from .plugin_manager import hookimpl, notify
from .sinks import ArtifactWriter
from .sources import InputRow
from .stage import Stage, StageItem

DONE, FILTERED, FAILED, REJECTED, NOT_RUN = "done", "filtered", "failed", "rejected", "not_run"

# Stages load one at a time: diffusers and transformers build models under accelerate's
# init_empty_weights, which patches module registration process-wide for a moment; a model built
# in another thread then gets meta (empty) tensors ("Cannot copy out of meta tensor").
MODEL_LOAD_LOCK = threading.Lock()
STATUSES = (DONE, FILTERED, FAILED, REJECTED, NOT_RUN)


class ItemState:
    """Everything known about one row during a run. `values` keys are 'inputs.col' / 'stage.port'."""

    __slots__ = ("index", "line", "values", "status", "stage", "reason", "flags", "trace")

    def __init__(self, row: InputRow, column_keys: dict[str, str]) -> None:
        self.index = row.index
        self.line = row.line
        self.values: dict[str, Any] = {column_keys[k]: v for k, v in row.values.items()} if row.values else {}
        self.status: str | None = None if row.error is None else REJECTED
        self.stage: str | None = None
        self.reason: str | None = row.error
        self.flags: list[dict[str, str]] = []
        self.trace: str | None = None  # the traceback of a stage exception, for errors.log


@dataclass
class ItemResult:
    """What `aigc_item_finished` receives, and one line of results.jsonl."""

    row: int
    line: int
    status: str
    outputs: dict[str, Any]
    error: dict[str, str] | None = None
    flags: list[dict[str, str]] = field(default_factory=list)
    trace: str | None = None  # a stage exception's traceback: errors.log, not results.jsonl

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"row": self.row, "line": self.line, "status": self.status, "outputs": self.outputs}
        if self.error:
            record["error"] = self.error
        if self.flags:
            record["flags"] = self.flags
        return record


@dataclass
class StageStats:
    type_name: str
    device: str
    done: int = 0
    filtered: int = 0
    failed: int = 0
    flagged: int = 0
    batches: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0


@dataclass
class RunInfo:
    name: str
    pipeline_file: str
    rows: int
    out_dir: str
    placement: dict[str, str]
    devices: str


@dataclass
class RunSummary:
    counts: dict[str, int]
    stages: dict[str, StageStats]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    trace: str | None = None  # why the run stopped early, with its cause: errors.log
    group_counts: dict[str, int] | None = None  # statuses of groups, when a stage aggregates

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RunPlan:
    """What a backend needs: the graph, the stage instances, where they run, how to batch."""

    graph: PipelineGraph
    stages: dict[str, Stage]
    placement: dict[str, Device]
    batch_sizes: dict[str, int]
    pm: pluggy.PluginManager
    stats: dict[str, StageStats]
    warnings: list[str] = field(default_factory=list)
    artifacts: ArtifactWriter | None = None  # set by execute() once the output folder is known


class ExecutorBackend(Protocol):
    """Runs every live item of `states` through the plan.

    Stages mark items failed or filtered as they go; the backend marks an item DONE once it has
    passed every stage, then calls `on_finished` (when given) with the items just finished.
    On an error it stops its workers, leaves unfinished items unmarked and raises.
    """

    def execute(
        self, plan: RunPlan, states: list[ItemState], on_finished: Any, stage_ids: list[str] | None = None
    ) -> None: ...


@hookimpl(trylast=True)
def aigc_process_batch(stage: Stage, batch: list[StageItem]) -> list[StageItem]:
    """The engine's own implementation of the stage-call hook: run the stage."""
    return stage.process(batch)


class StageRunner:
    """Runs micro-batches of one stage with per-item isolation and bookkeeping."""

    def __init__(self, stage_id: str, plan: RunPlan) -> None:
        graph = plan.graph
        self.stage_id = stage_id
        self.stage = plan.stages[stage_id]
        self.stats = plan.stats[stage_id]
        self.seed_parts = (graph.pipeline.spec.seed, stage_id)
        self.inputs = [(port, str(ref)) for port, ref in graph.wiring[stage_id].items()]
        self.outputs = {port: f"{stage_id}.{port}" for port in type(self.stage).outputs}
        self.outputs_list = list(self.outputs.items())
        self.call = plan.pm.hook.aigc_process_batch
        self.artifact_ports = [p for p, kind in type(self.stage).outputs.items() if kind in (IMAGE, AUDIO)]
        self.artifacts = plan.artifacts

    def run(self, states: list[ItemState]) -> None:
        """Process live items of `states` (skipping failed/filtered ones) as one micro-batch."""
        live = [state for state in states if state.status is None]
        if not live:
            return
        started = time.perf_counter()
        self._run_isolated(live)
        self.stats.seconds += time.perf_counter() - started
        self.stats.batches += 1

    def items(self, states: list[ItemState]) -> list[StageItem]:
        return [
            StageItem(state.index, {port: state.values[key] for port, key in self.inputs}, self.seed_parts)
            for state in states
        ]

    def _run_isolated(self, states: list[ItemState]) -> None:
        items = self.items(states)
        try:
            returned = self.call(stage_id=self.stage_id, stage=self.stage, batch=items)
            if returned is not items:
                returned = _in_batch_order(items, returned)
        except Exception as exc:
            if len(states) == 1:
                # The engine's own errors read as sentences; a stage's exception keeps its type name.
                reason = str(exc) if isinstance(exc, AigcError) else f"{type(exc).__name__}: {exc}"
                self._record_failure(states[0], reason, exc)
                return
            error: Exception | None = exc
        else:
            error = None
        if error is not None:  # find the guilty items: run each alone (outside the except block)
            for state in states:
                self._run_isolated([state])
            return
        self._record_all(states, returned)

    def _record_all(self, states: list[ItemState], items: list[StageItem]) -> None:
        outputs = self.outputs_list
        done = 0
        for state, item in zip(states, items, strict=True):
            if self.artifact_ports and item.verdict is None and not self._save_artifacts(state, item):
                continue
            if item.verdict is None and not item.flags:  # the common case, kept lean
                try:
                    values, produced = state.values, item.outputs
                    for port, key in outputs:
                        values[key] = produced[port]
                    done += 1
                    continue
                except KeyError:  # a port is missing: take back what was copied, _record fails the item
                    for _, key in outputs:
                        values.pop(key, None)
            self._record(state, item)
        self.stats.done += done

    def _record(self, state: ItemState, item: StageItem) -> None:
        if item.flags:
            state.flags.extend({"stage": self.stage_id, "reason": reason} for reason in item.flags)
            self.stats.flagged += 1
        if item.verdict is not None:
            state.status, state.stage, state.reason = item.verdict, self.stage_id, item.reason
            if item.verdict == FILTERED:
                self.stats.filtered += 1
            else:
                self.stats.failed += 1
            return
        missing = [port for port in self.outputs if port not in item.outputs]
        if missing:
            self._record_failure(state, f"stage did not set output port(s) {', '.join(missing)}")
            return
        for port, key in self.outputs.items():
            state.values[key] = item.outputs[port]
        self.stats.done += 1

    def _save_artifacts(self, state: ItemState, item: StageItem) -> bool:
        """Write the item's image/audio outputs to the output folder; False if the item failed."""
        for port in self.artifact_ports:
            value = item.outputs.get(port)
            if not isinstance(value, ArtifactData):
                continue
            if self.artifacts is None:
                raise AigcError("this run has no output folder for artifacts")
            try:
                item.outputs[port] = self.artifacts.save(self.stage_id, state.index, port, value)
            except OSError as exc:
                self._record_failure(state, f"could not write the {port} artifact: {exc}", exc)
                return False
        return True

    def _record_failure(self, state: ItemState, reason: str, exc: BaseException | None = None) -> None:
        state.status, state.stage, state.reason = FAILED, self.stage_id, reason
        self.stats.failed += 1
        if exc is not None:
            state.trace = "".join(traceback.format_exception(exc))


def _in_batch_order(items: list[StageItem], returned: Any) -> list[StageItem]:
    """Match what process() returned back to the batch by item id, never by position.

    A stage may return new or reordered items (e.g. sorted by length); pairing by position would
    attach outputs to the wrong rows, silently.
    """
    if not isinstance(returned, list) or len(returned) != len(items):
        got = f"a list of {len(returned)} items" if isinstance(returned, list) else type(returned).__name__
        raise AigcError(f"process() returned {got} for a batch of {len(items)}; it must return every item it got")
    by_id = {getattr(item, "id", None): item for item in returned}
    try:
        return [by_id[item.id] for item in items]
    except KeyError:
        raise AigcError("process() returned items that are not the ones it was given (item ids differ)") from None


def make_plan(
    graph: PipelineGraph,
    pm: pluggy.PluginManager,
    device: Device | None = None,
    inventory: Inventory | None = None,
) -> RunPlan:
    """Instantiate stages (cheap: no model loads) and place them. Raises PlacementError early."""
    from .device_scheduler import place_stages

    spec = graph.pipeline.spec
    stages: dict[str, Stage] = {}
    requests: dict[str, Any] = {}
    for stage_id in graph.order:
        cls = graph.stage_class(stage_id)
        params = graph.pipeline.params[stage_id]
        _preflight(stage_id, cls, params)
        needs = cls.needs(params)
        own = spec.stages[stage_id].device
        requested = Device.parse(own) if own else (device if needs.kind != "cpu" else None)
        requests[stage_id] = (cls.type_name, needs, requested)
        stages[stage_id] = cls(params)
    if inventory is None:
        wants_gpu = any(needs.kind != "cpu" for _, needs, _ in requests.values())
        inventory = probe_inventory() if wants_gpu else Inventory()
    placement = place_stages(requests, inventory, pm)
    batch_sizes = {sid: spec.stages[sid].batch_size or type(stages[sid]).default_batch_size for sid in graph.order}
    stats = {sid: StageStats(type(stages[sid]).type_name, str(placement[sid])) for sid in graph.order}
    return RunPlan(graph, stages, placement, batch_sizes, pm, stats)


def _preflight(stage_id: str, cls: Any, params: Any) -> None:
    try:
        cls.preflight(params)
    except AigcError as exc:
        raise StageError(stage_id, cls.type_name, str(exc)) from exc


def result_keys(graph: PipelineGraph, domain: str = "row") -> list[tuple[str, str]]:
    """(result name, value key) for every field of a run's per-row (or per-group) results."""
    return [(name, str(ref)) for name, ref in graph.result_fields(domain).items()]


def item_result(state: ItemState, keys: list[tuple[str, str]]) -> ItemResult:
    values = state.values
    outputs = {name: values[key] for name, key in keys if key in values}
    status = state.status or NOT_RUN
    error = None
    if status in (FAILED, FILTERED, REJECTED):
        error = {"stage": state.stage or "input", "reason": state.reason or ""}
    return ItemResult(state.index, state.line, status, outputs, error, state.flags, state.trace)


def execute(
    plan: RunPlan, rows: list[InputRow], out_dir: Path, backend: ExecutorBackend | None = None
) -> tuple[RunSummary, list[ItemResult], list[ItemResult]]:
    """Run the plan over rows: (summary, one result per row, one per group). Also when it stops early."""
    from .executors.local import LocalExecutor
    from .groups import group_result, run_reducers, split_phases

    graph, pm = plan.graph, plan.pm
    plan.artifacts = ArtifactWriter(out_dir)
    column_keys = {column: f"inputs.{column}" for column in graph.pipeline.spec.inputs}
    states = [ItemState(row, column_keys) for row in rows]
    groups: list[Any] = []
    keys = result_keys(graph)
    info = RunInfo(graph.pipeline.spec.name, graph.pipeline.file, len(rows), str(out_dir),
                   {sid: str(dev) for sid, dev in plan.placement.items()}, _devices(plan))
    started = time.perf_counter()
    notify(pm, "aigc_run_start", plan.warnings.append, run=info)
    error: str | None = None
    trace: str | None = None

    def finished(batch: list[ItemState]) -> None:
        for state in batch:
            notify(pm, "aigc_item_finished", plan.warnings.append, result=item_result(state, keys))

    runner = backend or LocalExecutor()
    phases = split_phases(graph)
    try:
        runner.execute(plan, states, finished if _observed(pm) else None, phases.rows)
        if phases.reducers:
            groups = run_reducers(plan, states, phases.reducers)
            runner.execute(plan, groups, None, phases.groups)
    except AigcError as exc:
        error, trace = str(exc), "".join(traceback.format_exception(exc))
    except KeyboardInterrupt:
        error = "interrupted; rows not finished are marked not_run"
    results = [item_result(state, keys) for state in states]
    group_keys = result_keys(graph, "group")
    group_results: list[ItemResult] = [group_result(state, group_keys) for state in groups]
    summary = RunSummary(_counts(results), plan.stats, time.perf_counter() - started, plan.warnings, error, trace,
                         _counts(group_results) if phases.reducers else None)
    notify(pm, "aigc_run_finish", plan.warnings.append, run=info, summary=summary)
    return summary, results, group_results


def _observed(pm: pluggy.PluginManager) -> bool:
    return bool(pm.hook.aigc_item_finished.get_hookimpls())


def _devices(plan: RunPlan) -> str:
    return ", ".join(sorted({str(device) for device in plan.placement.values()})) or "cpu"


def _counts(results: list[ItemResult]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result.status] += 1
    return counts
