"""Where a micro-batch meets a stage: store lookups, lazy loading, isolation, OOM backoff.

`StageRunner` builds the `StageItem`s of a micro-batch, serves what the run store already holds,
loads the stage on its first miss (its `StageLifecycle`: a run whose results are all stored loads no model),
calls the `aigc_process_batch` hook (plugins wrap it), isolates failures (a batch that raises is
retried one item at a time; only items that fail alone are marked failed), halves the batch on an
out-of-memory error, writes artifacts, and records new results in the store, one commit per
micro-batch, after the artifacts are in place (an item the stage says is done early, `item.ready()`,
is stored at once: `early_results`). Every executor backend uses it.
"""

from __future__ import annotations

import errno
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .branches import claim_verdict, row_filter
from .content import AUDIO, IMAGE, VIDEO, ArtifactData
from .early_results import EarlyResults
from .errors import AigcError, OutputFolderError
from .port_checks import output_problem, port_checks
from .provenance import origin_of
from .records import (
    DONE,
    FAILED,
    FILTERED,
    NOT_RUN,
    ItemState,
    StageContext,
)
from .residency import (
    free_cached_memory,
    is_out_of_memory,
)
from .sinks import crash_point
from .stage import StageItem, item_seed
from .store import (
    QUARANTINE_AFTER,
    QUARANTINED,
    NewResult,
    decode_outputs,
    encode_outputs,
    item_key,
    stage_prefix,
)
from .time_limits import call_within, stage_timeout


