"""The stage registry: stage type name -> class, built from the `aigc_register_stages` hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pluggy

from .errors import PluginError
from .stage import Stage, check_stage_class


@dataclass(frozen=True)
class RegisteredStage:
    cls: type[Stage]
    plugin: str


class StageRegistry:
    """Every stage type the loaded plugins provide, with the plugin that provided it."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._by_name: dict[str, RegisteredStage] = {}
        hook = pm.hook.aigc_register_stages
        # Registration order (built-ins first, then entry points, then explicit ones), not pluggy's
        # last-first call order: a duplicate type name is then blamed on the later plugin.
        for impl in hook.get_hookimpls():
            self._register_from(impl.plugin_name, impl.function)

    def _register_from(self, plugin: str, register_function: Callable[[], object]) -> None:
        try:
            classes = register_function()
        except Exception as exc:
            raise PluginError(plugin, f"raised in aigc_register_stages: {type(exc).__name__}: {exc}") from exc
        if not isinstance(classes, (list, tuple)):
            raise PluginError(plugin, "aigc_register_stages must return a list of Stage subclasses")
        for cls in classes:
            self._add(plugin, cls)

    def _add(self, plugin: str, cls: object) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise PluginError(plugin, f"aigc_register_stages returned {cls!r}, which is not a Stage subclass")
        try:
            check_stage_class(cls)
        except TypeError as exc:
            raise PluginError(plugin, str(exc)) from exc
        earlier = self._by_name.get(cls.type_name)
        if earlier is not None and earlier.cls is not cls:
            raise PluginError(
                plugin, f"stage type '{cls.type_name}' is already registered by plugin '{earlier.plugin}'"
            )
        self._by_name[cls.type_name] = RegisteredStage(cls, plugin)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_name

    def get(self, type_name: str) -> RegisteredStage | None:
        return self._by_name.get(type_name)

    def stage_class(self, type_name: str) -> type[Stage]:
        """The class of a registered type (KeyError for an unknown one: check with `in` first)."""
        return self._by_name[type_name].cls

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def items(self) -> list[tuple[str, RegisteredStage]]:
        return sorted(self._by_name.items())
