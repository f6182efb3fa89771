"""Which rows a stage runs: the rule for a branch whose row another branch filtered or failed.

A stage runs every row its own upstream passed. A row filtered or failed by a stage that is not
upstream of it (another branch: `checked` drops a row's copy while `hero` draws its image from the
prompt) still runs there, and its result is stored: the row's status stays the first verdict, and
the other branch's outputs are kept beside it. So what a branch computes never depends on which
branch reached a row first (stage threads race), and a re-run of a finished run finds every result
it needs in the store: it loads no model, whatever was filtered. The cost is the first run's work
on such rows (an image for a row whose copy was dropped), paid once.

A row a stage upstream of it ended, or a rejected input row, is never run: its inputs do not exist.

When two branches end a row, the row reports the verdict of the stage first in the pipeline's order,
whichever thread (or worker process) got there first (`claim_verdict`): results.jsonl never depends
on timing. Each stage still counts and stores its own verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .dag import ancestors
from .graph import PipelineGraph
from .records import FAILED, FILTERED, ItemState

ENDED_ELSEWHERE = (FILTERED, FAILED)
_VERDICT_LOCK = threading.Lock()  # two branches may end one row at once


def row_filter(graph: PipelineGraph, stage_id: str) -> Callable[[ItemState], bool]:
    """Whether `stage_id` runs a row (see the module docstring)."""
    upstream = ancestors(graph.graph, stage_id)
    needed = [str(ref) for ref in graph.wiring[stage_id].values()]

    def runs(state: ItemState) -> bool:
        if state.status is None:
            return True
        if state.status not in ENDED_ELSEWHERE or state.stage in upstream or state.stage == stage_id:
            return False
        values = state.values
        return all(key in values for key in needed)

    return runs


def claim_verdict(state: ItemState, verdict: str, stage_id: str, ranks: dict[str, int], reason: str | None,
                  trace: str | None = None) -> bool:
    """Give `state` the verdict of `stage_id` unless a stage earlier in the pipeline's order (`ranks`)
    ended it already (see the module docstring). False: the row keeps its verdict."""
    rank = ranks.get(stage_id, len(ranks))
    with _VERDICT_LOCK:
        mine = state.status is None or (state.stage is not None and rank < ranks.get(state.stage, -1))
        if mine:
            state.status, state.stage, state.reason, state.trace = verdict, stage_id, reason, trace
    return mine
