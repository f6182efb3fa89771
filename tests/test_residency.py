"""residency: memory caps, residency phases (pure), and runs whose models do not fit together.

Placement is computed against fake inventories; the fake `test.model` stage ignores the device it
is given, so a stage "on cuda:0" still runs here on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.devices import CPU, Device, GpuInfo, Inventory
from aigc_pipeline.progress import placement_lines
from aigc_pipeline.records import RunInfo
from aigc_pipeline.residency import GiB, MemoryCap, cap_inventory, fit_replicas, oversized, plan_phases, within
from aigc_pipeline.testing import ONE_GPU_8GB, TWO_GPUS_80GB, ModelStage, RecordingPlugin, fake_engine, run_text

CUDA0, CUDA1 = Device("cuda", 0), Device("cuda", 1)


# ------------------------------------------------------------------ --gpu-memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6GiB", MemoryCap(bytes=6 * GiB)),
        ("6 gib", MemoryCap(bytes=6 * GiB)),
        ("800MB", MemoryCap(bytes=800_000_000)),
        ("1.5GiB", MemoryCap(bytes=int(1.5 * GiB))),
        ("0.5", MemoryCap(fraction=0.5)),
        ("50%", MemoryCap(fraction=0.5)),
        ("1", MemoryCap(fraction=1.0)),
    ],
)
def test_memory_caps_parse(text: str, expected: MemoryCap) -> None:
    assert MemoryCap.parse(text) == expected


@pytest.mark.parametrize("text", ["6", "0", "-1GiB", "6 parsecs", "150%", "", "GiB", "0GiB"])
def test_a_bad_memory_cap_is_a_value_error_showing_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a GPU memory cap: .*'6GiB'.*'0\.5'"):
        MemoryCap.parse(text)


def test_a_cap_lowers_free_memory_never_raises_it() -> None:
    capped = cap_inventory(TWO_GPUS_80GB, MemoryCap(bytes=75 * GiB))
    assert [g.free_bytes for g in capped.gpus] == [70 * GiB, 75 * GiB]
    half = cap_inventory(TWO_GPUS_80GB, MemoryCap.parse("0.5"))
    assert [g.free_bytes for g in half.gpus] == [40 * GiB, 40 * GiB]
    assert cap_inventory(ONE_GPU_8GB, None) is ONE_GPU_8GB


# ------------------------------------------------------------------ plan_phases (pure)

CHAIN = ["prompt", "copy", "check", "hero", "voice"]  # prompt -> copy -> check; prompt -> hero; check -> voice
UP = {"copy": ["prompt"], "check": ["copy"], "hero": ["prompt"], "voice": ["check"]}
ON_GPU = {"prompt": CPU, "copy": CUDA0, "check": CPU, "hero": CUDA0, "voice": CPU}


def phases(memory_gib: dict[str, float], budget_gib: float, placement: dict[str, Device] = ON_GPU) -> list[list[str]]:
    memory = {sid: int(gib * GiB) for sid, gib in memory_gib.items()}
    budget = {CUDA0: int(budget_gib * GiB), CUDA1: int(budget_gib * GiB)}
    return plan_phases(CHAIN, UP, placement, memory, budget)


def test_models_that_fit_together_share_one_phase() -> None:
    assert phases({"copy": 3, "hero": 4}, budget_gib=8) == [CHAIN]


def test_models_that_do_not_fit_get_phases_and_cpu_stages_follow_their_inputs() -> None:
    assert phases({"copy": 5, "hero": 5}, budget_gib=8) == [["prompt", "copy", "check", "voice"], ["hero"]]


def test_a_stage_never_runs_before_its_upstream_phase() -> None:
    up = {"b": ["a"], "c": ["b"]}
    placement = {"a": CUDA0, "b": CUDA0, "c": CUDA0}
    memory = {"a": 5 * GiB, "b": 5 * GiB, "c": 1 * GiB}
    # c would fit next to a in phase 0, but it needs b's output: it joins b in phase 1
    assert plan_phases(["a", "b", "c"], up, placement, memory, {CUDA0: 8 * GiB}) == [["a"], ["b", "c"]]


def test_a_small_independent_model_packs_into_an_earlier_phase() -> None:
    placement = {"a": CUDA0, "b": CUDA0, "c": CUDA0}
    memory = {"a": 5 * GiB, "b": 5 * GiB, "c": 2 * GiB}
    assert plan_phases(["a", "b", "c"], {}, placement, memory, {CUDA0: 8 * GiB}) == [["a", "c"], ["b"]]


def test_unknown_sizes_never_force_a_swap_and_gpus_have_their_own_budgets() -> None:
    assert phases({"copy": 0, "hero": 0}, budget_gib=1) == [CHAIN]
    spread = {**ON_GPU, "hero": CUDA1}
    assert phases({"copy": 6, "hero": 6}, budget_gib=8, placement=spread) == [CHAIN]


def test_a_model_larger_than_its_budget_runs_alone_with_a_warning() -> None:
    assert phases({"copy": 12, "hero": 1}, budget_gib=8) == [["prompt", "copy", "check", "voice"], ["hero"]]
    [warning] = oversized({"copy": CUDA0, "hero": CUDA0}, {"copy": 12 * GiB, "hero": GiB}, {CUDA0: 8 * GiB})
    assert warning.startswith("stage 'copy' needs about 12.0 GiB, more than the 8.0 GiB available on cuda:0")


def test_within_restricts_phases_to_one_part_of_the_run() -> None:
    assert within([["a", "b"], ["c"], ["d"]], ["b", "d"]) == [["b"], ["d"]]
    assert within([["a"]], []) == [[]]


def test_a_copy_counts_its_memory_on_its_gpu_in_its_phase_and_is_dropped_where_it_does_not_fit() -> None:
    placement = {"copy": CUDA0, "hero": CUDA1, "voice": CUDA1}
    memory = {"copy": 5 * GiB, "hero": 4 * GiB, "voice": 2 * GiB}
    budget = {CUDA0: 8 * GiB, CUDA1: 8 * GiB}
    wanted = {"copy": [CUDA0, CUDA1], "hero": [CUDA1, CUDA0], "voice": [CUDA1]}
    # one phase: cuda:1 holds hero + voice (6 GiB), no room for copy's 5; cuda:0 then holds copy + hero's copy (9 > 8)
    kept, warnings = fit_replicas([["copy", "hero", "voice"]], placement, wanted, memory, budget)
    assert kept == {"copy": [CUDA0], "hero": [CUDA1], "voice": [CUDA1]}
    assert warnings == [
        "stage 'copy': no room for a copy on cuda:1 (it needs about 5.0 GiB next to the models there); "
        "it runs without that copy",
        "stage 'hero': no room for a copy on cuda:0 (it needs about 4.0 GiB next to the models there); "
        "it runs without that copy",
    ]
    # in phases, a copy only meets the models of its own phase: both copies fit
    kept, warnings = fit_replicas([["copy"], ["hero", "voice"]], placement, wanted, memory, budget)
    assert kept == wanted and warnings == []


def test_copies_never_add_a_phase() -> None:
    placement = {"copy": CUDA0, "hero": CUDA1}
    memory = {"copy": 5 * GiB, "hero": 5 * GiB}
    phases = plan_phases(["copy", "hero"], {}, placement, memory, {CUDA0: 8 * GiB, CUDA1: 8 * GiB})
    kept, _ = fit_replicas(phases, placement, {"copy": [CUDA0, CUDA1], "hero": [CUDA1]}, memory,
                           {CUDA0: 8 * GiB, CUDA1: 8 * GiB})
    assert phases == [["copy", "hero"]] and kept["copy"] == [CUDA0]


# ------------------------------------------------------------------ runs on fake inventories

TWO_MODELS = """
name: two_models
inputs: {text: str}
stages:
  copy:  {uses: test.model, inputs: {text: inputs.text}, with: {name: llm, memory_gib: LLM}, batch_size: 4}
  check: {uses: test.raise_on, inputs: {text: copy.text}, with: {needle: bad}}
  hero:  {uses: test.model, inputs: {text: check.text}, with: {name: sd, memory_gib: SD}, batch_size: 4}
