"""Pacing of requests to a served model: per-minute windows, backoff, Retry-After, and the number
of requests in flight, which adapts to 429s (`AdaptiveSlots`).

All of it runs on the stage's event loop (one thread), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from email.utils import parsedate_to_datetime

WINDOW_SECONDS = 60.0
MAX_BACKOFF = 60.0


class MinuteWindow:
    """At most `limit` units (requests or tokens) started in any 60-second window.

    A single take larger than the limit is let through alone (once the window is empty), so an
    oversized prompt waits instead of blocking the run for ever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken: deque[tuple[float, int]] = deque()
        self.total = 0

    async def take(self, amount: int) -> None:
        while True:
            now = time.monotonic()
            while self.taken and now - self.taken[0][0] >= WINDOW_SECONDS:
                self.total -= self.taken.popleft()[1]
            if not self.taken or self.total + amount <= self.limit:
                self.taken.append((now, amount))
                self.total += amount
                return
            await asyncio.sleep(WINDOW_SECONDS - (now - self.taken[0][0]) + 0.001)


class Pacer:
    """The request and token windows of one stage (either may be off)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.requests = MinuteWindow(rpm) if rpm else None
        self.tokens = MinuteWindow(tpm) if tpm else None

    async def admit(self, tokens: int) -> None:
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(tokens)


def backoff_seconds(retry: int, base: float, retry_after: float | None, rng: random.Random) -> float:
    """Wait before retry number `retry` (0 = the first): the server's Retry-After when it gave one,
    else exponential with full jitter (so many rows refused at once do not come back at once)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_BACKOFF)
    ceiling = min(base * 2**retry, MAX_BACKOFF)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header: a number or an HTTP date; None if absent or bad."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class AdaptiveSlots:
    """At most `limit` requests in flight, the limit adapting to 429s as TCP adapts to loss (additive
    increase, multiplicative decrease): a 429 halves it, once per burst (only a request started after
    the last cut can cut again, so the 429s of one round of requests count once), and each `limit`
    answers in a row without one raise it by one, back up to `ceiling` (max_concurrency).
    `fixed`: the limit stays at `ceiling` (a plain semaphore)."""

    def __init__(self, ceiling: int, fixed: bool = False) -> None:
        self.ceiling = self.limit = ceiling
        self.fixed = fixed
        self.in_flight = 0
        self.epoch = 0  # cuts so far; a request remembers the epoch it started in
        self.answered = 0  # answers since the limit last changed
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        """Wait for a slot; the epoch the request starts in (for `throttled`)."""
        while self.in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            await waiter
        self.in_flight += 1
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def throttled(self, epoch: int) -> bool:
        """A request started in `epoch` got a 429: halve the limit, unless this burst did already."""
        if self.fixed or epoch != self.epoch:
            return False
        self.epoch += 1
        self.limit, self.answered = max(1, self.limit // 2), 0
        return True

    def answered_ok(self) -> None:
        if self.limit < self.ceiling:
            self.answered += 1
            if self.answered >= self.limit:
                self.limit, self.answered = self.limit + 1, 0
                self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():  # a cancelled wait is skipped
                waiter.set_result(None)
                free -= 1
