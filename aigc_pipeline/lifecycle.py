"""One stage instance's life on one device: load on first need, count, unload, free device memory.

Every place that runs a stage (the local executor's stage threads and replica copies, the
reducers of `groups.py`, the Ray workers) goes through `StageLifecycle`, so loads happen under
`MODEL_LOAD_LOCK` and are counted the same way everywhere, `unload()` always follows a load
that was attempted, and the device's cached memory is returned after a GPU stage unloads.
Stages therefore never free CUDA memory themselves: they drop their references in `unload()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from .devices import Device
from .errors import StageError
from .records import MODEL_LOAD_LOCK, StageStats
from .residency import allocated_bytes, free_cached_memory
from .stage import Stage


class StageLifecycle:
    """Use as `with StageLifecycle(...) as lifecycle:` around a stage's work, and call
    `lifecycle()` before the first batch that needs the model (a run whose results are all
    stored loads nothing). A load error is raised as StageError ("failed to load: ..."),
    chained; an unload error goes to `warn` (the run's warnings) rather than hiding the work's
    own outcome.
    """

    def __init__(
        self, stage_id: str, stage: Stage, device: Device, stats: StageStats,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.stage_id = stage_id
        self.stage = stage
        self.device = device
        self.stats = stats
        self.warn = warn
        self.attempted = False  # whether unload() is due

    def __call__(self) -> None:
        """Load the stage, once (later calls return at once)."""
        if self.attempted:
            return
        self.attempted = True
        stage, stats = self.stage, self.stats
        if type(stage).load is Stage.load:  # nothing to load: no lock to wait for, no load to count
            return
        started = time.perf_counter()
        try:
            with MODEL_LOAD_LOCK:  # loads are serialised, so the allocation difference is this stage's
                before = allocated_bytes(self.device)
                loaded = stage.load(self.device)
                stats.model_bytes = max(stats.model_bytes, allocated_bytes(self.device) - before)
        except Exception as exc:
            raise StageError(self.stage_id, stage.type_name, f"failed to load: {type(exc).__name__}: {exc}") from exc
        if loaded is not False:  # False: these params need no model (a filter without a classifier)
            stats.loads += 1
        stats.load_seconds += time.perf_counter() - started

    def __enter__(self) -> StageLifecycle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unload if a load was attempted (counted), then return cached GPU memory to the device."""
        if not self.attempted:
            return
        self.attempted = False
        try:
            self.stage.unload()
            self.stats.unloads += 1
        except Exception as exc:
            message = f"stage '{self.stage_id}': unload failed: {type(exc).__name__}: {exc}"
            if self.warn is None:
                raise StageError(self.stage_id, self.stage.type_name, message) from exc
            self.warn(message)
        finally:
            if self.device.is_gpu:
                free_cached_memory()
