"""The local executor: one thread per stage, items streaming through in chunks.

Rows are cut into chunks; every stage walks the chunks in order and starts chunk k as soon as all
of its upstream stages have finished chunk k. So independent branches run at the same time, and a
model stage works on chunk k while CPU stages work on chunk k+1 (model libraries release the GIL).
Within a chunk, a stage takes its live items in micro-batches of its own `batch_size`.

A stage with replicas (`RunPlan.replicas`: copies on several GPUs) runs one thread per copy, each
with its own instance loaded on its own device. The copies share the stage's work: its chunks
are cut into micro-batches, in order, onto one queue, and whichever copy is free takes the next.
The stage has finished chunk k when every micro-batch of it is done, by whichever copy. Each copy
counts in its own `StageStats`, added to the stage's when it stops, so the counts add up.

A big run's CPU-bound stages (templates, regex filters) may instead run in forked worker
processes (`worker_processes.py`): two threads here then send them each chunk and take it back,
and those stages count a chunk finished when it is back.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..branches import row_filter
from ..devices import Device
from ..errors import StageError
from ..lifecycle import StageLifecycle
from ..plugin_manager import has_observers, notify
from ..records import DONE, ItemState, OnFinished, RunContext, RunPlan, StageStats, stage_context
from ..signals import join_workers, stop_grace
from ..stage import Stage
from ..stage_runner import StageRunner
from ..streaming import ChunkFeed
from .remote_runner import apply_report
from .worker_processes import WorkerPool, fork_workers

MIN_CHUNK = 64


class LocalExecutor:
    """Runs a plan in this process; `chunk_size` (rows per chunk) defaults to `chunk_size(...)`."""

    description = "local"  # what the manifest records as the run's executor

    def __init__(self, chunk_size: int | None = None, workers: int | None = None) -> None:
        self.chunk_size = chunk_size
        self.workers = workers  # worker processes for CPU-bound stages (None: as the run suits; 0: none)

    streams = True  # executor.execute may hand it a ChunkFeed instead of a list (see streaming.py)

    def execute(
        self,
        plan: RunPlan,
        run: RunContext,
        states: list[ItemState] | ChunkFeed,
        on_finished: OnFinished | None,
        stage_ids: list[str] | None = None,
    ) -> None:
        """Run `states`; a ChunkFeed streams (its chunks are released once collected)."""
        stages = plan.graph.order if stage_ids is None else stage_ids
        if isinstance(states, ChunkFeed):
            self._run(plan, run, states, stages, on_finished)
            if states.error is not None:
                raise states.error
            return
        live = [state for state in states if state.status is None]
        if not live:  # every row rejected, or --limit 0: loading models would be wasted
            return
        size = self.chunk_size or chunk_size(plan, stages, run.batch_sizes)
        self._run(plan, run, ChunkFeed(live, size, len(live)), stages, on_finished)

    def _run(self, plan: RunPlan, run: RunContext, feed: ChunkFeed, stages: list[str],
             on_finished: OnFinished | None) -> None:
        """Fork the worker processes first, if any (worker_processes.py: before any thread of this run)."""
        pool = fork_workers(plan, run, stages, feed.total, self.workers)
        try:
            self._run_flow(_Flow(plan, run, feed, stages, pool), on_finished)
        finally:
            if pool is not None:
                pool.close()
                for stage_id in pool.segment:  # the workers unloaded their copies as they ended
                    run.stats[stage_id].unloads = run.stats[stage_id].loads

    def _run_flow(self, flow: _Flow, on_finished: OnFinished | None) -> None:
        workers = [worker for stage_id in flow.threaded for worker in _workers(flow, stage_id)]
        if flow.pool is not None:
            workers += [threading.Thread(target=flow.send_segment, name="aigc-workers-send", daemon=True),
                        threading.Thread(target=flow.receive_segment, name="aigc-workers-receive", daemon=True)]
        for worker in workers:
            worker.start()
        try:
            flow.collect(on_finished)
        finally:
            flow.cancel()
            if join_workers(workers):  # only after a stop signal: batches still running past the grace period
                flow.run.warnings.append(f"stopped waiting for micro-batches still running {stop_grace():g} s "
                                         "after the stop signal; their rows are not_run")
            flow.collect(on_finished)  # chunks that every stage finished while stopping are done too
        if flow.error is not None:
            raise flow.error


def chunk_size(plan: RunPlan, stages: list[str], batch_sizes: dict[str, int] | None = None) -> int:
    """Rows per chunk. A stage starts chunk k once the stages before it have finished it, so it
    trails them by a chunk, to the end of the run. With model stages, a chunk is their largest
    micro-batch: two slow stages then overlap to within one micro-batch (benchmarks/pipelining.py:
    chunks of 64 rows cost 6-12% there), and cheap stages take a model stage's pace anyway.
    Without one, chunks of at least MIN_CHUNK keep the hand-off per chunk cheap next to stages
    that take microseconds per row (benchmarks/overhead.py). `batch_sizes`: the run's current ones
    (out-of-memory halving lowers them), else the plan's."""
    sizes = plan.batch_sizes if batch_sizes is None else batch_sizes
    models = [sizes[sid] for sid in stages if plan.needs[sid].model_work]
    return max(models) if models else max([MIN_CHUNK, *(sizes[sid] for sid in stages)])


