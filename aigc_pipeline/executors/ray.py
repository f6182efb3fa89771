"""The Ray executor: the same run plan on a Ray cluster (`aigc run --executor ray`).

Each item is one record of a Ray Dataset: its index and its whole `ItemState`, pickled. A run
that streams (rows from an input file) has a Ray Data read task read, check and identify the
rows with the engine's own reader (`ray_input.py`): the driver never holds them all. Otherwise
(rows held in memory: the Python API, reducing stages, residency phases) the driver's live items
become the records. Each stage of the phase, in the graph's deterministic topological order,
is one `map_batches` step over those records, with the stage's own batch size:

- a stage with a model (its `DeviceNeeds` ask for a GPU or declare model memory), or one that
  must see the whole run in order (`Stage.run_wide`, e.g. a dedupe), runs in an actor pool: each
  actor builds the stage and loads its model once, on its first batch the store cannot serve.
  A run-wide stage gets exactly one actor, and the dataset keeps its order, so it sees the rows
  in input order as it does locally.
- every other stage (templates, regex filters, ...) runs as plain Ray tasks.
- a stage placed on a GPU asks Ray for `num_gpus`: its memory estimate as a fraction of the GPU
  (rounded up to a twentieth), or a whole GPU when the estimate or the GPU size is unknown.

Workers do the per-batch work with the local executor's own `StageRunner` (per-item isolation,
out-of-memory halving, store lookups, artifacts), so outputs are the same item for item. They
write artifacts into the output folder, and read its `run.sqlite` through a read-only connection
(`worker_store.WorkerStore`); the results they would record travel back with their batch, and the
driver, the store's only writer, commits them, so a run interrupted on Ray resumes like a local
one. On a cluster, the output folder must be on storage every node sees (the artifacts).

The driver marks an item done when its record comes out of the last step, and adds up the
counters each step sends back with its batches (a column per stage).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import pickle
import re
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pluggy

from .. import hookspecs
from ..devices import Device, GpuInfo, probe_inventory
from ..errors import AigcError, StageError
from ..graph import PipelineGraph
from ..lifecycle import StageLifecycle
from ..plugin_manager import PROJECT, has_observers, notify
from ..records import DONE, ItemState, OnFinished, RunContext, RunPlan, StageContext, StageStats
from ..sinks import ArtifactWriter
from ..streaming import ChunkFeed
from ..worker_store import WorkerStore
from .ray_input import input_file, read_input
from .remote_runner import RemoteRunner, StageReport, apply_report

INSTALL_HINT = "pip install 'aigc-pipeline[ray]'"
ROWS_PER_BLOCK = 64  # like the local executor's chunks: an item is marked done a block at a time


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


class RayExecutor:
    """Runs a plan on Ray: on the cluster at `address` ("auto", "ray://host:10001", ...), or on a
    local instance sized to this machine (`num_cpus`: fewer CPUs for it) when there is none.
    Ray is started on the first `execute` that has work, not before (validation stays light)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if not ray_available():
            raise AigcError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}")
        self.address = address
        self.num_cpus = num_cpus

    @property
    def description(self) -> str:
        """What the manifest records as the run's executor."""
        return f"ray (cluster at {self.address})" if self.address else "ray (a local instance)"

    def streams(self, states: Any) -> bool:
        """Rows stream when they come from an input file a Ray Data read task can open (ray_input.py)."""
        return input_file(states) is not None

    def execute(self, plan: RunPlan, run: RunContext, states: list[ItemState] | ChunkFeed,
                on_finished: OnFinished | None, stage_ids: list[str] | None = None) -> None:
        """Run `states`: a list held by the driver, or a ChunkFeed of an input file, read on Ray."""
        stages = [sid for sid in plan.graph.order if stage_ids is None or sid in stage_ids]
        if isinstance(states, ChunkFeed):
            source = input_file(states.origin)
            if source is None or not states.total:
                return
            ray = _connect(self.address, self.num_cpus)
            dataset = _steps(ray, plan, run, read_input(ray, *source), stages, states.total)
            drain = partial(_drain, plan=plan, run=run, live=None, stages=stages, on_finished=on_finished, feed=states)
            _consume(dataset, drain, run, stages, ROWS_PER_BLOCK)  # Ray may merge blocks: rows back a block at a time
            return
        live = [state for state in states if state.status is None]
        if not live:
            return
        ray = _connect(self.address, self.num_cpus)
        dataset = _steps(ray, plan, run, _records(ray, live), stages, len(live))
        _consume(dataset, lambda b: _drain(b, plan, run, live, stages, on_finished), run, stages)


