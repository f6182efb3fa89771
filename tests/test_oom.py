"""Out-of-memory backoff: a batch that runs out of GPU memory is halved and retried; the size that
worked is kept; only a single row that runs out of memory alone fails. Tested on the CPU with the
fake `test.model` stage, which raises an exception named like torch's `OutOfMemoryError`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from aigc_pipeline.devices import Device
from aigc_pipeline.residency import GiB, free_cached_memory, is_out_of_memory
from aigc_pipeline.testing import ONE_GPU_8GB, BatchLog, ModelStage, OutOfMemoryError, fake_engine, run_text

PIPELINE = """
name: oom
inputs: {text: str}
stages:
  model: {uses: test.model, inputs: {text: inputs.text}, with: {name: m, memory_gib: 1, WITH}, batch_size: 8}
"""


@pytest.fixture(autouse=True)
def clear_log() -> Iterator[None]:
    ModelStage.log.clear()
    yield
    ModelStage.log.clear()


def run(tmp_path: Path, with_: str, texts: list[str]) -> tuple[BatchLog, object]:
    log = BatchLog()
    result = run_text(PIPELINE.replace("WITH", with_), [{"text": t} for t in texts], tmp_path / "out",
                      fake_engine(log), inventory=ONE_GPU_8GB)
    return log, result


def test_a_batch_that_runs_out_of_memory_is_halved_and_the_size_is_kept(tmp_path: Path) -> None:
    log, result = run(tmp_path, "oom_above: 4", [f"r{i}" for i in range(20)])
    assert [r.status for r in result.results] == ["done"] * 20  # type: ignore[attr-defined]
    assert log.sizes("model") == [8, 4, 4, 4, 4, 4]  # 8 failed once; every later batch is 4
    stats = result.summary.stages["model"]  # type: ignore[attr-defined]
    assert stats.oom_retries == 1 and stats.done == 20 and stats.failed == 0
    assert result.summary.warnings == [  # type: ignore[attr-defined]
        "stage 'model': out of GPU memory on a batch of 8; batches of 4 from now on"
    ]


def test_halving_goes_on_until_a_size_fits(tmp_path: Path) -> None:
    log, result = run(tmp_path, "oom_above: 2", [f"r{i}" for i in range(8)])
    assert [r.status for r in result.results] == ["done"] * 8  # type: ignore[attr-defined]
    assert log.sizes("model") == [8, 4, 2, 2, 2, 2]  # the second half of the 8 never tries 4 again
    assert result.summary.stages["model"].oom_retries == 2  # type: ignore[attr-defined]


def test_a_single_row_that_runs_out_of_memory_fails_alone_with_the_reason(tmp_path: Path) -> None:
    log, result = run(tmp_path, "oom_on: huge", ["a", "b", "huge", "c", "d"])
    statuses = [r.status for r in result.results]  # type: ignore[attr-defined]
    assert statuses == ["done", "done", "failed", "done", "done"]
    error = result.results[2].error  # type: ignore[attr-defined]
    assert error == {"stage": "model", "reason": "OutOfMemoryError: CUDA out of memory (fake): tried a batch of 1"}
    assert log.sizes("model") == [5, 2, 2, 1, 1, 1]  # [a b huge c d] -> [a b] ok, [huge c] -> [huge] x, [c], [d]


def test_other_exceptions_keep_per_item_isolation_and_the_batch_size(tmp_path: Path) -> None:
    text = PIPELINE.replace("test.model", "test.raise_on").replace("{name: m, memory_gib: 1, WITH}", "{needle: bad}")
    log = BatchLog()
    rows = [{"text": t} for t in ["a", "bad", "c", "d", "e", "f", "g", "h", "i", "j"]]
    result = run_text(text, rows, tmp_path / "out", fake_engine(log))
    assert [r.status for r in result.results].count("failed") == 1
    assert log.sizes("model") == [8, 1, 1, 1, 1, 1, 1, 1, 1, 2]  # alone, then batches of 8 again
    assert result.summary.stages["model"].oom_retries == 0 and not result.summary.warnings


def test_the_cuda_cache_is_freed_after_an_oom_and_peaks_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    cuda = SimpleNamespace(
        is_available=lambda: True,
        empty_cache=lambda: calls.append("empty_cache"),
        reset_peak_memory_stats=lambda index: calls.append(f"reset {index}"),
        max_memory_allocated=lambda index: 3 * GiB,
    )
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))  # as if torch were in use
    _, result = run(tmp_path, "oom_above: 4", [f"r{i}" for i in range(8)])
    # Freed after the out-of-memory error, and again once the stage unloads (StageLifecycle).
    assert calls == ["reset 0", "empty_cache", "empty_cache"]
    assert result.summary.stages["model"].peak_memory_bytes == 3 * GiB  # type: ignore[attr-defined]


class OutOfMemoryErrorLike(OutOfMemoryError):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OutOfMemoryError("CUDA out of memory"), True),
        (OutOfMemoryErrorLike("x"), True),  # a subclass of a class named OutOfMemoryError
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),  # torch before 2.1
        (RuntimeError("shape mismatch"), False),
        (MemoryError(), False),  # host memory: not a GPU batch-size problem
        (ValueError("out of memory"), False),
    ],
)
def test_is_out_of_memory(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected


def test_free_cached_memory_without_torch_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    free_cached_memory()  # no import, no error


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")
def test_a_real_cuda_oom_is_recognised_and_the_memory_comes_back() -> None:
    import torch

    device = Device("cuda", 0)
    free, _ = torch.cuda.mem_get_info(device.index)
    try:
        torch.empty(free * 4, dtype=torch.uint8, device=str(device))
    except Exception as exc:  # noqa: BLE001
        assert is_out_of_memory(exc)
    else:
        pytest.fail("allocating four times the free memory did not fail")
    free_cached_memory()
    assert torch.cuda.mem_get_info(device.index)[0] >= free * 0.9
