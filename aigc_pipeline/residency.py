"""Model residency under a memory budget, and the CUDA memory facts the executor needs.

Each model stage loads once per run on its device. When the model stages placed on one GPU fit
in its budget together, they stay resident together (one phase: every stage streams at once).
When they do not, the stages are split into *residency phases*: every pending row goes through
the stages of phase 1 (their models resident), then those models unload and phase 2 loads —
a swap per phase, never a swap per row.

A stage that runs as copies on several GPUs (replicas) takes its memory on each of them, in
its phase. A copy that does not fit there next to that phase's models is dropped: copies are
there to go faster, and a phase of their own would mean a swap, which costs more than they gain.

The budget of a GPU is its free memory when the run starts, capped by `--gpu-memory` (bytes such
as "6GiB", or a fraction of the device's total such as "0.5" or "50%"). Memory estimates are the
stages' `DeviceNeeds.memory_bytes`; an unknown estimate (0) never forces a swap.

Everything here is a pure function of its arguments, except the few helpers at the end that
read or free CUDA memory; those touch torch only when the process has imported it already, so
`import aigc_pipeline` stays light.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .devices import Device, Inventory

GiB = 2**30
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|[a-z]*)\s*$")


@dataclass(frozen=True)
class MemoryCap:
    """A cap on the GPU memory a run may use: absolute bytes, or a fraction of each device's total."""

    bytes: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, value: str | int | float) -> MemoryCap:
        """"6GiB", "6000MB", "512MiB" (bytes); "0.5", "50%" (a fraction of each GPU's total memory).

        Raises ValueError showing the bad value and the accepted forms.
        """
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        match = _MEMORY_RE.match(str(value).lower())
        usage = f"not a GPU memory cap: {value!r} (expected bytes with a unit such as '6GiB' or '800MB', " \
                "or a fraction of each GPU's memory such as '0.5' or '50%')"
        if not match or (match.group(2) not in _UNITS and match.group(2) != "%"):
            raise ValueError(usage)
        number, unit = float(match.group(1)), match.group(2)
        if unit == "%":
            number, unit = number / 100, ""
            if not 0 < number <= 1:
                raise ValueError(usage)
        if unit == "":
            if not 0 < number <= 1:  # a bare number is a fraction; "6" bytes would be a typo
                raise ValueError(usage)
            return cls(fraction=number)
        if number <= 0:
            raise ValueError(usage)
        return cls(bytes=int(number * _UNITS[unit]))

    def limit(self, total_bytes: int) -> int:
        """The cap in bytes on a device of `total_bytes`."""
        if self.fraction is not None:
            return int(total_bytes * self.fraction)
        return self.bytes if self.bytes is not None else total_bytes

    def __str__(self) -> str:
        return f"{self.fraction:.0%} of each GPU" if self.fraction is not None else format_bytes(self.bytes or 0)


def cap_inventory(inventory: Inventory, cap: MemoryCap | None) -> Inventory:
    """The inventory as the run sees it: each GPU's free memory at most the cap."""
    if cap is None:
        return inventory
    return Inventory(tuple(replace(g, free_bytes=min(g.free_bytes, cap.limit(g.total_bytes))) for g in inventory.gpus))


def budgets(inventory: Inventory) -> dict[Device, int]:
    """Bytes the run's models may take on each GPU: its (capped) free memory."""
    return {gpu.device: gpu.free_bytes for gpu in inventory.gpus}


def plan_phases(
    stage_ids: list[str],
    upstream: Mapping[str, Iterable[str]],
    placement: Mapping[str, Device],
    memory: Mapping[str, int],
    budget: Mapping[Device, int],
) -> list[list[str]]:
    """Split stages (in topological order) into residency phases.

    A stage goes into the first phase at or after its upstream stages' phases where its model fits
    next to the models already in that phase on its GPU (first fit). CPU stages and stages of
    unknown size (0 bytes) join the first phase their inputs allow, so they stream alongside the
    models. A model larger than its budget gets a phase where it is alone on its GPU.
    Upstream stages not in `stage_ids` (an earlier part of the run) are ignored.
    """
    phase_of: dict[str, int] = {}
    used: list[dict[Device, int]] = []
    for stage_id in stage_ids:
        first = max((phase_of[u] for u in upstream.get(stage_id, ()) if u in phase_of), default=0)
        device, need = placement[stage_id], memory.get(stage_id, 0)
        phase = first
        if device.is_gpu and need > 0:
            limit = budget.get(device, 0)
            phase = next(
                (p for p in range(first, len(used)) if used[p].get(device, 0) == 0 or used[p][device] + need <= limit),
                max(first, len(used)),
            )
        while len(used) <= phase:
            used.append({})
        if device.is_gpu:
            used[phase][device] = used[phase].get(device, 0) + need
        phase_of[stage_id] = phase
    return [[sid for sid in stage_ids if phase_of[sid] == p] for p in range(len(used))]


