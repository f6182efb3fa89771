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

Then `plan_replicas` decides which stages run as several copies, one per GPU, sharing the rows
of their stage (each copy takes the next free micro-batch). A stage asks with `replicas: N`;
by default (`replicas: auto`) only the pipeline's bottleneck is copied, onto other GPUs where its
model still fits next to everything placed (see `bottleneck`). Only stages whose items are
independent of each other may be copied. `residency.py` then drops a copy that does not fit in
its phase.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

import pluggy

from .devices import CPU, Device, GpuInfo, Inventory
from .errors import PlacementError
from .plugin_manager import hookimpl
from .stage import DeviceNeeds

StageRequest = tuple[str, DeviceNeeds, Device | None]  # (type name, needs, requested device or None)


def place_stages(
    stages: Mapping[str, StageRequest], inventory: Inventory, pm: pluggy.PluginManager
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


def plan_replicas(
    stages: Mapping[str, StageRequest],
    placement: Mapping[str, Device],
    inventory: Inventory,
    asked: Mapping[str, int | None],
    splittable: Collection[str],
) -> dict[str, list[Device]]:
    """The devices of every stage, its placement first; more than one for a stage that runs as copies.

    `stages` and `inventory` are what `place_stages` got; `asked` holds each stage's `replicas:`
    (None: auto); `splittable` names the stages whose items are independent of each other.
    Raises PlacementError for a `replicas:` that cannot be honoured.
    """
    left = _left_after(stages, placement, inventory)
    devices = {stage_id: [device] for stage_id, device in placement.items()}
    for stage_id, count in asked.items():
        if count is not None and count > 1:
            _check_replicas(stage_id, stages[stage_id], placement[stage_id], count, inventory, splittable)
            left = _add_copies(devices[stage_id], stages[stage_id][1].memory_bytes, left, count - 1, must_fit=False)
    auto = bottleneck(stages, placement)
    if auto is not None and asked.get(auto) is None and auto in splittable and not _pinned(stages[auto][2]):
        # Only into memory left after every stage and asked-for copy: an automatic copy never causes a swap.
        _add_copies(devices[auto], stages[auto][1].memory_bytes, left, len(left.gpus), must_fit=True)
    return devices


def _add_copies(devices: list[Device], memory: int, left: Inventory, most: int, must_fit: bool) -> Inventory:
    """Append up to `most` other GPUs to `devices`, most memory left first; the inventory after they take `memory`."""
    others = [g for g in left.gpus if g.device not in devices and (g.free_bytes >= memory or not must_fit)]
    chosen = sorted(others, key=lambda g: -g.free_bytes)[:most]
    for gpu in sorted(chosen, key=lambda g: g.device):
        devices.append(gpu.device)
        left = _taken(left, gpu.device, memory)
    return left


def bottleneck(stages: Mapping[str, StageRequest], placement: Mapping[str, Device]) -> str | None:
    """The stage that sets the pipeline's pace: the GPU stage with the largest memory estimate.

    Rows stream through every stage, so a run goes at the pace of its slowest stage, and a copy
    of any other stage would only take memory. Nothing is timed before the run, and the only
    cost a stage declares is its memory (`DeviceNeeds`), so memory stands in for work per item:
    a bigger model does more of it. Ties go to the earliest stage in graph order. A stage of
    unknown size (0) is never picked: whether a copy of it fits cannot be checked. Where memory
    misleads (a small diffusion model denoising for many steps), `replicas: N` says so.
    """
    sized = [(needs.memory_bytes, stage_id) for stage_id, (_, needs, _) in stages.items()
             if placement[stage_id].is_gpu and needs.memory_bytes > 0]
    return max(sized, key=lambda pair: pair[0])[1] if sized else None


def _check_replicas(
    stage_id: str, stage: StageRequest, device: Device, count: int, inventory: Inventory,
    splittable: Collection[str],
) -> None:
    type_name, needs, _ = stage
    where, fix = f"stage '{stage_id}' ({type_name})", f"remove its 'replicas: {count}'"
    if stage_id not in splittable:
        raise PlacementError(f"{where} cannot run as copies: an item's result there depends on other items "
                             f"(e.g. a dedupe across the run), so its rows cannot be shared; {fix}")
    if needs.kind == "cpu":
        raise PlacementError(f"{where} runs on the CPU only, and replicas are copies on GPUs, one per GPU; {fix}")
    if not device.is_gpu:
        raise PlacementError(f"{where} asks for {count} replicas, one per GPU, but it runs on '{device}' "
                             f"({inventory.describe()}); {fix}")
    gpus = len(inventory.gpus)
    if count > gpus:
        raise PlacementError(f"{where} asks for {count} replicas, one per GPU, and this machine has {gpus} "
                             f"({inventory.describe()}); use at most {gpus}, or 'replicas: auto'")


def _pinned(requested: Device | None) -> bool:
    """Asked for one GPU by index (`device: cuda:0`, `--device cuda:0`): no automatic copies elsewhere."""
    return requested is not None and requested.index is not None


def _left_after(
    stages: Mapping[str, StageRequest], placement: Mapping[str, Device], inventory: Inventory
) -> Inventory:
    """The inventory once every placed stage has taken its memory estimate."""
    for stage_id, device in placement.items():
        inventory = _taken(inventory, device, stages[stage_id][1].memory_bytes)
    return inventory


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
