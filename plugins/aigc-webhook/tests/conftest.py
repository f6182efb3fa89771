"""Fixtures: a real HTTP endpoint on 127.0.0.1 (see http_endpoint.py), a closed port, a clean environment.

No test sends anything anywhere else: proxy variables are cleared and 127.0.0.1 bypasses proxies.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from http_endpoint import Endpoint, serve

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CONFIG_VARIABLES = ("URL", "ROWS", "TIMEOUT", "RETRIES", "BACKOFF")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with serve() as endpoint:
        yield endpoint


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(f"AIGC_WEBHOOK_{name}", raising=False)
