"""GPU truths in the summary: busy fraction (sampled), model weights' memory, first-batch time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline import gpu_busy
from aigc_pipeline.devices import CPU, Device
from aigc_pipeline.executor import record_busy
from aigc_pipeline.gpu_busy import BusySampler
from aigc_pipeline.progress import gpu_lines
from aigc_pipeline.records import RunSummary, StageStats
from aigc_pipeline.testing import ONE_GPU_8GB, fake_engine, run_text

CUDA0, CUDA1 = Device("cuda", 0), Device("cuda", 1)

PIPELINE = """
name: two_models
inputs: {text: str}
stages:
  copy:  {uses: test.model, inputs: {text: inputs.text}, with: {name: llm, memory_gib: 5}, batch_size: 4}
  check: {uses: test.raise_on, inputs: {text: copy.text}, with: {needle: bad}}
  hero:  {uses: test.model, inputs: {text: check.text}, with: {name: sd, memory_gib: 5}, batch_size: 4}
"""


def test_the_fraction_is_the_mean_of_the_readings_per_gpu() -> None:
    readings = {CUDA0: iter([100.0, 50.0, 90.0]), CUDA1: iter([None, 20.0, 120.0])}
    sampler = BusySampler([CUDA0, CUDA1, CPU], read=lambda device: next(readings[device]), interval=3600)
    sampler.sample()
    sampler.sample()
    sampler.sample()
    assert sampler.devices == [CUDA0, CUDA1]  # the CPU is never sampled
    assert sampler.fractions() == {CUDA0: pytest.approx(0.8), CUDA1: pytest.approx(0.6)}  # None left out, 120 -> 100


def test_a_reader_error_is_no_reading_and_no_reading_is_no_figure() -> None:
    def broken(device: Device) -> float:
        raise RuntimeError("NVML_ERROR_UNKNOWN")

    sampler = BusySampler([CUDA0], read=broken)
    sampler.sample()
    assert sampler.fractions() == {}


def test_the_thread_samples_until_the_phase_ends_and_once_at_the_end() -> None:
    calls: list[Device] = []

    def read(device: Device) -> float:
        calls.append(device)
        return 40.0

    with BusySampler([CUDA0], read=read, interval=0.001) as sampler:
        while len(calls) < 3:  # the sampling thread is running: wait for a few of its readings
            pass
    count = len(calls)
    assert sampler.fractions() == {CUDA0: pytest.approx(0.4)} and count >= 4
    assert len(calls) == count  # stopped: no reading after the phase


def test_without_a_gpu_no_thread_and_no_reader_is_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_busy, "nvml_reader", lambda: pytest.fail("looked for NVML on a CPU-only run"))
    with BusySampler([CPU]) as sampler:
        assert sampler._thread is None
    assert sampler.fractions() == {}


def test_without_cuda_there_is_no_reader_here() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert gpu_busy.nvml_reader() is None


def test_each_stage_gets_its_gpus_fraction_copies_averaged() -> None:
    stats = {sid: StageStats("t", "cuda:0") for sid in ("copy", "hero", "check")}
    devices = {"copy": [CUDA0], "hero": [CUDA0, CUDA1], "check": [CPU]}  # copies of "hero" on both GPUs
    record_busy(stats, devices, {CUDA0: 0.9, CUDA1: 0.5})
    assert (stats["copy"].gpu_busy, stats["hero"].gpu_busy, stats["check"].gpu_busy) == (0.9, pytest.approx(0.7), None)


def test_a_run_on_a_gpu_reports_busy_and_first_batch_per_model_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fake inventory: the model stages are placed on cuda:0 (and run on the CPU); NVML is faked too.
    monkeypatch.setattr(gpu_busy, "nvml_reader", lambda: lambda device: 75.0 if device == CUDA0 else None)
    rows = [{"text": f"row{i}"} for i in range(10)]
    result = run_text(PIPELINE, rows, tmp_path / "out", fake_engine(), inventory=ONE_GPU_8GB)
    stages = result.summary.stages
    assert [r.status for r in result.results] == ["done"] * 10
    assert stages["copy"].gpu_busy == stages["hero"].gpu_busy == pytest.approx(0.75)  # two phases, both sampled
    assert stages["check"].gpu_busy is None  # a CPU stage in those phases has no GPU of its own
    assert all(stages[sid].first_batch_seconds is not None and stages[sid].loads == 1 for sid in ("copy", "hero"))
    assert stages["copy"].model_bytes == 0  # torch allocated nothing on a fake GPU
    assert gpu_lines(result.summary)[0].startswith("copy: busy 75%, first batch ")


def test_the_gpu_line_lists_what_was_measured() -> None:
    measured = StageStats("llm.text", "cuda:0", model_bytes=512 * 2**20, gpu_busy=0.934, first_batch_seconds=17.2)
    cpu = StageStats("template", "cpu", first_batch_seconds=0.01)
    summary = RunSummary(counts={}, stages={"copy": measured, "prompt": cpu}, seconds=1.0)
    assert gpu_lines(summary) == ["copy: weights 512 MiB, busy 93%, first batch 17.20s"]


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_on_a_gpu_nvml_is_read_and_a_real_load_counts_its_weights(tiny_model: Any, tmp_path: Path) -> None:
    import torch  # noqa: F401  # the reader is looked for only once torch is imported

    read = gpu_busy.nvml_reader()
    if read is None:
        pytest.skip("no pynvml here")
    assert 0.0 <= read(CUDA0) <= 100.0  # type: ignore[operator]
    pipeline = PIPELINE_LM.replace("MODEL", str(tiny_model("lm")))
    result = run_text(pipeline, [{"text": f"row {i}"} for i in range(8)], tmp_path / "out")
    copy = result.summary.stages["copy"]
    assert copy.device == "cuda:0" and copy.model_bytes > 0 and copy.gpu_busy is not None and copy.loads == 1


PIPELINE_LM = """
name: lm_on_gpu
inputs: {text: str}
stages:
  copy: {uses: llm.text, inputs: {prompt: inputs.text}, with: {model: "MODEL", max_new_tokens: 4}}
"""


def fake_smi(folder: Path, body: str) -> None:
    """An `nvidia-smi` on PATH (the real one cannot exist on a machine without an NVIDIA driver)."""
    program = folder / "nvidia-smi"
    program.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    program.chmod(0o755)


def test_nvidia_smi_is_the_last_resort_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_smi(tmp_path, 'test "$1 $2 $3 $4" = "--query-gpu=utilization.gpu --format=csv,noheader,nounits -i 1" '
                       '&& echo 42 || { test "$4" = 0 && echo 7 || exit 3; }')
    monkeypatch.setenv("PATH", str(tmp_path))
    read = gpu_busy._smi_reader()
    assert read is not None and read(CUDA1) == 42.0 and read(CUDA0) == 7.0


def test_a_failing_nvidia_smi_is_no_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_busy._smi_reader() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpu_busy._smi_reader() is None
