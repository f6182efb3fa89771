"""Output values checked against their port's content type.

A stage that writes an `int` to a text port (or a path string to an image port) would hand the
wrong kind of value to every stage downstream and to results.jsonl, silently. The engine checks
each output of the types it can tell apart cheaply (an isinstance per value) and fails the row,
naming the stage and the port. Record and any ports, and types a plugin defines, are not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .content import Artifact, ArtifactData, ContentType

# What a stage puts on a file port: new bytes (the engine writes them), or a file it passes on.
_ARTIFACTS = (ArtifactData, Artifact)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "text": (lambda value: isinstance(value, str), "a str"),
    "image": (lambda value: isinstance(value, _ARTIFACTS), "ArtifactData (encoded image bytes)"),
    "audio": (lambda value: isinstance(value, _ARTIFACTS), "ArtifactData (encoded audio bytes)"),
    "video": (lambda value: isinstance(value, _ARTIFACTS), "ArtifactData (encoded video bytes)"),
    "number": (_is_number, "an int or a float"),
}

PortCheck = tuple[str, Callable[[Any], bool], str, ContentType]


def port_checks(outputs: dict[str, ContentType]) -> list[PortCheck]:
    """(port, check, what it must be, type) for each output port whose type can be checked."""
    return [(port, *_CHECKS[kind.name], kind) for port, kind in outputs.items() if kind.name in _CHECKS]


def output_problem(stage_id: str, checks: list[PortCheck], outputs: dict[str, Any]) -> str | None:
    """Why the outputs a stage set do not fit their ports, or None. Missing ports are not checked here."""
    for port, check, wanted, kind in checks:
        if port in outputs and not check(value := outputs[port]):
            return (f"stage '{stage_id}' set output port '{port}' ({kind}) to {type(value).__name__} "
                    f"{value!r:.40}; it must be {wanted}")
    return None
