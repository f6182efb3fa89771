"""Pipeline files: loading, two-phase validation, `--set` overrides, JSON Schema export.

Phase 1 validates the envelope (name, inputs, stages, outputs) with pydantic (`extra="forbid"`).
Phase 2 validates each stage's `with:` against that stage type's own `Params` model, because
plugins keep adding stage types. Every problem carries file:line:column, the stage and the field.
YAML is read with the safe loader only; duplicate keys and `!!python/...` tags are errors
(spec_yaml.py). The models of a file are in spec_models.py, its problems' wording in spec_problems.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .devices import Device
from .errors import PipelineFileError, Problem
from .registry import StageRegistry
from .spec_models import STAGE_ID_PATTERN, Pipeline, PipelineSpec, StageSpec
from .spec_problems import did_you_mean, in_file_order, pydantic_problem
from .spec_yaml import Locator, check_size, parse_yaml

# Re-exported: the models, locations and problem helpers were defined here before they had modules of their own.
__all__ = ["STAGE_ID_PATTERN", "Locator", "Pipeline", "PipelineSpec", "StageSpec", "apply_overrides",
           "check_plugin_names", "did_you_mean", "in_file_order", "load_pipeline_text", "parse_pipeline",
           "pipeline_json_schema", "read_pipeline_file", "validate_envelope", "validate_stage_params"]


def read_pipeline_file(path: str | Path) -> str:
    """The file's text; its size is checked before it is read (an 11 MB file once took 59 s and 1.1 GB)."""
    try:
        check_size(Path(path).stat().st_size, str(path))
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineFileError([Problem(f"cannot read pipeline file: {exc}", file=str(path))]) from None


def parse_pipeline(
    text: str, file: str = "<pipeline>", overrides: list[str] | None = None
) -> tuple[PipelineSpec, Locator]:
    """Phase 1: YAML, `--set` overrides, and the envelope. Needs no plugin."""
    data, locator = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise PipelineFileError([locator.problem((), "a pipeline file must be a YAML mapping (name:, stages:, ...)")])
    apply_overrides(data, overrides or [], locator)
    return validate_envelope(data, locator), locator


def load_pipeline_text(
    text: str, registry: StageRegistry, file: str = "<pipeline>", overrides: list[str] | None = None
) -> Pipeline:
    """Both phases against an existing registry."""
    spec, locator = parse_pipeline(text, file, overrides)
    return Pipeline(spec, validate_stage_params(spec, registry, locator), locator, text)


def validate_envelope(data: dict[str, Any], locator: Locator) -> PipelineSpec:
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems = [pydantic_problem(err, (), locator, PipelineSpec) for err in exc.errors()]
        raise PipelineFileError(in_file_order(problems)) from None
    _check_key_columns(spec, locator)
    return spec


def _check_key_columns(spec: PipelineSpec, locator: Locator) -> None:
    """`key:` names declared input columns, each once."""
    columns = list(spec.inputs)
    problems = [
        locator.problem(("key", index), f"key column '{name}' is not declared under 'inputs:'", field=f"key.{index}",
                        hint=did_you_mean(name, columns) or f"columns: {', '.join(columns) or 'none'}")
        for index, name in enumerate(spec.key) if name not in spec.inputs
    ]
    problems += [locator.problem(("key", index), f"key column '{name}' is listed twice", field=f"key.{index}")
                 for index, name in enumerate(spec.key) if name in spec.key[:index]]
    if problems:
        raise PipelineFileError(problems)


def check_plugin_names(spec: PipelineSpec, locator: Locator, available: Iterable[str]) -> None:
    """Reject `plugins:` names that are neither installed nor registered, located at the list entry."""
    known = sorted(set(available))
    problems = [
        locator.problem(("plugins", index), f"plugin '{name}' is not installed", field=f"plugins.{index}",
                        hint=did_you_mean(name, known) or f"installed plugins: {', '.join(known) or 'none'}"
                        " ('aigc plugins' lists them)")
        for index, name in enumerate(spec.plugins) if name not in known
    ]
    if problems:
        raise PipelineFileError(problems)


