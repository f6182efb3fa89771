"""Results stored as a stage finishes them, before its micro-batch returns (`StageItem.ready`).

A stage whose items finish one by one (requests to a served model: `max_concurrency` in flight,
answers arriving in any order) calls `item.ready()` for each item as it is done. The runner of
its batch then stores that item's result at once, one commit per item: a kill -9 of the run
loses only the answers received in the last instant, never a micro-batch of them, and the next
run asks the server again for none of those it kept. The rest of the batch is stored as usual
when the batch returns (`stored` tells the runner which items are in already).

Only items that passed (outputs set, every port present and of its type) are stored early; a
verdict (failed, filtered) waits for the batch, as do stages with artifact outputs (the runner
writes artifacts after the batch). What is stored is the outputs as they are at `ready()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RunStoreError
from .port_checks import PortCheck, output_problem
from .records import DONE
from .stage import StageItem
from .store import NewResult, RunStore
from .stored_outputs import encode_outputs


class EarlyResults:
    """The store side of `StageItem.ready()` for one stage; `stored` holds the keys stored early."""

    def __init__(self, stage_id: str, store: RunStore, checks: list[PortCheck], ports: list[str]) -> None:
        self.stage_id = stage_id
        self.store = store
        self.checks = checks
        self.ports = ports
        self.stored: set[str] = set()  # of the current sub-batch (`callback` starts a new one)

    def callback(self, keys: dict[int, str | None], marked: bool) -> Callable[[StageItem], None]:
        """What `item.ready()` calls for the items of one sub-batch (`keys`: item id -> cache key;
        `marked`: the items have in-flight markers, cleared with their result)."""
        self.stored = stored = set()

        def store_now(item: StageItem) -> None:
            key = keys.get(item.id)
            if key is None or key in stored:
                return
            result = self._result(key, item)
            if result is None:
                return
            try:
                self.store.finish(self.stage_id, [result], [key] if marked else [])
            except RunStoreError:  # a full disk: the batch's own commit raises it, with what to do
                return
            stored.add(key)

        return store_now

    def _result(self, key: str, item: StageItem) -> NewResult | None:
        """The item's result to store, or None when it is not a clean pass (the batch decides)."""
        outputs: dict[str, Any] = item.outputs
        if item.verdict is not None or output_problem(self.stage_id, self.checks, outputs):
            return None
        if any(port not in outputs for port in self.ports):
            return None
        encoded = encode_outputs({port: outputs[port] for port in self.ports})
        if encoded is None:
            return None
        return NewResult(key, item.id, DONE, None, encoded, list(item.flags))

    def without_stored(self, results: list[NewResult]) -> list[NewResult]:
        """The batch's results less those stored early (they are in, and a second write is waste)."""
        stored = self.stored
        return [result for result in results if result.key not in stored] if stored else results