def _consume(dataset: Any, drain: Any, run: RunContext, stages: list[str], rows: int | None = None) -> None:
    """Drain the dataset's batches (of `rows`; None: as Ray's blocks come); Ray's own failures
    become the engine's error."""
    batches = dataset.iter_batches(batch_size=rows, batch_format="numpy")
    try:
        drain(batches)
    except AigcError:
            raise
    except Exception as exc:  # Ray itself failed (a worker died, the cluster went away)
        raise AigcError(f"the Ray executor failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    finally:
        close = getattr(batches, "close", None)
        if close is not None:  # stops the dataset's execution when the run stops early
            close()
        for stage_id in stages:  # the actors, and the models they loaded, end with the dataset
            run.stats[stage_id].unloads = run.stats[stage_id].loads


def _records(ray: Any, live: list[ItemState]) -> Any:
    """Items the driver holds, as records in blocks of ROWS_PER_BLOCK."""
    records = [{"index": s.index, "state": pickle.dumps(s), "failure": b""} for s in live]
    return ray.data.from_items(records, override_num_blocks=max(1, math.ceil(len(live) / ROWS_PER_BLOCK)))


def _steps(ray: Any, plan: RunPlan, run: RunContext, dataset: Any, stages: list[str], rows: int) -> Any:
    """The dataset of item records, then one step per stage."""
    resources = ray.cluster_resources()
    gpus = probe_inventory().gpus if any(plan.placement[sid].is_gpu for sid in stages) else ()
    token = uuid.uuid4().hex
    for stage_id in stages:
        shape = step_shape(plan, stage_id, rows, resources, gpus, run.batch_sizes[stage_id])
        dataset = _add_step(ray, dataset, plan, run, stage_id, token, shape)
    return dataset


def _drain(batches: Any, plan: RunPlan, run: RunContext, live: list[ItemState] | None, stages: list[str],
           on_finished: OnFinished | None, feed: ChunkFeed | None = None) -> None:
    """Take each finished batch back: counters, a stage failure (raised), item states, progress.
    `live`: the items the driver holds (None: the records carry them, read by Ray: `feed`)."""
    by_index = {state.index: state for state in live} if live is not None else None
    total = len(live) if live is not None else feed.total if feed is not None else 0
    report = has_observers(plan.pm, "aigc_stage_progress")
    seen = 0
    for batch in batches:
        _add_stats(run, batch, stages)
        _raise_failure(batch)
        finished = _take_back(batch, by_index)
        seen += len(finished)
        if report:  # the driver sees items once they passed every stage of the phase
            for stage_id in stages:
                notify(plan.pm, "aigc_stage_progress", run.warnings.append,
                       stage_id=stage_id, done=seen, total=total)
        held = feed.handed(finished) if feed is not None else 0  # a stop now: `rest` yields them
        if on_finished is not None:
            on_finished(finished)
        if feed is not None:
            feed.release(held)


def _connect(address: str | None, num_cpus: int | None) -> Any:
    """Import Ray and join (or start) an instance once per process; quiet, ordered, no progress bars."""
    import ray
    import ray.data

    if not ray.is_initialized():
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # no cluster at that address, or Ray could not start here
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise AigcError(f"could not {where}: {type(exc).__name__}: {_first_line(exc)}") from exc
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # run-wide stages see rows in input order
    context.enable_progress_bars = False  # the engine reports progress itself
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


@dataclass
class _Step:
    """What a worker needs to run one stage; pickled once per step and shipped to the workers."""

    token: str  # one per executed phase: task workers cache their stage under it
    stage_id: str
    graph: PipelineGraph
    plugins: list[tuple[str, Any]]  # (name, plugin) of plugins that wrap the stage call
    device: Device
    batch_size: int
    out_dir: Path | None  # absolute
    use_store: bool
    cwd: str  # the driver's working folder: relative model paths in the file mean the same there
    takes: dict[int | str, dict[str, int]]  # the plan's re-takes (--retake)
    rerun: bool  # --rerun names this stage


@dataclass(frozen=True)
class StepShape:
    """How one stage maps to Ray: plain tasks, or a pool of `actors`; `num_gpus` per task/actor."""

    actors: int  # 0: tasks
    num_gpus: float


def step_shape(plan: RunPlan, stage_id: str, rows: int, resources: dict[str, float],
               gpus: tuple[GpuInfo, ...], batch_size: int | None = None) -> StepShape:
    """Tasks for a stage without a model; else an actor pool: one actor for a run-wide stage, the
    stage's `replicas:` when the file sets it, else as many as the cluster holds (`_actor_count`).
    `batch_size`: the run's current one (None: the plan's)."""
    cls, params = type(plan.stages[stage_id]), plan.graph.pipeline.params[stage_id]
    share = gpu_share(plan.needs[stage_id].memory_bytes, gpus) if plan.placement[stage_id].is_gpu else 0.0
    if not cls.run_wide(params) and not plan.needs[stage_id].model_work:  # no model worth an actor
        return StepShape(0, share)
    replicas = plan.graph.pipeline.spec.stages[stage_id].replicas
    if cls.run_wide(params):
        actors = 1
    elif isinstance(replicas, int):
        actors = replicas
    else:
        actors = _actor_count(share, rows, batch_size or plan.batch_sizes[stage_id], resources)
    return StepShape(actors, share)


def _add_step(ray: Any, dataset: Any, plan: RunPlan, run: RunContext, stage_id: str, token: str,
              shape: StepShape) -> Any:
    device, batch_size = plan.placement[stage_id], run.batch_sizes[stage_id]
    out_dir = run.artifacts.out_dir.resolve() if run.artifacts is not None else None
    step = _Step(token, stage_id, plan.graph, _worker_plugins(plan.pm), Device("cuda", 0) if device.is_gpu else device,
                 batch_size, out_dir, run.store is not None, os.getcwd(), plan.takes, stage_id in plan.rerun)
    common: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy",
                              "num_gpus": shape.num_gpus or None}
    if not shape.actors:
        return dataset.map_batches(_run_task, fn_kwargs={"step": step}, **common)
    return dataset.map_batches(_StageWorker, fn_constructor_kwargs={"step": step},
                               compute=ray.data.ActorPoolStrategy(size=shape.actors), **common)


