"""Per-row time limits of stage calls (a stage's `timeout:`).

A stage call that never returns (a plugin waiting on a dead server, a deadlocked library) would
hold the run forever. With a limit, the engine waits `timeout` seconds per row of the micro-batch,
then gives up on the call: the batch is retried one row at a time, as after any batch error, so
only the row that hangs fails ("timed out after N s") and the run goes on.

Python cannot stop a thread, so the call runs in a daemon thread of its own that is abandoned
when it overruns; it ends with the process. Stages of this package declare no default (their
models may legitimately take long on a CPU); a plugin's stage gets PLUGIN_TIMEOUT_S unless the
pipeline says otherwise. Calls without a limit run directly, with no thread in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .errors import AigcError

PLUGIN_TIMEOUT_S = 600.0  # seconds per row for stages of other packages, unless `timeout:` is set


class StageTimeout(AigcError):
    """A stage call overran its time limit."""

    def __init__(self, seconds: float, rows: int) -> None:
        per_row = f" ({seconds / rows:g} s per row, {rows} rows)" if rows > 1 else ""
        super().__init__(f"timed out after {seconds:g} s{per_row}")


def stage_timeout(stage_class: type, declared: float | None) -> float | None:
    """Seconds per row for a stage: the pipeline's `timeout:`, else the default for its origin."""
    if declared is not None:
        return declared
    return None if stage_class.__module__.startswith("aigc_pipeline.") else PLUGIN_TIMEOUT_S


def call_within(per_row: float | None, rows: int, call: Callable[..., Any], **kwargs: Any) -> Any:
    """`call(**kwargs)`, or StageTimeout when it takes more than `per_row * rows` seconds."""
    if per_row is None:
        return call(**kwargs)
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call(**kwargs)
        except BaseException as exc:  # handed to the caller's thread, as if raised there
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name="aigc-timed-call", daemon=True).start()
    limit = per_row * max(1, rows)
    if not finished.wait(limit):
        raise StageTimeout(limit, rows)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
