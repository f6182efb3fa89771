"""Devices as small values, and the inventory of what this machine has.

A `Device` parses from and prints as "cpu" / "cuda:0". The inventory probe imports torch only
when torch is already installed and a caller asks for CUDA facts, so `import aigc_pipeline`
stays light.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field

_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(?::(\d+))?$")


@dataclass(frozen=True, order=True)
class Device:
    """A place a stage can run: the CPU, or one CUDA device."""

    kind: str
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> Device:
        """Parse "cpu", "cuda", "cuda:1" (and "gpu" as an alias of "cuda")."""
        match = _DEVICE_RE.match(text.strip().lower())
        if not match:
            raise ValueError(f"not a device: {text!r} (expected 'cpu', 'cuda' or 'cuda:N')")
        kind, index = match.group(1), match.group(2)
        if kind == "cpu":
            if index is not None:
                raise ValueError(f"not a device: {text!r} (the CPU takes no index)")
            return CPU
        return cls("cuda", int(index) if index is not None else None)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


CPU = Device("cpu")


@dataclass(frozen=True)
class GpuInfo:
    device: Device
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class Inventory:
    """What the run may use. Tests build fake ones; `probe_inventory` reads the real one."""

    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return "cpu only (no CUDA device found)"
        return ", ".join(f"{g.device} {g.name} ({g.free_bytes / 2**30:.1f} GiB free)" for g in self.gpus)


def probe_inventory() -> Inventory:
    """The CUDA devices torch can see, with their free memory; CPU only without torch or CUDA."""
    if importlib.util.find_spec("torch") is None:
        return Inventory()
    import torch  # heavy: imported only when a run needs to know about GPUs

    if not torch.cuda.is_available():
        return Inventory()
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        gpus.append(GpuInfo(Device("cuda", index), name, total, free))
    return Inventory(tuple(gpus))