def _workers(flow: _Flow, stage_id: str) -> list[threading.Thread]:
    """The stage's thread, or one thread per copy of a replicated stage (the plan's instance first)."""
    devices = flow.plan.replicas.get(stage_id, ())
    if len(devices) < 2:
        return [threading.Thread(target=flow.run_stage, args=(stage_id,), name=f"aigc-{stage_id}", daemon=True)]
    stage, params = flow.plan.stages[stage_id], flow.plan.graph.pipeline.params[stage_id]
    instances = [stage, *(type(stage)(params) for _ in devices[1:])]
    return [
        threading.Thread(target=flow.run_copy, args=(stage_id, instance, device), name=f"aigc-{stage_id}@{device}",
                         daemon=True)
        for instance, device in zip(instances, devices, strict=True)
    ]


@dataclass
class _SharedWork:
    """The micro-batches of a replicated stage, handed to whichever copy asks next."""

    queue: deque[tuple[int, list[ItemState]]] = field(default_factory=deque)  # (chunk, micro-batch) not taken
    opened: int = 0  # chunks cut into micro-batches so far (in order)
    unfinished: list[int] = field(default_factory=list)  # per opened chunk: its micro-batches not done yet
    sizes: list[int] = field(default_factory=list)  # per opened chunk: its rows
    seen: int = 0  # rows of the chunks the stage has finished


