"""Worker processes for CPU-bound stages: how the local executor gets past the GIL.

Templates and regex filters are pure Python. On the local executor's threads, every stage of a run
then shares one core. A big enough run (MIN_ROWS) on a Linux machine with more than one core (or
any run given `--workers N`) moves its *segment* to forked worker processes, one per core. The
segment is the stages that allow it (`Stage.cpu_parallel`), placed on the CPU, with no model, no
copies and not run-wide.

A chunk of rows goes to one worker, round robin. The worker runs it through every stage of the
segment in the graph's order, with the engine's own `StageRunner` (`remote_runner.py`: same
isolation, seeds and budgets, so the same outputs). It sends back what each row gained: the
segment's output values, verdicts and flags, and per stage a `StageReport`. Meanwhile the driver
reads, checks, identifies and writes rows, and runs every other stage on its threads, as before.
Only the values the segment reads from outside it cross to a worker, and only the values it makes
come back.

Forking: the workers start at once, with the plan already built. They are forked only from a
process that runs no other thread (a lock held by another thread at the fork stays held in the
child forever). So the executor forks them before it starts its own threads, and keeps to threads
when anything else runs one (a served model's event loop, an earlier phase's store commits), or
where there is no fork.

Stops and failures: workers ignore stop signals. The driver stops the run, and the chunks in flight
come back and are written. A worker ends when the driver closes its pipe or dies (end of file). A
worker that dies stops the run with an error naming the stages; the rows already written stay.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections import deque
from contextlib import ExitStack
from multiprocessing.connection import Connection
from typing import Any

from ..branches import claim_verdict, row_filter
from ..dag import ancestors, descendants
from ..errors import StageError
from ..lifecycle import StageLifecycle
from ..records import NOT_RUN, ItemState, RunContext, RunPlan, StageContext, StageStats
from ..signals import STOP_SIGNALS
from ..worker_store import WorkerStore
from .remote_runner import RemoteRunner, StageReport

MIN_ROWS = 4096  # fewer rows: forking and pickling cost more than the second core gives back
MAX_AUTO_WORKERS = 8
IN_FLIGHT_PER_WORKER = 4  # chunks sent ahead to each worker, so it never waits for the driver
# Workers yield to the driver when cores are short: it reads, identifies and writes every row, so
# the whole run waits when it does (benchmarks/scale.py: 2 cores, 2 workers and the driver).
WORKER_NICENESS = 10

Reply = tuple[list[tuple[Any, ...]] | None, list[StageReport | None], StageError | None]


def cpu_segment(plan: RunPlan, stages: list[str]) -> list[str]:
    """The stages of `stages` that run in worker processes, in the graph's order. A stage that
    depends on the segment through a stage outside it stays out: the segment's chunk would wait for
    that outside stage, which waits for the segment."""
    allowed = {sid for sid in stages if _may_fork(plan, sid)}
    graph = plan.graph.graph
    behind: set[str] = set()
    for outside in (sid for sid in stages if sid not in allowed):
        if ancestors(graph, outside) & allowed:
            behind |= descendants(graph, outside)
    return [sid for sid in stages if sid in allowed and sid not in behind]


def _may_fork(plan: RunPlan, stage_id: str) -> bool:
    cls, params = type(plan.stages[stage_id]), plan.graph.pipeline.params[stage_id]
    return (cls.cpu_parallel(params) and not cls.reduces and not cls.run_wide(params)
            and not plan.placement[stage_id].is_gpu and not plan.needs[stage_id].model_work
            and len(plan.replicas.get(stage_id, ())) < 2)


def worker_count(requested: int | None, rows: int) -> int:
    """Worker processes for a run of `rows`: `requested` (0: none), else (on Linux: elsewhere system
    libraries may not survive a fork) one per usable core when there are at least two and MIN_ROWS
    rows; 0 where fork is missing or another thread runs."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 0
    if requested is not None:
        return max(0, requested)
    if not sys.platform.startswith("linux"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, MAX_AUTO_WORKERS) if cores > 1 and rows >= MIN_ROWS else 0


def fork_workers(plan: RunPlan, run: RunContext, stages: list[str], rows: int,
                 requested: int | None) -> WorkerPool | None:
    """Worker processes for this run's segment of `stages`, or None (threads only: see `worker_count`)."""
    segment = cpu_segment(plan, stages)
    count = worker_count(requested, rows) if segment else 0
    if not count:
        return None
    for stage_id in segment:  # the summary and the manifest say where it ran: "cpu×2"
        run.stats[stage_id].device = f"{run.stats[stage_id].device}×{count}"
    return WorkerPool(plan, run, segment, count, alone=len(segment) == len(stages))


