"""Pipeline files as YAML with positions: the safe loader only (unknown tags, such as
`!!python/...`, are errors), duplicate keys refused, size and nesting bounded, and a `Locator` that
maps every path in the document to its file:line:column, so every later problem can say where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import PipelineFileError, Problem
from .limits import MAX_NESTING, MAX_PIPELINE_BYTES

MAX_YAML_NODES = 20_000  # bounds alias expansion ("billion laughs") before anything walks it

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


class _Loader(yaml.SafeLoader):
    """Safe loader; construction of unknown tags raises (caught and located below)."""


def parse_yaml(text: str, file: str) -> tuple[Any, Locator]:
    """Parse YAML text into plain data and a Locator; YAML-level problems raise PipelineFileError."""
    check_size(len(text.encode("utf-8", "surrogatepass")), file)
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


def check_size(size: int, file: str) -> None:
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
