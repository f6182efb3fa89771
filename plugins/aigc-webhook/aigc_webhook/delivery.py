"""One run's deliveries: finished rows through a background sender, the summary at the end.

Rows are queued by `aigc_item_finished` and posted by one background thread, so a slow endpoint
never holds up the pipeline. Once a row cannot be delivered (every retry spent), the remaining
rows are skipped rather than each waiting out its own retries: a dead endpoint costs one
delivery's worth of time, not one per row. At the end, queued rows get at most
`DRAIN_SECONDS` (or one delivery's bound, if longer); then the summary is posted.

Nothing here raises into the engine: every failure becomes a warning on the run summary.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import asdict
from typing import Any, cast

from aigc_pipeline import Artifact, ItemResult, RunInfo, RunSummary

from .config import WebhookConfig
from .http import DeliveryError, post_json

DRAIN_SECONDS = 10.0
_STOP = object()


def encode(payload: dict[str, Any]) -> bytes:
    """JSON bytes, artifacts as in results.jsonl; other values JSON cannot hold as strings."""
    return json.dumps(payload, ensure_ascii=False, default=_json_value).encode("utf-8")


def _json_value(value: Any) -> Any:
    if isinstance(value, Artifact):
        return {"path": value.relpath, **value.metadata}
    return str(value)


def summary_payload(run: RunInfo, summary: RunSummary, rows: dict[str, int] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": "run.finished",
        "pipeline": run.name,
        "pipeline_file": run.pipeline_file,
        "out_dir": run.out_dir,
        "devices": run.devices,
        "ok": summary.ok,
        "error": summary.error,
        "rows": run.rows,
        "counts": summary.counts,
        "seconds": round(summary.seconds, 3),
        "stages": {stage_id: asdict(stats) for stage_id, stats in summary.stages.items()},
        "warnings": list(summary.warnings),
    }
    if rows is not None:
        payload["rows_delivery"] = rows
    return payload


def row_payload(pipeline: str, result: ItemResult) -> dict[str, Any]:
    return {"event": "row.finished", "pipeline": pipeline, **result.as_dict()}


class RowSender:
    """Posts queued rows from one background thread; counts sent, failed and skipped rows."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.queued = self.sent = self.failed = 0
        self.error: str | None = None  # the first reason a row was not delivered
        self.endpoint_down = False  # set once a delivery spent every retry: later rows are skipped
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="aigc-webhook-rows", daemon=True)
        self._thread.start()

    def put(self, body: bytes) -> None:
        with self._lock:
            self.queued += 1
        self._queue.put(body)

    def reject(self, reason: str) -> None:
        """Count a row that cannot be sent at all (keeps the first reason)."""
        with self._lock:
            self.queued, self.failed = self.queued + 1, self.failed + 1
            self.error = self.error or reason

    def _work(self) -> None:
        while (body := self._queue.get()) is not _STOP:
            with self._lock:
                if self.endpoint_down or self._closed:
                    continue  # counted as skipped
            try:
                post_json(self.config, cast(bytes, body), "row.finished")
            except Exception as exc:  # DeliveryError, or a bug here: either way, stop sending rows
                reason = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.error, self.failed, self.endpoint_down = self.error or reason, self.failed + 1, True
            else:
                with self._lock:
                    self.sent += 1

    def close(self) -> dict[str, int]:
        """Let queued rows go out, for a bounded time; return sent / failed / skipped counts."""
        self._queue.put(_STOP)
        self._thread.join(max(DRAIN_SECONDS, self.config.longest_delivery()))
        with self._lock:
            self._closed = True  # a sender still busy drops the rest: the run is over
            return {"sent": self.sent, "failed": self.failed, "skipped": self.queued - self.sent - self.failed}


class RunDelivery:
    """What the webhook does for one run; created at run start when a URL is configured."""

    def __init__(self, config: WebhookConfig, run: RunInfo) -> None:
        self.config = config
        self.pipeline = run.name
        self.rows = RowSender(config) if config.rows else None

    def row(self, result: ItemResult) -> None:
        if self.rows is not None:
            try:
                body = encode(row_payload(self.pipeline, result))
            except ValueError as exc:  # e.g. a circular structure in an output
                self.rows.reject(f"row {result.row} cannot be written as JSON: {exc}")
                return
            self.rows.put(body)

    def finish(self, run: RunInfo, summary: RunSummary) -> None:
        """Post the summary; report what could not be delivered as warnings on the summary."""
        where = self.config.shown_url
        counts = self.rows.close() if self.rows is not None else None
        if counts is not None and (counts["failed"] or counts["skipped"]):
            summary.warnings.append(  # the summary's warnings are printed after the run
                f"webhook: {counts['failed'] + counts['skipped']} of {sum(counts.values())} row(s) not delivered "
                f"to {where}: {self.rows.error if self.rows and self.rows.error else 'the run ended first'}")
        started = time.monotonic()
        try:
            post_json(self.config, encode(summary_payload(run, summary, counts)), "run.finished")
        except Exception as exc:  # DeliveryError, or a bug here: the run must not fail for it
            reason = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            summary.warnings.append(f"webhook: run summary not delivered to {where} "
                                    f"({time.monotonic() - started:.1f}s): {reason}")
