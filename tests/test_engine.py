"""Engine.run: input file -> plan -> execute -> results.jsonl (+ errors.log), whatever happens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import hookimpl
from aigc_pipeline.content import TEXT
from aigc_pipeline.devices import Device
from aigc_pipeline.engine import RUN_SWITCH_INTERVAL, Engine
from aigc_pipeline.errors import InputDataError, PlacementError
from aigc_pipeline.executors.local import LocalExecutor
from aigc_pipeline.sinks import ERRORS_FILE
from aigc_pipeline.stage import DeviceNeeds, Stage, StageItem
from aigc_pipeline.testing import ONE_GPU_8GB, TWO_GPUS_80GB, fake_engine, run_text, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_COPY = ROOT / "pipelines" / "product_copy.yaml"
PRODUCTS = ROOT / "pipelines" / "data" / "products.csv"

ECHO = """
name: echo
inputs: {text: str}
stages:
  say: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "> "}}
  check: {uses: test.raise_on, inputs: {text: say.text}, with: {needle: boom}, batch_size: 2}
outputs: {text: check.text}
"""


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_demo_pipeline_runs_over_the_sample_csv(tmp_path: Path) -> None:
    engine = Engine()
    result = engine.run(engine.load(PRODUCT_COPY), PRODUCTS, tmp_path)
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == 12 and [r["row"] for r in records] == list(range(12))
    assert result.summary.counts == {"done": 10, "filtered": 1, "failed": 0, "rejected": 1, "not_run": 0}
    filtered = [r for r in records if r["status"] == "filtered"]
    assert [(r["line"], r["error"]) for r in filtered] == [
        (6, {"stage": "copy", "reason": "blocked term(s): guaranteed"})
    ]
    rejected = [r for r in records if r["status"] == "rejected"]
    assert [r["line"] for r in rejected] == [13]
    assert rejected[0]["error"]["reason"].startswith("line 13: column 'price': expected float")
    assert records[0]["outputs"]["copy"].startswith("TrailRunner 2 for weekend hikers: grippy sole, waterproof upper")
    stats = result.summary.stages
    assert [(sid, s.done, s.filtered, s.failed) for sid, s in stats.items()] == [
        ("brief", 11, 0, 0),
        ("copy", 10, 1, 0),
        ("tagline", 10, 0, 0),
    ]
    assert result.errors_path is None and not (tmp_path / ERRORS_FILE).exists()


def test_limit_runs_only_the_first_rows(tmp_path: Path) -> None:
    engine = Engine()
    result = engine.run(engine.load(PRODUCT_COPY), PRODUCTS, tmp_path, limit=3)
    assert len(read_results(result.results_path)) == 3
    with pytest.raises(InputDataError, match="--limit must be 0 or more, got -1"):
        engine.run(engine.load(PRODUCT_COPY), PRODUCTS, tmp_path, limit=-1)


def test_set_overrides_apply_to_the_run(tmp_path: Path) -> None:
    engine = Engine()
    graph = engine.load(PRODUCT_COPY, ["copy.max_words=8"])
    result = engine.run(graph, PRODUCTS, tmp_path)
    assert result.summary.counts["filtered"] > 1
    assert any("too many words" in (r.error or {}).get("reason", "") for r in result.results)


def test_a_csv_without_a_required_column_fails_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Device] = []
    monkeypatch.setattr(Stage, "load", lambda self, device: loaded.append(device))
    rows = tmp_path / "rows.csv"
    rows.write_text("txt\nhello\n", encoding="utf-8")
    engine = fake_engine()
    with pytest.raises(InputDataError, match="lacks required column\\(s\\) 'text'.*'text': did you mean 'txt'\\?"):
        engine.run(engine.load_text(ECHO), rows, tmp_path / "out")
    assert loaded == [] and not (tmp_path / "out").exists()


def test_errors_log_holds_the_traceback_of_each_failed_row(tmp_path: Path) -> None:
    result = run_text(ECHO, [{"text": "a"}, {"text": "boom"}, {"text": "boom!"}], tmp_path / "out")
    assert [r.status for r in result.results] == ["done", "failed", "failed"]
    assert result.errors_path == tmp_path / "out" / ERRORS_FILE
    blocks = result.errors_path.read_text(encoding="utf-8").strip().split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("row 1, line 2, stage 'check': failed: ValueError: found 'boom' in row 1\nTraceback")
    assert blocks[1].startswith("row 2, line 3, stage 'check': failed:")
    assert blocks[1].endswith("ValueError: found 'boom' in row 2")


def test_a_clean_run_removes_an_old_errors_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_text(ECHO, [{"text": "boom"}], out).errors_path is not None
    result = run_text(ECHO, [{"text": "fine"}], out)
    assert result.errors_path is None and not (out / ERRORS_FILE).exists()


class ExitsOnSecondCall(Stage):
    """Works once, then raises SystemExit: a run that stops in the middle."""

    type_name = "test.exits_later"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.calls = 0

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        self.calls += 1
        if self.calls > 1:
            raise SystemExit("killed")
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [ExitsOnSecondCall]


def test_a_run_that_stops_early_keeps_the_finished_rows(tmp_path: Path) -> None:
    pipeline = ECHO.replace("uses: test.raise_on", "uses: test.exits_later").replace(", with: {needle: boom}", "")
    rows = [{"text": str(i)} for i in range(5)]
    backend = LocalExecutor(chunk_size=2)
    result = run_text(pipeline, rows, tmp_path / "out", engine=fake_engine(Stages()), backend=backend)
    assert result.summary.error == "stage 'check' (test.exits_later): stopped the run: SystemExit: killed"
    records = read_results(result.results_path)
    assert [r["status"] for r in records] == ["done", "done", "not_run", "not_run", "not_run"]
    assert records[0]["outputs"] == {"text": "> 0"}
    assert result.errors_path is not None
    assert "SystemExit: killed" in result.errors_path.read_text(encoding="utf-8")


SLOW_ANY = """
name: model
inputs: {text: str}
stages:
  model: {uses: test.slow, inputs: {text: inputs.text}, with: {seconds_per_item: 0, device: any}}
