"""Problems of a pipeline file as a user reads them: pydantic's errors located at file:line:column,
with the stage, the field and a hint (the nearest valid key or value), in the file's order."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel

from .errors import Problem
from .spec_models import STAGE_ID_PATTERN
from .spec_yaml import Locator, stage_and_field


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by where they are, as an editor lists them; `--set` ones (no line) last."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0))


def did_you_mean(name: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else None


def pydantic_problem(err: Any, base: tuple[Any, ...], locator: Locator, model: type[BaseModel]) -> Problem:
    """A pydantic error as a located Problem; `model` is what `base` was validated against (for key hints)."""
    loc = tuple(p for p in err["loc"] if p != "[key]")
    path = base + loc
    stage, field_name = stage_and_field(path)
    if err["type"] == "extra_forbidden":
        known = _keys_at(model, loc)
        message = f"unknown key '{loc[-1]}'"
        hint = did_you_mean(str(loc[-1]), known) or (f"valid keys: {', '.join(known)}" if known else None)
    else:
        value = err.get("input")
        shown = f" (got {value!r:.80})" if not isinstance(value, dict) and err["type"] != "missing" else ""
        message = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, ")) + shown
        hint = _value_hint(err, path)
    key = err["type"] in ("extra_forbidden", "missing") or "[key]" in err["loc"]
    return locator.problem(path, message, key=key, stage=stage, field=field_name, hint=hint)


def _value_hint(err: Any, path: tuple[Any, ...]) -> str | None:
    """The nearest valid value for a misspelt choice or a name that breaks its pattern."""
    value = err.get("input")
    if not isinstance(value, str):
        return None
    if err["type"] == "literal_error":
        return did_you_mean(value, re.findall(r"'([^']*)'", err["ctx"]["expected"]))
    if err["type"] == "string_pattern_mismatch":
        pattern = err["ctx"]["pattern"]
        fixed = re.sub(r"[^A-Za-z0-9_]+", "_", value.lower() if pattern == STAGE_ID_PATTERN else value).strip("_")
        example = f"e.g. '{fixed}'" if fixed and re.fullmatch(pattern, fixed) else None
        if path[:1] == ("stages",) and len(path) == 2:
            return "stage ids are lowercase letters, digits and '_'" + (f": {example}" if example else "")
        return example
    return None


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the mapping that holds the last key of `loc`, looked up through nested models."""
    for part in loc[:-1]:
        field_info = _field_named(model, part) if isinstance(part, str) else None
        if field_info is None:
            continue  # a list index or a dict key (a stage id): its items share the container's model
        nested = _nested_model(field_info.annotation)
        if nested is None:
            return []
        model = nested
    return [f.alias or name for name, f in model.model_fields.items()]


def _field_named(model: type[BaseModel], name: str) -> Any:
    """A field by its YAML name (its alias when it has one, e.g. `json` or `with`)."""
    return next((f for key, f in model.model_fields.items() if (f.alias or key) == name), None)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None
