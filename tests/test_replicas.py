"""Replicas in the pipeline file and the run plan: `replicas:`, which stages get copies, where.

The scheduler's own rules are tested in test_device_scheduler.py, the memory check in
test_residency.py, and runs with copies in executors/test_local_replicas.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from aigc_pipeline import hookimpl
from aigc_pipeline.devices import CPU, Device, GpuInfo, Inventory
from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PipelineFileError, PlacementError
from aigc_pipeline.planning import make_plan
from aigc_pipeline.progress import placement_lines
from aigc_pipeline.records import RunContext, RunPlan
from aigc_pipeline.stage import Stage
from aigc_pipeline.testing import (
    CPU_ONLY,
    ONE_GPU_8GB,
    TWO_GPUS_80GB,
    GiB,
    ModelStage,
    RecordingPlugin,
    fake_engine,
    run_text,
)

CUDA0, CUDA1 = Device("cuda", 0), Device("cuda", 1)

PIPELINE = """
name: replicated
inputs: {text: str}
stages:
  prep: {uses: test.echo, inputs: {text: inputs.text}}
  llm: {uses: MODEL, inputs: {text: prep.text}, with: {name: llm, memory_gib: 10}REPLICAS}
  sd: {uses: test.model, inputs: {text: llm.text}, with: {name: sd, memory_gib: 4}}
"""


class RunWideModel(ModelStage):
    """A model whose result for an item depends on the other items (a learned dedupe, say)."""

    type_name = "test.run_wide_model"

    @classmethod
    def run_wide(cls, params: BaseModel) -> bool:
        return True


class UncachedModel(ModelStage):
    type_name = "test.uncached_model"

    @classmethod
    def cacheable(cls, params: BaseModel) -> bool:
        return False


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [RunWideModel, UncachedModel]


def plan(inventory: Inventory, replicas: str = "", model: str = "test.model", engine: Engine | None = None) -> RunPlan:
    engine = engine or fake_engine(Stages())
    text = PIPELINE.replace("MODEL", model).replace("REPLICAS", f", replicas: {replicas}" if replicas else "")
    return make_plan(engine.load_text(text), engine.pm, inventory=inventory)


def test_by_default_the_largest_model_gets_a_copy_on_the_other_gpu() -> None:
    two = plan(TWO_GPUS_80GB)
    assert two.placement == {"prep": CPU, "llm": CUDA1, "sd": CUDA0}  # placement itself is unchanged
    assert two.replicas == {"prep": [CPU], "llm": [CUDA1, CUDA0], "sd": [CUDA0]}
    stats = RunContext.start(two).stats
    assert stats["llm"].device == "cuda:1+cuda:0" and stats["sd"].device == "cuda:0"
    assert two.warnings == []


@pytest.mark.parametrize(("inventory", "device"), [(ONE_GPU_8GB, CUDA0), (CPU_ONLY, CPU)], ids=["8gib", "cpu"])
def test_one_gpu_or_none_runs_one_instance_of_each_stage(inventory: Inventory, device: Device) -> None:
    single = plan(inventory)
    assert single.replicas == {"prep": [CPU], "llm": [device], "sd": [device]}
    assert RunContext.start(single).stats["llm"].device == str(device)


def test_replicas_1_turns_the_copy_off_and_replicas_2_asks_for_one() -> None:
    assert plan(TWO_GPUS_80GB, "1").replicas["llm"] == [CUDA1]
    assert plan(TWO_GPUS_80GB, "2").replicas["llm"] == [CUDA1, CUDA0]
    assert plan(TWO_GPUS_80GB, "auto").replicas["llm"] == [CUDA1, CUDA0]


@pytest.mark.parametrize("model", ["test.run_wide_model", "test.uncached_model"])
def test_a_stage_whose_items_are_not_independent_never_gets_copies(model: str) -> None:
    assert plan(TWO_GPUS_80GB, model=model).replicas["llm"] == [CUDA1]
    with pytest.raises(PlacementError, match="stage 'llm' .* cannot run as copies: an item's result there depends"):
        plan(TWO_GPUS_80GB, "2", model=model)


def test_more_replicas_than_gpus_are_a_placement_error() -> None:
    with pytest.raises(PlacementError, match="asks for 3 replicas, one per GPU, and this machine has 2 .*at most 2"):
        plan(TWO_GPUS_80GB, "3")
    with pytest.raises(PlacementError, match="asks for 2 replicas, one per GPU, but it runs on 'cpu'"):
        plan(CPU_ONLY, "2")


@pytest.mark.parametrize("value", ["0", "-1", "two", "true", "1.5", "'2'", "[1, 2]"])
def test_a_bad_replicas_value_is_a_pipeline_file_error_at_its_line(value: str) -> None:
    with pytest.raises(PipelineFileError) as caught:
        plan(TWO_GPUS_80GB, value)
    [problem] = caught.value.problems
    assert (problem.stage, problem.field, problem.line) == ("llm", "replicas", 6)
    assert problem.message.startswith("must be 'auto' or a whole number, at least 1 (one copy per GPU) (got ")


def test_a_copy_that_does_not_fit_is_dropped_with_a_warning_and_adds_no_phase() -> None:
    two_small = Inventory(tuple(GpuInfo(Device("cuda", i), "Fake", 8 * GiB, 8 * GiB) for i in range(2)))
    text = PIPELINE.replace("MODEL", "test.model").replace("REPLICAS", ", replicas: 2").replace("gib: 10", "gib: 5")
    engine = fake_engine()
    dropped = make_plan(engine.load_text(text), engine.pm, inventory=two_small)
    assert dropped.placement == {"prep": CPU, "llm": CUDA0, "sd": CUDA1}
    assert dropped.replicas["llm"] == [CUDA0]  # cuda:1 holds sd (4 GiB): no room for 5 more
    assert dropped.residency == [["prep", "llm", "sd"]]
    assert dropped.warnings == ["stage 'llm': no room for a copy on cuda:1 (it needs about 5.0 GiB next to the "
                                "models there); it runs without that copy"]


def test_the_run_announces_each_copy_in_its_placement(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    text = PIPELINE.replace("MODEL", "test.model").replace("REPLICAS", "")
    run_text(text, [{"text": "a"}], tmp_path / "out", fake_engine(recorder), inventory=TWO_GPUS_80GB)
    run = recorder.started[0]
    assert run.placement == {"prep": "cpu", "llm": "cuda:1+cuda:0", "sd": "cuda:0"}
    assert run.devices == "cpu, cuda:0, cuda:1"
    assert placement_lines(run)[0].startswith("placement: prep → cpu, llm → cuda:1+cuda:0 (~10.0 GiB)")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["replicas"] == {"llm": ["cuda:1", "cuda:0"]} and manifest["devices"] == ["cpu", "cuda:0", "cuda:1"]