class StageRunner:
    """Runs micro-batches of one stage with per-item isolation, the run store and bookkeeping.

    `load` (the stage's `StageLifecycle`) is called before the first micro-batch the store cannot
    serve (None: the caller loaded the stage already). Everything else comes from `context`.
    """

    def __init__(self, context: StageContext, load: Callable[[], None] | None = None) -> None:
        graph, stage_id = context.graph, context.stage_id
        self.stage_id = stage_id
        self.stage = context.stage
        self.stats = context.stats
        self.seed_parts = (graph.pipeline.spec.seed, stage_id)
        self.inputs = [(port, str(ref)) for port, ref in graph.wiring[stage_id].items()]
        self.outputs = {port: f"{stage_id}.{port}" for port in type(self.stage).outputs}
        self.outputs_list = list(self.outputs.items())
        self.call = context.call
        self.timeout = stage_timeout(type(self.stage), graph.pipeline.spec.stages[stage_id].timeout)
        self.checks = port_checks(type(self.stage).outputs)
        self.artifact_ports = [p for p, kind in type(self.stage).outputs.items() if kind in (IMAGE, AUDIO, VIDEO)]
        self.artifacts = context.artifacts
        self.batch_sizes, self.warnings = context.batch_sizes, context.warnings
        self.max_batch: int | None = None  # set by an out-of-memory error: the size that fits
        self.load = load
        self.store = context.store
        self.takes = context.takes
        self.prefix: str | None = None  # the stage's part of every cache key; None: not cached
        self.rerun = context.rerun  # --rerun: compute and store again, reuse nothing
        self.runs = row_filter(graph, stage_id)  # live rows, and rows another branch ended: branches.py
        self._peak_at = -PEAK_RSS_EVERY_S  # when note_peak last ran: the first batch records it
        self._verdicts: dict[int, str] = {}  # this stage's verdict per item of the current batch
        self.ranks = {sid: rank for rank, sid in enumerate(graph.order)}
        # In-flight markers name the rows a crash of this process may be blamed on; a stage whose
        # work runs in another process (a served model) cannot crash this one: a kill is no evidence.
        self.crash_watch = type(self.stage).in_process(graph.pipeline.params[stage_id])
        if self.store is not None:
            cls, params = type(self.stage), graph.pipeline.params[stage_id]
            if cls.cacheable(params):
                origin = origin_of(graph, stage_id).as_key()
                self.prefix = stage_prefix(cls.type_name, cls.cache_params(params), cls.model_identity(params), origin)
        # Items the stage says are done (`item.ready()`) are stored before their batch returns.
        self.early = (EarlyResults(stage_id, self.store, self.checks, list(self.outputs))
                      if self.store is not None and self.prefix is not None and not self.artifact_ports else None)
        self.on_ready: Callable[[StageItem], None] | None = None  # the current sub-batch's, from `early`

    def run(self, states: list[ItemState], checked: bool = False) -> None:
        """Process the items of `states` this stage runs (`self.runs`) as one micro-batch.
        `checked`: the caller kept only those already (what `runs` says of them cannot change)."""
        runs = self.runs
        live = states if checked else [state for state in states if runs(state)]
        if not live:
            return
        self._verdicts.clear()
        started = time.perf_counter()
        keys: dict[int, str | None] = {}
        if self.prefix is not None:
            live = self._reuse(live, keys)
        if live:
            if self.load is not None:
                before = time.perf_counter()
                self.load()
                started += time.perf_counter() - before  # load time is counted in load_seconds
            for part in self._parts(live, keys):
                self._run_part(part, keys)
            self.stats.batches += 1
            if counters := self.stage.counters():
                self.stats.counters = dict(counters)
            if time.perf_counter() - self._peak_at >= PEAK_RSS_EVERY_S:
                self.note_peak()
            if self.stats.first_batch_seconds is None:
                self.stats.first_batch_seconds = time.perf_counter() - started
        self.stats.seconds += time.perf_counter() - started

    def note_peak(self) -> None:
        """Record the process's peak memory now (after a batch: at most every PEAK_RSS_EVERY_S, and at the end)."""
        self._peak_at = time.perf_counter()
        self.stats.peak_rss_bytes = max(self.stats.peak_rss_bytes, peak_rss())

    def _run_part(self, states: list[ItemState], keys: dict[int, str | None]) -> None:
        """Run a sub-batch; with a store, its in-flight markers are committed before it runs and
        its results (artifacts already in place) with the markers' removal after."""
        entries = [(key, state.index) for state in states if (key := keys.get(state.index)) is not None] if keys else []
        marked = not type(self.stage).crash_proof and self.crash_watch  # (no crash evidence needed: see __init__)
        if entries and marked and self.store is not None:
            self.store.begin(self.stage_id, entries)
        early = self.early if entries else None
        self.on_ready = early.callback(keys, marked) if early is not None else None
        self._run_isolated(states)
        crash_point("batch")
        if entries and self.store is not None:
            results = self._new_results(states, keys)
            if early is not None:
                results = early.without_stored(results)
            if marked:
                self.store.finish(self.stage_id, results, [key for key, _ in entries])
            else:
                self.store.record(self.stage_id, results)

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
            seed = item_seed(run_seed, state.identity, stage_id, self._take(state))
            keys[state.index] = item_key(self.prefix, seed, inputs)
        # A store that held nothing when the run opened it (--fresh, a first run) cannot serve a key
        # of this run: each comes up once (store.py, `stored_before`). No lookup, no wait on a commit.
        fresh = self.rerun or not self.store.stored_before
        stored = {} if fresh else self.store.lookup([key for key in keys.values() if key is not None])
        missing = []
        for state in states:
            key = keys[state.index]
            hit = stored.get(key) if key is not None else None
            if hit is not None and self._apply(state, *hit):
                continue
            if key is not None and self.store.crashes(key) >= QUARANTINE_AFTER:
                self._record_failure(state, f"{QUARANTINED} (stage '{stage_id}'); "
                                     "run with --retry-quarantined to try it again")
                continue
            missing.append(state)
        return missing

    def _apply(self, state: ItemState, verdict: str, reason: str | None, outputs: str, flags: str) -> bool:
        """Give `state` a stored result; False when one of its artifacts is gone, or it lacks an
        output port the stage has now (a newer version of the stage added one): run it again."""
        values = decode_outputs(outputs, self.artifacts.out_dir) if self.artifacts is not None else None
        if values is None or (verdict == DONE and any(port not in values for port, _ in self.outputs_list)):
            return False
        if verdict in (FILTERED, FAILED):
            self._verdicts[state.index] = verdict
            self._end(state, verdict, reason)
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
        """What to store: items that passed (outputs, also of a row another branch ended), were
        filtered here, or failed here by the stage's own verdict (`item.fail`: final). Never a
        failure from an exception (often transient: out of memory, a flaky program): tried again."""
        results = []
        verdicts = self._verdicts
        for state in states:
            key = keys.get(state.index)
            verdict = verdicts.get(state.index)
            if key is None or verdict == _RAISED:
                continue
            flags = [flag["reason"] for flag in state.flags if flag["stage"] == self.stage_id]
            if verdict is None:
                encoded = encode_outputs({port: state.values[value_key] for port, value_key in self.outputs_list})
                if encoded is not None:
                    results.append(NewResult(key, state.index, DONE, None, encoded, flags))
            else:
                reason = state.reason if state.stage == self.stage_id else None
                results.append(NewResult(key, state.index, verdict, reason, "{}", flags))
        return results

    def items(self, states: list[ItemState]) -> list[StageItem]:
        seed_parts, inputs, take = self.seed_parts, self.inputs, self._take
        if len(inputs) == 1 and not self.takes:  # the common shape, kept lean: no comprehension per item
            [(port, key)] = inputs
            items = [StageItem(state.index, {port: state.values[key]}, seed_parts, state.identity) for state in states]
        else:
            items = [StageItem(state.index, {port: state.values[key] for port, key in inputs}, seed_parts,
                               state.identity, take(state)) for state in states]
        if self.on_ready is not None:
            for item in items:
                item.on_ready = self.on_ready
        return items

    def _take(self, state: ItemState) -> int:
        """The row's take at this stage (0 unless a --retake re-seeded it)."""
        takes = self.takes
        if not takes:
            return 0
        found = takes.get(state.identity) or takes.get(state.index)  # by identity; older results: index
        return found.get(self.stage_id, 0) if found else 0

    def _run_isolated(self, states: list[ItemState]) -> None:
        items = self.items(states)
        try:
            returned = call_within(self.timeout, len(items), self.call, stage_id=self.stage_id, stage=self.stage,
                                   batch=items)
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
        outputs, checks = self.outputs_list, self.checks
        done = 0
        for state, item in zip(states, items, strict=True):
            if item.verdict is None and checks and (problem := output_problem(self.stage_id, checks, item.outputs)):
                self._record_failure(state, problem)
                continue
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
            if item.verdict == NOT_RUN:  # not started (the run's cost cap): nothing stored, a re-run runs it
                self._verdicts[state.index] = _RAISED
                if state.status is None:
                    state.status, state.stage, state.reason = NOT_RUN, self.stage_id, item.reason
                return
            self._verdicts[state.index] = item.verdict if item.final else _RAISED
            self._end(state, item.verdict, item.reason)
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
                item.outputs[port] = self.artifacts.save(self.stage_id, state.identity, port, value, self._take(state))
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # every row after it would fail the same way
                    raise OutputFolderError(f"no space left in {self.artifacts.out_dir} to write artifacts; free "
                                            "space and run the same command again (finished rows are kept)") from exc
                self._record_failure(state, f"could not write the {port} artifact: {exc}", exc)
                return False
            crash_point("artifact")
        return True

    def _end(self, state: ItemState, verdict: str, reason: str | None, trace: str | None = None) -> bool:
        """This stage filtered or failed the item. When two branches end a row, the row reports the
        verdict of the stage first in the pipeline's order, whichever thread got there first, so
        results.jsonl never depends on timing; each stage's own verdict is counted (and stored)."""
        mine = claim_verdict(state, verdict, self.stage_id, self.ranks, reason, trace)
        if verdict == FILTERED:
            self.stats.filtered += 1
        else:
            self.stats.failed += 1
        return mine

    def _record_failure(self, state: ItemState, reason: str, exc: BaseException | None = None) -> None:
        """The item failed by an exception (or the engine's check): not final, never stored."""
        trace = "".join(traceback.format_exception(exc)) if exc is not None else None
        self._end(state, FAILED, reason, trace)
        self._verdicts[state.index] = _RAISED


# getrusage() sums per-CPU memory counters on recent Linux kernels: 0.1-0.2 ms on a machine with many
# possible CPUs, a tenth of a worker's time when it ran after every micro-batch of a template.
PEAK_RSS_EVERY_S = 0.5
_RAISED = "raised"  # a failure from an exception: not stored, tried again next run


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
