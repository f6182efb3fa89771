"""Where a stage type's code comes from: its `version` and the distribution that provides it.

Both are part of every stored result's key (`cache_keys.stage_prefix`), so a plugin release that
changes what a stage produces re-runs that stage, and through the keys whatever its new outputs
change, instead of serving results of the old code. The distribution is the one that installed
the plugin's entry point; built-in stages are `aigc-pipeline` at the package's version; a
module loaded with `--plugin` is looked up by its top-level package; a stage registered in
process by a test has none (None).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .plugin_manager import BUILTIN_PLUGINS, installed_plugins

PACKAGE = "aigc-pipeline"


@dataclass(frozen=True)
class StageOrigin:
    """A stage type's version and its providing distribution (name and version, None if unknown)."""

    version: str
    distribution: str | None
    distribution_version: str | None

    def as_key(self) -> list[str | None]:
        return [self.version, self.distribution, self.distribution_version]

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "distribution": self.distribution,
                "distribution_version": self.distribution_version}


def stage_origin(cls: Any, plugin: str) -> StageOrigin:
    """The origin of stage class `cls`, registered by plugin `plugin` (the registry's name for it)."""
    name, version = _distribution(plugin, cls.__module__.partition(".")[0])
    return StageOrigin(str(getattr(cls, "version", "1")), name, version)


@functools.lru_cache(maxsize=256)
def _distribution(plugin: str, top_module: str) -> tuple[str | None, str | None]:
    if plugin in BUILTIN_PLUGINS or top_module == "aigc_pipeline":
        return PACKAGE, _version(PACKAGE)
    entry_point = installed_plugins().get(plugin)
    if entry_point is not None and entry_point.dist is not None:
        return entry_point.dist.name, entry_point.dist.version
    names = metadata.packages_distributions().get(top_module) or []
    if names:
        return names[0], _version(names[0])
    return None, None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def clear_cache() -> None:
    """Forget looked-up distributions (a test installs a plugin's new version in-process)."""
    _distribution.cache_clear()


def origin_of(graph: Any, stage_id: str) -> StageOrigin:
    """The origin of the stage type a pipeline's stage uses."""
    registered = graph.registry.get(graph.pipeline.spec.stages[stage_id].uses)
    return stage_origin(registered.cls, registered.plugin)


def pipeline_origins(graph: Any) -> dict[str, dict[str, Any]]:
    """Every stage's type and origin, by stage id (for manifest.json)."""
    return {stage_id: {"type": graph.pipeline.spec.stages[stage_id].uses, **origin_of(graph, stage_id).as_dict()}
            for stage_id in graph.order}


def plugin_distributions(graph: Any) -> dict[str, str | None]:
    """Every distribution that provides a stage type the registry knows, with its version."""
    found: dict[str, str | None] = {}
    for _, registered in graph.registry.items():
        origin = stage_origin(registered.cls, registered.plugin)
        if origin.distribution is not None:
            found[origin.distribution] = origin.distribution_version
    return dict(sorted(found.items()))
