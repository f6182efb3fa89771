"""Finding model folders and checking them before anything loads.

A model param is a local folder (e.g. one `aigc models make-tiny` wrote) or a Hugging Face id.
An id resolves through the local Hugging Face cache first; only when that misses and
`HF_HUB_OFFLINE` is not set is a download tried. Either way the result is a local folder, and
the folder must hold safetensors weights: pickle files (`.bin`, `.pt`, `.ckpt`) can run code when
loaded, so they are refused unless the pipeline sets `allow_pickle: true`.
Stages call `resolve_model` from `preflight`, so a missing model stops the run before any row.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingDependencyError, ModelUnavailableError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HOW_TO_PROVIDE = (
    "give a local model folder (e.g. one made by 'aigc models make-tiny DIR'), or put the model in the "
    "Hugging Face cache (run once with network access, or set HF_HOME to a cache that has it)"
)


def resolve_model(model: str, revision: str | None = None, *, allow_pickle: bool = False) -> Path:
    """A local folder holding `model` with loadable safetensors weights, or ModelUnavailableError."""
    local = Path(model).expanduser()
    folder = local if local.is_dir() else _from_hub(model, revision, allow_pickle)
    check_weights(folder, model, allow_pickle)
    return folder


def _from_hub(model: str, revision: str | None, allow_pickle: bool) -> Path:
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelUnavailableError(f"model '{model}': no such folder; {HOW_TO_PROVIDE}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingDependencyError("huggingface_hub", f"loading model '{model}' by name") from None
    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception as cached_miss:
        if _offline():
            raise ModelUnavailableError(
                f"model '{model}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {HOW_TO_PROVIDE}"
            ) from cached_miss
    ignore = None if allow_pickle else [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
    try:
        return Path(snapshot_download(model, revision=revision, ignore_patterns=ignore))
    except Exception as exc:
        raise ModelUnavailableError(
            f"model '{model}' is not cached and could not be downloaded ({type(exc).__name__}); {HOW_TO_PROVIDE}"
        ) from exc


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_weights(folder: Path, model: str, allow_pickle: bool) -> None:
    """Refuse a folder without safetensors weights, unless pickle weights are explicitly allowed."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickled and not allow_pickle:
        # A component with only pickle weights would be loaded from them; refuse per folder.
        unsafe_dirs = {p.parent for p in pickled} - {p.parent for p in safe}
        if unsafe_dirs or not safe:
            names = ", ".join(sorted(str(p.relative_to(folder)) for p in pickled)[:4])
            raise ModelUnavailableError(
                f"model '{model}' has pickle weights only ({names}); pickle files can run code when loaded. "
                "Convert them to safetensors, or set 'allow_pickle: true' if you trust this model"
            )
    if not safe and not pickled:
        raise ModelUnavailableError(f"model '{model}' ({folder}) holds no weight files; {HOW_TO_PROVIDE}")
