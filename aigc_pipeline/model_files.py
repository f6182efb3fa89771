"""Finding model folders and checking them before anything loads.

A model param is a local folder (e.g. one `aigc models make-tiny` wrote) or a Hugging Face id.
An id resolves through the local Hugging Face cache first; only when that misses and
`HF_HUB_OFFLINE` is not set is a download tried (PyTorch safetensors weights only: no pickle files
unless allowed, no TensorFlow / Flax / ONNX / GGUF copies). Either way the result is a local
folder, and the folder must hold safetensors weights: pickle files (`.bin`, `.pt`, `.ckpt`) can
run code when loaded, so they are refused unless the pipeline sets `allow_pickle: true`.
Stages call `resolve_model` from `preflight`, so a missing model stops the run before any row,
and `find_model` + `weights_bytes` from `needs`, which must stay cheap and never download.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from .errors import MissingDependencyError, ModelUnavailableError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Weights for other frameworks or runtimes that a PyTorch stage never loads: not downloaded.
OTHER_FRAMEWORK_PATTERNS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.gguf", "*.mlmodel")
HOW_TO_PROVIDE = (
    "give a local model folder (e.g. one made by 'aigc models make-tiny DIR'), or put the model in the "
    "Hugging Face cache (run once with network access, or set HF_HOME to a cache that has it)"
)
# Bytes per element of the safetensors dtypes; floating ones are re-sized when a stage casts them.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header larger than this is not one


def resolve_model(model: str, revision: str | None = None, *, allow_pickle: bool = False) -> Path:
    """A local folder holding `model` with loadable safetensors weights, or ModelUnavailableError."""
    if not model.strip():
        raise ModelUnavailableError(f"no model given; {HOW_TO_PROVIDE}")
    local = Path(model).expanduser()
    folder = local if local.is_dir() else _from_hub(model, revision, allow_pickle)
    check_weights(folder, model, allow_pickle)
    return folder


def find_model(model: str, revision: str | None = None) -> Path | None:
    """The local folder of `model` (a folder, or a Hugging Face cache hit), or None. Never downloads."""
    local = Path(model).expanduser()
    if model.strip() and local.is_dir():
        return local
    if _not_a_hub_id(model):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception:  # not installed, not cached, not a valid id: unknown, not an error here
        return None


def _not_a_hub_id(model: str) -> bool:
    return not model or model.startswith((".", "/", "~")) or model.count("/") > 1


def _from_hub(model: str, revision: str | None, allow_pickle: bool) -> Path:
    if _not_a_hub_id(model):
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
                f"model '{model}' is not a local folder nor in the local Hugging Face cache, and HF_HUB_OFFLINE "
                f"is set; {HOW_TO_PROVIDE}"
            ) from cached_miss
    ignore = list(OTHER_FRAMEWORK_PATTERNS)
    if not allow_pickle:
        ignore += [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
    try:
        return Path(snapshot_download(model, revision=revision, ignore_patterns=ignore))
    except Exception as exc:
        raise ModelUnavailableError(
            f"model '{model}' is not a local folder nor cached, and could not be downloaded "
            f"({type(exc).__name__}); {HOW_TO_PROVIDE}"
        ) from exc


def _offline() -> bool:
    flags = (os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


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
        skipped = "" if allow_pickle else " (pickle weights are not downloaded or loaded unless 'allow_pickle: true')"
        raise ModelUnavailableError(f"model '{model}' ({folder}) holds no weight files{skipped}; {HOW_TO_PROVIDE}")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files `from_pretrained` reads from `folder` (an index's shards, else all of them)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            return sorted(folder / name for name in shards)
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass
    single = folder / "model.safetensors"
    return [single] if single.is_file() else sorted(folder.glob("*.safetensors"))


def weights_bytes(folder: Path, dtype_bytes: int | None = None) -> int:
    """Bytes the weights in `folder` take in memory, floating tensors cast to `dtype_bytes` each
    (None: as stored). Reads only the safetensors headers; a file it cannot parse counts its size."""
    total = 0
    for path in weight_files(folder):
        try:
            total += _tensor_bytes(path, dtype_bytes)
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            total += path.stat().st_size if path.is_file() else 0
    return total


def _tensor_bytes(path: Path, dtype_bytes: int | None) -> int:
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > MAX_HEADER_BYTES:
            raise ValueError("not a safetensors header")
        header = json.loads(file.read(length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        kind = info["dtype"]
        size = dtype_bytes if dtype_bytes is not None and kind in _FLOAT_DTYPES else _DTYPE_BYTES.get(kind, 1)
        total += count * size
    return total


# Files whose change changes what a model computes: weights and the configs beside them.
FINGERPRINT_SUFFIXES = (".safetensors", ".json", ".txt", ".model", *PICKLE_SUFFIXES)


def model_fingerprint(folder: Path) -> str:
    """A hash of the name, size and mtime of every weight and config file under `folder`.

    Cheap (stat calls only, no reading): the run store keys cached results by it, so replacing a
    model's weights or config re-runs its stage. A Hugging Face cache folder's symlinks are followed.
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in folder.rglob("*") if p.suffix in FINGERPRINT_SUFFIXES):
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(folder).as_posix()}\x00{stat.st_size}\x00{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
