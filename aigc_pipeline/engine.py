"""The engine facade: plugins + registry, and the load -> check -> run sequence.

`Engine` is what the CLI and Python users call. Loading a pipeline imports only the plugins it
needs: those named under `plugins:`, or every installed one only when a stage type is still
unknown after that; then both validation phases and the graph checks run, before any model loads.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pluggy

from .budget import CostBudget
from .devices import Device, Inventory
from .errors import InputDataError, OutputFolderError, PipelineFileError, PluginError, Problem, RunStoreError
from .estimate import StageEstimate, estimate_run
from .executor import execute
from .graph import PipelineGraph, build_graph
from .history import add_made_by
from .manifest import finish_manifest, start_manifest, write_manifest
from .parquet_results import ParquetResults
from .planning import make_plan
from .plugin_manager import (
    BUILTIN_PLUGINS,
    get_plugin_manager,
    installed_plugins,
    load_entry_points,
    load_module_plugin,
)
from .records import ExecutorBackend, ItemResult, RunPlan, RunSummary
from .registry import StageRegistry
from .report_scan import ResultsScanner, Scan
from .residency import MemoryCap
from .results_writer import ResultsWriter, error_block
from .review.takes import Retake, plan_retake, record_review
from .row_identity import IdentifiedRows
from .safe_paths import prepare_output_folder
from .signals import interruptible, received, stop_on_signals
from .sinks import ERRORS_FILE, GROUPS_FILE, RESULTS_FILE, results_file, write_atomic, write_results
from .sources import InputRow, RowStream, stream_rows
from .spec import Pipeline, check_plugin_names, did_you_mean, parse_pipeline, read_pipeline_file, validate_stage_params
from .stage import Stage
from .store import RunStore, store_failure

RESULT_FORMATS = ("jsonl", "parquet")  # results.jsonl always; parquet: results.parquet beside it


@dataclass
class RunResult:
    summary: RunSummary
    results: list[ItemResult]
    results_path: Path
    errors_path: Path | None = None  # errors.log, written only when a row or the run has a traceback
    groups: list[ItemResult] = field(default_factory=list)  # one per group, when a stage aggregates
    groups_path: Path | None = None


class Engine:
    """Plugins, stage types and pipeline runs.

    `plugins` are module paths the user chose explicitly (the CLI's `--plugin`); entry points are
    loaded on demand (`entry_points=None` loads them all at once, e.g. to list stages).
    """

    def __init__(self, plugins: list[str] | None = None, entry_points: Sequence[str] | None = ()) -> None:
        self.pm: pluggy.PluginManager = get_plugin_manager(entry_points, plugins or [])
        self._registry: StageRegistry | None = None

    @property
    def registry(self) -> StageRegistry:
        if self._registry is None:
            self._registry = StageRegistry(self.pm)
        return self._registry

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object or module (tests and embedding applications)."""
        self.pm.register(plugin, name=name)
        self._registry = None

    def load_plugin_module(self, module_name: str) -> None:
        load_module_plugin(self.pm, module_name)
        self._registry = None

    def load(self, path: str | Path, overrides: list[str] | None = None) -> PipelineGraph:
        """Read and fully check a pipeline file. Raises PipelineFileError listing every problem."""
        return self.load_text(read_pipeline_file(path), str(path), overrides)

    def load_text(self, text: str, file: str = "<pipeline>", overrides: list[str] | None = None) -> PipelineGraph:
        spec, locator = parse_pipeline(text, file, overrides)
        registered = (name for name, _ in self.pm.list_name_plugin() if name not in BUILTIN_PLUGINS)
        check_plugin_names(spec, locator, [*installed_plugins(), *registered])
        broken = self._ensure_plugins(spec.plugins, {stage.uses for stage in spec.stages.values()})
        try:
            params = validate_stage_params(spec, self.registry, locator)
        except PipelineFileError as exc:
            notes = [Problem(str(error), file=file, severity="note") for error in broken]
            raise PipelineFileError(exc.problems + notes) from None
        return build_graph(Pipeline(spec, params, locator, text), self.registry)

    def _ensure_plugins(self, named: list[str], stage_types: set[str]) -> list[PluginError]:
        """Load the named plugins; if a stage type is still unknown, search every installed one.

        During that search a plugin that fails to import is skipped and returned (reported only
        if the type stays unknown), so one broken unrelated plugin cannot hide the real error.
        """
        if named:
            load_entry_points(self.pm, named)
            self._registry = None
        broken: list[PluginError] = []
        if not stage_types <= set(self.registry.names()):
            for name in installed_plugins():
                try:
                    load_entry_points(self.pm, [name])
                except PluginError as exc:
                    broken.append(exc)
            self._registry = None
        return broken

    def run(
        self,
        graph: PipelineGraph,
        input_path: str | Path,
        out_dir: str | Path,
        *,
        limit: int | None = None,
        device: Device | None = None,
        inventory: Inventory | None = None,
        backend: ExecutorBackend | None = None,
        gpu_memory: MemoryCap | str | None = None,
        fresh: bool = False,
        cache: bool = True,
        retake: str | None = None,
        rerun: list[str] | None = None,
        retry_quarantined: bool = False,
        keep_results: bool = True,
        results_format: str = "jsonl",
        max_cost: float | None = None,
    ) -> RunResult:
        """Run a checked pipeline over an input file (options: `RUN_OPTIONS`); results are written even if it stops."""
        out = Path(out_dir)
        _check_options(graph, limit, rerun, results_format)
        cap = MemoryCap.parse(gpu_memory) if isinstance(gpu_memory, str) else gpu_memory
        with fewer_gc_pauses(), quicker_gil_handoffs(beside_a_model(graph)), stop_on_signals(out):
            spec = graph.pipeline.spec
            rows = stream_rows(input_path, dict(spec.inputs), limit)
            prepare_output_folder(out)  # after the input's checks: a bad input creates no folder
            plan = replace(make_plan(graph, self.pm, device, inventory, cap), rerun=frozenset(rerun or []))
            budget = _set_budget(plan, max_cost)
            identity = {"pipeline": spec.name, "inputs": dict(spec.inputs)}
            store = RunStore.open(out, identity, fresh, retry_quarantined) if cache else None
            try:
                result = _run_with_store(graph, plan, rows, Path(input_path), out, backend, store, retake,
                                         keep_results, results_format)
                _note_budget(result, budget)
                return result
            finally:
                _close_store(store)


RUN_OPTIONS = """`Engine.run` options.

        `gpu_memory` caps the memory the run's models may take on each GPU: "6GiB", "0.5" (of each
        GPU's total) or a `MemoryCap`; a bad string is a ValueError. Models that do not fit together
        under it run in phases (see `residency.py`).

        The output folder's run store (`run.sqlite`, see `store.py`) makes a re-run resume: stored
        results are reused and only what is missing runs. `fresh` discards the store first;
        `cache=False` runs without one; `retry_quarantined` gives quarantined rows another chance.
        `rerun` names stages that run again instead of reusing their stored results (what their new
        outputs change downstream runs again through the keys); an unknown name is a ValueError.
        `manifest.json` and `report.html` are written too.
        `retake="rejected"` takes again the rows rejected in `aigc review` (see review/takes.py).

        Rows stream from the input file to results.jsonl in a bounded window (see streaming.py);
        `keep_results=False` also keeps no result in memory (`RunResult.results` is then empty:
        read results.jsonl), so memory does not grow with the number of rows. `results_format`
        "parquet" also writes results.parquet (see parquet_results.py); a bad value is a ValueError.
        `max_cost` (USD) caps what the stages that spend money may spend in this run (see budget.py).
"""


def _check_options(graph: PipelineGraph, limit: int | None, rerun: list[str] | None, results_format: str) -> None:
    if limit is not None and limit < 0:
        raise InputDataError(f"--limit must be 0 or more, got {limit}")
    check_rerun(graph, rerun or [])
    if results_format not in RESULT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(RESULT_FORMATS)}, got {results_format!r}")


