"""`llm.text` with `backend: openai`: a micro-batch's rows as concurrent requests on an event loop.

The stage owns one event loop, in its own thread, for as long as it is loaded. `process(batch)`
hands the whole batch to it and waits: up to `max_concurrency` requests are in flight at once,
paced by the per-minute limits, so the batch is a unit of scheduling, not a synchronous wall (the
default batch holds several rounds of `max_concurrency` requests). A row whose request finally
fails is failed with the status and the server's message; the other rows go on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

from ..budget import CostBudget
from ..stage import StageItem
from .client import Answer, OverBudget, RowFailed, ServedClient, estimate_tokens

ROUNDS_PER_BATCH = 8  # default batch: this many rounds of max_concurrency requests (each batch ends in a
# drain: its last requests finish with slots idle; answers are stored as they come, so size costs no safety)


class ServedLlm:
    """The backend; `counters` are its running totals (requests, retries, tokens, cost)."""

    def __init__(self, params: Any, finish: Callable[[str], str]) -> None:
        self.p = params
        self.finish = finish  # the stage's own cut at stop strings and strip, as for a local model
        self.counters: dict[str, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.client: ServedClient | None = None
        self.budget: CostBudget | None = None

    def load(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aigc-served-loop", daemon=True)
        self.thread.start()
        key = os.environ.get(self.p.api_key_env) or None
        self.client = self._on_loop(_make_client(self.p, key, self.counters, self.budget))

    def unload(self) -> None:
        loop, thread, client = self.loop, self.thread, self.client
        self.loop = self.thread = self.client = None
        if loop is None or thread is None:
            return
        try:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    def _on_loop(self, coroutine: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def process(self, items: list[StageItem], messages: list[Any]) -> None:
        """Answer every item (its chat messages or completion prompt in `messages`), concurrently."""
        self._on_loop(self._answer_all(items, messages))

    async def _answer_all(self, items: list[StageItem], messages: list[Any]) -> None:
        await asyncio.gather(*(self._answer_one(item, prompt) for item, prompt in zip(items, messages, strict=True)))

    async def _answer_one(self, item: StageItem, prompt: Any) -> None:
        assert self.client is not None
        try:
            answer = await self.client.answer(prompt, item.seed)
        except OverBudget:
            self.counters["not_run"] = self.counters.get("not_run", 0) + 1
            item.skip(f"not started: the run's cost cap (--max-cost {self.budget.limit:g} USD) was reached"
                      if self.budget else "not started: the run's cost cap was reached")
            return
        except RowFailed as exc:
            item.fail(str(exc), final=False)  # the endpoint may answer next time: not stored
            return
        except Exception as exc:  # a bug or an SDK surprise: this row fails, the batch goes on
            assert self.client is not None
            item.fail(self.client.redact(f"{type(exc).__name__}: {exc}"), final=False)
            return
        self._set_outputs(item, answer)
        item.ready()  # stored now, not with the batch: a kill loses no answer already received

    def _set_outputs(self, item: StageItem, answer: Answer) -> None:
        item.outputs["text"] = self.finish(answer.text)
        item.outputs["record"] = answer.record
        item.outputs["usage"] = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                                 "requests": answer.requests}
        if not item.outputs["text"]:
            item.flag("the model generated no text")


async def _make_client(params: Any, key: str | None, counters: dict[str, float],
                       budget: CostBudget | None) -> ServedClient:
    """Built on the loop, so the client's connection pool and semaphore belong to it."""
    return ServedClient(params, key, counters, budget)


def estimate_requests(params: Any, prompts: list[Any]) -> dict[str, Any]:
    """One request per row; prompt tokens estimated from the text (system prompt included), completion
    tokens at most max_new_tokens each; the cost from `price`, if given."""
    system = estimate_tokens(params.system) if params.system else 0
    prompt_tokens = sum(estimate_tokens(p) + system for p in prompts if isinstance(p, str))
    completion_tokens = params.max_new_tokens * len(prompts)
    cost = params.price.cost(prompt_tokens, completion_tokens) if params.price else None
    return {"requests": len(prompts), "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cost_usd": cost}