def _worker_plugins(pm: pluggy.PluginManager) -> list[tuple[str, Any]]:
    """The plugins a worker needs: those implementing the stage call (the engine's own and any
    wrapper). Observers (progress bars, webhooks) stay on the driver, which reports every item."""
    wrappers = {id(impl.plugin) for impl in pm.hook.aigc_process_batch.get_hookimpls()}
    return [(name, plugin) for name, plugin in pm.list_name_plugin() if id(plugin) in wrappers]


def gpu_share(memory_bytes: int, gpus: tuple[GpuInfo, ...]) -> float:
    """The share of one GPU a stage asks Ray for: its memory estimate over the smallest GPU's size,
    rounded up to a twentieth; a whole GPU when either is unknown (no GPU on the driver)."""
    if memory_bytes <= 0 or not gpus:
        return 1.0
    share = memory_bytes / min(gpu.total_bytes for gpu in gpus)
    return min(1.0, math.ceil(share * 20) / 20)


def _actor_count(gpus: float, rows: int, batch_size: int, resources: dict[str, float]) -> int:
    """Actors for a model stage: as many as the cluster's GPUs hold (GPU stages) or half its CPUs
    (CPU stages: each actor loads its own copy of the model), never more than there are batches."""
    batches = max(1, math.ceil(rows / batch_size))
    if gpus:
        fit = int(resources.get("GPU", 1) / gpus)
    else:
        fit = int(resources.get("CPU", 2) // 2)
    return max(1, min(fit, batches))


class _StageWorker:
    """One stage inside a Ray worker: its `StageContext` (built from the step, no planning), a
    `StageRunner`, a lazy model load."""

    def __init__(self, step: _Step) -> None:
        graph, stage_id = step.graph, step.stage_id
        if os.path.isdir(step.cwd):  # on another node it may not exist: paths there must be absolute
            os.chdir(step.cwd)
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(hookspecs)
        for name, plugin in step.plugins:
            pm.register(plugin, name=name)
        stage = graph.stage_class(stage_id)(graph.pipeline.params[stage_id])
        stats = StageStats(type(stage).type_name, str(step.device))
        folder = step.out_dir
        self.store = WorkerStore.attach(folder) if folder is not None and step.use_store else None
        self.context = StageContext(
            stage_id, stage, graph, pm.hook.aigc_process_batch, stats, [], {stage_id: step.batch_size},
            ArtifactWriter(folder) if folder is not None else None, self.store, step.takes, step.rerun,
        )
        self.stage_id = stage_id
        # Loaded on the first batch the store cannot serve; the actor, and the model with it, ends
        # with the dataset (Ray gives a worker no last call), which the driver counts as the unload.
        self.runner = RemoteRunner(self.context, StageLifecycle(stage_id, stage, step.device, stats), self.store)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Run the batch; a stage that fails as a whole (its model does not load) marks the batch
        failed instead of raising, so the driver gets the engine's own error, not Ray's wrapper."""
        size = len(batch["state"])
        empty = {**batch, _stats_column(self.stage_id): [b""] * size}
        if any(batch["failure"]):  # an upstream stage failed: pass it on untouched
            return empty
        states = [pickle.loads(blob) for blob in batch["state"]]
        try:
            report = self.runner.run(states)
        except StageError as exc:
            return {**empty, "failure": [pickle.dumps(exc)] * size}
        return {**batch, "state": [pickle.dumps(state) for state in states],
                _stats_column(self.stage_id): [pickle.dumps(report)] + [b""] * (size - 1)}


_TASK_WORKERS: dict[str, _StageWorker] = {}  # per worker process: the stages of the latest phases


def _run_task(batch: dict[str, Any], step: _Step) -> dict[str, Any]:
    """A stage without a model, as a Ray task: the worker process builds it once per phase."""
    key = f"{step.token}/{step.stage_id}"
    worker = _TASK_WORKERS.get(key)
    if worker is None:
        if len(_TASK_WORKERS) > 64:  # stages of runs long finished
            _TASK_WORKERS.clear()
        worker = _TASK_WORKERS[key] = _StageWorker(step)
    return worker(batch)


def _stats_column(stage_id: str) -> str:
    return f"stats:{stage_id}"


def _take_back(batch: dict[str, Any], by_index: dict[int, ItemState] | None) -> list[ItemState]:
    """Copy what the workers did to each item onto the driver's own state (`by_index`; None: take
    the workers' state itself); mark passers done."""
    finished = []
    for blob in batch["state"]:
        remote: ItemState = pickle.loads(blob)
        state = by_index[remote.index] if by_index is not None else remote
        state.values, state.status, state.stage = remote.values, remote.status, remote.stage
        state.reason, state.flags, state.trace = remote.reason, remote.flags, remote.trace
        if state.status is None:
            state.status = DONE
        finished.append(state)
    return finished


def _add_stats(run: RunContext, batch: dict[str, Any], stages: list[str]) -> None:
    for stage_id in stages:
        for blob in batch.get(_stats_column(stage_id), ()):
            if not blob:
                continue
            report: StageReport = pickle.loads(blob)
            apply_report(run, stage_id, report)  # the driver is the store's only writer


def _raise_failure(batch: dict[str, Any]) -> None:
    for blob in batch["failure"]:
        if blob:
            raise pickle.loads(blob)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # Ray colours its task names
    return text.splitlines()[0] if text else ""