def fit_replicas(
    phases: list[list[str]],
    placement: Mapping[str, Device],
    replicas: Mapping[str, list[Device]],
    memory: Mapping[str, int],
    budget: Mapping[Device, int],
) -> tuple[dict[str, list[Device]], list[str]]:
    """The copies of each stage that fit in their GPU's budget in the stage's phase, and a warning per dropped one.

    `replicas` maps a stage to its devices, its placement first. In each phase the stages' own
    placements are counted first, then the extra copies in stage order, each where it still fits.
    """
    kept = {stage_id: devices[:1] for stage_id, devices in replicas.items()}
    warnings = []
    for phase in phases:
        used: dict[Device, int] = {}
        for stage_id in phase:
            used[placement[stage_id]] = used.get(placement[stage_id], 0) + memory.get(stage_id, 0)
        for stage_id in phase:
            need = memory.get(stage_id, 0)
            for device in replicas.get(stage_id, [])[1:]:
                if need and used.get(device, 0) + need > budget.get(device, 0):
                    warnings.append(f"stage '{stage_id}': no room for a copy on {device} (it needs about "
                                    f"{format_bytes(need)} next to the models there); it runs without that copy")
                    continue
                kept[stage_id].append(device)
                used[device] = used.get(device, 0) + need
    return kept, warnings


def oversized(
    placement: Mapping[str, Device], memory: Mapping[str, int], budget: Mapping[Device, int]
) -> list[str]:
    """A warning for each model estimated larger than its GPU's budget on its own."""
    return [
        f"stage '{sid}' needs about {format_bytes(memory[sid])}, more than the {format_bytes(budget[device])} "
        f"available on {device}; it runs alone there and may run out of memory (its batch then halves)"
        for sid, device in placement.items()
        if device in budget and memory.get(sid, 0) > budget[device]
    ]


def within(phases: list[list[str]], stage_ids: list[str]) -> list[list[str]]:
    """The residency phases restricted to `stage_ids` (one part of the run), empty phases dropped."""
    wanted = set(stage_ids)
    kept = [[sid for sid in phase if sid in wanted] for phase in phases]
    return [phase for phase in kept if phase] or [list(stage_ids)]


def format_bytes(count: int) -> str:
    if count >= GiB:
        return f"{count / GiB:.1f} GiB"
    return f"{count / 2**20:.0f} MiB"


# ------------------------------------------------------------------ CUDA memory (torch only if imported)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a CUDA out-of-memory error (by class name, so torch need not be imported)."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)  # torch before 2.1


def _cuda() -> Any:  # torch.cuda when torch is imported and CUDA is available, else None
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_available() else None
    except Exception:  # a half-initialised CUDA must not fail the run here
        return None


def free_cached_memory() -> None:
    """Return cached CUDA blocks to the device (after an OOM), when torch is in use."""
    cuda = _cuda()
    if cuda is not None:
        import gc

        gc.collect()
        cuda.empty_cache()


def reset_peaks(devices: Iterable[Device]) -> None:
    cuda = _cuda()
    if cuda is not None:
        for device in devices:
            cuda.reset_peak_memory_stats(device.index)


def allocated_bytes(device: Device) -> int:
    """Bytes torch has allocated on a GPU now (0 on the CPU, or without torch or CUDA)."""
    cuda = _cuda() if device.is_gpu else None
    try:
        return int(cuda.memory_allocated(device.index)) if cuda is not None else 0
    except Exception:  # a measurement only: it never fails a load
        return 0


def read_peaks(devices: Iterable[Device]) -> dict[Device, int]:
    """Peak bytes allocated on each GPU since `reset_peaks` (empty without torch or CUDA)."""
    cuda = _cuda()
    if cuda is None:
        return {}
    return {device: int(cuda.max_memory_allocated(device.index)) for device in devices}
