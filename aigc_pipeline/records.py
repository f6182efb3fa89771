"""The records every layer of a run shares: item statuses, per-item state and results, stage
counters, the run's description and summary, and the executor-backend protocol.

A leaf module: it imports nothing of the package at run time (only names for type checking), so
the store, the stage runner, the backends and the orchestration in `executor.py` can all use it
without importing each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pluggy

    from .devices import Device
    from .graph import PipelineGraph
    from .sinks import ArtifactWriter
    from .sources import InputRow
    from .stage import DeviceNeeds, Stage
    from .store import RunStore


class ItemStatus(StrEnum):
    """Where a row (or group) ended; a plain `str` too, so it reads and serialises as its value."""

    DONE = "done"
    FILTERED = "filtered"
    FAILED = "failed"
    REJECTED = "rejected"  # the input row itself was bad (its line says why)
    NOT_RUN = "not_run"  # the run stopped before the item finished


DONE, FILTERED, FAILED, REJECTED, NOT_RUN = (ItemStatus.DONE, ItemStatus.FILTERED, ItemStatus.FAILED,
                                             ItemStatus.REJECTED, ItemStatus.NOT_RUN)
STATUSES = tuple(ItemStatus)

# Stages load one at a time: diffusers and transformers build models under accelerate's
# init_empty_weights, which patches module registration process-wide for a moment; a model built
# in another thread then gets meta (empty) tensors ("Cannot copy out of meta tensor").
MODEL_LOAD_LOCK = threading.Lock()


class ItemState:
    """Everything known about one row during a run. `values` keys are 'inputs.col' / 'stage.port'."""

    __slots__ = ("index", "line", "identity", "values", "status", "stage", "reason", "flags", "trace")

    def __init__(self, row: InputRow, column_keys: dict[str, str]) -> None:
        self.index = row.index
        self.line = row.line
        # Names the row across runs (row_identity.py): seeds, store keys and artifact names use it.
        self.identity: str = row.identity if row.identity is not None else str(row.index)
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
    usage: dict[str, Any] | None = None  # stage -> its `usage` output (tokens, requests) for this row
    # The row's identity (row_identity.py; a row rejected at input, which has none: its row number).
    # results.jsonl carries it as `id`, so review decisions and takes follow the row, not its position.
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"row": self.row, "line": self.line, "status": self.status, "outputs": self.outputs}
        if self.usage:
            record["usage"] = self.usage
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
    peak_rss_bytes: int = 0  # the process's peak resident memory, sampled after its batches (StageRunner.note_peak)
    batches: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    loads: int = 0
    unloads: int = 0
    memory_bytes: int = 0  # the stage's own estimate (DeviceNeeds.memory_bytes); 0: none or unknown
    peak_memory_bytes: int = 0  # peak allocated on its GPU while its phase ran (shared with co-resident stages)
    oom_retries: int = 0  # batches that ran out of GPU memory and were retried in halves
    model_bytes: int = 0  # GPU memory its load took (allocated after minus before, loads are serialised)
    gpu_busy: float | None = None  # NVML busy fraction of its GPU while its phase ran (None: not measured)
    first_batch_seconds: float | None = None  # its first micro-batch that ran the model (compiles happen there)
    counters: dict[str, float] = field(default_factory=dict)  # the stage's own totals (Stage.counters): tokens, cost

    def merge(self, part: StageStats | dict[str, Any]) -> None:
        """Add another worker's counts (a `StageStats`, or a dict of changes sent back by a Ray
        worker): counts and seconds add up, peaks take the larger; names and the memory
        estimate stay this stage's own."""
        values = part if isinstance(part, dict) else vars(part)
        for name in COUNTED_FIELDS:
            if name in values:
                setattr(self, name, getattr(self, name) + values[name])
        for name in PEAK_FIELDS:
            if name in values:
                setattr(self, name, max(getattr(self, name), values[name]))
        for name, value in (values.get("counters") or {}).items():
            self.counters[name] = self.counters.get(name, 0) + value


PEAK_FIELDS = tuple(item.name for item in fields(StageStats) if item.name.startswith("peak_"))
OWN_FIELDS = ("memory_bytes", "model_bytes")  # one copy's own figure: never added up
COUNTED_FIELDS = tuple(item.name for item in fields(StageStats)
                       if item.type in ("int", "float") and item.name not in (*PEAK_FIELDS, *OWN_FIELDS))


