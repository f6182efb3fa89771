"""Stage placement: `DeviceNeeds` + requests + the inventory -> a device for every stage.

(Named `device_scheduler` because in diffusers "scheduler" means the noise scheduler.)
Placement goes through the `aigc_place_stage` firstresult hook; the engine's own policy below is
registered last, so a plugin can decide for some stages and leave the rest to it.

Stages are placed one at a time, in graph order, and each answer is taken into account for the
next: the hook gets the inventory *as it is left* (each GPU's free memory minus the estimates of
the stages already placed on it) and the placement so far. The built-in policy puts CPU stages on
the CPU and spreads GPU-capable stages over the GPUs: a GPU where the model still fits and that
holds the fewest stages, else the one with the most memory left. Whether models placed on one GPU
fit there together is then `residency.py`'s question (phases), not a placement error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pluggy

from .devices import CPU, Device, GpuInfo, Inventory
from .errors import PlacementError
from .plugin_manager import hookimpl
from .stage import DeviceNeeds


def place_stages(
    stages: Mapping[str, tuple[str, DeviceNeeds, Device | None]], inventory: Inventory, pm: pluggy.PluginManager
) -> dict[str, Device]:
    """Place every stage; `stages` maps id -> (type name, needs, requested device or None)."""
    placement: dict[str, Device] = {}
    left = inventory
    for stage_id, (type_name, needs, requested) in stages.items():
        device = pm.hook.aigc_place_stage(
            stage_id=stage_id, type_name=type_name, needs=needs, requested=requested, inventory=left,
            placed=dict(placement),
        )
        if not isinstance(device, Device):
            raise PlacementError(f"stage '{stage_id}': no placement policy chose a device (got {device!r})")
        placement[stage_id] = device
        left = _taken(left, device, needs.memory_bytes)
    return placement


def _taken(inventory: Inventory, device: Device, memory: int) -> Inventory:
    """The inventory after `memory` bytes are promised to a stage on `device`."""
    if not device.is_gpu or memory <= 0:
        return inventory
    return Inventory(tuple(
        replace(g, free_bytes=max(0, g.free_bytes - memory)) if g.device == device else g for g in inventory.gpus
    ))


@hookimpl(trylast=True)
def aigc_place_stage(
    stage_id: str, type_name: str, needs: DeviceNeeds, requested: Device | None, inventory: Inventory,
    placed: Mapping[str, Device],
) -> Device:
    """The default policy: CPU stages on CPU; GPU-capable stages spread over the GPUs (see the module)."""
    where = f"stage '{stage_id}' ({type_name})"
    if requested is not None:
        return _checked_request(where, needs, requested, inventory, placed)
    if needs.kind == "cpu" or not inventory.has_gpu:
        if needs.kind == "gpu":
            raise PlacementError(f"{where} needs a GPU, and this machine has none ({inventory.describe()})")
        return CPU
    return best_gpu(inventory.gpus, needs.memory_bytes, placed)


def best_gpu(gpus: tuple[GpuInfo, ...], memory: int, placed: Mapping[str, Device]) -> Device:
    """A GPU where `memory` still fits and that holds the fewest stages; else the one with most memory left."""
    fitting = [g for g in gpus if g.free_bytes >= memory]
    if not fitting:
        return max(gpus, key=lambda g: g.free_bytes).device
    count = {g.device: sum(1 for d in placed.values() if d == g.device) for g in fitting}
    return min(fitting, key=lambda g: (count[g.device], -g.free_bytes)).device


def _checked_request(
    where: str, needs: DeviceNeeds, requested: Device, inventory: Inventory, placed: Mapping[str, Device]
) -> Device:
    if requested.is_gpu and needs.kind == "cpu":
        raise PlacementError(f"{where} runs on the CPU only; remove its 'device: {requested}'")
    if not requested.is_gpu:
        if needs.kind == "gpu":
            raise PlacementError(f"{where} needs a GPU; it cannot run on 'cpu'")
        return requested
    if not inventory.has_gpu:
        raise PlacementError(f"{where} asks for '{requested}', but this machine has no CUDA device")
    known = {gpu.device.index: gpu.device for gpu in inventory.gpus}
    if requested.index is None:
        return best_gpu(inventory.gpus, needs.memory_bytes, placed)
    if requested.index not in known:
        raise PlacementError(f"{where} asks for '{requested}'; devices here: {', '.join(map(str, known.values()))}")
    return known[requested.index]
