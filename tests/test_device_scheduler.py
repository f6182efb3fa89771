"""device_scheduler: placing stages on fake inventories, through the aigc_place_stage hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy
import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.device_scheduler import bottleneck, place_stages, plan_replicas
from aigc_pipeline.devices import CPU, Device, Inventory
from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PlacementError
from aigc_pipeline.planning import make_plan
from aigc_pipeline.plugin_manager import get_plugin_manager
from aigc_pipeline.records import RunContext
from aigc_pipeline.stage import DeviceNeeds, Stage
from aigc_pipeline.testing import CPU_ONLY, ONE_GPU_8GB, TWO_GPUS_80GB, FakeStages, write_jsonl

CUDA0, CUDA1 = Device("cuda", 0), Device("cuda", 1)


def place(
    kind: str, inventory: Inventory, requested: str | None = None, pm: pluggy.PluginManager | None = None
) -> Device:
    request = Device.parse(requested) if requested else None
    stages = {"s": ("test.slow", DeviceNeeds(kind=kind), request)}  # type: ignore[arg-type]
    return place_stages(stages, inventory, pm or get_plugin_manager())["s"]


@pytest.mark.parametrize(
    ("kind", "inventory", "expected"),
    [
        ("cpu", TWO_GPUS_80GB, CPU),
        ("any", CPU_ONLY, CPU),
        ("any", ONE_GPU_8GB, CUDA0),
        ("any", TWO_GPUS_80GB, CUDA1),  # cuda:1 has the most free memory
        ("gpu", TWO_GPUS_80GB, CUDA1),
    ],
)
def test_default_policy(kind: str, inventory: Inventory, expected: Device) -> None:
    assert place(kind, inventory) == expected


@pytest.mark.parametrize(
    ("kind", "requested", "expected"),
    [("any", "cpu", CPU), ("gpu", "cuda:0", CUDA0), ("any", "cuda", CUDA1), ("any", "gpu:0", CUDA0)],
)
def test_a_possible_request_is_honoured(kind: str, requested: str, expected: Device) -> None:
    assert place(kind, TWO_GPUS_80GB, requested) == expected


@pytest.mark.parametrize(
    ("kind", "inventory", "requested", "message"),
    [
        ("gpu", CPU_ONLY, None, "stage 's' (test.slow) needs a GPU, and this machine has none (cpu only"),
        ("any", TWO_GPUS_80GB, "cuda:3", "stage 's' (test.slow) asks for 'cuda:3'; devices here: cuda:0, cuda:1"),
        ("any", CPU_ONLY, "cuda:0", "asks for 'cuda:0', but this machine has no CUDA device"),
        ("cpu", TWO_GPUS_80GB, "cuda:0", "runs on the CPU only; remove its 'device: cuda:0'"),
        ("gpu", TWO_GPUS_80GB, "cpu", "needs a GPU; it cannot run on 'cpu'"),
    ],
)
def test_an_impossible_placement_is_an_error_saying_why(
    kind: str, inventory: Inventory, requested: str | None, message: str
) -> None:
    with pytest.raises(PlacementError) as caught:
        place(kind, inventory, requested)
    assert message in str(caught.value)


class PinToCuda0:
    """Decides for stage 's' only; returns None for the rest, leaving them to the default policy."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def aigc_place_stage(self, stage_id: str) -> Device | None:
        self.asked.append(stage_id)
        return CUDA0 if stage_id == "s" else None


def test_a_plugin_placement_wins_and_may_leave_stages_to_the_default() -> None:
    pm = get_plugin_manager()
    plugin = PinToCuda0()
    pm.register(plugin, name="pin")
    stages = {sid: ("test.slow", DeviceNeeds(kind="any"), None) for sid in ("s", "t")}
    assert place_stages(stages, TWO_GPUS_80GB, pm) == {"s": CUDA0, "t": CUDA1}  # type: ignore[arg-type]
    assert plugin.asked == ["s", "t"]


def test_a_plugin_answer_that_is_not_a_device_is_a_placement_error() -> None:
    class Wrong:
        @hookimpl
        def aigc_place_stage(self) -> str:
            return "cuda:0"

    pm = get_plugin_manager()
    pm.register(Wrong(), name="wrong")
    with pytest.raises(PlacementError, match="stage 's': no placement policy chose a device"):
        place("any", TWO_GPUS_80GB, pm=pm)


