"""Per-item seeds, and seeding torch's global random state safely in a multi-threaded run.

`item_seed(run seed, row identity, stage id, take)`: every stage of every row gets its own seed,
derived from the row's identity (its `key:` columns, or a hash of its input values: see
`row_identity.py`), never its position, so sorting, inserting or deleting rows in the input keeps
every other row's outputs. `take` numbers re-takes of the same row (0: the first take).

Some model code draws from torch's global generator and takes no generator argument (VITS noise,
`generate()` sampling). The local executor runs each stage in its own thread, so two stages that
seed the global state at once would interleave. Every stage that seeds the global generator does
it through `torch_seeded`, which holds one process-wide lock and restores the previous state.
Stages that can pass a `torch.Generator` (diffusers) should do that instead.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GLOBAL_RNG_LOCK = threading.RLock()


def item_seed(run_seed: int, row: str | int, stage_id: str, take: int = 0) -> int:
    """A 63-bit seed from (run seed, row identity, stage id, take): independent of batch, order,
    position in the file, resume and executor. Take 0 hashes exactly (run seed, row, stage)."""
    text = f"{run_seed}\x00{row}\x00{stage_id}" + (f"\x00{take}" if take else "")
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@contextmanager
def torch_seeded(seed: int, devices: list[Any] | None = None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to `seed`, exclusively; restore it afterwards."""
    import torch  # heavy: only model stages call this

    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices or []):
        torch.manual_seed(seed)
        yield