@dataclass
class RunInfo:
    name: str
    pipeline_file: str
    rows: int
    out_dir: str
    placement: dict[str, str]
    devices: str
    memory: dict[str, int] = field(default_factory=dict)  # stage -> estimated bytes, where known
    phases: list[list[str]] = field(default_factory=list)  # residency phases (row stages, then group stages)
    swaps: bool = False  # models do not fit together: some stages unload for others between phases


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


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, decided before it starts (`planning.make_plan`) and never changed by it:
    the graph, the stage instances, where they run, how to batch, which models stay resident together.
    What changes while it runs lives in its `RunContext`."""

    graph: PipelineGraph
    stages: dict[str, Stage]
    placement: dict[str, Device]
    batch_sizes: dict[str, int]  # as planned; out-of-memory halving lowers the RunContext's copy
    pm: pluggy.PluginManager
    residency: list[list[str]] = field(default_factory=list)  # stages whose models are resident together
    # Every stage's devices, `placement[sid]` first; more than one: copies of it share its rows.
    replicas: dict[str, list[Device]] = field(default_factory=dict)
    needs: dict[str, DeviceNeeds] = field(default_factory=dict)  # each stage's, as make_plan read them once
    warnings: list[str] = field(default_factory=list)  # what planning found (the run starts with these)
    # Re-takes (`--retake`, review/takes.py): row identity (results that carry an `id`) or row
    # index -> stage -> take; absent: take 0.
    takes: dict[int | str, dict[str, int]] = field(default_factory=dict)
    rerun: frozenset[str] = frozenset()  # stages that run again instead of reusing stored results (--rerun)

    def devices_of(self, stage_id: str) -> list[Device]:
        """Where a stage runs: its device, then those of its copies (replicas), if any."""
        return self.replicas.get(stage_id) or [self.placement[stage_id]]


@dataclass
class RunContext:
    """What changes while a plan runs: counters, warnings, the current batch sizes (out-of-memory
    halving lowers them for the rest of the run), and where results go (artifacts, run store)."""

    stats: dict[str, StageStats]
    warnings: list[str]
    batch_sizes: dict[str, int]
    artifacts: ArtifactWriter | None = None
    store: RunStore | None = None

    @classmethod
    def start(cls, plan: RunPlan, artifacts: ArtifactWriter | None = None, store: RunStore | None = None) -> RunContext:
        stats = {sid: StageStats(type(stage).type_name, "+".join(map(str, plan.devices_of(sid))),
                                 memory_bytes=plan.needs[sid].memory_bytes if sid in plan.needs else 0)
                 for sid, stage in plan.stages.items()}
        return cls(stats, list(plan.warnings), dict(plan.batch_sizes), artifacts, store)


@dataclass
class StageContext:
    """One stage of one run, as `StageRunner` sees it; both backends build it without re-planning
    (`stage_context` on the driver, the Ray worker from what its step carries)."""

    stage_id: str
    stage: Stage
    graph: PipelineGraph  # read only: the stage's wiring and params, the run seed, the order
    call: Callable[..., Any]  # the `aigc_process_batch` hook (plugins may wrap it)
    stats: StageStats
    warnings: list[str]
    batch_sizes: dict[str, int]  # the run's current sizes: out-of-memory halving lowers this stage's
    artifacts: ArtifactWriter | None = None
    store: RunStore | None = None
    takes: dict[int | str, dict[str, int]] = field(default_factory=dict)
    rerun: bool = False


def stage_context(
    plan: RunPlan, run: RunContext, stage_id: str, stage: Stage | None = None, stats: StageStats | None = None
) -> StageContext:
    """The context of `stage_id` in this run: the plan's instance and counters, or (for a copy of
    a replicated stage) its own `stage` and `stats`."""
    return StageContext(
        stage_id, plan.stages[stage_id] if stage is None else stage, plan.graph, plan.pm.hook.aigc_process_batch,
        run.stats[stage_id] if stats is None else stats, run.warnings, run.batch_sizes, run.artifacts, run.store,
        plan.takes, stage_id in plan.rerun,
    )


OnFinished = Callable[[list[ItemState]], None]


class ExecutorBackend(Protocol):
    """Runs every live item of `states` through the plan.

    Stages mark items failed or filtered as they go; the backend marks an item DONE once it has
    passed every stage, then calls `on_finished` (when given) with the items just finished.
    On an error it stops its workers, leaves unfinished items unmarked and raises.
    """

    @property
    def description(self) -> str:
        """What the manifest records as the run's executor ("local", "ray (a local instance)")."""
        ...

    def execute(
        self, plan: RunPlan, run: RunContext, states: list[ItemState], on_finished: OnFinished | None,
        stage_ids: list[str] | None = None,
    ) -> None: ...


def result_keys(graph: PipelineGraph, domain: str = "row") -> list[tuple[str, str]]:
    """(result name, value key) for every field of a run's per-row (or per-group) results."""
    return [(name, str(ref)) for name, ref in graph.result_fields(domain).items()]


def usage_keys(graph: PipelineGraph) -> list[tuple[str, str]]:
    """(stage, value key) of every stage with a `usage` output: its per-row ledger (tokens, requests),
    which every row's result carries under `usage`."""
    return [(sid, f"{sid}.usage") for sid in graph.order if "usage" in graph.stage_class(sid).outputs]


def item_result(state: ItemState, keys: list[tuple[str, str]], usage: Sequence[tuple[str, str]] = ()) -> ItemResult:
    values = state.values
    outputs = {name: values[key] for name, key in keys if key in values}
    status = state.status or NOT_RUN
    error = None
    if status in (FAILED, FILTERED, REJECTED) or (status == NOT_RUN and state.reason):
        error = {"stage": state.stage or "input", "reason": state.reason or ""}
    ledger = {sid: values[key] for sid, key in usage if values.get(key) is not None}
    return ItemResult(state.index, state.line, status, outputs, error, state.flags, state.trace, ledger or None,
                      state.identity)
