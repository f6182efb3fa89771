"""Generator architectures by name, from the `aigc_register_generators` hook of the loaded plugins.

The lookup first asks the built-in plugins; only when a name is unknown there does it import the
installed plugins (entry-point group `aigc_pipeline`), as the engine does for an unknown stage
type. A plugin that fails to import is skipped then, and named only if the architecture stays
unknown.
"""

from __future__ import annotations

from typing import Any

import pluggy

from ..errors import ModelUnavailableError, PluginError
from ..plugin_manager import get_plugin_manager, installed_plugins, load_entry_points


class UnknownArchitectureError(ModelUnavailableError):
    """No loaded plugin registers a generator architecture of that name."""


def registered_architectures(pm: pluggy.PluginManager) -> dict[str, type[Any]]:
    """Every architecture the plugins of `pm` register, by name; a name registered twice is an error."""
    found: dict[str, type[Any]] = {}
    for impl in pm.hook.aigc_register_generators.get_hookimpls():
        try:
            classes: list[Any] = impl.function()  # type: ignore[assignment]
        except Exception as exc:
            why = f"raised in aigc_register_generators: {type(exc).__name__}: {exc}"
            raise PluginError(impl.plugin_name, why) from exc
        for cls in classes or []:
            name = getattr(cls, "architecture", None)
            if not isinstance(name, str) or not name:
                raise PluginError(impl.plugin_name, f"generator class {cls!r} has no 'architecture' name")
            if name in found and found[name] is not cls:
                raise PluginError(impl.plugin_name, f"generator architecture '{name}' is already registered")
            found[name] = cls
    return found


def find_architecture(name: str) -> type[Any]:
    """The class registered as `name`: built-ins first, then every installed plugin."""
    pm = get_plugin_manager(())
    known = registered_architectures(pm)
    if name in known:
        return known[name]
    broken: list[str] = []
    for plugin in installed_plugins():
        try:
            load_entry_points(pm, [plugin])
        except PluginError as exc:
            broken.append(str(exc))
    known = registered_architectures(pm)
    if name in known:
        return known[name]
    note = f" (plugins that failed to import: {'; '.join(broken)})" if broken else ""
    raise UnknownArchitectureError(
        f"unknown generator architecture '{name}'; registered: {', '.join(sorted(known))}{note}. "
        "A plugin adds one through the aigc_register_generators hook (docs/writing-a-plugin.md)"
    )