PIPELINE = """
name: placed
inputs: {text: str}
stages:
  prep: {uses: test.echo, inputs: {text: inputs.text}}
  model: {uses: test.slow, inputs: {text: prep.text}, with: {seconds_per_item: 0, device: DEVICE}}
"""


def engine_with_fakes() -> Engine:
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    return engine


def test_make_plan_places_every_stage_and_records_it_in_the_stats() -> None:
    engine = engine_with_fakes()
    plan = make_plan(engine.load_text(PIPELINE.replace("DEVICE", "any")), engine.pm, inventory=TWO_GPUS_80GB)
    assert plan.placement == {"prep": CPU, "model": CUDA1}
    stats = RunContext.start(plan).stats  # what the run's counters start from
    assert {sid: s.device for sid, s in stats.items()} == {"prep": "cpu", "model": "cuda:1"}


def test_the_run_device_applies_to_model_stages_only() -> None:
    engine = engine_with_fakes()
    graph = engine.load_text(PIPELINE.replace("DEVICE", "any"))
    plan = make_plan(graph, engine.pm, device=CUDA0, inventory=TWO_GPUS_80GB)
    assert plan.placement == {"prep": CPU, "model": CUDA0}
    with pytest.raises(PlacementError, match="asks for 'cuda:3'; devices here: cuda:0, cuda:1"):
        make_plan(graph, engine.pm, device=Device("cuda", 3), inventory=TWO_GPUS_80GB)


def test_a_stage_device_field_is_a_request() -> None:
    engine = engine_with_fakes()
    text = PIPELINE.replace("DEVICE", "any").replace("device: any}", "device: any}, device: 'cuda:0'")
    plan = make_plan(engine.load_text(text), engine.pm, inventory=TWO_GPUS_80GB)
    assert plan.placement["model"] == CUDA0


def test_a_gpu_stage_without_a_gpu_fails_at_plan_time_before_any_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(Stage, "load", lambda self, device: loaded.append(str(device)))  # every stage's load
    engine = engine_with_fakes()
    graph = engine.load_text(PIPELINE.replace("DEVICE", "gpu"))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}])
    with pytest.raises(PlacementError, match="stage 'model' \\(test.slow\\) needs a GPU, and this machine has none"):
        engine.run(graph, rows, tmp_path / "out", inventory=CPU_ONLY)
    assert loaded == []
    assert not (tmp_path / "out" / "results.jsonl").exists()


GiB = 2**30


def needs(gib: float, kind: str = "any") -> DeviceNeeds:
    return DeviceNeeds(kind=kind, memory_bytes=int(gib * GiB))  # type: ignore[arg-type]


def test_gpu_stages_spread_over_the_gpus() -> None:
    stages = {sid: ("test.model", needs(5), None) for sid in ("a", "b", "c")}
    # most free first (cuda:1), then the GPU holding fewer stages, then most memory left
    assert place_stages(stages, TWO_GPUS_80GB, get_plugin_manager()) == {"a": CUDA1, "b": CUDA0, "c": CUDA1}


def test_placement_counts_the_memory_already_promised() -> None:
    stages = {"big": ("test.model", needs(60), None), "next": ("test.model", needs(15), None)}
    # 'big' takes cuda:1 (79 -> 19 GiB left); 'next' fits on both, cuda:0 holds fewer stages
    assert place_stages(stages, TWO_GPUS_80GB, get_plugin_manager()) == {"big": CUDA1, "next": CUDA0}
    stages = {"a": ("test.model", needs(60), None), "b": ("test.model", needs(60), None),
              "c": ("test.model", needs(30), None)}
    # c fits nowhere any more (10 and 19 GiB left): the GPU with the most left, where it will swap in phases
    assert place_stages(stages, TWO_GPUS_80GB, get_plugin_manager())["c"] == CUDA1