class _Flow:
    """Shared progress of all stage threads: chunks completed per stage, the first error."""

    def __init__(self, plan: RunPlan, run: RunContext, feed: ChunkFeed, stages: list[str],
                 pool: WorkerPool | None = None) -> None:
        self.plan = plan
        self.run = run
        self.feed = feed
        self.stages = stages
        self.completed = dict.fromkeys(stages, 0)
        self.collected = 0  # chunks already marked DONE by collect()
        # Upstream stages outside this phase (before an aggregate) have finished already.
        self.upstream = {sid: [p for p in plan.graph.graph.predecessors(sid) if p in self.completed] for sid in stages}
        self.runs = {sid: row_filter(plan.graph, sid) for sid in stages}  # which rows each stage runs: branches.py
        self.condition = threading.Condition()
        self.cancelled = False
        self.error: BaseException | None = None
        self.shared = {sid: _SharedWork() for sid in stages if len(plan.replicas.get(sid, ())) > 1}
        self.pool = pool  # worker processes running a segment of the stages (worker_processes.py)
        segment = pool.segment if pool is not None else []
        self.threaded = [sid for sid in stages if sid not in segment]  # the stages run on threads here
        self.segment_upstream = sorted({up for sid in segment for up in self.upstream[sid] if up not in segment})

    def cancel(self) -> None:
        with self.condition:
            self.cancelled = True
            self.condition.notify_all()
        self.feed.cancel()
        if self.pool is not None:
            self.pool.stop()

    def _wait_for(self, stages: list[str], count: int) -> bool:
        """Block until every stage in `stages` has completed `count` chunks; False if cancelled."""
        with self.condition:
            while not self.cancelled and any(self.completed[s] < count for s in stages):
                self.condition.wait()
            return not self.cancelled

    def _completed_by_all(self, count: int) -> bool:
        with self.condition:
            return all(done >= count for done in self.completed.values())

    def _complete(self, stage_id: str) -> None:
        with self.condition:
            self.completed[stage_id] += 1
            self.condition.notify_all()

    def run_stage(self, stage_id: str) -> None:
        """Run one stage over every chunk. It loads lazily, on the first micro-batch the run store
        cannot serve: a stage whose results are all stored loads no model."""
        plan, run = self.plan, self.run
        lifecycle = StageLifecycle(stage_id, plan.stages[stage_id], plan.placement[stage_id], run.stats[stage_id],
                                   run.warnings.append)
        self._guarded(stage_id, lifecycle, lambda: self._process_chunks(stage_id, lifecycle))

    def run_copy(self, stage_id: str, stage: Stage, device: Device) -> None:
        """Run one copy of a replicated stage: micro-batches from the shared queue, on `device`."""
        total = self.run.stats[stage_id]
        stats = StageStats(total.type_name, total.device, memory_bytes=total.memory_bytes)
        lifecycle = StageLifecycle(stage_id, stage, device, stats, self.run.warnings.append)
        runner = StageRunner(stage_context(self.plan, self.run, stage_id, stage, stats), lifecycle)
        try:
            self._guarded(stage_id, lifecycle, lambda: self._process_shared(stage_id, runner))
        finally:
            with self.condition:
                total.merge(stats)

    def _guarded(self, stage_id: str, lifecycle: StageLifecycle, work: Callable[[], None]) -> None:
        """Do a stage thread's `work`; any error stops the run (before the stage unloads, so the
        other threads stop at once); the lifecycle unloads the stage if it loaded."""
        type_name = lifecycle.stage.type_name
        with lifecycle:
            try:
                work()
            except StageError as exc:  # failed to load
                self._fail(exc, exc.__cause__ or exc)
            except Exception as exc:  # StageRunner isolates a stage's exceptions: this one is the engine's
                self._fail(StageError(stage_id, type_name, f"engine error: {type(exc).__name__}: {exc}"), exc)
            except BaseException as exc:  # SystemExit from a stage: stop the run rather than hang it
                self._fail(StageError(stage_id, type_name, f"stopped the run: {type(exc).__name__}: {exc}"), exc)

    def _process_chunks(self, stage_id: str, lifecycle: StageLifecycle) -> None:
        runner = StageRunner(stage_context(self.plan, self.run, stage_id), lifecycle)
        runs, batch_size = self.runs[stage_id], self.run.batch_sizes[stage_id]
        report = has_observers(self.plan.pm, "aigc_stage_progress")
        seen, index = 0, 0
        while (chunk := self.feed.get(index)) is not None:
            index += 1
            if not self._wait_for(self.upstream[stage_id], index):
                return
            live = [state for state in chunk if state.status is None or runs(state)]  # (live rows: no call)
            for start in range(0, len(live), batch_size):
                if self.cancelled:  # a stop: no new micro-batch (the chunk stays unfinished)
                    return
                runner.run(live[start : start + batch_size], checked=True)
            seen += self.feed.entering(index - 1)
            if report:
                notify(self.plan.pm, "aigc_stage_progress", self.run.warnings.append,
                       stage_id=stage_id, done=seen, total=self.feed.live())
            self._complete(stage_id)
        runner.note_peak()
        if self.run.store is not None:
            self.run.store.flush()  # the stage is done: its last results need not wait for the end of the run

    def _process_shared(self, stage_id: str, runner: StageRunner) -> None:
        while (taken := self._take(stage_id)) is not None:
            chunk, batch = taken
            runner.run(batch, checked=True)  # _open_chunk kept the rows the stage runs
            self._batch_done(stage_id, chunk)

    def _take(self, stage_id: str) -> tuple[int, list[ItemState]] | None:
        """The next micro-batch of a replicated stage, with its chunk; None once all are taken, or on a stop.

        The next chunk is cut into micro-batches once its upstream stages have finished it, by
        whichever copy gets there first, so its live items are read once, before any copy runs them.
        """
        work = self.shared[stage_id]
        while True:
            with self.condition:
                index = work.opened
            chunk = self.feed.get(index)  # outside the condition: it may wait for the collector
            with self.condition:
                while not self.cancelled:
                    if work.queue:
                        return work.queue.popleft()
                    if work.opened != index:
                        break  # another copy opened that chunk: look at the next one
                    if chunk is None:
                        return None
                    if all(self.completed[up] > index for up in self.upstream[stage_id]):
                        self._open_chunk(stage_id, work, chunk)
                    else:
                        self.condition.wait()
                else:
                    return None

    def _open_chunk(self, stage_id: str, work: _SharedWork, chunk: list[ItemState]) -> None:
        """Queue the next chunk's micro-batches (with the condition held)."""
        index, size = work.opened, self.run.batch_sizes[stage_id]
        runs = self.runs[stage_id]
        live = [state for state in chunk if runs(state)]
        work.queue.extend((index, live[start : start + size]) for start in range(0, len(live), size))
        work.unfinished.append(-(-len(live) // size))
        work.sizes.append(self.feed.entering(index))
        work.opened += 1
        self._finish_chunks(stage_id, work)  # a chunk with no live item is finished at once

    def _batch_done(self, stage_id: str, chunk: int) -> None:
        work = self.shared[stage_id]
        with self.condition:
            work.unfinished[chunk] -= 1
            self._finish_chunks(stage_id, work)

    def _finish_chunks(self, stage_id: str, work: _SharedWork) -> None:
        """Count the leading chunks whose micro-batches are all done as finished (with the condition held).

        Progress is reported here, under the condition, so a stage's reports never go backwards.
        """
        finished = self.completed[stage_id]
        while finished < work.opened and work.unfinished[finished] == 0:
            work.seen += work.sizes[finished]
            finished += 1
            if has_observers(self.plan.pm, "aigc_stage_progress"):
                notify(self.plan.pm, "aigc_stage_progress", self.run.warnings.append,
                       stage_id=stage_id, done=work.seen, total=self.feed.live())
        if finished != self.completed[stage_id]:
            self.completed[stage_id] = finished
            self.condition.notify_all()

    def _fail(self, error: BaseException, cause: BaseException) -> None:
        error.__cause__ = cause
        with self.condition:
            if self.error is None:
                self.error = error
            self.cancelled = True
            self.condition.notify_all()
        if self.pool is not None:
            self.pool.stop()

    def send_segment(self) -> None:
        """The worker processes' feed: each chunk, once the stages before the segment have finished it."""
        pool, index = self.pool, 0
        assert pool is not None
        try:
            while (chunk := self.feed.get(index)) is not None:
                if not self._wait_for(self.segment_upstream, index + 1):
                    return
                if not self._segment_step(partial(pool.send, index, chunk)):
                    return
                index += 1
        finally:
            pool.finish_sending()

    def receive_segment(self) -> None:
        """Take chunks back from the worker processes, in order: each segment stage has finished them."""
        pool = self.pool
        assert pool is not None
        report = has_observers(self.plan.pm, "aigc_stage_progress")
        seen = 0
        while (received := self._segment_step(pool.receive)) is not None:
            index, reports = received
            seen += self.feed.entering(index)
            for stage_id, stage_report in zip(pool.segment, reports, strict=True):
                if stage_report is not None:
                    apply_report(self.run, stage_id, stage_report)
                if report:
                    notify(self.plan.pm, "aigc_stage_progress", self.run.warnings.append,
                           stage_id=stage_id, done=seen, total=self.feed.live())
                self._complete(stage_id)
        if self.run.store is not None:
            self.run.store.flush()

    def _segment_step(self, step: Callable[[], Any]) -> Any:
        """`step()`; an error stops the run like a stage thread's (None, then)."""
        try:
            return step()
        except StageError as exc:
            self._fail(exc, exc.__cause__ or exc)
        except Exception as exc:
            pool = self.pool
            first = pool.segment[0] if pool is not None else "?"
            self._fail(StageError(first, "worker process", f"engine error: {type(exc).__name__}: {exc}"), exc)
        return None

    def collect(self, on_finished: Callable[[list[ItemState]], Any] | None) -> None:
        """Mark each chunk DONE once every stage has finished it, in order; resumes where it stopped.

        After a stop, a chunk every stage had already finished is still marked: no finished work is lost.
        """
        order = self.stages
        while (chunk := self.feed.get(self.collected)) is not None:
            count = self.collected + 1
            if not (self._wait_for(order, count) or self._completed_by_all(count)):
                return
            for state in chunk:
                if state.status is None:
                    state.status = DONE
            self.collected = count  # after marking: a Ctrl-C half-way leaves this chunk for the next call
            if on_finished is not None:
                on_finished(chunk)
            self.feed.release(count - 1)

