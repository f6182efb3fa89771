"""Descriptions of stage types and plugins, for `aigc stages` and `aigc plugins`."""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import pluggy
from pydantic import BaseModel, ValidationError

from .plugin_manager import BUILTIN_PLUGINS, installed_plugins
from .registry import StageRegistry


def describe_params(model: type[BaseModel]) -> str:
    parts = []
    for name, info in model.model_fields.items():
        kind = _type_name(info.annotation)
        default = "required" if info.is_required() else f"= {info.get_default(call_default_factory=True)!r}"
        parts.append(f"{info.alias or name}: {kind} {default}")
    return "; ".join(parts) or "none"


def _type_name(annotation: Any) -> str:
    # Short and complete: `list[RegexRule]`, `Literal['drop', 'flag']`, `int | None`
    # (`__name__` alone drops generic arguments; `str()` spells out module paths).
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Ellipsis:
        return "..."
    if origin is None:
        return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin in (Union, UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    return f"{_type_name(origin)}[{', '.join(_type_name(a) for a in args)}]"


def describe_needs(cls: Any) -> str:
    try:
        params = cls.Params.model_validate({})
    except ValidationError:
        return "depends on params"
    needs = cls.needs(params)
    memory = f", ~{needs.memory_bytes / 2**20:.0f} MiB" if needs.memory_bytes else ""
    return f"{needs.kind}{memory}" + (f", {needs.dtype}" if needs.dtype else "")


def _ports(ports: dict[str, Any], variadic: Any = None) -> str:
    listed = [f"{name} ({kind})" for name, kind in ports.items()]
    if variadic is not None:
        listed.append(f"any name ({variadic})")
    return ", ".join(listed) or "none"


def stage_rows(registry: StageRegistry) -> list[dict[str, str]]:
    return [
        {
            "type": name,
            "plugin": entry.plugin,
            "description": entry.cls.description,
            "inputs": _ports(entry.cls.inputs, entry.cls.variadic_inputs),
            "outputs": _ports(entry.cls.outputs),
            "device": describe_needs(entry.cls),
            "params": describe_params(entry.cls.Params),
        }
        for name, entry in registry.items()
    ]


def plugin_rows(pm: pluggy.PluginManager, registry: StageRegistry) -> list[dict[str, str]]:
    entry_points = installed_plugins()
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        if name in BUILTIN_PLUGINS:
            source = "built-in"
        elif name in entry_points:
            dist = entry_points[name].dist
            source = f"entry point ({dist.name} {dist.version})" if dist else "entry point"
        else:
            source = "explicit (--plugin)" if isinstance(name, str) and "." in name else "registered in code"
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        stages = [type_name for type_name, entry in registry.items() if entry.plugin == name]
        rows.append({"name": name, "source": source, "stages": ", ".join(stages) or "-",
                     "hooks": ", ".join(h for h in hooks if h != "aigc_register_stages") or "-"})
    return rows