"""


def test_a_model_stage_runs_on_the_gpu_the_scheduler_picked(tmp_path: Path) -> None:
    result = run_text(SLOW_ANY, [{"text": "a"}], tmp_path / "out", inventory=ONE_GPU_8GB)
    assert result.summary.stages["model"].device == "cuda:0"
    assert [r.status for r in result.results] == ["done"]


def test_a_device_that_does_not_exist_fails_before_the_run(tmp_path: Path) -> None:
    engine = fake_engine()
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}])
    with pytest.raises(PlacementError, match="asks for 'cuda:3'; devices here: cuda:0, cuda:1"):
        engine.run(
            engine.load_text(SLOW_ANY), rows, tmp_path / "out", device=Device("cuda", 3), inventory=TWO_GPUS_80GB
        )
    assert not (tmp_path / "out" / "results.jsonl").exists()


class SeesSwitchInterval(Stage):
    """Records the GIL switch interval its thread runs under (pure Python: loads nothing)."""

    type_name = "test.sees_switch_interval"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    seen: list[float] = []

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        SeesSwitchInterval.seen.append(sys.getswitchinterval())
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class ModelSeesSwitchInterval(SeesSwitchInterval):
    """The same, as a model stage: it loads something, and may be placed on a GPU."""

    type_name = "test.model_sees_switch_interval"

    @classmethod
    def needs(cls, params: Any) -> DeviceNeeds:
        return DeviceNeeds(kind="any")

    def load(self, device: Device) -> None:
        pass


class SwitchIntervalStages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [SeesSwitchInterval, ModelSeesSwitchInterval]


def about(seconds: float) -> Any:
    return pytest.approx(seconds, abs=2e-6)  # CPython keeps the interval in whole microseconds


def beside(stage_type: str) -> str:
    return f"""
name: interval
inputs: {{text: str}}
stages:
  say: {{uses: test.echo, inputs: {{text: inputs.text}}, with: {{prefix: "> "}}}}
  look: {{uses: {stage_type}, inputs: {{text: say.text}}}}
"""


def test_a_model_stage_beside_another_runs_under_a_short_switch_interval_restored_after(tmp_path: Path) -> None:
    engine = fake_engine(SwitchIntervalStages())
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}])
    model = engine.load_text(beside("test.model_sees_switch_interval"))
    python_only = engine.load_text(beside("test.sees_switch_interval"))
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0123)  # an odd value: a reset to Python's default would show too
    try:
        SeesSwitchInterval.seen = []
        engine.run(model, rows, tmp_path / "model")
        engine.run(python_only, rows, tmp_path / "python")  # no model stage: nothing to gain, left alone
        assert SeesSwitchInterval.seen == [about(RUN_SWITCH_INTERVAL), about(0.0123)]
        assert sys.getswitchinterval() == about(0.0123)
        with pytest.raises(PlacementError):  # raised inside the run, after the interval was lowered
            engine.run(model, rows, tmp_path / "raises", device=Device("cuda", 3), inventory=TWO_GPUS_80GB)
        assert sys.getswitchinterval() == about(0.0123)
        sys.setswitchinterval(0.0001)  # a caller's lower interval is kept, never raised
        SeesSwitchInterval.seen = []
        engine.run(model, rows, tmp_path / "lower")
        assert SeesSwitchInterval.seen == [about(0.0001)]
    finally:
        sys.setswitchinterval(previous)
