"""Pipeline files: YAML loading with positions, two-phase validation, JSON Schema export.

Phase 1 validates the envelope (name, inputs, stages, outputs) with pydantic (`extra="forbid"`).
Phase 2 validates each stage's `with:` against that stage type's own `Params` model, because
plugins keep adding stage types. Every problem carries file:line:column, the stage and the field.
YAML is read with the safe loader only; duplicate keys and `!!python/...` tags are errors.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from .content import COLUMN_TYPES
from .devices import Device
from .errors import PipelineFileError, Problem
from .limits import MAX_NESTING, MAX_PIPELINE_BYTES
from .registry import StageRegistry

STAGE_ID_PATTERN = r"^[a-z_][a-z0-9_]*$"
MAX_YAML_NODES = 20_000  # bounds alias expansion ("billion laughs") before anything walks it

ColumnType = Literal[tuple(COLUMN_TYPES)]  # type: ignore[valid-type]
StageId = Annotated[str, StringConstraints(pattern=STAGE_ID_PATTERN)]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class StageSpec(BaseModel):
    """One entry under `stages:`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str = Field(description="stage type, e.g. 'template' or 'llm.text' ('aigc stages' lists all)")
    inputs: dict[str, str] = Field(default_factory=dict, description="port -> 'inputs.<column>' or '<stage>.<port>'")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the stage type's params")
    device: str | None = Field(None, description="'cpu', 'cuda' or 'cuda:N'; default: the scheduler decides")
    batch_size: int | None = Field(None, ge=1, le=100_000, description="items per micro-batch")
    timeout: float | None = Field(None, gt=0, description="seconds per row a call may take, after which its "
                                  "rows fail; default: none for built-in stages, 600 for plugins' stages")
    replicas: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="copies of a GPU stage, one per GPU, sharing its rows; 'auto': the scheduler decides")
    description: str = ""

    @field_validator("replicas", mode="before")
    @classmethod
    def _one_replicas_message(cls, value: Any) -> Any:
        # Checked here, once: the union alone would report one error per member ("not an int", "not 'auto'").
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be 'auto' or a whole number, at least 1 (one copy per GPU)")


