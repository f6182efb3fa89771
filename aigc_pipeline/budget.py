"""A run's spending cap (`aigc run --max-cost USD`), shared by every stage that spends money.

A stage reserves the most a request can cost before it starts it and settles the actual cost when
it ends, so the money spent never passes the cap, even with many requests in flight. Once a
reservation is refused the stage starts nothing more: its remaining rows end `not_run`, and a
re-run (from the stored results) continues where this one stopped.
"""

from __future__ import annotations

import threading


class CostBudget:
    """Thread-safe: stages reserve and settle from their own threads and event loops."""

    def __init__(self, limit_usd: float) -> None:
        if limit_usd < 0:
            raise ValueError(f"the cost cap must be 0 or more, got {limit_usd}")
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.refused = 0  # reservations refused: requests not started because of the cap
        self._lock = threading.Lock()

    def reserve(self, amount: float) -> bool:
        """Set `amount` aside for a request about to start; False (and nothing set aside) if it could pass the cap."""
        with self._lock:
            if self.spent + self.reserved + amount > self.limit:
                self.refused += 1
                return False
            self.reserved += amount
            return True

    def settle(self, reserved: float, actual: float) -> None:
        """A request ended: release its reservation and count what it really cost."""
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += actual

    @property
    def exhausted(self) -> bool:
        return self.refused > 0
