"""Executor backends: how a run plan's stages are driven over the items.

Backends register through the `aigc_register_executors` hook, like stages: this package registers
the built-in ones, `local` (the default: this process, one thread per stage) and `ray`
(`--executor ray`, the optional `ray` extra: the same plan as Ray Data steps on a Ray cluster).
Every backend follows the `aigc_pipeline.records.ExecutorBackend` protocol and reuses
`StageRunner` for the per-batch work, so outputs are the same item for item whichever runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pluggy

from ..errors import PluginError
from ..plugin_manager import hookimpl, load_entry_points
from ..records import ExecutorBackend

Factory = Callable[..., ExecutorBackend]


def _local(address: str | None = None) -> ExecutorBackend:
    from .local import LocalExecutor

    if address:
        raise ValueError("--ray-address needs --executor ray (or leave --executor out)")
    return LocalExecutor()


def _ray(address: str | None = None) -> ExecutorBackend:
    from .ray import RayExecutor  # imports Ray only when it is asked for

    return RayExecutor(address)


@hookimpl
def aigc_register_executors() -> dict[str, Factory]:
    return {"local": _local, "ray": _ray}


def executor_backends(pm: pluggy.PluginManager) -> dict[str, Factory]:
    """Every registered backend by name; a name two plugins register is a PluginError naming both."""
    found: dict[str, tuple[str, Factory]] = {}
    for impl in pm.hook.aigc_register_executors.get_hookimpls():
        registered = cast(dict[str, Factory], impl.function() or {})
        for name, factory in registered.items():
            if name in found and found[name][1] is not factory:
                raise PluginError(impl.plugin_name, f"executor '{name}' is already registered by plugin "
                                                    f"'{found[name][0]}'")
            found[name] = (impl.plugin_name, factory)
    return {name: factory for name, (_, factory) in sorted(found.items())}


def make_backend(pm: pluggy.PluginManager, name: str, address: str | None = None) -> ExecutorBackend:
    """The backend registered as `name`, built with `address`; ValueError listing them for an unknown one
    (installed plugins are loaded first, as for an unknown stage type)."""
    backends = executor_backends(pm)
    if name not in backends:
        load_entry_points(pm, None)
        backends = executor_backends(pm)
    if name not in backends:
        from ..spec import did_you_mean

        hint = did_you_mean(name, list(backends))
        names = list(backends)
        choices = " or ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else "none registered"
        raise ValueError(f"unknown executor {name!r}: choose {choices}" + (f"; {hint}" if hint else ""))
    return backends[name](address=address)