def _run_with_store(
    graph: PipelineGraph, plan: RunPlan, rows: RowStream, input_path: Path, out: Path,
    backend: ExecutorBackend | None, store: RunStore | None, retake: str | None, keep_results: bool,
    results_format: str,
) -> RunResult:
    """The re-takes the review asked for (their seeds go into the plan), then the run itself."""
    try:
        takes = plan_retake(out, graph, retake) if store is not None or retake else None
    except sqlite3.Error as exc:  # the review tables live in the store: a full disk, a damaged file
        raise RunStoreError(store_failure(out, exc)) from None
    plan = replace(plan, takes=takes.seeds if takes is not None else {})
    return _run_plan(graph, plan, rows, input_path, out, backend, store, takes, keep_results, results_format)


def _note_budget(result: RunResult, budget: CostBudget | None) -> None:
    if budget is not None and budget.exhausted:
        result.summary.warnings.append(
            f"the cost cap of {budget.limit:g} USD was reached (spent {budget.spent:.4f} USD): rows not "
            "started are not_run; run again (with a higher --max-cost) to continue")


def _close_store(store: RunStore | None) -> None:
    if store is not None:
        if received() is not None:
            store.release_in_flight()
        store.close()


def estimate(graph: PipelineGraph, input_path: str | Path, limit: int | None = None) -> list[StageEstimate]:
    """What a run would send to the stages that spend money (`aigc run --dry-run`); calls nothing."""
    rows = stream_rows(input_path, dict(graph.pipeline.spec.inputs), limit)
    return estimate_run(graph, rows)


