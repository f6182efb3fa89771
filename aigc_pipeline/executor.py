"""Running a checked graph over rows: the run plan, per-item state, isolation, the summary.

The flow of one run: read rows (bad rows are rejected with their line) -> place stages -> hand
the plan to an executor backend (`executors/`) -> write `results.jsonl` in input order, always,
also when the run stops early, so no finished work is lost.

`StageRunner` is the one place a micro-batch meets a stage: it builds the `StageItem`s, serves
what the run store (`store.py`) already holds, loads the stage on its first miss (`LazyLoad`:
a run whose results are all stored loads no model), calls the `aigc_process_batch` hook (plugins
wrap it) for the rest, and isolates failures: when a batch raises, its items are retried one at
a time, and only the items that fail alone are marked failed. It records what it computed in the
store, one commit per micro-batch, after the artifacts are in place.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pluggy

from .content import AUDIO, IMAGE, ArtifactData
from .devices import Device, Inventory, probe_inventory
from .errors import AigcError, StageError
from .graph import PipelineGraph
from .plugin_manager import hookimpl, notify
from .residency import (
    MemoryCap,
    budgets,
    cap_inventory,
    free_cached_memory,
    is_out_of_memory,
    oversized,
    plan_phases,
    read_peaks,
    reset_peaks,
    within,
)
from .sinks import ArtifactWriter, crash_point
from .sources import InputRow
from .stage import DeviceNeeds, Stage, StageItem, item_seed
from .store import (
    QUARANTINE_AFTER,
    QUARANTINED,
    NewResult,
    RunStore,
    decode_outputs,
    encode_outputs,
    item_key,
    stage_prefix,
)

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
    """Per-stage counts; `cached` of the `done` and `filtered` items came from the run store."""

    type_name: str
    device: str
    done: int = 0
    filtered: int = 0
    failed: int = 0
    flagged: int = 0
    cached: int = 0
    peak_rss_bytes: int = 0  # the process's peak resident memory after this stage's last batch
    batches: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    loads: int = 0
    unloads: int = 0
    memory_bytes: int = 0  # the stage's own estimate (DeviceNeeds.memory_bytes); 0: none or unknown
    peak_memory_bytes: int = 0  # peak allocated on its GPU while its phase ran (shared with co-resident stages)
    oom_retries: int = 0  # batches that ran out of GPU memory and were retried in halves


@dataclass
class RunInfo:
    name: str
    pipeline_file: str
    rows: int
    out_dir: str
    placement: dict[str, str]
    devices: str
    memory: dict[str, int] = field(default_factory=dict)  # stage -> estimated bytes, where known
    phases: list[list[str]] = field(default_factory=list)  # residency phases; more than one: models swap


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
    store: RunStore | None = None  # set by execute() when the run reuses and records results
    residency: list[list[str]] = field(default_factory=list)  # stages whose models are resident together


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


class LazyLoad:
    """Loads a stage the first time it is called (under MODEL_LOAD_LOCK); `attempted` says whether
    `unload()` is due. A load error is raised as StageError ("failed to load: ..."), chained."""

    def __init__(self, stage_id: str, plan: RunPlan) -> None:
        self.stage_id, self.plan = stage_id, plan
        self.attempted = False

    def __call__(self) -> None:
        if self.attempted:
            return
        self.attempted = True
        stage, stats = self.plan.stages[self.stage_id], self.plan.stats[self.stage_id]
        started = time.perf_counter()
        try:
            with MODEL_LOAD_LOCK:
                stage.load(self.plan.placement[self.stage_id])
        except Exception as exc:
            raise StageError(self.stage_id, stage.type_name, f"failed to load: {type(exc).__name__}: {exc}") from exc
        stats.loads += 1
        stats.load_seconds += time.perf_counter() - started


class StageRunner:
    """Runs micro-batches of one stage with per-item isolation, the run store and bookkeeping.

    `load` is called before the first micro-batch the store cannot serve (None: the caller
    loaded the stage already).
    """

    def __init__(self, stage_id: str, plan: RunPlan, load: Callable[[], None] | None = None) -> None:
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
        self.batch_sizes, self.warnings = plan.batch_sizes, plan.warnings
        self.max_batch: int | None = None  # set by an out-of-memory error: the size that fits
        self.load = load
        self.store = plan.store
        self.prefix: str | None = None  # the stage's part of every cache key; None: not cached
        if self.store is not None:
            cls, params = type(self.stage), graph.pipeline.params[stage_id]
            if cls.cacheable(params):
                self.prefix = stage_prefix(cls.type_name, params, cls.model_identity(params))

    def run(self, states: list[ItemState]) -> None:
        """Process live items of `states` (skipping failed/filtered ones) as one micro-batch."""
        live = [state for state in states if state.status is None]
        if not live:
            return
        started = time.perf_counter()
        keys: dict[int, str | None] = {}
        if self.prefix is not None:
            live = self._reuse(live, keys)
        if live:
            if self.load is not None:
                self.load()
            for part in self._parts(live, keys):
                self._run_part(part, keys)
            self.stats.batches += 1
            self.stats.peak_rss_bytes = max(self.stats.peak_rss_bytes, peak_rss())
        self.stats.seconds += time.perf_counter() - started

    def _run_part(self, states: list[ItemState], keys: dict[int, str | None]) -> None:
        """Run a sub-batch; with a store, its in-flight markers are committed before it runs and
        its results (artifacts already in place) with the markers' removal after."""
        entries = [(key, state.index) for state in states if (key := keys.get(state.index)) is not None]
        if entries and self.store is not None:
            self.store.begin(self.stage_id, entries)
        self._run_isolated(states)
        crash_point("batch")
        if entries and self.store is not None:
            self.store.finish(self.stage_id, self._new_results(states, keys), [key for key, _ in entries])

    def _parts(self, states: list[ItemState], keys: dict[int, str | None]) -> list[list[ItemState]]:
        """Sub-batches: an item that was in flight when an earlier run died runs alone (a second
        crash then names it); the rest in batches of at most `max_batch` (after out-of-memory)."""
        store = self.store
        if store is not None and any(store.crashes(key) for key in keys.values() if key is not None):
            suspects = {s.index for s in states if (key := keys.get(s.index)) is not None and store.crashes(key)}
            parts = [[state] for state in states if state.index in suspects]
            states = [state for state in states if state.index not in suspects]
        else:
            parts = []
        size = self.max_batch or len(states) or 1
        return parts + [states[start : start + size] for start in range(0, len(states), size)]

    def _reuse(self, states: list[ItemState], keys: dict[int, str | None]) -> list[ItemState]:
        """Apply stored results; quarantine items that crashed the process twice; return the rest."""
        assert self.store is not None and self.prefix is not None
        run_seed, stage_id = self.seed_parts
        for state in states:
            inputs = {port: state.values[key] for port, key in self.inputs}
            keys[state.index] = item_key(self.prefix, item_seed(run_seed, state.index, stage_id), inputs)
        stored = self.store.lookup([key for key in keys.values() if key is not None])
        missing = []
        for state in states:
            key = keys[state.index]
            hit = stored.get(key) if key is not None else None
            if hit is not None and self._apply(state, *hit):
                continue
            if key is not None and self.store.crashes(key) >= QUARANTINE_AFTER:
                self._record_failure(state, f"{QUARANTINED} (stage '{stage_id}'); run with --fresh to try it again")
                continue
            missing.append(state)
        return missing

    def _apply(self, state: ItemState, verdict: str, reason: str | None, outputs: str, flags: str) -> bool:
        """Give `state` a stored result; False when one of its artifacts is gone (run it again)."""
        values = decode_outputs(outputs, self.artifacts.out_dir) if self.artifacts is not None else None
        if values is None:
            return False
        if verdict == FILTERED:
            state.status, state.stage, state.reason = FILTERED, self.stage_id, reason
            self.stats.filtered += 1
        else:
            for port, key in self.outputs_list:
                state.values[key] = values[port]
            self.stats.done += 1
        reasons = json.loads(flags)
        if reasons:
            state.flags.extend({"stage": self.stage_id, "reason": text} for text in reasons)
            self.stats.flagged += 1
        self.stats.cached += 1
        return True

    def _new_results(self, states: list[ItemState], keys: dict[int, str | None]) -> list[NewResult]:
        """What to store: items that passed (outputs) or were filtered here; never failed ones."""
        results = []
        for state in states:
            key = keys.get(state.index)
            if key is None or state.status == FAILED:
                continue
            flags = [flag["reason"] for flag in state.flags if flag["stage"] == self.stage_id]
            if state.status is None:
                encoded = encode_outputs({port: state.values[value_key] for port, value_key in self.outputs_list})
                if encoded is not None:
                    results.append(NewResult(key, state.index, DONE, None, encoded, flags))
            elif state.status == FILTERED and state.stage == self.stage_id:
                results.append(NewResult(key, state.index, FILTERED, state.reason, "{}", flags))
        return results

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
            out_of_memory = is_out_of_memory(exc)
            if len(states) == 1:
                # The engine's own errors read as sentences; a stage's exception keeps its type name.
                reason = str(exc) if isinstance(exc, AigcError) else f"{type(exc).__name__}: {exc}"
                self._record_failure(states[0], reason, exc)
        else:
            self._record_all(states, returned)
            return
        # Outside the except block: the traceback no longer pins the failed batch's tensors.
        if out_of_memory:
            free_cached_memory()
        if len(states) == 1:
            return
        # Out of memory: halve the batch and keep that size. Any other error: find the guilty items alone.
        if out_of_memory:
            self._halve(len(states))
        start = 0
        while start < len(states):
            size = (self.max_batch or 1) if out_of_memory else 1  # max_batch may shrink again on the way
            self._run_isolated(states[start : start + size])
            start += size

    def _halve(self, failed_size: int) -> None:
        """After a batch of `failed_size` ran out of memory: half that size, for the rest of the run."""
        self.stats.oom_retries += 1
        size = max(1, failed_size // 2)
        if self.max_batch is None or size < self.max_batch:
            self.max_batch = self.batch_sizes[self.stage_id] = size
            self.warnings.append(f"stage '{self.stage_id}': out of GPU memory on a batch of {failed_size}; "
                                 f"batches of {size} from now on")

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
            crash_point("artifact")
        return True

    def _record_failure(self, state: ItemState, reason: str, exc: BaseException | None = None) -> None:
        state.status, state.stage, state.reason = FAILED, self.stage_id, reason
        self.stats.failed += 1
        if exc is not None:
            state.trace = "".join(traceback.format_exception(exc))


def peak_rss() -> int:
    """The process's peak resident memory in bytes (0 where `resource` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


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
    gpu_memory: MemoryCap | None = None,
) -> RunPlan:
    """Instantiate stages (cheap: no model loads), place them, plan residency. Raises PlacementError early.

    `gpu_memory` caps what the run may use on each GPU (placement and residency both see the cap).
    """
    from .device_scheduler import place_stages

    spec = graph.pipeline.spec
    stages: dict[str, Stage] = {}
    requests: dict[str, Any] = {}
    needs_of: dict[str, DeviceNeeds] = {}
    for stage_id in graph.order:
        cls = graph.stage_class(stage_id)
        params = graph.pipeline.params[stage_id]
        _preflight(stage_id, cls, params)
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
    batch_sizes = {sid: spec.stages[sid].batch_size or type(stages[sid]).default_batch_size for sid in graph.order}
    memory = {sid: needs.memory_bytes for sid, needs in needs_of.items()}
    stats = {sid: StageStats(type(stages[sid]).type_name, str(placement[sid]), memory_bytes=memory[sid])
             for sid in graph.order}
    plan = RunPlan(graph, stages, placement, batch_sizes, pm, stats)
    plan.residency = _residency(graph, placement, memory, budgets(inventory))
    plan.warnings.extend(oversized(placement, memory, budgets(inventory)))
    return plan


def _residency(
    graph: PipelineGraph, placement: dict[str, Device], memory: dict[str, int], budget: dict[Device, int]
) -> list[list[str]]:
    """Residency phases of the per-row stages, then of the per-group stages (reducers run between)."""
    from .groups import split_phases

    parts = split_phases(graph)
    upstream = {sid: list(graph.graph.predecessors(sid)) for sid in graph.order}
    return [phase for part in (parts.rows, parts.groups) if part
            for phase in plan_phases(part, upstream, placement, memory, budget)]


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
    plan: RunPlan,
    rows: list[InputRow],
    out_dir: Path,
    backend: ExecutorBackend | None = None,
    store: RunStore | None = None,
) -> tuple[RunSummary, list[ItemResult], list[ItemResult]]:
    """Run the plan over rows: (summary, one result per row, one per group). Also when it stops early.

    With a `store`, stored results are reused and new ones recorded (see store.py).
    """
    from .executors.local import LocalExecutor
    from .groups import group_result, run_reducers, split_phases

    graph, pm = plan.graph, plan.pm
    plan.artifacts = ArtifactWriter(out_dir)
    plan.store = store
    if store is not None and store.crashed_items:
        plan.warnings.append(f"the previous run in {out_dir} died with {store.crashed_items} item(s) in flight; "
                             "they run again, one at a time")
    column_keys = {column: f"inputs.{column}" for column in graph.pipeline.spec.inputs}
    states = [ItemState(row, column_keys) for row in rows]
    groups: list[Any] = []
    keys = result_keys(graph)
    info = RunInfo(graph.pipeline.spec.name, graph.pipeline.file, len(rows), str(out_dir),
                   {sid: str(dev) for sid, dev in plan.placement.items()}, _devices(plan),
                   {sid: s.memory_bytes for sid, s in plan.stats.items() if s.memory_bytes}, plan.residency)
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
        run_in_phases(runner, plan, states, finished if _observed(pm) else None, phases.rows)
        if phases.reducers:
            groups = run_reducers(plan, states, phases.reducers)
            run_in_phases(runner, plan, groups, None, phases.groups)
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
        gpus = {plan.placement[sid] for sid in part if plan.placement[sid].is_gpu}
        reset_peaks(gpus)
        try:
            runner.execute(plan, states, on_finished if last else _pending_again(on_finished), part)
        finally:
            if not last:  # a backend that stopped early may have marked items done: they are not
                for state in states:
                    if state.status == DONE:
                        state.status = None
            peaks = read_peaks(gpus)
            for sid in part:
                stats = plan.stats[sid]
                stats.peak_memory_bytes = max(stats.peak_memory_bytes, peaks.get(plan.placement[sid], 0))


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


def _devices(plan: RunPlan) -> str:
    return ", ".join(sorted({str(device) for device in plan.placement.values()})) or "cpu"


def _counts(results: list[ItemResult]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result.status] += 1
    return counts
