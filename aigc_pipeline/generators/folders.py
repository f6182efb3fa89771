"""Reading and writing generator folders: `config.json` + `model.safetensors`.

The layout is the one huggingface_hub's `PyTorchModelHubMixin` writes, so a generator saved by
`save_pretrained` (or pushed to the Hub and cached) loads here, and ours load with
`from_pretrained`. Pickle weights (`pytorch_model.bin`) load only when the caller allows them, and
then with `weights_only=True`; the stage refuses them before that unless `allow_pickle: true`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailableError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PICKLE_WEIGHTS = "pytorch_model.bin"
ARCHITECTURE_KEY = "architecture"


def read_config(folder: Path, model: str) -> dict[str, Any]:
    """The folder's config.json as a dict; ModelUnavailableError saying what is wrong."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except OSError:
        raise ModelUnavailableError(f"model '{model}' has no {CONFIG} (a generator folder holds {CONFIG} "
                                    f"and {WEIGHTS}, as PyTorchModelHubMixin.save_pretrained writes them)") from None
    except ValueError as exc:
        raise ModelUnavailableError(f"model '{model}': {CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelUnavailableError(f"model '{model}': {CONFIG} must hold a JSON object")
    return config


def init_kwargs(cls: type[Any], config: dict[str, Any]) -> dict[str, Any]:
    """The config keys `cls.__init__` takes (all of them when it takes **kwargs), as the mixin does."""
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {k: v for k, v in config.items() if k != ARCHITECTURE_KEY}
    return {k: v for k, v in config.items() if k in parameters and k != "self"}


def load_generator(folder: Path, cls: type[Any], model: str, allow_pickle: bool = False) -> Any:
    """An instance of `cls` built from the folder's config, its weights loaded (strict), in eval mode."""
    import torch
    from safetensors.torch import load_file

    config = read_config(folder, model)
    try:
        module = cls(**init_kwargs(cls, config))
    except (TypeError, ValueError) as exc:
        raise ModelUnavailableError(f"model '{model}': {CONFIG} does not fit architecture "
                                    f"'{cls.architecture}': {exc}") from exc
    if (folder / WEIGHTS).is_file():
        state = load_file(str(folder / WEIGHTS))
    elif allow_pickle and (folder / PICKLE_WEIGHTS).is_file():
        state = torch.load(folder / PICKLE_WEIGHTS, map_location="cpu", weights_only=True)
    else:
        raise ModelUnavailableError(f"model '{model}' has no {WEIGHTS}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelUnavailableError(f"model '{model}': weights do not fit '{cls.architecture}': {first}") from exc
    return module.eval()


def save_generator(module: Any, folder: Path) -> Path:
    """Write `module` as config.json (its `config` plus its architecture name) + model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {**getattr(module, "config", {}), ARCHITECTURE_KEY: type(module).architecture}
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    return folder