class WorkerPool:
    """`count` forked workers running `segment`. One thread sends chunks (`send`, in order), one
    takes them back (`receive`, in the same order) and settles them on the driver's rows."""

    def __init__(self, plan: RunPlan, run: RunContext, segment: list[str], count: int, alone: bool = False) -> None:
        self.segment = segment
        # The segment is every stage of the phase: no thread here writes a row's values while its
        # chunk is out, so they cross whole (no copy of the part the segment reads).
        self.alone = alone
        self.inside = set(segment)
        wired = {ref for sid in segment for ref in plan.graph.wiring[sid].values()}
        self.reads = sorted(str(ref) for ref in wired if ref.source not in self.inside)  # what crosses to a worker
        self.runs = [row_filter(plan.graph, sid) for sid in segment]
        self.ranks = {sid: rank for rank, sid in enumerate(plan.graph.order)}
        self.condition = threading.Condition()
        self.in_flight: deque[tuple[int, list[ItemState], bool]] = deque()  # (chunk, rows sent, posted)
        self.limit = IN_FLIGHT_PER_WORKER * count
        self.sending = True
        self.stopped = False
        makes = [f"{sid}.{port}" for sid in segment for port in type(plan.stages[sid]).outputs]
        self.connections, self.processes = _fork(_Job(plan, run, segment, makes), count)

    def send(self, index: int, chunk: list[ItemState]) -> bool:
        """Post chunk `index`'s rows that the segment runs; waits while the workers have enough; False on a stop."""
        runs = self.runs
        sent = [state for state in chunk if state.status is None or any(run(state) for run in runs)]
        with self.condition:
            while len(self.in_flight) >= self.limit and not self.stopped:
                self.condition.wait()
            if self.stopped:
                return False
            self.in_flight.append((index, sent, bool(sent)))
            self.condition.notify_all()
        if sent:
            reads = self.reads
            rows = ([(s.index, s.identity, s.status, s.stage, s.values) for s in sent] if self.alone else
                    [(s.index, s.identity, s.status, s.stage, {key: s.values[key] for key in reads if key in s.values})
                     for s in sent])
            try:
                self.connections[index % len(self.connections)].send_bytes(pickle.dumps(rows, pickle.HIGHEST_PROTOCOL))
            except OSError as exc:  # the worker is gone: `receive` says why
                raise self._died(index) from exc
        return True

    def finish_sending(self) -> None:
        with self.condition:
            self.sending = False
            self.condition.notify_all()

    def stop(self) -> None:
        """No more chunks; what is in flight still comes back."""
        with self.condition:
            self.stopped, self.sending = True, False
            self.condition.notify_all()

    def receive(self) -> tuple[int, list[StageReport | None]] | None:
        """The next chunk back, settled on the driver's rows: its index and each segment stage's
        report; None once every chunk sent is back. A stage failure, or a dead worker, raises."""
        with self.condition:
            while not self.in_flight and self.sending:
                self.condition.wait()
            if not self.in_flight:
                return None
            index, sent, posted = self.in_flight[0]
        rows, reports, error = self._reply(index) if posted else ([], [None] * len(self.segment), None)
        with self.condition:
            self.in_flight.popleft()
            self.condition.notify_all()
        if error is not None:
            raise error
        self._settle(sent, rows or [])
        return index, reports

    def _reply(self, index: int) -> Reply:
        try:
            reply: Reply = pickle.loads(self.connections[index % len(self.connections)].recv_bytes())
        except (EOFError, OSError) as exc:
            raise self._died(index) from exc
        return reply

    def _settle(self, sent: list[ItemState], rows: list[tuple[Any, ...]]) -> None:
        """Give the driver's rows what the worker's copies gained: values, flags, a segment stage's verdict."""
        inside, ranks = self.inside, self.ranks
        for state, (status, stage, reason, trace, flags, made) in zip(sent, rows, strict=True):
            if made:
                state.values.update(made)
            if flags:
                state.flags.extend(flags)
            if status is not None and stage in inside and (status != NOT_RUN or state.status is None):
                claim_verdict(state, status, stage, ranks, reason, trace)  # (not run: as StageRunner._record)

    def _died(self, index: int) -> StageError:
        process = self.processes[index % len(self.processes)]
        process.join(1.0)
        code = process.exitcode
        how = ("was killed by " + signal.Signals(-code).name if code is not None and code < 0
               else f"exited with status {code}" if code is not None else "stopped answering")
        first = self.segment[0]
        return StageError(first, "worker process", f"the worker process running stage(s) {', '.join(self.segment)} "
                          f"{how}; rows already written are kept: run the same command again to resume "
                          "(with --workers 0 to run those stages in the main process)")

    def close(self) -> None:
        """End the workers: they see the end of their pipe, unload their stages and exit. Chunks still
        out (a stop that did not wait for them): their workers are killed first, so no thread here
        stays blocked reading a pipe closed under it; those rows are not_run."""
        with self.condition:
            abandoned = bool(self.in_flight)
        for process in self.processes if abandoned else ():
            process.kill()
        for connection in self.connections:
            connection.close()
        for process in self.processes:
            process.join(CLOSE_GRACE_S)
            if process.is_alive():  # a stage's unload that does not return
                process.kill()
                process.join()


