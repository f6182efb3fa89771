"""Fakes for tests, shipped for plugin authors too.

- Stages (type names under `test.`): `NoopStage`, `EchoStage`, `RaiseOnStage`, `SlowStage`,
  `ModelStage` (a fake model: declared GPU memory, a load/unload log, injected out-of-memory errors).
  `ImageStage` (a small real PNG per text), `CrashOnStage` (kills the process: crash recovery).
  Register them with ``engine.register(aigc_pipeline.testing.FakeStages(), name="fakes")``, or
  from the command line with ``aigc run --plugin aigc_pipeline.testing ...`` (this module is a plugin).
- `RecordingPlugin`: remembers every observer hook call, to assert on what a run reported.
- `BatchLog`: remembers every micro-batch a stage was called with (item ids, start, end).
- Fake device inventories: `CPU_ONLY`, `ONE_GPU_8GB`, `TWO_GPUS_80GB`.
- `fake_engine(*plugins)`: an Engine with the fake stages and the given plugins registered.
- `run_text(...)`: validate and run a pipeline given as YAML text over in-memory rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .content import ANY, IMAGE, TEXT, ArtifactData
from .devices import Device, GpuInfo, Inventory
from .engine import Engine, RunResult
from .plugin_manager import hookimpl
from .records import ItemResult, RunInfo, RunSummary
from .stage import DeviceKind, DeviceNeeds, Stage, StageItem

GiB = 2**30

CPU_ONLY = Inventory()
ONE_GPU_8GB = Inventory((GpuInfo(Device("cuda", 0), "Fake GPU 8 GiB", 8 * GiB, 8 * GiB),))
TWO_GPUS_80GB = Inventory(
    (GpuInfo(Device("cuda", 0), "Fake GPU 80 GiB", 80 * GiB, 70 * GiB),
     GpuInfo(Device("cuda", 1), "Fake GPU 80 GiB", 80 * GiB, 79 * GiB))
)


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store: bool = Field(False, description="keep results in the run store (measures the store's cost)")


class NoopStage(Stage[NoopParams]):
    """Passes `value` through unchanged: measures pure engine overhead (and, with store, the store's)."""

    type_name = "test.noop"
    description = "pass the value through (overhead measurements)"
    Params = NoopParams
    inputs = {"value": ANY}
    outputs = {"value": ANY}
    default_batch_size = 1024

    @classmethod
    def cacheable(cls, params: NoopParams) -> bool:
        return bool(params.store)

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["value"] = item.inputs["value"]
        return batch


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = ""


class EchoStage(Stage[EchoParams]):
    """Returns `prefix + text`; records the batch sizes it saw (class-wide, for assertions)."""

    type_name = "test.echo"
    Params = EchoParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    batch_sizes_seen: list[int] = []

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        EchoStage.batch_sizes_seen.append(len(batch))
        for item in batch:
            item.outputs["text"] = self.params.prefix + item.inputs["text"]
        return batch


class RaiseOnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    needle: str = Field(description="raise ValueError for any text containing this")


class RaiseOnStage(Stage[RaiseOnParams]):
    """Raises for a whole batch when any text contains `needle` (tests per-item isolation)."""

    type_name = "test.raise_on"
    Params = RaiseOnParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 8

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        needle = self.params.needle
        for item in batch:
            if needle in item.inputs["text"]:
                raise ValueError(f"found {needle!r} in row {item.id}")
            item.outputs["text"] = item.inputs["text"]
        return batch


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_item: float = Field(0.001, ge=0)
    device: DeviceKind = Field("cpu", description="declared device kind: cpu, gpu or any")
    cpu_parallel: bool = Field(False, description="let the local executor run it in worker processes")


class SlowStage(Stage[SlowParams]):
    """Sleeps per item (releasing the GIL, as model code does): for concurrency tests."""

    type_name = "test.slow"
    Params = SlowParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 4

    @classmethod
    def needs(cls, params: SlowParams) -> DeviceNeeds:
        return DeviceNeeds(kind=params.device)

    @classmethod
    def cpu_parallel(cls, params: SlowParams) -> bool:
        return params.cpu_parallel

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        time.sleep(self.params.seconds_per_item * len(batch))
        for item in batch:
            item.outputs["text"] = item.inputs["text"]
        return batch


class OutOfMemoryError(RuntimeError):
    """Named like `torch.OutOfMemoryError`: the engine recognises an out-of-memory error by that name."""


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("model", description="the name the load/unload log uses")
    memory_gib: float = Field(1.0, ge=0, description="declared memory need (DeviceNeeds.memory_bytes), GiB")
    device: DeviceKind = Field("any", description="declared device kind: cpu, gpu or any")
    seconds_per_item: float = Field(0.0, ge=0)
    oom_above: int = Field(0, ge=0, description="raise OutOfMemoryError for batches larger than this (0: never)")
    oom_on: str | None = Field(None, description="raise OutOfMemoryError for any batch with a text containing this")
    load_error: str | None = Field(None, description="load() raises OSError with this message (a missing model)")


class ModelStage(Stage[ModelParams]):
    """A fake model stage: declares GPU memory, logs loads and unloads, can run out of memory.

    It never touches a device: placed on "cuda:0" by a fake inventory, it still runs on the CPU.
    `ModelStage.log` lists ("load", name, device), ("unload", name, "") and ("batch", name, size)
    events class-wide, in order; clear it with `ModelStage.log.clear()`.
    """

    type_name = "test.model"
    description = "fake model stage: declared memory, load/unload log, injected out-of-memory errors"
    Params = ModelParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 8
    log: list[tuple[str, str, Any]] = []

    @classmethod
    def needs(cls, params: ModelParams) -> DeviceNeeds:
        return DeviceNeeds(kind=params.device, memory_bytes=int(params.memory_gib * GiB))

    def load(self, device: Device) -> None:
        ModelStage.log.append(("load", self.params.name, str(device)))
        if self.params.load_error:
            raise OSError(self.params.load_error)

    def unload(self) -> None:
        ModelStage.log.append(("unload", self.params.name, ""))

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        p = self.params
        ModelStage.log.append(("batch", p.name, len(batch)))
        needle = p.oom_on
        if (p.oom_above and len(batch) > p.oom_above) or (needle and any(needle in i.inputs["text"] for i in batch)):
            raise OutOfMemoryError(f"CUDA out of memory (fake): tried a batch of {len(batch)}")
        time.sleep(p.seconds_per_item * len(batch))
        for item in batch:
            item.outputs["text"] = f"{item.inputs['text']}+{p.name}"
        return batch


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(8, ge=1, le=256, description="width and height in pixels")


class ImageStage(Stage[ImageParams]):
    """A `size`x`size` PNG whose colours come from the text and the item's seed (standard library only)."""

    type_name = "test.image"
    Params = ImageParams
    inputs = {"text": TEXT}
    outputs = {"image": IMAGE}
    default_batch_size = 8

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        size = self.params.size
        for item in batch:
            colour = hashlib.blake2b(f"{item.seed}:{item.inputs['text']}".encode(), digest_size=6).digest()
            pixels = [colour[:3] if (x + y) % 2 else colour[3:] for y in range(size) for x in range(size)]
            item.outputs["image"] = ArtifactData(png_bytes(size, size, b"".join(pixels)), ".png",
                                                 {"width": size, "height": size, "seed": item.seed})
        return batch


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """Encode 8-bit RGB pixels (row-major) as a PNG file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[row * stride : (row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class CrashOnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    needle: str = Field(description="kill the whole process (SIGKILL) for any text containing this")
    cpu_parallel: bool = Field(False, description="let the local executor run it in worker processes")


class CrashOnStage(Stage[CrashOnParams]):
    """Kills the process when a text contains `needle`, like a segfault in model code (crash recovery tests)."""

    type_name = "test.crash_on"
    Params = CrashOnParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 4

    @classmethod
    def cpu_parallel(cls, params: CrashOnParams) -> bool:
        return params.cpu_parallel

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            if self.params.needle in item.inputs["text"]:
                os.kill(os.getpid(), signal.SIGKILL)
            item.outputs["text"] = item.inputs["text"]
        return batch


FAKE_STAGES: tuple[type[Stage], ...] = (
    NoopStage, EchoStage, RaiseOnStage, SlowStage, ModelStage, ImageStage, CrashOnStage
)


class FakeStages:
    """A plugin object registering every fake stage."""

    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return list(FAKE_STAGES)


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    """This module as a plugin (`--plugin aigc_pipeline.testing`): the fake stages."""
    return list(FAKE_STAGES)


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
