"""Resume by re-running: stored results are reused, only what is missing or changed runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.content import TEXT
from aigc_pipeline.devices import Device
from aigc_pipeline.engine import RunResult
from aigc_pipeline.errors import RunStoreError
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.store import STORE_FILE, RunStore
from aigc_pipeline.testing import fake_engine, run_text

PIPELINE = """
name: resume
inputs: {text: str}
seed: 3
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  model: {uses: test.counting, inputs: {text: prompt.text}, batch_size: 4}
  gate: {uses: test.raise_on, inputs: {text: model.text}, with: {needle: BOOM}}
  picture: {uses: test.image, inputs: {text: gate.text}}
outputs: {text: gate.text, image: picture.image}
"""


class CountingStage(Stage):
    """Counts loads and processed items class-wide, to prove what ran."""

    type_name = "test.counting"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    loads = 0
    items = 0

    def load(self, device: Device) -> None:
        CountingStage.loads += 1

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        CountingStage.items += len(batch)
        for item in batch:
            item.outputs["text"] = item.inputs["text"].upper()
        return batch


class DropStage(Stage):
    """Filters out texts containing 'R1' (a cacheable gate: filter.text recomputes its regex checks)."""

    type_name = "test.drop_r1"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            if "R1" in item.inputs["text"]:
                item.drop("contains R1")
            else:
                item.outputs["text"] = item.inputs["text"]
        return batch


class Plugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [CountingStage, DropStage]


def rows(count: int) -> list[dict[str, Any]]:
    return [{"text": "boom" if i == 2 else f"r{i}"} for i in range(count)]


def run(
    out: Path, count: int = 8, overrides: list[str] | None = None, text: str = PIPELINE, **options: Any
) -> RunResult:
    CountingStage.loads = CountingStage.items = 0
    return run_text(text, rows(count), out, engine=fake_engine(Plugin()), overrides=overrides, **options)


def cached(result: RunResult) -> dict[str, int]:
    return {sid: stats.cached for sid, stats in result.summary.stages.items()}


def test_rerunning_a_finished_run_reuses_everything_and_loads_nothing(tmp_path: Path) -> None:
    first = run(tmp_path / "out")
    assert first.summary.counts["done"] == 7 and first.summary.counts["failed"] == 1
    before = first.results_path.read_bytes()
    again = run(tmp_path / "out")
    assert CountingStage.loads == 0 and CountingStage.items == 0
    # the failed row (boom) is not stored: it is tried again, at its stage only (`gate` has no model
    # to load, so no stage counts a load)
    loads = {sid: s.loads for sid, s in again.summary.stages.items()}
    assert loads == {"prompt": 0, "model": 0, "gate": 0, "picture": 0}
    # the template is not stored (rendering is cheaper than a lookup): it renders again
    assert cached(again) == {"prompt": 0, "model": 8, "gate": 7, "picture": 7}
    assert again.summary.stages["gate"].failed == 1
    assert again.results_path.read_bytes() == before


def test_a_run_without_failures_loads_no_stage_at_all(tmp_path: Path) -> None:
    run(tmp_path / "out", count=2)
    again = run(tmp_path / "out", count=2)
    assert again.summary.counts["done"] == 2
    stored = {sid: s for sid, s in again.summary.stages.items() if sid != "prompt"}  # a template renders again
    assert all(s.loads == 0 and s.batches == 0 and s.cached == 2 for s in stored.values())


def test_only_missing_rows_run(tmp_path: Path) -> None:
    run(tmp_path / "out", count=5)
    more = run(tmp_path / "out", count=8)
    assert CountingStage.items == 3 and CountingStage.loads == 1
    assert cached(more)["model"] == 5 and more.summary.counts["done"] == 7


def test_a_changed_stage_reruns_it_and_what_depends_on_it(tmp_path: Path) -> None:
    run(tmp_path / "out")
    changed = run(tmp_path / "out", overrides=["prompt.template=tell {{ text }}"])
    assert cached(changed) == {"prompt": 0, "model": 0, "gate": 0, "picture": 0}
    assert CountingStage.items == 8


def test_a_template_change_with_equal_outputs_reruns_only_the_template(tmp_path: Path) -> None:
    run(tmp_path / "out")
    # strip: true (the default) makes the rendered text equal: downstream inputs are unchanged
    same = run(tmp_path / "out", overrides=["prompt.template='say {{ text }}   '"])
    assert cached(same) == {"prompt": 0, "model": 8, "gate": 7, "picture": 7}
    assert CountingStage.loads == 0


def test_a_downstream_param_change_keeps_upstream_results(tmp_path: Path) -> None:
    run(tmp_path / "out")
    changed = run(tmp_path / "out", overrides=["picture.size=4"])
    assert cached(changed) == {"prompt": 0, "model": 8, "gate": 7, "picture": 0}  # (prompt: renders again)
    assert CountingStage.loads == 0


def test_fresh_discards_the_store(tmp_path: Path) -> None:
    run(tmp_path / "out")
    fresh = run(tmp_path / "out", fresh=True)
    assert cached(fresh) == dict.fromkeys(fresh.summary.stages, 0) and CountingStage.items == 8


def test_a_deleted_artifact_is_made_again(tmp_path: Path) -> None:
    first = run(tmp_path / "out")
    image = Path(first.results[0].outputs["image"].path)
    image.unlink()
    again = run(tmp_path / "out")
    assert cached(again)["picture"] == 6 and image.is_file()
    assert again.results_path.read_bytes() == first.results_path.read_bytes()


def test_filtered_items_are_stored_and_failed_ones_retried(tmp_path: Path) -> None:
    gate = PIPELINE.replace("{uses: test.raise_on, inputs: {text: model.text}, with: {needle: BOOM}}",
                            "{uses: test.drop_r1, inputs: {text: model.text}}")
    first = run(tmp_path / "out", text=gate)
    assert first.summary.counts["filtered"] == 1
    again = run(tmp_path / "out", text=gate)
    assert again.summary.counts == first.summary.counts
    assert again.summary.stages["gate"].cached == 8 and again.summary.stages["gate"].filtered == 1


def test_another_pipeline_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    run(tmp_path / "out")
    with pytest.raises(RunStoreError, match="holds results of pipeline 'resume', not 'other'.*--fresh.*--out"):
        run(tmp_path / "out", text=PIPELINE.replace("name: resume", "name: other"))
    with pytest.raises(RunStoreError, match="other input columns"):
        run(tmp_path / "out", text=PIPELINE.replace("inputs: {text: str}", "inputs: {text: str, extra: int}"))
    assert run(tmp_path / "out", text=PIPELINE.replace("name: resume", "name: other"), fresh=True).summary.ok


def test_two_runs_cannot_share_a_folder(tmp_path: Path) -> None:
    holder = RunStore.open(tmp_path / "out", {"pipeline": "resume", "inputs": {"text": "str"}})
    try:
        with pytest.raises(RunStoreError, match="another aigc run is using"):
            run(tmp_path / "out")
    finally:
        holder.close()
    assert run(tmp_path / "out").summary.ok


def test_cache_false_writes_no_store(tmp_path: Path) -> None:
    run(tmp_path / "out", cache=False)
    assert not (tmp_path / "out" / STORE_FILE).exists()


def test_a_run_wide_dedupe_is_never_reused(tmp_path: Path) -> None:
    dedupe = PIPELINE.replace("{uses: test.raise_on, inputs: {text: model.text}, with: {needle: BOOM}}",
                              "{uses: filter.text, inputs: {text: model.text}, with: {dedupe: true}}")
    run_text(dedupe, [{"text": "a"}], tmp_path / "out", engine=fake_engine(Plugin()))
    again = run_text(dedupe, [{"text": "a"}, {"text": "a"}], tmp_path / "out", engine=fake_engine(Plugin()))
    assert again.summary.stages["gate"].cached == 0 and again.summary.counts == {
        "done": 1, "filtered": 1, "failed": 0, "rejected": 0, "not_run": 0}
