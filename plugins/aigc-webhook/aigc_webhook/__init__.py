"""aigc-webhook: POST each run's summary (and optionally every finished row) as JSON to a URL.

A hook plugin: it adds no stage types, it observes runs. Configure it with environment variables
(see `aigc_webhook.config`): `AIGC_WEBHOOK_URL` (required to do anything), `AIGC_WEBHOOK_ROWS=1`,
`AIGC_WEBHOOK_TIMEOUT`, `AIGC_WEBHOOK_RETRIES`, `AIGC_WEBHOOK_BACKOFF`.

Registered through the entry-point group `aigc_pipeline` as `webhook`. `aigc run` imports only the
plugins a pipeline needs, so a pipeline that wants it says `plugins: [webhook]` (or run with
`--plugin aigc_webhook`).

A failing endpoint never fails a run: deliveries are retried with exponential backoff, bounded
in time, and what could not be delivered becomes a warning in the run summary. A configuration
error (e.g. `AIGC_WEBHOOK_TIMEOUT=abc`) is raised at run start, so the engine reports it as a
warning naming this plugin, and the run goes on without the webhook.

State: one run at a time per process (the engine's observer hooks carry no run handle).
"""

from __future__ import annotations

import threading

from aigc_pipeline import ItemResult, RunInfo, RunSummary, hookimpl

from .config import WebhookConfig, WebhookConfigError
from .delivery import RunDelivery
from .http import DeliveryError, post_json

__version__ = "0.1.0"

__all__ = [
    "DeliveryError",
    "WebhookConfig",
    "WebhookConfigError",
    "__version__",
    "aigc_item_finished",
    "aigc_run_finish",
    "aigc_run_start",
    "post_json",
]


class _Current:
    """The delivery of the run in progress, if a URL is configured."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivery: RunDelivery | None = None


_current = _Current()


@hookimpl
def aigc_run_start(run: RunInfo) -> None:
    """Read the configuration (raising WebhookConfigError names the bad variable) and get ready."""
    with _current.lock:
        _current.delivery = None
        config = WebhookConfig.from_env()
        if config is not None:
            _current.delivery = RunDelivery(config, run)


@hookimpl
def aigc_item_finished(result: ItemResult) -> None:
    """Queue the finished row when AIGC_WEBHOOK_ROWS is on (posted by a background thread)."""
    delivery = _current.delivery
    if delivery is not None:
        delivery.row(result)


@hookimpl
def aigc_run_finish(run: RunInfo, summary: RunSummary) -> None:
    """Post the run summary; failures become warnings on `summary`, never exceptions."""
    with _current.lock:
        delivery, _current.delivery = _current.delivery, None
    if delivery is not None:
        delivery.finish(run, summary)
