"""The local executor: one thread per stage, items streaming through in chunks.

Rows are cut into chunks; every stage walks the chunks in order and starts chunk k as soon as all
of its upstream stages have finished chunk k. So independent branches run at the same time, and a
model stage works on chunk k while CPU stages work on chunk k+1 (model libraries release the GIL).
Within a chunk, a stage takes its live items in micro-batches of its own `batch_size`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import StageError
from ..executor import DONE, ItemState, RunPlan
from ..plugin_manager import has_observers, notify
from ..stage_runner import LazyLoad, StageRunner

MIN_CHUNK = 64


class LocalExecutor:
    """Runs a plan in this process. `chunk_size` defaults to the largest batch size (at least 64)."""

    def __init__(self, chunk_size: int | None = None) -> None:
        self.chunk_size = chunk_size

    def execute(
        self,
        plan: RunPlan,
        states: list[ItemState],
        on_finished: Callable[[list[ItemState]], None] | None,
        stage_ids: list[str] | None = None,
    ) -> None:
        live = [state for state in states if state.status is None]
        if not live:  # every row rejected, or --limit 0: loading models would be wasted
            return
        stages = plan.graph.order if stage_ids is None else stage_ids
        size = self.chunk_size or max([MIN_CHUNK, *(plan.batch_sizes[sid] for sid in stages)])
        flow = _Flow(plan, [live[i : i + size] for i in range(0, len(live), size)], stages)
        workers = [
            threading.Thread(target=flow.run_stage, args=(stage_id,), name=f"aigc-{stage_id}", daemon=True)
            for stage_id in stages
        ]
        for worker in workers:
            worker.start()
        try:
            flow.collect(on_finished)
        finally:
            flow.cancel()
            for worker in workers:
                worker.join()
            flow.collect(on_finished)  # chunks that every stage finished while stopping are done too
        if flow.error is not None:
            raise flow.error


class _Flow:
    """Shared progress of all stage threads: chunks completed per stage, the first error."""

    def __init__(self, plan: RunPlan, chunks: list[list[ItemState]], stages: list[str]) -> None:
        self.plan = plan
        self.chunks = chunks
        self.stages = stages
        self.total = sum(len(chunk) for chunk in chunks)
        self.completed = dict.fromkeys(stages, 0)
        self.collected = 0  # chunks already marked DONE by collect()
        # Upstream stages outside this phase (before an aggregate) have finished already.
        self.upstream = {sid: [p for p in plan.graph.graph.predecessors(sid) if p in self.completed] for sid in stages}
        self.condition = threading.Condition()
        self.cancelled = False
        self.error: BaseException | None = None

    def cancel(self) -> None:
        with self.condition:
            self.cancelled = True
            self.condition.notify_all()

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
        stage = self.plan.stages[stage_id]
        load = LazyLoad(stage_id, self.plan)
        try:
            self._process_chunks(stage_id, load)
        except StageError as exc:  # failed to load
            self._fail(exc, exc.__cause__ or exc)
        except Exception as exc:  # StageRunner isolates a stage's exceptions: this one is the engine's
            self._fail(StageError(stage_id, stage.type_name, f"engine error: {type(exc).__name__}: {exc}"), exc)
        except BaseException as exc:  # SystemExit from a stage: stop the run rather than hang it
            self._fail(StageError(stage_id, stage.type_name, f"stopped the run: {type(exc).__name__}: {exc}"), exc)
        finally:
            try:
                if load.attempted:
                    stage.unload()
                    self.plan.stats[stage_id].unloads += 1
            except Exception as exc:
                self.plan.warnings.append(f"stage '{stage_id}': unload failed: {type(exc).__name__}: {exc}")

    def _process_chunks(self, stage_id: str, load: LazyLoad) -> None:
        runner = StageRunner(stage_id, self.plan, load)
        batch_size = self.plan.batch_sizes[stage_id]
        report = has_observers(self.plan.pm, "aigc_stage_progress")
        seen = 0
        for index, chunk in enumerate(self.chunks):
            if not self._wait_for(self.upstream[stage_id], index + 1):
                return
            live = [state for state in chunk if state.status is None]
            for start in range(0, len(live), batch_size):
                runner.run(live[start : start + batch_size])
            seen += len(chunk)
            if report:
                notify(self.plan.pm, "aigc_stage_progress", self.plan.warnings.append,
                       stage_id=stage_id, done=seen, total=self.total)
            self._complete(stage_id)

    def _fail(self, error: BaseException, cause: BaseException) -> None:
        error.__cause__ = cause
        with self.condition:
            if self.error is None:
                self.error = error
            self.cancelled = True
            self.condition.notify_all()

    def collect(self, on_finished: Callable[[list[ItemState]], Any] | None) -> None:
        """Mark each chunk DONE once every stage has finished it, in order; resumes where it stopped.

        After a stop, a chunk every stage had already finished is still marked: no finished work is lost.
        """
        order = self.stages
        while self.collected < len(self.chunks):
            count = self.collected + 1
            if not (self._wait_for(order, count) or self._completed_by_all(count)):
                return
            chunk = self.chunks[self.collected]
            for state in chunk:
                if state.status is None:
                    state.status = DONE
            self.collected = count  # after marking: a Ctrl-C half-way leaves this chunk for the next call
            if on_finished is not None:
                on_finished(chunk)
