"""Stage placement: `DeviceNeeds` + requests + the inventory -> a device for every stage.

(Named `device_scheduler` because in diffusers "scheduler" means the noise scheduler.)
Placement goes through the `aigc_place_stage` firstresult hook; the engine's own policy below is
registered last, so a plugin can decide for some stages and leave the rest to it.
"""

from __future__ import annotations

import pluggy

from .devices import CPU, Device, Inventory
from .errors import PlacementError
from .plugin_manager import hookimpl
from .stage import DeviceNeeds


def place_stages(
    stages: dict[str, tuple[str, DeviceNeeds, Device | None]], inventory: Inventory, pm: pluggy.PluginManager
) -> dict[str, Device]:
    """Place every stage; `stages` maps id -> (type name, needs, requested device or None)."""
    placement: dict[str, Device] = {}
    for stage_id, (type_name, needs, requested) in stages.items():
        device = pm.hook.aigc_place_stage(
            stage_id=stage_id, type_name=type_name, needs=needs, requested=requested, inventory=inventory
        )
        if not isinstance(device, Device):
            raise PlacementError(f"stage '{stage_id}': no placement policy chose a device (got {device!r})")
        placement[stage_id] = device
    return placement


@hookimpl(trylast=True)
def aigc_place_stage(
    stage_id: str, type_name: str, needs: DeviceNeeds, requested: Device | None, inventory: Inventory
) -> Device:
    """The default policy: CPU stages on CPU; GPU-capable stages on the GPU with most free memory."""
    where = f"stage '{stage_id}' ({type_name})"
    if requested is not None:
        return _checked_request(where, needs, requested, inventory)
    if needs.kind == "cpu" or not inventory.has_gpu:
        if needs.kind == "gpu":
            raise PlacementError(f"{where} needs a GPU, and this machine has none ({inventory.describe()})")
        return CPU
    return max(inventory.gpus, key=lambda gpu: gpu.free_bytes).device


def _checked_request(where: str, needs: DeviceNeeds, requested: Device, inventory: Inventory) -> Device:
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
        return max(inventory.gpus, key=lambda gpu: gpu.free_bytes).device
    if requested.index not in known:
        raise PlacementError(f"{where} asks for '{requested}'; devices here: {', '.join(map(str, known.values()))}")
    return known[requested.index]