def _set_budget(plan: Any, max_cost: float | None) -> CostBudget | None:
    """The run's cost cap, shared by every stage (a stage that spends reserves from it)."""
    if max_cost is None:
        return None
    budget = CostBudget(max_cost)
    for stage in plan.stages.values():
        stage.budget = budget
    return budget


def check_rerun(graph: PipelineGraph, stage_ids: list[str]) -> None:
    """ValueError for a --rerun name that is no stage of the pipeline (with the nearest one)."""
    for stage_id in stage_ids:
        if stage_id not in graph.pipeline.spec.stages:
            hint = did_you_mean(stage_id, list(graph.order))
            raise ValueError(f"--rerun {stage_id}: pipeline '{graph.pipeline.spec.name}' has no stage "
                             f"'{stage_id}'; " + (hint or f"stages: {', '.join(graph.order)}"))


def _run_plan(
    graph: PipelineGraph, plan: Any, rows: RowStream | list[InputRow], input_path: Path, out: Path,
    backend: ExecutorBackend | None, store: RunStore | None, takes: Retake | None = None, keep_results: bool = True,
    results_format: str = "jsonl",
) -> RunResult:
    """Execute, then write results.jsonl, groups.jsonl, errors.log, manifest.json and report.html."""
    manifest = start_manifest(graph, plan, input_path, len(rows), backend.description if backend else "local")
    writer = _open_writer(out, graph, manifest, keep_results, results_format)
    writer.observe = (scanner := ResultsScanner()).add  # the report's scan, as results.jsonl is written
    path = out / RESULTS_FILE
    try:
        with interruptible():  # a stop signal stops the execution; what follows always runs
            summary, _, groups = execute(plan, IdentifiedRows(rows, graph.pipeline.spec.key), out, backend, store,
                                         sink=writer, total=len(rows))
        for group in (group for group in groups if group.trace):
            writer.trace(group)
        name = results_file(out, summary.counts.get("done", 0), not summary.ok or writer.failed is not None)
        path = out / name
        if writer.failed is not None:
            raise writer.failed
        _, errors_path, _ = writer.commit(summary, name)
        groups_path = write_results(out, (g.as_dict() for g in groups), GROUPS_FILE) if groups else None
        write_manifest(out, add_made_by(out, finish_manifest(manifest, summary)))
    except OSError as exc:  # a full disk: the results stay in the store; say so, with the summary
        writer.discard()
        summary.error = summary.error or cannot_write(out, exc)
        return RunResult(summary, writer.kept or [], path)
    except BaseException:
        writer.discard()
        raise
    if name != RESULTS_FILE:
        summary.warnings.append(f"kept {out / RESULTS_FILE}: it holds more finished rows than this stopped run; "
                                f"this run's results are in {path}")
    _review_and_report(out, store, takes, summary, scanner.finish() if name == RESULTS_FILE else None)
    return RunResult(summary, writer.kept or [], path, errors_path, groups, groups_path)


