"""Seeding torch's global random state safely in a multi-threaded run.

Some model code draws from torch's global generator and takes no generator argument (VITS noise,
`generate()` sampling). The local executor runs each stage in its own thread, so two stages that
seed the global state at once would interleave. Every stage that seeds the global generator does
it through `torch_seeded`, which holds one process-wide lock and restores the previous state.
Stages that can pass a `torch.Generator` (diffusers) should do that instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def torch_seeded(seed: int, devices: list[Any] | None = None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to `seed`, exclusively; restore it afterwards."""
    import torch  # heavy: only model stages call this

    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices or []):
        torch.manual_seed(seed)
        yield