class Spy:
    """Sees what the hook receives: the inventory as it is left, and the placement so far."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int], dict[str, Device]]] = []

    @hookimpl
    def aigc_place_stage(self, stage_id: str, inventory: Inventory, placed: dict[str, Device]) -> None:
        self.seen.append((stage_id, [g.free_bytes // GiB for g in inventory.gpus], dict(placed)))


def test_the_hook_sees_what_is_left_and_what_is_placed() -> None:
    pm = get_plugin_manager()
    spy = Spy()
    pm.register(spy, name="spy")
    stages = {"a": ("test.model", needs(9), None), "cpu": ("test.echo", needs(0, "cpu"), None),
              "b": ("test.model", needs(4), None)}
    place_stages(stages, TWO_GPUS_80GB, pm)
    assert spy.seen == [
        ("a", [70, 79], {}),
        ("cpu", [70, 70], {"a": CUDA1}),
        ("b", [70, 70], {"a": CUDA1, "cpu": CPU}),
    ]


MODELS = """
name: models
inputs: {text: str}
stages:
  copy: {uses: test.model, inputs: {text: inputs.text}, with: {name: llm, memory_gib: 5}}
  hero: {uses: test.model, inputs: {text: copy.text}, with: {name: sd, memory_gib: 12}}
"""


def test_make_plan_caps_gpu_memory_plans_phases_and_warns_about_a_model_too_big() -> None:
    from aigc_pipeline.residency import MemoryCap

    engine = engine_with_fakes()
    graph = engine.load_text(MODELS)
    plan = make_plan(graph, engine.pm, inventory=TWO_GPUS_80GB)
    assert plan.placement == {"copy": CUDA1, "hero": CUDA0} and plan.residency == [["copy", "hero"]]
    assert plan.warnings == []
    capped = make_plan(graph, engine.pm, inventory=ONE_GPU_8GB, gpu_memory=MemoryCap.parse("0.75"))
    assert capped.residency == [["copy"], ["hero"]]
    assert capped.warnings == [
        "stage 'hero' needs about 12.0 GiB, more than the 6.0 GiB available on cuda:0; it runs alone there "
        "and may run out of memory (its batch then halves)"
    ]
    stats = RunContext.start(capped).stats
    assert (stats["copy"].memory_bytes, stats["hero"].memory_bytes) == (5 * GiB, 12 * GiB)



# ------------------------------------------------------------------ replicas: copies of a stage on several GPUs


def replicas(
    stages: dict[str, tuple[str, DeviceNeeds, Device | None]],
    inventory: Inventory,
    asked: dict[str, int] | None = None,
    splittable: set[str] | None = None,
) -> dict[str, list[Device]]:
    placement = place_stages(stages, inventory, get_plugin_manager())
    wanted = {sid: (asked or {}).get(sid) for sid in stages}
    return plan_replicas(stages, placement, inventory, wanted, set(stages) if splittable is None else splittable)


def llm_and_sd(llm_gib: float = 30, sd_gib: float = 10, kind: str = "any") -> dict[str, Any]:
    return {"llm": ("test.model", needs(llm_gib, kind), None), "check": ("test.echo", needs(0, "cpu"), None),
            "sd": ("test.model", needs(sd_gib, kind), None)}


def test_the_bottleneck_gets_a_copy_on_every_other_gpu_where_it_fits() -> None:
    # llm (the largest model) on cuda:1, sd on cuda:0, which has 60 GiB left: llm gets a copy there
    assert replicas(llm_and_sd(), TWO_GPUS_80GB) == {"llm": [CUDA1, CUDA0], "check": [CPU], "sd": [CUDA0]}


@pytest.mark.parametrize("inventory", [ONE_GPU_8GB, CPU_ONLY], ids=["one-gpu-8gib", "cpu-only"])
def test_one_gpu_or_none_means_no_copies(inventory: Inventory) -> None:
    devices = replicas(llm_and_sd(3, 2), inventory)
    assert all(len(copies) == 1 for copies in devices.values())
    assert devices["llm"] == [CUDA0 if inventory.has_gpu else CPU]


def test_the_bottleneck_is_the_largest_known_model_on_a_gpu_the_earliest_of_equals() -> None:
    placement = {"a": CUDA0, "b": CUDA1, "c": CUDA0, "cpu": CPU}
    stages = {"a": ("test.model", needs(5), None), "b": ("test.model", needs(9), None),
              "c": ("test.model", needs(9), None), "cpu": ("test.model", needs(50), None)}
    assert bottleneck(stages, placement) == "b"  # 'cpu' is bigger, but not on a GPU; 'c' ties with 'b', later
    assert bottleneck({"u": ("test.slow", needs(0), None)}, {"u": CUDA0}) is None  # unknown size: never copied


def test_a_copy_goes_only_where_the_model_still_fits() -> None:
    # llm takes 60 of cuda:1's 79 GiB; sd goes to cuda:0 and leaves 10 GiB there: no room for a copy of llm
    assert replicas(llm_and_sd(60, 60), TWO_GPUS_80GB)["llm"] == [CUDA1]


def test_a_stage_whose_items_depend_on_each_other_is_never_copied() -> None:
    devices = replicas(llm_and_sd(), TWO_GPUS_80GB, splittable={"check", "sd"})
    assert devices["llm"] == [CUDA1] and devices["sd"] == [CUDA0]  # nor is the next largest copied instead
    with pytest.raises(PlacementError) as caught:
        replicas(llm_and_sd(), TWO_GPUS_80GB, asked={"llm": 2}, splittable={"check", "sd"})
    assert str(caught.value) == (
        "stage 'llm' (test.model) cannot run as copies: an item's result there depends on other items "
        "(e.g. a dedupe across the run), so its rows cannot be shared; remove its 'replicas: 2'")


def test_replicas_1_turns_copies_off_and_n_asks_for_them() -> None:
    assert replicas(llm_and_sd(), TWO_GPUS_80GB, asked={"llm": 1})["llm"] == [CUDA1]
    asked = replicas(llm_and_sd(), TWO_GPUS_80GB, asked={"sd": 2})
    assert asked["sd"] == [CUDA0, CUDA1]
    assert asked["llm"] == [CUDA1, CUDA0]  # llm (auto) still gets its copy: cuda:0 has 70 - 10 GiB left


def test_an_asked_for_copy_is_placed_even_where_it_may_not_fit() -> None:
    # residency.fit_replicas decides, phase by phase, whether it fits (it drops it with a warning)
    assert replicas(llm_and_sd(60, 60), TWO_GPUS_80GB, asked={"llm": 2})["llm"] == [CUDA1, CUDA0]


def test_a_stage_pinned_to_one_gpu_gets_no_automatic_copy() -> None:
    stages = llm_and_sd()
    stages["llm"] = ("test.model", needs(30), CUDA1)
    assert replicas(stages, TWO_GPUS_80GB)["llm"] == [CUDA1]
    assert replicas(stages, TWO_GPUS_80GB, asked={"llm": 2})["llm"] == [CUDA1, CUDA0]


@pytest.mark.parametrize(
    ("kind", "inventory", "count", "message"),
    [
        ("any", TWO_GPUS_80GB, 3, "stage 'llm' (test.model) asks for 3 replicas, one per GPU, and this machine has 2 "
         "(cuda:0 Fake GPU 80 GiB (70.0 GiB free), cuda:1 Fake GPU 80 GiB (79.0 GiB free)); use at most 2, "
         "or 'replicas: auto'"),
        ("any", ONE_GPU_8GB, 2, "asks for 2 replicas, one per GPU, and this machine has 1 (cuda:0 Fake GPU 8 GiB"),
        ("any", CPU_ONLY, 2, "stage 'llm' (test.model) asks for 2 replicas, one per GPU, but it runs on 'cpu' "
         "(cpu only (no CUDA device found)); remove its 'replicas: 2'"),
        ("cpu", TWO_GPUS_80GB, 2, "stage 'llm' (test.model) runs on the CPU only, and replicas are copies on GPUs, "
         "one per GPU; remove its 'replicas: 2'"),
    ],
)
def test_replicas_that_cannot_be_had_are_an_error_saying_why(
    kind: str, inventory: Inventory, count: int, message: str
) -> None:
    with pytest.raises(PlacementError) as caught:
        replicas(llm_and_sd(1, 1, kind), inventory, asked={"llm": count})
    assert message in str(caught.value)