def _open_writer(
    out: Path, graph: PipelineGraph, manifest: dict[str, Any], keep_results: bool, results_format: str
) -> ResultsWriter:
    """Write the starting manifest and open results.jsonl (and .parquet); a full disk is an OutputFolderError."""
    try:
        write_manifest(out, manifest)
        extra = [ParquetResults(out, graph)] if results_format == "parquet" else []
        return ResultsWriter(out, keep_results, extra)
    except OSError as exc:
        raise OutputFolderError(cannot_write(out, exc)) from None


def _review_and_report(
    out: Path, store: RunStore | None, takes: Retake | None, summary: RunSummary, scan: Scan | None
) -> None:
    """`scan`: results.jsonl as written (None: the report reads the file, e.g. once review fields are in it)."""
    from .report import write_report

    try:
        if store is not None and record_review(out, takes):  # new takes, and the review fields once the run has any
            scan = None
        write_report(out, scan=scan)
    except Exception as exc:  # the results are safe on disk; a report bug must not hide them
        summary.warnings.append(f"could not write report.html: {type(exc).__name__}: {exc}")


def cannot_write(out: Path, exc: OSError) -> str:
    return (f"could not write in {out}: {exc.strerror or exc}; free space (or fix the folder) and run the same "
            "command again: finished rows are kept in its run store")


def write_error_log(out_dir: Path, results: Iterable[ItemResult], summary: RunSummary) -> Path | None:
    """Write errors.log: one block per failed row with a traceback, plus why the run stopped.

    Without any traceback the file is removed, so a stale log of an earlier run never misleads.
    """
    path = out_dir / ERRORS_FILE
    blocks = [error_block(result) for result in results if result.trace]
    if summary.trace:
        blocks.insert(0, f"the run stopped early: {summary.error}\n{summary.trace}")
    if not blocks:
        path.unlink(missing_ok=True)
        return None
    write_atomic(path, (block.rstrip("\n") + "\n\n" for block in blocks))
    return path


@contextmanager
def fewer_gc_pauses(young_threshold: int = 50_000) -> Iterator[None]:
    """Collect the young generation less often during a run.

    A run keeps every row's state alive until the end, so with the default threshold (700) the
    collector rescans hundreds of thousands of live objects again and again: measured at about a
    third of the run's time over 100k rows (benchmarks/README.md). Nothing here is cyclic garbage
    worth collecting early; the previous thresholds come back afterwards.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(young_threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


# Seconds; see quicker_gil_handoffs. Measured in benchmarks/README.md ("pipelining.py").
RUN_SWITCH_INTERVAL = 0.0005


def beside_a_model(graph: PipelineGraph) -> bool:
    """Whether a stage that loads a model (so spends long calls in native code, GIL released) may
    run beside another stage: the runs where the GIL's hand-off latency costs something."""
    classes = [graph.stage_class(stage_id) for stage_id in graph.order]
    return len(classes) > 1 and any(cls.load is not Stage.load for cls in classes)


@contextmanager
def quicker_gil_handoffs(enabled: bool = True, interval: float | None = None) -> Iterator[None]:
    """Let a thread that waits for the GIL get it sooner during a run (`sys.setswitchinterval`).

    Every stage runs in its own thread. A model stage lets go of the GIL inside each torch call
    (and again when torch frees a tensor) and must take it back after; while another stage runs
    pure Python, CPython makes it wait a whole switch interval (5 ms by default) before the busy
    thread is asked to let go. benchmarks/pipelining.py, torch scenario (7-13 ms matmuls beside a
    busy Python stage, 2-core CPU): GIL wait per call 3.2-4.8 ms at 5 ms, 0.7-2.6 ms at 0.5 ms,
    under 0.2 alone; a -> b 1.35-1.60x the slower stage alone at 5 ms, 1.07-1.31x at 0.5 ms (five
    runs). A model of many small torch ops would wait up to an interval per op.

    Threads that all run Python gain nothing and hand the GIL over more often (3x the context
    switches in overhead.py's no-op pipeline), so `Engine.run` enables it only `beside_a_model`.
    Never raises an interval a caller set lower; the previous value comes back afterwards, also
    when the run raises. Two overlapping runs in one process may restore it early or leave it
    lowered (as with the GC thresholds in `fewer_gc_pauses`): that costs speed, not correctness.
    """
    previous = sys.getswitchinterval()
    if enabled:
        sys.setswitchinterval(min(RUN_SWITCH_INTERVAL if interval is None else interval, previous))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
