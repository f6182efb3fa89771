"""The cache key of a stored result: a run finds a finished result again by it. A hash of:

    stage type | stage version and its distribution's name and version (provenance.py) |
    params (canonical JSON) | model identity (Stage.model_identity: the model name,
    revision and a fingerprint of its files' sizes and mtimes) | the item's seed (from the row's
    identity, never its position: row_identity.py) | the input values the stage consumed
    (canonical JSON; artifacts by the sha256 of their bytes)

So changing one stage's params re-runs that stage and, for the rows whose outputs changed, the
stages downstream of it (their inputs differ); a downstream stage whose inputs came out equal is
reused, which is right. A stage whose results depend on more than the item (`cacheable(params)`
False, e.g. a dedupe across the run) is never reused.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from .content import Artifact
from .json_text import compact_encoder


def _key_value(value: Any) -> Any:
    if isinstance(value, Artifact):
        return {"$artifact": value.digest or value.relpath}
    raise TypeError(f"{type(value).__name__} is not JSON")


# Built once (json_text.py): json.dumps with options builds an encoder per call (a third of a key's cost).
_CANONICAL = compact_encoder(sort_keys=True, separators=(",", ":"), default=_key_value)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, artifacts by content hash. TypeError for values JSON cannot hold."""
    return _CANONICAL(value)


def stage_prefix(type_name: str, params: BaseModel | dict[str, Any], identity: Any, origin: Any = None) -> str:
    """The part of every cache key of one stage that does not depend on the item (`params`: as `Stage.cache_params`
    gives them; `origin`: the stage's version, its distribution's name and version: `StageOrigin.as_key`)."""
    fields = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    text = canonical_json({"type": type_name, "params": fields, "models": identity, "origin": origin})
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def item_key(prefix: str, seed: int, inputs: dict[str, Any]) -> str | None:
    """The cache key of one item, or None when its inputs cannot be written as JSON (not cached)."""
    try:
        text = _CANONICAL(inputs)
    except (TypeError, ValueError):
        return None
    return hashlib.blake2b(f"{prefix}\x00{seed}\x00{text}".encode(), digest_size=20).hexdigest()

