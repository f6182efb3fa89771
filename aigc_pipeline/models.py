"""Model helpers for stage authors: find a model's folder, check it, size it, put it on a device.

The built-in model stages (`llm.text`, `diffusion.image`, `tts`, the classifiers of the filters)
use exactly these, and a plugin's model stage should too, so that every stage follows the same
rules:

- A `model` param is a local folder or a Hugging Face id. `find_model` (for `needs`, which must be
  cheap) looks on disk only: the folder, or the local Hugging Face cache; it never downloads.
  `resolve_model` (for `preflight` and `load`) may download when `HF_HUB_OFFLINE` is not set
  (PyTorch safetensors weights only) and raises `ModelUnavailableError`, saying how to provide
  the model, when it cannot.
- Weights must be safetensors: pickle files (`.bin`, `.pt`, `.ckpt`) can run code when loaded,
  so they are refused unless the stage's params allow them (`allow_pickle=True`).
  `trust_remote_code` is the stage's own choice, off unless its params turn it on; pass it on
  to `from_pretrained` as is.
- `memory_estimate` reads only safetensors headers (never the weights), for `DeviceNeeds`.
- `torch_device` turns the `Device` the scheduler chose into a `torch.device`;
  `dtype_keyword` names the `from_pretrained` keyword that takes a torch dtype.

Stages never free GPU memory themselves: they drop their references in `unload()`, and the
engine returns the cached memory to the device afterwards.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .devices import Device
from .errors import ModelUnavailableError
from .model_files import find_model, model_fingerprint, resolve_model, weights_bytes

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_no_remote_code",
    "dtype_keyword",
    "find_model",
    "memory_estimate",
    "model_fingerprint",
    "model_weights_bytes",
    "resolve_model",
    "torch_device",
    "weights_bytes",
]

# Since these releases `from_pretrained` takes the dtype as `dtype`; before, as `torch_dtype`.
_DTYPE_KEYWORD_SINCE = {"transformers": (4, 56), "diffusers": (0, 42)}


def model_weights_bytes(model: str, revision: str | None = None, dtype_bytes: int | None = None) -> int:
    """Bytes the model's weights take at `dtype_bytes` per floating-point value (None: as stored);
    0 when the model is not on disk (never downloads).

    Reads only safetensors headers: of each component a diffusers `model_index.json` lists, or of
    the folder itself.
    """
    folder = find_model(model, revision)
    if folder is None:
        return 0
    parts = [folder]
    try:
        components = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        parts = [folder / name for name, value in components.items() if isinstance(value, list) and value[0]]
    except (OSError, ValueError, AttributeError):
        pass  # not a diffusers pipeline folder: a single model
    return sum(weights_bytes(part, dtype_bytes) for part in parts if part.is_dir())


def memory_estimate(
    model: str, revision: str | None = None, *, dtype_bytes: int | None = None, headroom: float = 1.2,
    extra_bytes: int = 0,
) -> int:
    """What a model needs on its device, for `DeviceNeeds.memory_bytes`: its weights (see
    `model_weights_bytes`) times `headroom` (activations, caches), plus `extra_bytes`; 0 (unknown)
    when the model is not on disk yet, so the scheduler then places it without a figure."""
    weights = model_weights_bytes(model, revision, dtype_bytes)
    return int(weights * headroom) + extra_bytes if weights else 0


def check_no_remote_code(folder: Path, model: str) -> None:
    """Refuse a model that only loads through its own Python code (config `auto_map`, unknown model type).

    A model whose type transformers knows loads with the built-in class, and its code is ignored.
    Call it from `preflight` when the stage's params leave `trust_remote_code` off.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no config.json: from_pretrained will say what is missing
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("model_type") not in CONFIG_MAPPING_NAMES:
        code = ", ".join(sorted({str(v) if isinstance(v, str) else str(v[0]) for v in auto_map.values()}))
        raise ModelUnavailableError(
            f"model '{model}' needs its own Python code to load ({code}, model type "
            f"'{config.get('model_type')}'), and that code is not run unless the stage sets "
            "'trust_remote_code: true' (do so only for a model you trust)"
        )


def torch_device(device: Device) -> torch.device:
    """The `torch.device` of a scheduler-chosen `Device` ("cpu", "cuda", "cuda:1"). Imports torch."""
    import torch

    return torch.device(str(device))


def dtype_keyword(library: Literal["transformers", "diffusers"]) -> str:
    """The keyword `from_pretrained` of the installed `library` takes a torch dtype by:
    `dtype` since transformers 4.56 and diffusers 0.42, `torch_dtype` before."""
    version = importlib.import_module(library).__version__
    numbers = tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:2])
    return "dtype" if numbers >= _DTYPE_KEYWORD_SINCE[library] else "torch_dtype"

