"""device_scheduler: placing stages on fake inventories, through the aigc_place_stage hook."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.device_scheduler import place_stages
from aigc_pipeline.devices import CPU, Device, Inventory
from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PlacementError
from aigc_pipeline.executor import make_plan
from aigc_pipeline.plugin_manager import get_plugin_manager
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
    assert {sid: stats.device for sid, stats in plan.stats.items()} == {"prep": "cpu", "model": "cuda:1"}


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
