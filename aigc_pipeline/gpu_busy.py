"""How busy the GPUs were while model phases ran: NVML's utilization rate, sampled in a thread.

NVML reports, per GPU, the percent of time over its last sample period (1/6 s to 1 s depending
on the product) during which at least one kernel was running. `BusySampler` reads it every
`interval` seconds while a phase runs, and once more at the end, and reports the mean of the
samples as a fraction (0..1) per GPU. It is read through `torch.cuda.utilization` (which maps
CUDA_VISIBLE_DEVICES to NVML's indices), failing that through `pynvml` by index, failing that from
`nvidia-smi` (a process per reading: slower, but it works where the Python bindings do not).
Without any of them, or without CUDA, there is no figure (None), never a guess; on the CPU no
thread starts.
torch is used only when the run has already imported it (a model stage did).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .devices import Device

Reader = Callable[[Device], "float | None"]  # percent busy (0..100), None when unreadable


class BusySampler:
    """`with BusySampler(gpus) as busy: ...` then `busy.fractions()`: {device: mean busy 0..1}.

    `read` defaults to `nvml_reader()`; tests pass their own. Samples that cannot be read (None,
    or a reader error) are left out; a device with no sample has no fraction.
    """

    def __init__(self, devices: Iterable[Device], read: Reader | None = None, interval: float = 0.1) -> None:
        self.devices = sorted({device for device in devices if device.is_gpu}, key=str)
        self.read = read if read is not None or not self.devices else nvml_reader()
        self.interval = interval
        self.samples: dict[Device, list[float]] = {device: [] for device in self.devices}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BusySampler:
        if self.devices and self.read is not None:
            self._thread = threading.Thread(target=self._loop, name="gpu-busy", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.sample()  # the phase's last period, however short the phase was

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Read every device once (a reader error counts as no reading)."""
        if self.read is None:
            return
        for device in self.devices:
            try:
                value = self.read(device)
            except Exception:  # NVML can fail transiently; the figure is then from fewer samples
                value = None
            if value is not None:
                self.samples[device].append(min(100.0, max(0.0, float(value))))

    def fractions(self) -> dict[Device, float]:
        return {device: sum(values) / len(values) / 100 for device, values in self.samples.items() if values}


def nvml_reader() -> Reader | None:
    """A reader through torch.cuda.utilization, else pynvml, else nvidia-smi; None when none works."""
    torch = sys.modules.get("torch")
    cuda: Any = getattr(torch, "cuda", None)
    if cuda is not None:
        try:
            if cuda.is_available():
                cuda.utilization(0)  # raises without pynvml / NVML
                return lambda device: float(cuda.utilization(device.index or 0))
        except Exception:
            pass
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:
        return _smi_reader()

    def read(device: Device) -> float:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    return read


def _smi_reader() -> Reader | None:
    program = shutil.which("nvidia-smi")
    if program is None:
        return None

    def read(device: Device) -> float | None:
        done = subprocess.run([program, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                               "-i", str(device.index or 0)], capture_output=True, text=True, timeout=5)
        lines = done.stdout.strip().splitlines()
        return float(lines[0]) if done.returncode == 0 and lines else None

    try:
        return read if read(Device("cuda", 0)) is not None else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