"""
ROWS = [{"text": f"row{i}"} for i in range(10)]


def two_models(llm: float, sd: float) -> str:
    return TWO_MODELS.replace("LLM", str(llm)).replace("SD", str(sd))


@pytest.fixture(autouse=True)
def model_log() -> Iterator[list[tuple[str, str, object]]]:
    ModelStage.log.clear()
    yield ModelStage.log
    ModelStage.log.clear()


def load_events(log: list[tuple[str, str, object]]) -> list[tuple[str, str]]:
    return [(event, name) for event, name, _ in log if event != "batch"]


def test_models_that_do_not_fit_load_once_each_in_phases(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    result = run_text(two_models(5, 5), ROWS, tmp_path / "out", fake_engine(recorder), inventory=ONE_GPU_8GB)
    assert [r.status for r in result.results] == ["done"] * 10
    assert result.results[0].outputs == {"hero.text": "row0+llm+sd"}
    # the acceptance point: every row through the LLM, then swap once, then every row through SD
    assert load_events(ModelStage.log) == [("load", "llm"), ("unload", "llm"), ("load", "sd"), ("unload", "sd")]
    assert ("load", "llm", "cuda:0") in ModelStage.log  # placed on the fake GPU, run on the CPU
    stats = result.summary.stages
    assert (stats["copy"].loads, stats["copy"].unloads, stats["hero"].loads, stats["hero"].unloads) == (1, 1, 1, 1)
    assert stats["copy"].memory_bytes == 5 * GiB
    assert recorder.started[0].phases == [["copy", "check"], ["hero"]]
    assert recorder.started[0].memory == {"copy": 5 * GiB, "hero": 5 * GiB}
    assert sorted(r.row for r in recorder.finished) == list(range(10))  # each row reported once, at the end


def test_models_that_fit_stay_resident_together(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    rows = [{"text": f"row{i}"} for i in range(256)]  # several chunks: the stages overlap
    slow = two_models(3, 4).replace("memory_gib: 3", "memory_gib: 3, seconds_per_item: 0.0005")
    result = run_text(slow, rows, tmp_path / "out", fake_engine(recorder), inventory=ONE_GPU_8GB)
    assert [r.status for r in result.results] == ["done"] * 256
    events = load_events(ModelStage.log)
    assert sorted(events[:2]) == [("load", "llm"), ("load", "sd")]  # both loaded before either unloads
    assert sorted(events[2:]) == [("unload", "llm"), ("unload", "sd")]
    assert recorder.started[0].phases == [["copy", "check", "hero"]]


def test_the_gpu_memory_cap_forces_phases(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    result = run_text(two_models(3, 4), ROWS, tmp_path / "out", fake_engine(recorder), inventory=ONE_GPU_8GB,
                      gpu_memory="6GiB")
    assert [r.status for r in result.results] == ["done"] * 10
    assert load_events(ModelStage.log) == [("load", "llm"), ("unload", "llm"), ("load", "sd"), ("unload", "sd")]
    assert recorder.started[0].phases == [["copy", "check"], ["hero"]]


def test_two_gpus_take_one_model_each_and_keep_one_phase(tmp_path: Path) -> None:
    inventory = Inventory(tuple(GpuInfo(Device("cuda", i), "Fake", 8 * GiB, 8 * GiB) for i in range(2)))
    recorder = RecordingPlugin()
    run_text(two_models(5, 5), ROWS, tmp_path / "out", fake_engine(recorder), inventory=inventory)
    assert recorder.started[0].placement == {"copy": "cuda:0", "check": "cpu", "hero": "cuda:1"}
    assert recorder.started[0].phases == [["copy", "check", "hero"]]


def test_rows_failed_in_an_early_phase_are_reported_once_and_stay_failed(tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    rows = [{"text": "row0"}, {"text": "bad"}, {"text": "row2"}]
    result = run_text(two_models(5, 5), rows, tmp_path / "out", fake_engine(recorder), inventory=ONE_GPU_8GB)
    assert [r.status for r in result.results] == ["done", "failed", "done"]
    assert result.results[1].error == {"stage": "check", "reason": "ValueError: found 'bad' in row 1"}
    assert sorted((r.row, r.status) for r in recorder.finished) == [(0, "done"), (1, "failed"), (2, "done")]
    assert [size for event, name, size in ModelStage.log if event == "batch" and name == "sd"] == [2]


def test_a_later_phase_that_fails_to_load_leaves_rows_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = ModelStage.load

    def load(self: ModelStage, device: Device) -> None:
        if self.params.name == "sd":  # type: ignore[attr-defined]
            raise OSError("weights missing")
        original(self, device)

    monkeypatch.setattr(ModelStage, "load", load)
    result = run_text(two_models(5, 5), ROWS[:3], tmp_path / "out", inventory=ONE_GPU_8GB)
    assert result.summary.error is not None and "failed to load: OSError: weights missing" in result.summary.error
    assert [r.status for r in result.results] == ["not_run"] * 3  # not "done": they never reached 'hero'


def test_the_run_prints_placement_with_estimates_and_phases() -> None:
    info = RunInfo("p", "p.yaml", 10, "out", {"copy": "cuda:0", "check": "cpu", "hero": "cuda:0"}, "cpu, cuda:0",
                   {"copy": 5 * GiB, "hero": 3 * GiB // 2}, [["copy", "check"], ["hero"]], swaps=True)
    assert placement_lines(info) == [
        "placement: copy → cuda:0 (~5.0 GiB), check → cpu, hero → cuda:0 (~1.5 GiB)",
        "models do not fit in GPU memory together: 2 phases, each over all rows: [copy, check] then [hero]",
    ]


def test_an_aggregate_alone_is_not_reported_as_a_swap(tmp_path: Path) -> None:
    """Row stages, then group stages, are two phases by nature; only more than that means models swap."""
    pipeline = """
