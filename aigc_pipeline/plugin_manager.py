"""The one plugin-manager factory, and safe calls of observer hooks.

Load order is fixed: hookspecs, then the built-in plugins (the engine's own stages and policies,
registered exactly like third-party ones), then entry points of group `aigc_pipeline`, then
plugins the user named explicitly (`--plugin module.path`), then `check_pending()`.

Entry points are loaded lazily: `aigc validate` and `aigc run` import only the plugins a pipeline
needs (those it names under `plugins:`, or all of them only when it uses a stage type no loaded
plugin provides). A pipeline file can name plugins only by their registered entry-point name;
importing a module path is the user's explicit choice on the command line.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

PROJECT = "aigc_pipeline"
ENTRY_POINT_GROUP = "aigc_pipeline"

hookimpl = pluggy.HookimplMarker(PROJECT)

BUILTIN_PLUGINS: tuple[str, ...] = (
    "aigc_pipeline.device_scheduler",
    "aigc_pipeline.executor",
    "aigc_pipeline.executors",
    "aigc_pipeline.stages.template",
    "aigc_pipeline.stages.filters",
    "aigc_pipeline.stages.llm",
    "aigc_pipeline.stages.aggregate",
    "aigc_pipeline.stages.tts",
    "aigc_pipeline.stages.diffusion",
    "aigc_pipeline.stages.image_filters",
    "aigc_pipeline.stages.latent",
    "aigc_pipeline.stages.video",
    "aigc_pipeline.stages.compose",
    "aigc_pipeline.generators",
)


def installed_plugins() -> dict[str, EntryPoint]:
    """Entry points of group `aigc_pipeline`, by name, without importing any of them."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_plugin_manager(
    entry_point_names: Iterable[str] | None = (), explicit: Iterable[str] = ()
) -> pluggy.PluginManager:
    """A plugin manager with built-ins, the named entry points (None: all), and explicit modules."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    load_entry_points(pm, entry_point_names)
    for module_name in explicit:
        load_module_plugin(pm, module_name)
    _check_pending(pm)
    return pm


def load_entry_points(pm: pluggy.PluginManager, names: Iterable[str] | None) -> None:
    """Import and register entry points by name (None: every installed one), once each."""
    available = installed_plugins()
    wanted = sorted(available) if names is None else list(names)
    for name in wanted:
        if pm.has_plugin(name):
            continue
        if name not in available:
            known = ", ".join(sorted(available)) or "none installed"
            raise PluginError(name, f"is not installed (installed plugins: {known}; 'aigc plugins' lists them)")
        _register_once(pm, _import_entry_point(available[name]), name)


def _import_entry_point(ep: EntryPoint) -> Any:
    dist = f" from distribution '{ep.dist.name}'" if ep.dist else ""
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(ep.name, f"failed to import '{ep.value}'{dist}: {type(exc).__name__}: {exc}") from exc


def load_module_plugin(pm: pluggy.PluginManager, module_name: str) -> None:
    """Register a plugin module given by the user on the command line (`--plugin`)."""
    if pm.has_plugin(module_name):
        return
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(module_name, f"failed to import: {type(exc).__name__}: {exc}") from exc
    _register_once(pm, module, module_name)


def _register_once(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    # One module can arrive under two names (entry point `x` and `--plugin x_module`, or a
    # built-in named with --plugin); pluggy refuses the second name, and once is what we mean.
    if not pm.is_registered(plugin):
        pm.register(plugin, name=name)


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(pm.get_name(exc.plugin) or str(exc.plugin), str(exc)) from exc


def notify(
    pm: pluggy.PluginManager, hook_name: str, on_error: Callable[[str], None] | None = None, **kwargs: Any
) -> None:
    """Call an observer hook so that one failing plugin neither fails the run nor silences others.

    Wrapper implementations (`@hookimpl(wrapper=True)` or `hookwrapper=True`) run around the
    others, as pluggy would run them: up to their `yield` first, the rest after (a new-style
    wrapper's `yield` gives the list of the others' return values)."""
    report = _reporter(hook_name, on_error)
    impls = list(reversed(getattr(pm.hook, hook_name).get_hookimpls()))
    wrappers = [impl for impl in impls if impl.wrapper or impl.hookwrapper]
    entered = [(impl, gen) for impl in wrappers if (gen := _call(impl, kwargs, report)) is not None]
    results = [_call(impl, kwargs, report) for impl in impls if impl not in wrappers]
    for impl, gen in reversed(entered):
        outcome = pluggy.Result(results, None) if impl.hookwrapper else results
        try:
            gen.send(outcome)
        except StopIteration:
            pass
        except Exception as exc:
            report(impl, exc)


def _call(impl: Any, kwargs: dict[str, Any], report: Callable[[Any, Exception], None]) -> Any:
    """Call one implementation (a wrapper: up to its `yield`); an exception is reported, not raised."""
    try:
        value = impl.function(*(kwargs[arg] for arg in impl.argnames))
        if impl.wrapper or impl.hookwrapper:
            next(value)
        return value
    except Exception as exc:
        report(impl, exc)
        return None


def _reporter(hook_name: str, on_error: Callable[[str], None] | None) -> Callable[[Any, Exception], None]:
    def report(impl: Any, exc: Exception) -> None:
        message = f"plugin '{impl.plugin_name}' raised in {hook_name}: {type(exc).__name__}: {exc}"
        if on_error is None:
            print(message, file=sys.stderr)
            traceback.print_exception(exc)
        else:
            on_error(message)

    return report


def has_observers(pm: pluggy.PluginManager, hook_name: str) -> bool:
    """Whether any plugin implements `hook_name` (skips building per-item arguments otherwise)."""
    return bool(getattr(pm.hook, hook_name).get_hookimpls())
