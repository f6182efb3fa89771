"""POST JSON with a timeout and bounded, exponentially spaced retries. Standard library only.

Redirects are not followed (a webhook that moved is a configuration error, and a redirect could
send the payload to another host). Proxies come from the usual environment variables.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .config import WebhookConfig

USER_AGENT = "aigc-webhook/0.1.0"
RETRY_STATUS = {408, 425, 429}  # and every 5xx


class DeliveryError(Exception):
    """A payload could not be delivered; `attempts` says how often it was tried."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect())


def post_json(
    config: WebhookConfig, body: bytes, event: str, sleep: Callable[[float], None] = time.sleep
) -> int:
    """POST `body` to the configured URL; return the number of attempts it took.

    Retries connection errors, timeouts, 5xx, 408, 425 and 429; any other status fails at once.
    Raises DeliveryError when it gives up.
    """
    attempts = config.retries + 1
    last = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            sleep(config.sleep_before(attempt - 1))
        request = urllib.request.Request(config.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Aigc-Event": event})
        try:
            with _OPENER.open(request, timeout=config.timeout) as response:
                response.read()
            return attempt
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}".rstrip()
            if exc.code < 500 and exc.code not in RETRY_STATUS:
                raise DeliveryError(f"{last} (not retried)", attempt) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last = _describe(exc)
        except ValueError as exc:  # e.g. http.client.InvalidURL: retrying cannot help
            raise DeliveryError(f"{type(exc).__name__}: {exc} (not retried)", attempt) from None
    raise DeliveryError(f"gave up after {attempts} attempt{'s' * (attempts > 1)}: {last}", attempts)


def _describe(exc: Exception) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return "timed out"
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