name: digest
inputs: {topic: str, text: str}
stages:
  copy: {uses: test.model, inputs: {text: inputs.text}, with: {name: a, memory_gib: 5}}
  digest: {uses: aggregate, inputs: {line: copy.text}, with: {group_by: topic, template: "{{ count }}"}}
  intro: {uses: test.model, inputs: {text: digest.text}, with: {name: b, memory_gib: 5}}
"""
    rows = [{"topic": "x", "text": "a"}, {"topic": "y", "text": "b"}]
    fits, swapped = RecordingPlugin(), RecordingPlugin()
    run_text(pipeline, rows, tmp_path / "fits", fake_engine(fits), inventory=ONE_GPU_8GB)
    run_text(pipeline.replace("name: b, memory_gib: 5", "name: b, memory_gib: 5}}\n  more: {uses: test.model, "
                              "inputs: {text: intro.text}, with: {name: c, memory_gib: 5"), rows, tmp_path / "swaps",
             fake_engine(swapped), inventory=ONE_GPU_8GB)
    assert fits.started[0].phases == [["copy"], ["intro"]] and not fits.started[0].swaps
    assert len(placement_lines(fits.started[0])) == 1
    assert swapped.started[0].swaps and len(swapped.started[0].phases) == 3


def test_cli_gpu_memory_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aigc_residency_fakes.py").write_text(
        "from aigc_pipeline.testing import FakeStages\naigc_register_stages = FakeStages().aigc_register_stages\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(two_models(0.5, 0.5).replace("memory_gib", "device: cpu, memory_gib"), encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n', encoding="utf-8")
    runner = CliRunner()
    base = ["run", str(pipeline), "-i", str(rows), "-o", str(tmp_path / "o"), "--plugin", "aigc_residency_fakes"]
    bad = runner.invoke(app, [*base, "--gpu-memory", "6"])
    assert bad.exit_code == 2 and "not a GPU memory cap: '6'" in " ".join(bad.output.split())
    ok = runner.invoke(app, [*base, "--gpu-memory", "6GiB"])
    assert ok.exit_code == 0, ok.output
    assert "loads" in ok.stdout and "model memory: copy ~512 MiB, hero ~512 MiB" in ok.stdout
    assert "placement: copy → cpu (~512 MiB), check → cpu, hero → cpu (~512 MiB)" in " ".join(ok.stderr.split())