class PipelineSpec(BaseModel):
    """The envelope of a pipeline file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    inputs: dict[ColumnName, ColumnType] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="columns every row must have")
    seed: int = 0
    key: list[ColumnName] = Field(  # type: ignore[valid-type]
        default_factory=list, description="the input columns that identify a row (default: all its input values)")
    plugins: list[str] = Field(default_factory=list, description="plugins by registered (entry-point) name")
    stages: dict[StageId, StageSpec] = Field(min_length=1)
    outputs: dict[str, str] = Field(default_factory=dict, description="result name -> '<stage>.<port>'")


Mark = tuple[str, int | None, int | None]  # (file, line, column), 1-based; None for --set


@dataclass
class Locator:
    """Maps a path in the parsed document to where it was written, to build located Problems."""

    file: str
    values: dict[tuple[Any, ...], Mark] = field(default_factory=dict)
    keys: dict[tuple[Any, ...], Mark] = field(default_factory=dict)

    def problem(self, path: tuple[Any, ...], message: str, *, key: bool = False, **extra: Any) -> Problem:
        file, line, column = self.mark(path, key=key)
        return Problem(message, file=file, line=line, column=column, **extra)

    def mark(self, path: tuple[Any, ...], key: bool = False) -> Mark:
        table = self.keys if key else self.values
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            found = table.get(prefix) or self.keys.get(prefix) or self.values.get(prefix)
            if found:
                return found
        return (self.file, 1, 1)


@dataclass
class Pipeline:
    """A pipeline file that passed both validation phases."""

    spec: PipelineSpec
    params: dict[str, BaseModel]
    locator: Locator
    source_text: str

    @property
    def file(self) -> str:
        return self.locator.file


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems sorted by where they are, as an editor lists them; `--set` ones (no line) last."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0))


def did_you_mean(name: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else None


# ---------------------------------------------------------------- YAML with positions


class _Loader(yaml.SafeLoader):
    """Safe loader; construction of unknown tags raises (caught and located below)."""


def parse_yaml(text: str, file: str) -> tuple[Any, Locator]:
    """Parse YAML text into plain data and a Locator; YAML-level problems raise PipelineFileError."""
    _check_size(len(text.encode("utf-8", "surrogatepass")), file)
    loader = None
    try:
        loader = _Loader(text)  # a NUL or other control character is refused here (a ReaderError)
        node = loader.get_single_node()
        locator = Locator(file)
        if node is not None:
            _walk(node, (), locator, file, [0])
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise PipelineFileError([_yaml_problem(exc, file)]) from None
    except yaml.reader.ReaderError as exc:  # located by character offset only
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise PipelineFileError([Problem(f"character U+{exc.character:04X} is not allowed in a pipeline file", file,
                                         line, column, hint="remove it (a NUL or other control character)")]) from None
    except yaml.YAMLError as exc:
        raise PipelineFileError([Problem(f"not valid YAML: {exc}", file=file)]) from None
    except RecursionError:  # nesting deeper than the parser's recursion limit, before _walk can count it
        raise PipelineFileError([Problem(f"nested too deeply (at most {MAX_NESTING} levels)", file=file)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, locator


def _check_size(size: int, file: str) -> None:
    if size > MAX_PIPELINE_BYTES:
        raise PipelineFileError([Problem(f"the file is {size:,} bytes, over the limit of {MAX_PIPELINE_BYTES:,} for "
                                         "a pipeline file; nothing was parsed", file=file,
                                         hint="keep data in the input file, not in the pipeline")])


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    message = ", ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
    hint = None
    if "could not determine a constructor" in message:
        tag = message.split("tag", 1)[-1].strip().replace("tag:yaml.org,2002:", "!!")
        message = f"YAML tag not allowed: {tag}"
        hint = "pipeline files are data: only plain YAML (no !!python or other custom tags)"
    elif "'\\t'" in message:
        hint = "YAML indentation must use spaces, not tabs"
    elif "single document" in message:
        hint = "a pipeline file holds one YAML document: remove the '---' line"
    return Problem(message, file=file, line=line, column=column, hint=hint)


def _walk(node: yaml.Node, path: tuple[Any, ...], locator: Locator, file: str, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_YAML_NODES or len(path) > MAX_NESTING:
        mark = node.start_mark
        if count[0] > MAX_YAML_NODES:
            message = f"document too large (over {MAX_YAML_NODES} nodes; aliases expand)"
        else:  # also what an alias inside its own anchor (`a: &x [*x]`) reaches: it never ends
            message = f"nested deeper than {MAX_NESTING} levels"
        hint = "nested aliases (*name) expand to copies; an alias inside its own anchor never ends"
        raise PipelineFileError([Problem(message, file, mark.line + 1, mark.column + 1, hint=hint)])
    locator.values[path] = (file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise PipelineFileError([_duplicate_key_problem(path, key, seen[key], key_node, file)])
            seen[key] = line
            locator.keys[path + (key,)] = (file, line, key_node.start_mark.column + 1)
            _walk(value_node, path + (key,), locator, file, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _walk(child, path + (index,), locator, file, count)


def _duplicate_key_problem(path: tuple[Any, ...], key: Any, first_line: int, node: yaml.Node, file: str) -> Problem:
    # YAML would silently keep the last value; a second stage of the same id is almost always a paste error.
    stage_ids = path == ("stages",)
    what, hint = ("stage id", "stage ids must be unique") if stage_ids else ("key", "each key may appear once")
    stage, field_name = stage_and_field(path + (key,))
    return Problem(f"duplicate {what} '{key}' (first defined on line {first_line})", file, node.start_mark.line + 1,
                   node.start_mark.column + 1, stage=stage, field=field_name, hint=hint)


def stage_and_field(path: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """Split a document path into the stage it is under (if any) and a dotted field name."""
    if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], str):
        rest = path[3:] if path[2:3] == ("with",) and len(path) > 3 else path[2:]  # params by their own name
        return path[1], ".".join(map(str, rest)) or None
    return None, ".".join(map(str, path)) or None


# ---------------------------------------------------------------- loading and validation


def read_pipeline_file(path: str | Path) -> str:
    """The file's text; its size is checked before it is read (an 11 MB file once took 59 s and 1.1 GB)."""
    try:
        _check_size(Path(path).stat().st_size, str(path))
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
        problems = [_pydantic_problem(err, (), locator, PipelineSpec) for err in exc.errors()]
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
            problems.extend(_pydantic_problem(e, base + ("with",), locator, model) for e in exc.errors())
    if problems:
        raise PipelineFileError(in_file_order(problems))
    return params


def _pydantic_problem(err: Any, base: tuple[Any, ...], locator: Locator, model: type[BaseModel]) -> Problem:
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


# ---------------------------------------------------------------- JSON Schema


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
