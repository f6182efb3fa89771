"""Model folders: local or from the Hugging Face cache, safetensors only, never a surprise download."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import ModelUnavailableError
from aigc_pipeline.model_files import find_model, resolve_model, weight_files, weights_bytes


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """A valid safetensors file of zeros: {name: (dtype, shape)}."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * sizes[dtype]]}
        offset += count * sizes[dtype]
    encoded = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset))
    return path


def model_folder(root: Path, *files: str) -> Path:
    """A folder with config.json and the named files (weights as small safetensors or fake pickles)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}", encoding="utf-8")
    for name in files:
        if name.endswith(".safetensors"):
            write_safetensors(root / name, {"w": ("F32", [4, 4])})
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"\x80\x04pickle")
    return root


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in tmp_path, offline: nothing can be downloaded."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_model(cache: Path, repo_id: str, *files: str) -> Path:
    """Put `repo_id` into the cache the way huggingface_hub lays it out; return the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return model_folder(repo / "snapshots" / commit, *files)


def test_a_local_folder_with_safetensors_resolves_to_itself(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "lm", "model.safetensors")
    assert resolve_model(str(folder)) == folder
    assert find_model(str(folder)) == folder


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "lm", "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match=r"pickle weights only \(pytorch_model.bin\).*'allow_pickle: true'"):
        resolve_model(str(folder))
    assert resolve_model(str(folder), allow_pickle=True) == folder


def test_a_folder_with_both_kinds_is_fine_the_safetensors_are_loaded(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "lm", "model.safetensors", "pytorch_model.bin", "training_args.bin")
    assert resolve_model(str(folder)) == folder


def test_one_component_with_pickle_weights_only_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "sd", "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match=r"unet/diffusion_pytorch_model.bin"):
        resolve_model(str(folder))
    assert resolve_model(str(folder), allow_pickle=True) == folder


def test_a_folder_without_weights_says_so(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "empty")
    with pytest.raises(ModelUnavailableError, match=r"holds no weight files.*allow_pickle.*make-tiny"):
        resolve_model(str(folder))


@pytest.mark.parametrize("model", ["./no/such/folder", "/no/such/folder", "~/no-such-folder", "a/b/c", ""])
def test_a_missing_local_path_is_not_looked_up_on_the_hub(model: str) -> None:
    with pytest.raises(ModelUnavailableError, match=r"no such folder|no model given"):
        resolve_model(model)
    assert find_model(model) is None


def test_a_hub_id_not_in_the_cache_offline_is_a_clear_error(offline_cache: Path) -> None:
    with pytest.raises(ModelUnavailableError) as raised:
        resolve_model("aigc-test/not-cached")
    message = str(raised.value)
    assert "'aigc-test/not-cached' is not a local folder nor in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "HF_HOME" in message and "make-tiny" in message
    assert find_model("aigc-test/not-cached") is None


def test_a_cached_hub_id_resolves_to_its_snapshot(offline_cache: Path) -> None:
    snapshot = cache_model(offline_cache, "aigc-test/cached", "model.safetensors")
    assert resolve_model("aigc-test/cached") == snapshot
    assert find_model("aigc-test/cached") == snapshot
    pickled = cache_model(offline_cache, "aigc-test/pickled", "pytorch_model.bin")
    with pytest.raises(ModelUnavailableError, match="pickle weights only"):
        resolve_model("aigc-test/pickled")
    assert resolve_model("aigc-test/pickled", allow_pickle=True) == pickled


def test_online_a_download_skips_pickle_and_other_frameworks(
    tmp_path: Path, offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls: list[dict[str, Any]] = []
    downloaded = model_folder(tmp_path / "downloaded", "model.safetensors")

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model("aigc-test/remote", revision="v1") == downloaded
    assert [call.get("local_files_only") for call in calls] == [True, None]
    assert calls[1]["revision"] == "v1"
    ignored = calls[1]["ignore_patterns"]
    assert {"*.bin", "*.pt", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.gguf"} <= set(ignored)
    resolve_model("aigc-test/remote", allow_pickle=True)
    assert "*.bin" not in calls[-1]["ignore_patterns"] and "*.h5" in calls[-1]["ignore_patterns"]
    assert find_model("aigc-test/remote") is None  # find_model never downloads
    assert calls[-1].get("local_files_only") is True


def test_weights_bytes_reads_headers_and_scales_floats(tmp_path: Path) -> None:
    folder = tmp_path / "lm"
    write_safetensors(folder / "model.safetensors", {"w": ("F32", [10, 10]), "ids": ("I64", [5]), "h": ("F16", [8])})
    assert weights_bytes(folder) == 400 + 40 + 16
    assert weights_bytes(folder, 2) == 200 + 40 + 16
    assert weights_bytes(tmp_path / "missing") == 0


def test_weight_files_follow_the_shard_index(tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "consolidated.safetensors"):
        write_safetensors(folder / name, {"w": ("BF16", [16])})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    assert [p.name for p in weight_files(folder)] == sorted(index["weight_map"].values())
    assert weights_bytes(folder) == 2 * 32  # the consolidated copy is not counted twice


def test_a_broken_safetensors_file_counts_its_size(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\xff" * 100)
    assert weights_bytes(folder) == 100
