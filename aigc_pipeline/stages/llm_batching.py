"""How `llm.text` cuts a batch into `generate` calls, and its opt-in static-cache decoding.

Length-aware calls: a prompt padded to its batch's longest prompt costs as much as that prompt.
With `generate_batch` below the engine's batch size, the batch's prompts are sorted by token
length (a stable sort, so equal lengths keep input order) and cut into calls of that many rows,
so short prompts share calls with short ones; every row's text goes back to its own item. A
row's greedy text is the same in any call (left padding, masked), and sampling draws from the
row's own seed, so outputs do not change, only the padding computed.

Static cache (`static_cache: true`): `generate` runs with a fixed-size KV cache
(`cache_implementation="static"`), which transformers compiles with `torch.compile` on a GPU
(the decode step; the first call of a new shape compiles, tens of seconds). Prompt widths are
padded up to a multiple of `WIDTH_BUCKET`, so the cache length (width + max_new_tokens) and the
compiled shapes repeat from call to call instead of changing with every batch's longest prompt.
On the CPU nothing is compiled; the static cache still runs and gives the same greedy tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

WIDTH_BUCKET = 16  # prompt widths padded to a multiple of this under static_cache: compiled shapes repeat

T = TypeVar("T")


def in_length_order(
    token_ids: Sequence[list[int]], call_size: int | None, run: Callable[[list[int]], list[T]]
) -> list[T]:
    """`run(rows)` over calls of at most `call_size` rows (None: one call), the rows sorted by
    token length when that makes more than one call; results in the order of `token_ids`.

    `run` gets row indices into `token_ids` and returns one result per index, in that order.
    """
    rows = list(range(len(token_ids)))
    size = call_size or len(rows) or 1
    if size >= len(rows):
        return run(rows)
    rows.sort(key=lambda row: len(token_ids[row]))
    results: list[Any] = [None] * len(rows)
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        for row, result in zip(part, run(part), strict=True):
            results[row] = result
    return results


def padded_width(longest: int, static_cache: bool) -> int:
    """The prompt width of a call: its longest prompt, rounded up to WIDTH_BUCKET under static_cache."""
    if not static_cache:
        return longest
    return -(-longest // WIDTH_BUCKET) * WIDTH_BUCKET


def static_cache_kwargs(static_cache: bool, device_type: str) -> dict[str, Any]:
    """Extra `generate` arguments for the static-cache path (none for the default dynamic cache).
    transformers compiles the decode step itself on a GPU; on the CPU the cache stays uncompiled."""
    if not static_cache:
        return {}
    if device_type != "cuda":
        return {"cache_implementation": "static"}
    from transformers import CompileConfig

    # dynamic=False: a new batch size or bucket recompiles once rather than falling back to
    # slower dynamic-shape kernels; bucketed widths keep the number of shapes small.
    return {"cache_implementation": "static", "compile_config": CompileConfig(dynamic=False)}


def padding_share(lengths: Sequence[int], call_size: int | None, sort: bool) -> float:
    """The share of computed prompt positions that are padding, for calls cut as `in_length_order`
    does (`sort`) or in input order: what the benchmark reports next to the timings."""
    order = sorted(lengths) if sort else list(lengths)
    size = call_size or len(order) or 1
    computed = real = 0
    for start in range(0, len(order), size):
        part = order[start : start + size]
        computed += max(part) * len(part)
        real += sum(part)
    return 1 - real / computed if computed else 0.0