def validate_stage_params(spec: PipelineSpec, registry: StageRegistry, locator: Locator) -> dict[str, BaseModel]:
    problems: list[Problem] = []
    params: dict[str, BaseModel] = {}
    for stage_id, stage in spec.stages.items():
        base = ("stages", stage_id)
        registered = registry.get(stage.uses)
        if registered is None:
            hint = did_you_mean(stage.uses, registry.names()) or f"available: {', '.join(registry.names())}"
            problems.append(locator.problem(base + ("uses",), f"unknown stage type '{stage.uses}'", stage=stage_id,
                                            field="uses", hint=f"{hint} ('aigc stages' lists all)"))
            continue
        if stage.device is not None:
            try:
                Device.parse(stage.device)
            except ValueError as exc:
                problems.append(locator.problem(base + ("device",), str(exc), stage=stage_id, field="device"))
        try:
            params[stage_id] = registered.cls.Params.model_validate(stage.with_)
        except ValidationError as exc:
            model = registered.cls.Params
            problems.extend(pydantic_problem(e, base + ("with",), locator, model) for e in exc.errors())
    if problems:
        raise PipelineFileError(in_file_order(problems))
    return params


def apply_overrides(data: dict[str, Any], overrides: list[str], locator: Locator) -> None:
    """Apply `--set stage.param=value` onto the raw document.

    The value is parsed as YAML (`30`, `true`, `[a, b]`); text that is not valid YAML is taken as a
    string, so `--set brief.template={{ product }}!` works without quoting twice.
    """
    for override in overrides:
        where = f"--set {override}"
        target, sep, raw = override.partition("=")
        stage_id, dot, param = target.strip().partition(".")
        if not sep or not dot or not param:
            raise PipelineFileError([Problem("expected STAGE.PARAM=VALUE", file=where)])
        stages = data.get("stages")
        if not isinstance(stages, dict) or stage_id not in stages:
            choices = list(stages) if isinstance(stages, dict) else []
            hint = did_you_mean(stage_id, choices)
            raise PipelineFileError([Problem(f"no stage '{stage_id}'", file=where, hint=hint)])
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        stage = stages[stage_id]
        if not isinstance(stage, dict):
            raise PipelineFileError([Problem(f"stage '{stage_id}' is not a mapping", file=where)])
        if not isinstance(stage.get("with"), dict):
            stage["with"] = {}
        stage["with"][param] = value
        _relocate(locator, ("stages", stage_id, "with", param), where)


def _relocate(locator: Locator, path: tuple[Any, ...], where: str) -> None:
    """Point `path` and everything under it at the `--set` that replaced it, not at the file."""
    for table in (locator.values, locator.keys):
        for stale in [p for p in table if p[: len(path)] == path]:
            del table[stale]
    locator.values[path] = locator.keys[path] = (where, None, None)


def pipeline_json_schema(registry: StageRegistry) -> dict[str, Any]:
    """JSON Schema of pipeline files, with each registered stage type's params, for editors."""
    schema = PipelineSpec.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    generic = defs.pop("StageSpec")
    variants = []
    for type_name, registered in registry.items():
        params_schema = registered.cls.Params.model_json_schema(by_alias=True)
        defs.update(params_schema.pop("$defs", {}))
        variant = {**generic, "title": f"stage '{type_name}'", "properties": dict(generic["properties"])}
        variant["properties"]["uses"] = {"const": type_name, "description": registered.cls.description}
        variant["properties"]["with"] = params_schema
        variants.append(variant)
    defs["StageSpec"] = {"anyOf": variants} if variants else generic
    for keyed in ("stages", "inputs"):  # pydantic leaves keys outside the id pattern unchecked
        schema["properties"][keyed]["additionalProperties"] = False
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aigc-pipeline pipeline file"
    return schema
