"""Planning a run before it starts: stage instances, placement, batch sizes, residency phases,
replicas. The result is a frozen `RunPlan` (records.py); nothing here loads a model.

`make_plan` runs each stage's `preflight` and reads its `needs` once, so a missing model or an
impossible placement stops the run before any row is processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pluggy

from .device_scheduler import place_stages, plan_replicas
from .devices import Device, Inventory, probe_inventory
from .errors import AigcError, PreflightError, StageError
from .graph import PipelineGraph
from .records import RunPlan
from .residency import MemoryCap, budgets, cap_inventory, fit_replicas, oversized, plan_phases
from .stage import DeviceNeeds, Stage

# What the device scheduler gets per stage: (type name, needs, the device the file or CLI asks for).
Request = tuple[str, DeviceNeeds, Device | None]


@dataclass(frozen=True)
class Phases:
    """The stages of each phase, in graph order."""

    rows: list[str]
    reducers: list[str]
    groups: list[str] = field(default_factory=list)


def split_phases(graph: PipelineGraph) -> Phases:
    """The per-row stages, the reducing stages, and the stages downstream of a reducer (per group)."""
    reducers = [sid for sid in graph.order if graph.stage_class(sid).reduces]
    rows = [sid for sid in graph.order if sid not in reducers and graph.domains.get(sid, "row") == "row"]
    groups = [sid for sid in graph.order if graph.domains.get(sid) == "group"]
    return Phases(rows, reducers, groups)


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
    spec = graph.pipeline.spec
    preflight(graph)
    stages, requests = _stages_and_requests(graph, device)
    if inventory is None:
        wants_gpu = any(needs.kind != "cpu" for _, needs, _ in requests.values())
        inventory = probe_inventory() if wants_gpu else Inventory()
    inventory = cap_inventory(inventory, gpu_memory)
    placement = place_stages(requests, inventory, pm)
    batch_sizes = {sid: spec.stages[sid].batch_size or type(stages[sid]).batch_size_for(graph.pipeline.params[sid])
                   for sid in graph.order}
    needs_of = {sid: needs for sid, (_, needs, _) in requests.items()}
    memory = {sid: needs.memory_bytes for sid, needs in needs_of.items()}
    budget = budgets(inventory)
    residency = _residency(graph, placement, memory, budget)
    asked = {sid: None if (count := spec.stages[sid].replicas) == "auto" else count for sid in graph.order}
    splittable = [sid for sid in graph.order if _splittable(graph, sid)]
    wanted = plan_replicas(requests, placement, inventory, asked, splittable)
    replicas, dropped = fit_replicas(residency, placement, wanted, memory, budget)
    return RunPlan(graph, stages, placement, batch_sizes, pm, residency, replicas, needs_of,
                   oversized(placement, memory, budget) + dropped)


def _stages_and_requests(graph: PipelineGraph, device: Device | None) -> tuple[dict[str, Stage], dict[str, Request]]:
    """Each stage's instance and placement request (in graph order)."""
    spec = graph.pipeline.spec
    stages: dict[str, Stage] = {}
    requests: dict[str, Request] = {}
    for stage_id in graph.order:
        cls = graph.stage_class(stage_id)
        params = graph.pipeline.params[stage_id]
        needs = cls.needs(params)
        own = spec.stages[stage_id].device
        requested = Device.parse(own) if own else (device if needs.kind != "cpu" else None)
        requests[stage_id] = (cls.type_name, needs, requested)
        stages[stage_id] = cls(params)
    return stages, requests


def _splittable(graph: PipelineGraph, stage_id: str) -> bool:
    """Whether copies of the stage may share its rows: each item's result depends on that item alone
    (a stage says otherwise by being run-wide, not cacheable, or reducing)."""
    cls, params = graph.stage_class(stage_id), graph.pipeline.params[stage_id]
    return bool(cls.cacheable(params) and not cls.run_wide(params) and not cls.reduces)


def _residency(
    graph: PipelineGraph, placement: dict[str, Device], memory: dict[str, int], budget: dict[Device, int]
) -> list[list[str]]:
    """Residency phases of the per-row stages, then of the per-group stages (reducers run between)."""
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
