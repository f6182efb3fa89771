"""One row's request to an OpenAI-compatible endpoint, with the retry policy of an API-grade client.

The official `openai` SDK (AsyncOpenAI) speaks the protocol, with its own retries off
(`max_retries=0`) so that this policy applies: retry on 429, 5xx, 408, timeouts, dropped
connections and malformed answers, after the server's Retry-After or an exponential backoff with
jitter; any other error (400, 401, 404, ...) fails the row at once with the status and the
server's message. An answer that breaks the stage's JSON Schema is asked for again up to
`schema_retries` times. Every message that leaves this module has the API key blanked out.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from ..budget import CostBudget
from .limits import AdaptiveSlots, Pacer, backoff_seconds, parse_retry_after

CHARS_PER_TOKEN = 4  # a rough, provider-neutral estimate, used only before the server has counted
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class RowFailed(Exception):
    """The row's request finally failed; the message is the row's reason (already redacted)."""


class OverBudget(Exception):
    """The run's cost cap refused this request: the row is not run."""


@dataclass
class Answer:
    text: str
    record: Any
    prompt_tokens: int
    completion_tokens: int
    requests: int


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status


def estimate_tokens(text: str) -> int:
    return -(-len(text.encode()) // CHARS_PER_TOKEN) + 8  # + the chat format's few tokens


class ServedClient:
    """Sends rows' requests; `counters` (shared with the stage) counts requests, retries, tokens and cost."""

    def __init__(self, params: Any, key: str | None, counters: MutableMapping[str, float],
                 budget: CostBudget | None) -> None:
        from openai import AsyncOpenAI

        self.p = params
        self.key = key
        self.counters = counters
        self.budget = budget
        self.openai = AsyncOpenAI(base_url=params.base_url, api_key=key or "no-key-set", max_retries=0,
                                  timeout=params.timeout)
        self.slots = AdaptiveSlots(params.max_concurrency, fixed=not params.adaptive_concurrency)
        self.pacer = Pacer(params.rpm, params.tpm)
        self.rng = random.Random()
        self.validator = _validator(params.json_schema)

    async def close(self) -> None:
        await self.openai.close()

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    async def answer(self, prompt: str | list[dict[str, str]], seed: int) -> Answer:
        """The row's answer (retried as the policy says), or RowFailed / OverBudget."""
        tries = invalid = 0
        used = Answer("", None, 0, 0, 0)
        tokens = estimate_tokens(prompt if isinstance(prompt, str) else json.dumps(prompt)) + self.p.max_new_tokens
        while True:
            try:
                text, prompt_tokens, completion_tokens = await self._attempt(prompt, seed, tokens, used)
            except _Retry as exc:
                tries += 1
                if tries > self.p.max_retries:
                    raise RowFailed(f"{exc} (gave up after {tries} attempts)") from None
                self.counters["retries"] = self.counters.get("retries", 0) + 1
                await asyncio.sleep(backoff_seconds(tries - 1, self.p.retry_backoff, exc.retry_after, self.rng))
                continue
            record, problem = self._parse(text)
            if problem is None:
                return Answer(text, record, prompt_tokens, completion_tokens, used.requests)
            invalid += 1
            self.counters["invalid_answers"] = self.counters.get("invalid_answers", 0) + 1
            if invalid > self.p.schema_retries:
                raise RowFailed(self.redact(f"the answer does not follow json_schema after {invalid} tries: {problem}"))

    async def _attempt(self, prompt: Any, seed: int, tokens: int, used: Answer) -> tuple[str, int, int]:
        """One request: budget, concurrency slot, pacing, the call, the ledger."""
        price = self.p.price
        bound = price.cost(tokens - self.p.max_new_tokens, self.p.max_new_tokens) if price else 0.0
        if self.budget is not None and not self.budget.reserve(bound):
            raise OverBudget()
        cost = 0.0
        try:
            text, prompt_tokens, completion_tokens = await self._in_slot(prompt, seed, tokens, used)
            cost = price.cost(prompt_tokens, completion_tokens) if price else 0.0
        finally:
            if self.budget is not None:
                self.budget.settle(bound, cost)
        for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
            self.counters[name] = self.counters.get(name, 0) + value
        if price:
            self.counters["cost_usd"] = self.counters.get("cost_usd", 0.0) + cost
        return text, prompt_tokens, completion_tokens

    async def _in_slot(self, prompt: Any, seed: int, tokens: int, used: Answer) -> tuple[str, int, int]:
        """The request, in one of the `max_concurrency` slots (fewer after a burst of 429s)."""
        epoch = await self.slots.acquire()
        try:
            await self.pacer.admit(tokens)
            used.requests += 1
            self.counters["requests"] = self.counters.get("requests", 0) + 1
            answer = await self._send(prompt, seed)
        except _Retry as exc:
            if exc.status == 429 and self.slots.throttled(epoch):
                self.counters["concurrency_cuts"] = self.counters.get("concurrency_cuts", 0) + 1
            raise
        finally:
            self.slots.release()
        self.slots.answered_ok()
        return answer

    async def _send(self, prompt: Any, seed: int) -> tuple[str, int, int]:
        """The call itself; transient trouble is raised as _Retry, the rest as RowFailed."""
        import openai

        try:
            response = await self._create(prompt, seed)
            choice = response.choices[0]
            text = (choice.message.content if self.p.api == "chat" else choice.text) or ""
        except openai.APIStatusError as exc:
            reason = self.redact(f"HTTP {exc.status_code}: {_server_message(exc)}")
            if exc.status_code in RETRY_STATUS or exc.status_code >= 500:
                raise _Retry(reason, _retry_after(exc), exc.status_code) from None
            raise RowFailed(reason) from None
        except openai.APITimeoutError:
            raise _Retry(f"no answer within the timeout of {self.p.timeout:g} s") from None
        except openai.APIConnectionError as exc:
            raise _Retry(self.redact(f"connection failed: {exc.__cause__ or exc}")) from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, openai.APIResponseValidationError) as exc:
            raise _Retry(self.redact(f"malformed answer from the server: {type(exc).__name__}: {exc}")) from None
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):  # a server that does not count
            prompt_tokens = estimate_tokens(prompt if isinstance(prompt, str) else json.dumps(prompt))
            completion_tokens = estimate_tokens(text) - 8
        return text, prompt_tokens, completion_tokens

    async def _create(self, prompt: Any, seed: int) -> Any:
        p = self.p
        fields: dict[str, Any] = {"model": p.model, "max_tokens": p.max_new_tokens, "temperature": p.temperature,
                                  "top_p": p.top_p, "seed": seed}
        if p.stop:
            fields["stop"] = p.stop
        if p.extra_body:
            fields["extra_body"] = p.extra_body
        if p.api == "chat":
            if p.json_schema is not None:
                fields["response_format"] = {"type": "json_schema",
                                             "json_schema": {"name": "answer", "schema": p.json_schema}}
            return await self.openai.chat.completions.create(messages=prompt, **fields)
        if p.json_schema is not None:  # not part of the completions protocol; vLLM and SGLang read it
            fields["extra_body"] = {"response_format": {"type": "json_schema",
                                                        "json_schema": {"name": "answer", "schema": p.json_schema}},
                                    **p.extra_body}
        return await self.openai.completions.create(prompt=prompt, **fields)

    def _parse(self, text: str) -> tuple[Any, str | None]:
        """(the answer as an object, None) or (None, what is wrong with it); (None, None) without a schema."""
        if self.validator is None:
            return None, None
        try:
            record = json.loads(text)
        except ValueError as exc:
            return None, f"not JSON ({exc})"
        errors = sorted(self.validator.iter_errors(record), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(map(str, errors[0].absolute_path)) or "the answer"
            return None, f"{where}: {errors[0].message}"
        return record, None


def _validator(schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return None
    import jsonschema

    return jsonschema.validators.validator_for(schema)(schema)


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    milliseconds = parse_retry_after(headers.get("retry-after-ms"))
    return milliseconds / 1000 if milliseconds is not None else parse_retry_after(headers.get("retry-after"))


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:500]
    return str(getattr(exc, "message", exc))[:500]
