"""devices: Device values (parse / print) and the inventory probe."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from aigc_pipeline import devices
from aigc_pipeline.devices import CPU, Device, GpuInfo, Inventory, probe_inventory
from aigc_pipeline.testing import CPU_ONLY, ONE_GPU_8GB, TWO_GPUS_80GB

GiB = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu", Device("cpu")),
        ("cuda", Device("cuda")),
        ("cuda:1", Device("cuda", 1)),
        ("gpu", Device("cuda")),
        ("gpu:2", Device("cuda", 2)),
        (" CUDA:0 ", Device("cuda", 0)),
    ],
)
def test_parse(text: str, expected: Device) -> None:
    assert Device.parse(text) == expected


@pytest.mark.parametrize("text", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_str_round_trips(text: str) -> None:
    assert str(Device.parse(text)) == text
    assert Device.parse(str(Device.parse(text))) == Device.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tpu", "not a device: 'tpu' (expected 'cpu', 'cuda' or 'cuda:N')"),
        ("cuda:", "not a device: 'cuda:'"),
        ("cuda:-1", "not a device: 'cuda:-1'"),
        ("cuda0", "not a device: 'cuda0'"),
        ("", "not a device: ''"),
        ("cpu:0", "not a device: 'cpu:0' (the CPU takes no index)"),
    ],
)
def test_bad_strings_are_value_errors_that_show_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Device.parse(text)
    assert str(caught.value).startswith(message)


def test_devices_are_small_hashable_values() -> None:
    assert Device.parse("cpu") is CPU and not CPU.is_gpu
    assert Device.parse("cuda:1").is_gpu
    assert len({Device.parse("gpu:1"), Device.parse("cuda:1")}) == 1


def test_fake_inventories() -> None:
    assert not CPU_ONLY.has_gpu and CPU_ONLY.describe() == "cpu only (no CUDA device found)"
    assert [str(g.device) for g in TWO_GPUS_80GB.gpus] == ["cuda:0", "cuda:1"]
    assert ONE_GPU_8GB.describe() == "cuda:0 Fake GPU 8 GiB (8.0 GiB free)"


def test_probe_without_torch_is_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    assert probe_inventory() == Inventory()


def fake_torch(count: int) -> SimpleNamespace:
    cuda = SimpleNamespace(
        is_available=lambda: count > 0,
        device_count=lambda: count,
        mem_get_info=lambda index: ((index + 1) * GiB, 16 * GiB),  # (free, total), as torch returns it
        get_device_name=lambda index: f"Fake {index}",
    )
    return SimpleNamespace(cuda=cuda)


@pytest.mark.parametrize("count", [0, 2])
def test_probe_reads_what_torch_reports(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setitem(sys.modules, "torch", fake_torch(count))
    expected = tuple(GpuInfo(Device("cuda", i), f"Fake {i}", 16 * GiB, (i + 1) * GiB) for i in range(count))
    assert probe_inventory() == Inventory(expected)


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


HAS_CUDA = _cuda_available()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
def test_probe_on_this_machine_is_cpu_only() -> None:
    assert probe_inventory() == Inventory()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_probe_on_a_gpu_machine_lists_every_device() -> None:
    import torch

    inventory = probe_inventory()
    assert [g.device for g in inventory.gpus] == [Device("cuda", i) for i in range(torch.cuda.device_count())]
    assert all(0 < g.free_bytes <= g.total_bytes for g in inventory.gpus)
