"""Stopping a run on SIGTERM, SIGINT or SIGHUP: the same clean way for each, within a bound.

`timeout`, `docker stop`, systemd and job schedulers send SIGTERM; a terminal sends SIGINT (Ctrl-C)
or SIGHUP. The first of them asks the run to stop: the executor stops taking micro-batches, waits
up to STOP_GRACE_S (AIGC_STOP_GRACE_S) for the ones in flight (finished ones are recorded), abandons the rest, and the
engine writes results.jsonl, the manifest and the report as it does at the end of any run. The
CLI then exits with 128 + the signal's number. A second signal (SAME_STOP_S or more after the first:
`timeout` and a terminal signal both the process and its group, so one request can arrive twice)
ends the process at once; the run store stays consistent (every commit is atomic) and is told
why, see below.

Blame: the run store counts a crash against every item in flight when a run dies without closing
the store, and quarantines an item that crashed it twice (store.py). A run stopped by a signal did
not crash: the first signal writes SIGNALLED_FILE into the output folder at once, so even when the
process is then killed outright (a second signal, `docker stop`'s SIGKILL after its grace period),
the next run finds the file and lets the in-flight items run again without counting a crash.

Handlers are installed only in the main thread (Python's rule) and the previous ones come back
after the run. They raise `StopSignal` only inside `interruptible()` (the execution), never while
results are being written: a signal that arrives then lets the writing finish.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
STOP_GRACE_S = 10.0  # how long in-flight micro-batches may take to finish after a stop signal
GRACE_ENV = "AIGC_STOP_GRACE_S"
SIGNALLED_FILE = ".run.signalled"
SAME_STOP_S = 1.0  # signals this close to the first are one request (sent to the process and its group)


class StopSignal(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives during the execution of a run."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal_name(signum)}; rows not finished are marked not_run "
                         "(run the same command again to resume)")


@dataclass
class _Stop:
    out_dir: Path | None = None
    signum: int | None = None
    at: float = 0.0
    raising: bool = False


_stop = _Stop()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def received() -> int | None:
    """The stop signal the current (or last) run received, if any."""
    return _stop.signum


def listen() -> None:
    """Handle stop signals from now on, for the whole process (the CLI, before it loads anything):
    a signal that comes before the run starts stops it before any row runs."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handle)


@contextmanager
def stop_on_signals(out_dir: Path) -> Iterator[None]:
    """Handle stop signals for one run writing to `out_dir` (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not _handle:  # not listening already: a new run, no signal yet
        _stop.signum = None
    _stop.out_dir, _stop.raising = out_dir, False
    previous = {signum: signal.signal(signum, _handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop.out_dir, _stop.raising = None, False


@contextmanager
def interruptible() -> Iterator[None]:
    """A stop signal raises StopSignal inside this block (at once if one came before it)."""
    if _stop.signum is not None and _stop.out_dir is not None:
        raise StopSignal(_stop.signum)
    _stop.raising = True
    try:
        yield
    finally:
        _stop.raising = False


def _handle(signum: int, frame: FrameType | None) -> None:
    now = time.monotonic()
    if _stop.signum is not None:
        if now - _stop.at >= SAME_STOP_S:  # a second request: now, without cleaning up
            os._exit(128 + signum)
        return  # the same request delivered twice: `timeout` signals the process and its group
    _stop.signum, _stop.at = signum, now
    if _stop.out_dir is not None:
        mark_signalled(_stop.out_dir, signum)
    if _stop.raising:
        raise StopSignal(signum)


def mark_signalled(out_dir: Path, signum: int) -> None:
    """Note in the output folder that this run was stopped from outside (no OSError: best effort)."""
    try:
        fd = os.open(out_dir / SIGNALLED_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, f"{signal_name(signum)}\n".encode())
        os.close(fd)
    except OSError:
        pass


def stop_grace() -> float:
    """STOP_GRACE_S, or the seconds in AIGC_STOP_GRACE_S (e.g. below a scheduler's own grace period)."""
    try:
        return max(0.0, float(os.environ.get(GRACE_ENV, STOP_GRACE_S)))
    except ValueError:
        return STOP_GRACE_S


def join_workers(threads: Iterable[threading.Thread]) -> list[threading.Thread]:
    """Join worker threads; after a stop signal, wait only until `stop_grace()` has passed since it
    came. Returns those still running (abandoned: daemon threads whose results are not recorded)."""
    threads = list(threads)
    for thread in threads:
        if _stop.signum is None:
            thread.join()
        else:
            thread.join(max(0.0, _stop.at + stop_grace() - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]
