"""The webhook's configuration, read from environment variables at the start of each run.

A hook plugin has no `with:` params, so the environment configures it:

    AIGC_WEBHOOK_URL      http(s) URL to POST to; unset or empty: the plugin does nothing
    AIGC_WEBHOOK_ROWS     1/true/yes: also POST every finished row (default 0)
    AIGC_WEBHOOK_TIMEOUT  seconds per attempt (connect and each read), default 10, at most 300
    AIGC_WEBHOOK_RETRIES  retries after a failed attempt, default 3, at most 10
    AIGC_WEBHOOK_BACKOFF  seconds before the first retry, doubling each time (at most 30), default 0.5
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from aigc_pipeline import AigcError

MAX_SLEEP = 30.0
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class WebhookConfigError(AigcError):
    """An AIGC_WEBHOOK_* variable has a value the plugin cannot use; names the variable."""


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    rows: bool = False
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookConfig | None:
        """The configuration in `environ` (default: os.environ); None when no URL is set."""
        env = os.environ if environ is None else environ
        url = env.get("AIGC_WEBHOOK_URL", "").strip()
        if not url:
            return None
        return cls(
            url=_checked_url(url),
            rows=_flag(env, "AIGC_WEBHOOK_ROWS"),
            timeout=_number(env, "AIGC_WEBHOOK_TIMEOUT", cls.timeout, low=0.001, high=300),
            retries=int(_number(env, "AIGC_WEBHOOK_RETRIES", cls.retries, low=0, high=10, whole=True)),
            backoff=_number(env, "AIGC_WEBHOOK_BACKOFF", cls.backoff, low=0, high=MAX_SLEEP),
        )

    def sleep_before(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): exponential, capped."""
        return min(self.backoff * 2 ** (retry - 1), MAX_SLEEP)

    def longest_delivery(self) -> float:
        """An upper bound on the seconds one delivery may take, every retry and wait included."""
        attempts = self.retries + 1
        return attempts * self.timeout + sum(self.sleep_before(n) for n in range(1, attempts))

    @property
    def shown_url(self) -> str:
        """The URL without credentials, query or fragment: safe to print in warnings."""
        return redact(self.url)


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise WebhookConfigError(f"AIGC_WEBHOOK_URL is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(
            f"AIGC_WEBHOOK_URL must be an http:// or https:// URL with a host, got {redact(url)!r}")
    return url


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise WebhookConfigError(f"{name} must be 1 or 0 (or true/false, yes/no), got {value!r}")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float, whole: bool = False) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise WebhookConfigError(f"{name} must be {kind}, got {text!r}") from None
    if not low <= value <= high:
        raise WebhookConfigError(f"{name} must be between {low:g} and {high:g}, got {text!r}")
    return value
