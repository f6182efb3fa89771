"""`aigc run ... --retake rejected`: another take of what a reviewer rejected, and nothing else.

For each row whose current take was rejected (the whole row, or some of its outputs), the retake
re-seeds the stages that produced the rejected outputs: each rejected output's stage and the
stages upstream of it, except those that also feed an output the reviewer kept and that does not
depend on a rejected one (a rejected image must not change the approved copy it was drawn from).
A re-seeded stage of that row gets seed `hash(run seed, row, stage, take)` with the row's next take
number; its cache key changes with the seed, so it runs again, and so does every stage downstream
whose inputs changed. Every other row, and every other stage of the row, keeps its seed and
reuses its stored result: approved rows cost no model load at all.

Every take is kept: its stage results stay in the run store (other cache keys), its artifacts
under their own names (`<row>.take<N>.<port>`), and its outputs in the `takes` table (take 0 is
recorded from results.jsonl just before the first retake), so the reviewer can switch between
takes and approve any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dag import ancestors, descendants
from ..errors import ReviewError
from ..gallery import row_id
from ..graph import PipelineGraph
from ..report_scan import read_records
from ..sinks import RESULTS_FILE
from .decisions import REJECTED, ReviewStore

RETAKE_CHOICES = ("rejected",)


@dataclass
class Retake:
    """The takes a run uses: `seeds` (row -> stage -> take, for every row with takes) and `new`
    (row -> (take, stages it re-seeds)) for the rows this run takes again. Rows by identity, or by
    row number in a store an older version reviewed (`by_position`, review/row_keys.py)."""

    seeds: dict[int | str, dict[str, int]] = field(default_factory=dict)
    new: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    by_position: bool = False


def plan_retake(out_dir: Path, graph: PipelineGraph, what: str | None) -> Retake | None:
    """The takes of a run over `out_dir` (None when it has no review tables: nothing changes).

    `what="rejected"` starts a new take of every rejected row; None only keeps earlier takes' seeds."""
    if what is not None and what not in RETAKE_CHOICES:
        raise ReviewError(f"--retake {what!r}: the only choice is 'rejected'")
    try:
        store = ReviewStore.open(out_dir)
    except ReviewError:
        if what is not None:
            raise ReviewError(f"--retake {what}: {out_dir} has no run store, so nothing was reviewed") from None
        return None
    try:
        return _plan(store, out_dir, graph, what)
    finally:
        store.close()


def _plan(store: ReviewStore, out_dir: Path, graph: PipelineGraph, what: str | None) -> Retake | None:
    if what is None and not store.any():
        return None
    retake = Retake(by_position=store.by_position)
    key = _position if store.by_position else row_id
    if what is not None:
        outputs = list(graph.result_fields("row"))
        rejected = {row: review for row, review in store.reviews().items() if review.status == REJECTED}
        if not rejected:
            raise ReviewError(f"--retake rejected: no row of {out_dir} is rejected (aigc review {out_dir} to review)")
        for record in read_records(out_dir / RESULTS_FILE):
            review = rejected.get(row := key(record))
            if review is None:
                continue
            if review.current_take == 0 and not store.takes(row):
                store.record_take(row, 0, [], record.get("outputs") or {})
            stages = stages_to_reseed(graph, review.rejected_outputs(outputs))
            retake.new[row] = (review.current_take + 1, stages)
    seed_key = _index if store.by_position else str
    for row, taken in store.stage_takes().items():
        retake.seeds[seed_key(row)] = dict(taken)
    for row, (take, reseeded) in retake.new.items():
        retake.seeds.setdefault(seed_key(row), {}).update(dict.fromkeys(reseeded, take))
    return retake


def stages_to_reseed(graph: PipelineGraph, rejected: list[str]) -> list[str]:
    """The row stages a new take of the `rejected` outputs re-seeds, in run order."""
    from ..planning import split_phases

    fields = {name: str(ref).split(".", 1)[0] for name, ref in graph.result_fields("row").items()}
    row_stages = set(split_phases(graph).rows)
    dag = graph.graph
    producers = {stage for name in rejected if (stage := fields.get(name)) is not None and stage in dag}
    wanted = {s for stage in producers for s in (stage, *ancestors(dag, stage))}
    changed = {s for stage in producers for s in (stage, *descendants(dag, stage))}
    for name, stage in fields.items():
        if name in rejected or stage not in dag or stage in changed:
            continue
        wanted -= {stage, *ancestors(dag, stage)}  # a kept output that a rejected one does not feed
    return [stage for stage in graph.order if stage in wanted and stage in row_stages]


def record_takes(out_dir: Path, retake: Retake | None) -> None:
    """After the run: store each new take's outputs (from results.jsonl) in the takes table."""
    if retake is None or not retake.new:
        return
    store = ReviewStore.open(out_dir)  # (re-keys a store planned by row number, now that results have ids)
    key = _position if retake.by_position else row_id
    try:
        for record in read_records(out_dir / RESULTS_FILE):
            planned = retake.new.get(key(record))
            if planned is not None:
                take, stages = planned
                store.record_take(row_id(record), take, stages, record.get("outputs") or {})
    finally:
        store.close()


def record_review(out_dir: Path, retake: Retake | None) -> bool:
    """After a run: record its new takes, then write the review fields into results.jsonl (True if it did)."""
    from .results import annotate_results

    record_takes(out_dir, retake)
    return annotate_results(out_dir)


def _position(record: dict[str, Any]) -> str:
    """A row as a store keyed by row number (an older version's) names it."""
    return str(record.get("row"))


def _index(row: str) -> int | str:
    """A row of a store keyed by row number as `RunPlan.takes` knows it: the row's index."""
    try:
        return int(row)
    except ValueError:
        return row


def take_outputs(store: ReviewStore, row: str, take: int) -> dict[str, Any] | None:
    """The outputs of one take of a row, as stored (None when that take is not stored)."""
    for number, _, outputs in store.takes(row):
        if number == take:
            return outputs
    return None
