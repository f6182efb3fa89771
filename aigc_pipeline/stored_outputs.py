"""Stage outputs as the run store holds them (JSON), and back: an artifact is stored as its path
relative to the output folder, its sha256, size and metadata, and is checked to be still there,
unchanged, before a stored result is reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .content import Artifact
from .json_text import compact_encoder
from .safe_paths import intact_artifact


def _stored_value(value: Any) -> Any:
    if isinstance(value, Artifact):
        return {"$artifact": value.relpath, "sha256": value.digest, "size": value.path.stat().st_size,
                "metadata": value.metadata}
    raise TypeError(f"{type(value).__name__} is not JSON")


_ENCODE = compact_encoder(default=_stored_value)  # built once, not per call (json_text.py)


def encode_outputs(outputs: dict[str, Any]) -> str | None:
    """Outputs as JSON (artifacts as path, hash, size, metadata), or None when not JSON-able."""
    try:
        return _ENCODE(outputs)
    except (TypeError, ValueError, OSError):
        return None


def decode_outputs(text: str, out_dir: Path) -> dict[str, Any] | None:
    """Stored outputs back as values; None when an artifact is gone or changed (re-run it): its size
    and content hash are checked (safe_paths.intact_artifact)."""
    missing: list[str] = []

    def revive(record: dict[str, Any]) -> Any:
        relpath = record.get("$artifact")
        if not isinstance(relpath, str) or "sha256" not in record:
            return record
        path = out_dir / relpath
        if not intact_artifact(out_dir, relpath, record["size"], record["sha256"]):
            missing.append(relpath)
        return Artifact(relpath, path.resolve(), record["metadata"], record["sha256"])

    outputs = json.loads(text, object_hook=revive)
    return None if missing else outputs
