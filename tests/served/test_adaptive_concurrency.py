"""Adaptive concurrency: a burst of 429s halves the requests in flight (once per burst), answers
without one bring it back up to max_concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

from served_helpers import results, run_text, served_pipeline, write_rows

from aigc_pipeline.served.fault_proxy import FaultProxy, Faults
from aigc_pipeline.served.limits import AdaptiveSlots


def test_a_burst_halves_the_limit_once_and_answers_bring_it_back() -> None:
    slots = AdaptiveSlots(8)
    assert slots.throttled(0) and slots.limit == 4
    assert not slots.throttled(0) and slots.limit == 4  # another 429 of the same burst: no second cut
    assert slots.throttled(1) and slots.limit == 2  # a request started after the cut: a new burst
    for _ in range(2):
        slots.answered_ok()
    assert slots.limit == 3  # one more per `limit` answers without a 429
    for _ in range(3 + 4 + 5 + 6 + 7 + 8):
        slots.answered_ok()
    assert slots.limit == 8  # and never above max_concurrency
    fixed = AdaptiveSlots(8, fixed=True)
    assert not fixed.throttled(0) and fixed.limit == 8


def test_no_more_requests_in_flight_than_the_limit() -> None:
    async def scenario() -> list[int]:
        slots = AdaptiveSlots(4)
        slots.throttled(0)  # limit 2
        seen: list[int] = []

        async def one() -> None:
            await slots.acquire()
            seen.append(slots.in_flight)
            await asyncio.sleep(0.01)
            slots.release()
            slots.answered_ok()

        await asyncio.gather(*(one() for _ in range(12)))
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 12 and max(seen) <= 4 and seen[:2] == [1, 2] and 3 not in seen[:4]


def test_a_providers_concurrency_limit_is_met_with_fewer_429s(served_lm, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, 16)
    retries, outputs = {}, {}
    for adaptive in (True, False):
        with FaultProxy(served_lm.base_url.removesuffix("/v1"), Faults(latency=0.05, max_in_flight=2)) as proxy:
            text = served_pipeline(proxy.base_url, str(served_lm.folder), max_concurrency=8, retry_backoff=0.05,
                                   max_retries=100, adaptive_concurrency=adaptive)
            result = run_text(text, rows, tmp_path / f"adaptive-{adaptive}")
        assert result.summary.counts["done"] == 16
        assert proxy.peak_in_flight <= 2
        counters = result.summary.stages["copy"].counters
        retries[adaptive] = counters["retries"]
        assert (counters.get("concurrency_cuts", 0) >= 1) == adaptive
        outputs[adaptive] = [row["outputs"]["copy"] for row in results(tmp_path / f"adaptive-{adaptive}")]
    assert outputs[True] == outputs[False]
    assert retries[True] < retries[False], retries
