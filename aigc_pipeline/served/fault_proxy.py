"""A fault-injecting HTTP proxy in front of an OpenAI-compatible server, for tests and benchmarks.

It is a real server on 127.0.0.1 (asyncio streams, HTTP/1.1 keep-alive) that forwards each
request to the upstream server and, as told, adds latency or answers with a fault instead:

- `429`: Too Many Requests with `Retry-After: 0`; `429-bare`: without Retry-After;
- `500`: an internal server error; `slow`: waits `slow_seconds` (past the client's timeout) first;
- `drop`: closes the connection without an answer; `malformed`: a 200 whose body is not JSON;
- `not-json`: a well-formed answer whose text is not JSON (for structured output);
- `max_in_flight`: a provider's limit on requests in progress: one more is answered 429 (bare);
- `echo-auth`: a 401 whose message repeats the request's Authorization header (as some servers
  do with a wrong key): the client must keep it out of everything it writes.

Faults are drawn per request from a seeded generator (`rate`, `kinds`), or forced for every request
whose body contains a marker (`always`). `wrap_json` turns the upstream text into `{"<field>": text}`
(a tiny random model cannot write JSON). Every request is logged (`log`): its body, fault and status.
Given several upstream servers (replicas of one model), it sends the requests to them in turn, as
a round-robin load balancer in front of a model served by several processes does.
Not part of a pipeline run: it needs httpx (the test extra).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500")
    latency: float = 0.0  # seconds added to every answered request
    seed: int = 0
    always: dict[str, str] = field(default_factory=dict)  # marker in the request body -> fault, every time
    slow_seconds: float = 5.0
    wrap_json: str | None = None
    max_in_flight: int | None = None  # a provider's concurrency limit: 429 (no Retry-After) beyond it


class FaultProxy:
    """`with FaultProxy(upstream, faults) as proxy:` serves on `proxy.base_url` (".../v1")."""

    def __init__(self, upstream: str | list[str], faults: Faults | None = None) -> None:
        self.upstreams = [url.rstrip("/") for url in ([upstream] if isinstance(upstream, str) else upstream)]
        self.turn = 0  # the upstream the next forwarded request goes to
        self.in_flight = self.peak_in_flight = 0  # requests being forwarded (latency included)
        self.faults = faults or Faults()
        self.log: list[dict[str, Any]] = []
        self.rng = random.Random(self.faults.seed)
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy", daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.http: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _start(self) -> None:
        import httpx

        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them, so a
        # request is never sent down a connection the server is closing (a "disconnected" answer).
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024, keepalive_expiry=2.0)
        self.http = httpx.AsyncClient(timeout=None, limits=limits)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:  # e.g. a `slow` answer still waiting
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.http.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._answer(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if not self.loop.is_closed():
                writer.close()

    def _fault_for(self, body: bytes) -> str | None:
        text = body.decode("utf-8", "replace")
        for marker, kind in self.faults.always.items():
            if marker in text:
                return kind
        if self.faults.rate and self.rng.random() < self.faults.rate:
            return self.rng.choice(self.faults.kinds)
        return None

    async def _answer(self, request: tuple[str, str, dict[str, str], bytes], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to be dropped."""
        method, path, headers, body = request
        limit = self.faults.max_in_flight
        fault = self._fault_for(body) or ("429-bare" if limit is not None and self.in_flight >= limit else None)
        entry: dict[str, Any] = {"path": path, "body": _json_or_text(body), "fault": fault}
        self.log.append(entry)
        if fault == "drop":
            return False
        if fault == "echo-auth":
            entry["status"] = 401
            message = f"Incorrect API key provided: {headers.get('authorization', '')}"
            await _write(writer, 401, json.dumps({"error": {"message": message}}).encode(), {})
            return True
        if fault in ("429", "429-bare", "500"):
            status = 500 if fault == "500" else 429
            extra = {"Retry-After": "0"} if fault == "429" else {}
            entry["status"] = status
            await _write(writer, status, json.dumps({"error": {"message": f"injected {fault}"}}).encode(), extra)
            return True
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_seconds)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.faults.latency:
                await asyncio.sleep(self.faults.latency)
            upstream = await self._forward(method, path, headers.get("content-type", "application/json"), body, entry)
        finally:
            self.in_flight -= 1
        payload, status = upstream.content, upstream.status_code
        if status == 200 and (self.faults.wrap_json or fault == "not-json"):
            payload = self._rewrite(payload, fault)
        if fault == "malformed":
            payload = b'{"id": "x", "choices": [{"text": "cut off'
        entry["status"] = status
        await _write(writer, status, payload, {})
        return True

    async def _forward(self, method: str, path: str, content_type: str, body: bytes, entry: dict[str, Any]) -> Any:
        """Send the request to the next upstream in turn. A connection the upstream dropped without an
        answer (its keep-alive closing as the request went out) is tried once more, on the next one,
        as a load balancer does; the log notes it."""
        import httpx

        for attempt in range(2):
            self.turn = (turn := self.turn) + 1
            entry["upstream"] = target = self.upstreams[turn % len(self.upstreams)]
            try:
                return await self.http.request(method, target + path, content=body,
                                               headers={"content-type": content_type})
            except httpx.TransportError:
                if attempt:
                    raise
                entry["upstream_retried"] = True
        raise AssertionError("unreachable")

    def _rewrite(self, payload: bytes, fault: str | None) -> bytes:
        answer = json.loads(payload)
        for choice in answer.get("choices", []):
            holder, name = (choice["message"], "content") if "message" in choice else (choice, "text")
            text = holder.get(name) or ""
            holder[name] = f"not json: {text}" if fault == "not-json" else json.dumps({self.faults.wrap_json: text})
        return json.dumps(answer).encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def _write(writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