CLOSE_GRACE_S = 10.0


class _Job:
    """What every worker runs: the segment's stages, from the plan the fork copied."""

    def __init__(self, plan: RunPlan, run: RunContext, segment: list[str], makes: list[str]) -> None:
        self.plan, self.run, self.segment, self.makes = plan, run, segment, makes

    def runners(self, stack: ExitStack) -> list[RemoteRunner]:
        """A runner per segment stage, each loading its stage (if it has anything to load) on first need."""
        plan, run = self.plan, self.run
        folder = run.artifacts.out_dir if run.artifacts is not None else None
        cached = any(type(plan.stages[sid]).cacheable(plan.graph.pipeline.params[sid]) for sid in self.segment)
        store = WorkerStore.attach(folder) if run.store is not None and folder is not None and cached else None
        runners = []
        for sid in self.segment:
            stage, device = plan.stages[sid], plan.placement[sid]
            stats = StageStats(type(stage).type_name, str(device))
            context = StageContext(sid, stage, plan.graph, plan.pm.hook.aigc_process_batch, stats, [],
                                   {sid: run.batch_sizes[sid]}, run.artifacts, store, plan.takes, sid in plan.rerun)
            lifecycle = stack.enter_context(StageLifecycle(sid, stage, device, stats, context.warnings.append))
            runners.append(RemoteRunner(context, lifecycle, store))
        return runners

    def run_chunk(self, runners: list[RemoteRunner], message: bytes) -> bytes:
        """Run one chunk through the segment, stage after stage; the reply `WorkerPool.receive` reads."""
        states = [_restored(*row) for row in pickle.loads(message)]
        reports: list[StageReport | None] = []
        try:
            for remote in runners:
                runs = remote.runner.runs
                live = [state for state in states if runs(state)]
                reports.append(remote.run(live) if live else None)
        except StageError as exc:
            return pickle.dumps((None, [], exc), pickle.HIGHEST_PROTOCOL)
        makes = self.makes
        rows = [(s.status, s.stage, s.reason, s.trace, s.flags,
                 {key: s.values[key] for key in makes if key in s.values}) for s in states]
        return pickle.dumps((rows, reports, None), pickle.HIGHEST_PROTOCOL)


def _restored(index: int, identity: str, status: str | None, stage: str | None, values: dict[str, Any]) -> ItemState:
    """A worker's copy of a row: what the segment's stages read of it."""
    state = ItemState.__new__(ItemState)
    state.index, state.line, state.identity, state.values = index, 0, identity, values
    state.status, state.stage, state.reason, state.flags, state.trace = status, stage, None, [], None
    return state


def _fork(job: _Job, count: int) -> tuple[list[Connection], list[Any]]:
    context = multiprocessing.get_context("fork")
    for stream in (sys.stdout, sys.stderr):  # else a child could write the parent's buffered output again
        if stream is not None:
            stream.flush()
    connections: list[Connection] = []
    processes = []
    for number in range(count):
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, [*connections, parent], job),
                                  name=f"aigc-worker-{number}", daemon=True)
        process.start()
        child.close()
        connections.append(parent)
        processes.append(process)
    return connections, processes


def _serve(connection: Connection, others: list[Connection], job: _Job) -> None:
    """A worker's life: chunks in, replies out, until the driver closes the pipe or dies."""
    for other in others:  # the driver's ends: held here, a dead driver's pipes would never end
        other.close()
    for signum in STOP_SIGNALS:  # the driver decides when to stop, and waits for what is in flight
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(os, "nice"):  # the driver first: its reading and writing feed every worker
        os.nice(WORKER_NICENESS)
    with ExitStack() as stack:
        runners = job.runners(stack)
        while True:
            try:
                message = connection.recv_bytes()
                connection.send_bytes(job.run_chunk(runners, message))
            except (EOFError, OSError):
                return
