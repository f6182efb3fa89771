"""Content types: what flows along the edges of a pipeline graph.

A port is typed with one of these. Two ports connect when the producer's type is accepted by the
consumer's (`accepts`). Text and records stay plain Python objects, so a micro-batch costs no
wrapping per item; images and audio travel as files: a stage returns `ArtifactData` (bytes), the
engine writes it and passes an `Artifact` (a path in the output folder) downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ContentType:
    """A named kind of value carried by a port."""

    name: str
    description: str

    def accepts(self, other: ContentType) -> bool:
        """True when a value of type `other` may flow into a port of this type (a number is
        structured data too: a RECORD port accepts a NUMBER)."""
        return self is ANY or other is ANY or self == other or (self == RECORD and other == NUMBER)

    def __str__(self) -> str:
        return self.name


TEXT = ContentType("text", "a Python str")
IMAGE = ContentType("image", "an image file in the output folder (Artifact)")
AUDIO = ContentType("audio", "an audio file in the output folder (Artifact)")
VIDEO = ContentType("video", "a video file in the output folder (Artifact)")
RECORD = ContentType("record", "structured data: a number, bool, list or mapping")
NUMBER = ContentType("number", "an int or float: a score, a price, a count")
ANY = ContentType("any", "any value")

CONTENT_TYPES: dict[str, ContentType] = {t.name: t for t in (TEXT, IMAGE, AUDIO, VIDEO, RECORD, NUMBER, ANY)}

# Column types a pipeline file may declare under `inputs:`, with the Python check for each value
# and the content type the column carries into the graph.
COLUMN_TYPES: dict[str, tuple[tuple[type, ...], ContentType]] = {
    "str": ((str,), TEXT),
    "int": ((int,), RECORD),
    "float": ((float, int), RECORD),
    "bool": ((bool,), RECORD),
    "list[str]": ((list,), RECORD),
    "list[int]": ((list,), RECORD),
    "list[float]": ((list,), RECORD),
    "dict": ((dict,), RECORD),
    "any": ((object,), ANY),
}


def column_content_type(column_type: str) -> ContentType:
    return COLUMN_TYPES[column_type][1]


# Exact types that are valid without further checks: the per-row fast path of input reading.
_PLAIN_OK = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}


def check_column_value(column_type: str, value: Any) -> str | None:
    """Return why `value` is not a valid `column_type`, or None when it is."""
    if type(value) is _PLAIN_OK.get(column_type) or column_type == "any":
        return None
    if type(value) is list and column_type.startswith("list["):  # fast path: every element of the exact type
        plain = _PLAIN_OK.get(column_type[5:-1])
        if plain is not None and all(type(element) is plain for element in value):
            return None
    allowed, _ = COLUMN_TYPES[column_type]
    if column_type != "bool" and column_type != "any" and isinstance(value, bool):
        return f"expected {column_type}, got a boolean"
    if not isinstance(value, allowed):
        return f"expected {column_type}, got {type(value).__name__} {value!r:.60}"
    if column_type.startswith("list[") and isinstance(value, list):
        inner = column_type[5:-1]
        for element in value:
            reason = check_column_value(inner, element)
            if reason:
                return f"list element {element!r:.40}: {reason}"
    return None


@dataclass(frozen=True)
class ArtifactData:
    """What a stage puts on an image or audio port: encoded bytes, not yet on disk.

    The engine saves it atomically under the run's output folder and hands downstream stages
    (and results.jsonl) an `Artifact` instead. File names never come from row values.
    """

    data: bytes
    suffix: str  # ".png", ".wav", ".mp4"
    metadata: dict[str, Any] = field(default_factory=dict)
    # Companion files saved beside this one (a video's poster frame): name -> file; the engine
    # writes each and puts its relative path into this artifact's metadata under that name.
    attachments: dict[str, ArtifactData] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A file the run wrote: `relpath` is relative to the output folder; `path` is absolute."""

    relpath: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 of the file's bytes: downstream cache keys use it, not the path

    def __str__(self) -> str:  # results.jsonl shows the relative path
        return self.relpath
