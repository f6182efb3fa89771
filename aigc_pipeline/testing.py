"""Fakes for tests, shipped for plugin authors too.

- Stages (type names under `test.`): `NoopStage`, `EchoStage`, `RaiseOnStage`, `SlowStage`.
  Register them with ``engine.register(aigc_pipeline.testing.FakeStages(), name="fakes")``.
- `RecordingPlugin`: remembers every observer hook call, to assert on what a run reported.
- `BatchLog`: remembers every micro-batch a stage was called with (item ids, start, end).
- Fake device inventories: `CPU_ONLY`, `ONE_GPU_8GB`, `TWO_GPUS_80GB`.
- `fake_engine(*plugins)`: an Engine with the fake stages and the given plugins registered.
- `run_text(...)`: validate and run a pipeline given as YAML text over in-memory rows.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .content import ANY, TEXT
from .devices import Device, GpuInfo, Inventory
from .engine import Engine, RunResult
from .executor import ItemResult, RunInfo, RunSummary
from .plugin_manager import hookimpl
from .stage import DeviceNeeds, Stage, StageItem

GiB = 2**30

CPU_ONLY = Inventory()
ONE_GPU_8GB = Inventory((GpuInfo(Device("cuda", 0), "Fake GPU 8 GiB", 8 * GiB, 8 * GiB),))
TWO_GPUS_80GB = Inventory(
    (GpuInfo(Device("cuda", 0), "Fake GPU 80 GiB", 80 * GiB, 70 * GiB),
     GpuInfo(Device("cuda", 1), "Fake GPU 80 GiB", 80 * GiB, 79 * GiB))
)


class NoopStage(Stage):
    """Passes `value` through unchanged: measures pure engine overhead."""

    type_name = "test.noop"
    description = "pass the value through (overhead measurements)"
    inputs = {"value": ANY}
    outputs = {"value": ANY}
    default_batch_size = 1024

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["value"] = item.inputs["value"]
        return batch


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = ""


class EchoStage(Stage):
    """Returns `prefix + text`; records the batch sizes it saw (class-wide, for assertions)."""

    type_name = "test.echo"
    Params = EchoParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    batch_sizes_seen: list[int] = []

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        EchoStage.batch_sizes_seen.append(len(batch))
        for item in batch:
            item.outputs["text"] = self.params.prefix + item.inputs["text"]  # type: ignore[attr-defined]
        return batch


class RaiseOnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    needle: str = Field(description="raise ValueError for any text containing this")


class RaiseOnStage(Stage):
    """Raises for a whole batch when any text contains `needle` (tests per-item isolation)."""

    type_name = "test.raise_on"
    Params = RaiseOnParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 8

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        needle = self.params.needle  # type: ignore[attr-defined]
        for item in batch:
            if needle in item.inputs["text"]:
                raise ValueError(f"found {needle!r} in row {item.id}")
            item.outputs["text"] = item.inputs["text"]
        return batch


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_item: float = Field(0.001, ge=0)
    device: str = Field("cpu", description="declared device kind: cpu, gpu or any")


class SlowStage(Stage):
    """Sleeps per item (releasing the GIL, as model code does): for concurrency tests."""

    type_name = "test.slow"
    Params = SlowParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 4

    @classmethod
    def needs(cls, params: BaseModel) -> DeviceNeeds:
        return DeviceNeeds(kind=params.device)  # type: ignore[attr-defined]

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        time.sleep(self.params.seconds_per_item * len(batch))  # type: ignore[attr-defined]
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class FakeStages:
    """A plugin object registering every fake stage."""

    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [NoopStage, EchoStage, RaiseOnStage, SlowStage]


class RecordingPlugin:
    """Records observer hook calls: `started`, `finished` (ItemResults), `progress`, `summary`."""

    def __init__(self) -> None:
        self.started: list[RunInfo] = []
        self.finished: list[ItemResult] = []
        self.progress: list[tuple[str, int, int]] = []
        self.summary: RunSummary | None = None

    @hookimpl
    def aigc_run_start(self, run: RunInfo) -> None:
        self.started.append(run)

    @hookimpl
    def aigc_stage_progress(self, stage_id: str, done: int, total: int) -> None:
        self.progress.append((stage_id, done, total))

    @hookimpl
    def aigc_item_finished(self, result: ItemResult) -> None:
        self.finished.append(result)

    @hookimpl
    def aigc_run_finish(self, summary: RunSummary) -> None:
        self.summary = summary


@dataclass(frozen=True)
class BatchCall:
    stage_id: str
    ids: list[int]
    start: float  # time.perf_counter() around the stage call
    end: float


class BatchLog:
    """Wraps every stage call: `calls` lists each micro-batch, in the order the calls ended."""

    def __init__(self) -> None:
        self.calls: list[BatchCall] = []
        self._lock = threading.Lock()  # stages call from their own threads

    @hookimpl(wrapper=True)
    def aigc_process_batch(self, stage_id: str, batch: list[StageItem]) -> Any:
        ids, start = [item.id for item in batch], time.perf_counter()
        try:
            return (yield)
        finally:
            with self._lock:
                self.calls.append(BatchCall(stage_id, ids, start, time.perf_counter()))

    def sizes(self, stage_id: str) -> list[int]:
        """Batch sizes `stage_id` saw, retries of single items after a failed batch included."""
        return [len(call.ids) for call in self.calls if call.stage_id == stage_id]


def fake_engine(*plugins: Any) -> Engine:
    """An Engine with the fake stages, plus `plugins` (stage providers, observers, wrappers)."""
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    for number, plugin in enumerate(plugins):
        engine.register(plugin, name=f"test-plugin-{number}")
    return engine


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_text(
    pipeline_yaml: str,
    rows: list[dict[str, Any]],
    out_dir: Path,
    engine: Engine | None = None,
    overrides: list[str] | None = None,
    **run_options: Any,
) -> RunResult:
    """Validate `pipeline_yaml` (with `--set`-style `overrides`) and run it over `rows`.

    The rows are written as JSONL next to `out_dir`; `run_options` go to `Engine.run`.
    """
    if engine is None:
        engine = fake_engine()
    graph = engine.load_text(pipeline_yaml, "<test>", overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_path = write_jsonl(out_dir.parent / f"{out_dir.name}-input.jsonl", rows)
    return engine.run(graph, input_path, out_dir, **run_options)
