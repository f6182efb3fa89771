"""Reducing stages (many rows into one, e.g. a daily digest) and the group items they create.

A run with a reducing stage has three phases: the per-row stages run over every row; each
reducing stage then gets every row that finished them, at once, and returns `Group`s; the stages
downstream of it run over those groups like over rows (micro-batches, isolation, seeds). Group
results go to `groups.jsonl`, next to the per-row `results.jsonl`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import StageError
from .lifecycle import StageLifecycle
from .records import DONE, ItemResult, ItemState, RunContext, RunPlan, item_result, stage_context
from .row_identity import group_identity
from .sources import InputRow
from .stage import Group
from .stage_runner import StageRunner


class GroupState(ItemState):
    """A group made by a reducing stage, flowing through the group-phase stages like a row."""

    __slots__ = ("key", "members")

    def __init__(self, index: int, group: Group, stage_id: str) -> None:
        super().__init__(InputRow(index, 0, None), {})
        self.key = group.key
        self.identity = group_identity(stage_id, group.key)  # named by its key, never its position
        self.members = list(group.members)
        self.values.update({f"{stage_id}.{port}": value for port, value in group.outputs.items()})


@dataclass
class GroupResult(ItemResult):
    """One line of groups.jsonl."""

    key: str = ""
    members: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        record = super().as_dict()
        del record["row"], record["line"]
        return {"group": self.key, "members": self.members, **record}


def run_reducers(plan: RunPlan, run: RunContext, states: list[ItemState], reducers: list[str]) -> list[GroupState]:
    """Run every reducing stage over the rows that finished the per-row phase."""
    finished = [state for state in states if state.status == DONE]
    groups: list[GroupState] = []
    for stage_id in reducers:
        for group in _reduce(plan, run, stage_id, finished):
            groups.append(GroupState(len(states) + len(groups), group, stage_id))
    return groups


def _reduce(plan: RunPlan, run: RunContext, stage_id: str, rows: list[ItemState]) -> list[Group]:
    stage, stats = plan.stages[stage_id], run.stats[stage_id]
    if not rows:
        return []
    started = time.perf_counter()
    with StageLifecycle(stage_id, stage, plan.placement[stage_id], stats, run.warnings.append) as lifecycle:
        lifecycle()  # a load error is raised as "failed to load: ..."
        try:
            groups = stage.reduce(StageRunner(stage_context(plan, run, stage_id)).items(rows))
        except Exception as exc:
            raise StageError(stage_id, stage.type_name, f"reduce failed: {type(exc).__name__}: {exc}") from exc
    _check_groups(stage_id, stage.type_name, type(stage).outputs, groups)
    stats.done += len(groups)
    stats.batches += 1
    stats.seconds += time.perf_counter() - started
    return groups


def _check_groups(stage_id: str, type_name: str, ports: dict[str, Any], groups: Any) -> None:
    if not isinstance(groups, list) or not all(isinstance(g, Group) for g in groups):
        raise StageError(stage_id, type_name, "reduce() must return a list of Group")
    for group in groups:
        missing = [port for port in ports if port not in group.outputs]
        if missing:
            raise StageError(stage_id, type_name, f"group '{group.key}' lacks output port(s) {', '.join(missing)}")


def group_result(state: GroupState, keys: list[tuple[str, str]]) -> GroupResult:
    base = item_result(state, keys)
    return GroupResult(**vars(base), key=state.key, members=state.members)
