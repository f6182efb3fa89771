"""The engine facade: plugins + registry, and the load -> check -> run sequence.

`Engine` is what the CLI and Python users call. Loading a pipeline imports only the plugins it
needs: those named under `plugins:`, or every installed one only when a stage type is still
unknown after that; then both validation phases and the graph checks run, before any model loads.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from .devices import Device, Inventory
from .errors import InputDataError, PipelineFileError, PluginError, Problem
from .executor import ExecutorBackend, ItemResult, RunSummary, execute, make_plan
from .graph import PipelineGraph, build_graph
from .plugin_manager import BUILTIN_PLUGINS, get_plugin_manager, installed_plugins, load_entry_points, load_module_plugin
from .registry import StageRegistry
from .sinks import GROUPS_FILE, write_error_log, write_results
from .sources import read_rows
from .spec import Pipeline, check_plugin_names, parse_pipeline, read_pipeline_file, validate_stage_params


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

    def __init__(self, plugins: list[str] | None = None, entry_points: list[str] | None = ()) -> None:  # type: ignore[assignment]
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
            raise PipelineFileError(exc.problems + [Problem(str(e), file=file, severity="note") for e in broken]) from None
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
    ) -> RunResult:
        """Run a checked pipeline over an input file; results.jsonl (and errors.log) are written even if it stops."""
        out = Path(out_dir)
        if limit is not None and limit < 0:
            raise InputDataError(f"--limit must be 0 or more, got {limit}")
        with fewer_gc_pauses():
            rows = read_rows(input_path, dict(graph.pipeline.spec.inputs), limit)
            plan = make_plan(graph, self.pm, device, inventory)
            summary, results, groups = execute(plan, rows, out, backend)
            path = write_results(out, (result.as_dict() for result in results))
            groups_path = write_results(out, (g.as_dict() for g in groups), GROUPS_FILE) if groups else None
            errors_path = write_error_log(out, [*results, *groups], summary)
        return RunResult(summary, results, path, errors_path, groups, groups_path)


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
