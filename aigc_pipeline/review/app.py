"""`aigc review OUT`: a small local web app over a run's gallery, to approve or reject rows.

The page is the report's gallery (`report.py`, `gallery.py`) with review controls on every card:
approve, reject, a note, the row's takes to switch between, and a reject button per output.
Keyboard: j/k (or arrows) move between cards, a approves, r rejects, u undoes, n writes a note,
t switches take. Decisions go to the run store (`decisions.py`) at once; `results.jsonl` gets the
review fields a moment later and again when the app stops.

Security: it binds to 127.0.0.1 by default; it answers only requests whose Host is the address it
serves (no DNS rebinding); a decision must carry the session's token (set in the page it served)
and, when the browser sends an Origin, that Origin must be the app's own (no cross-site requests);
it serves only files inside the output folder's `artifacts/`; every row value is escaped.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ReviewError
from ..gallery import e, row_id
from ..manifest import read_manifest
from ..report import Page, read_inputs, render
from ..report_scan import DEFAULT_ROWS, scan_results
from ..sinks import RESULTS_FILE
from .decisions import DECISIONS, WHOLE_ROW, ReviewStore, RowReview
from .results import annotate_results
from .takes_view import takes_html

TOKEN_HEADER = "x-review-token"
ANNOTATE_DELAY_S = 1.0


class ReviewApp:
    """The review app of one output folder; `asgi()` builds the Starlette application."""

    def __init__(self, out_dir: Path, host: str = "127.0.0.1", port: int = 8765, rows: int | None = DEFAULT_ROWS):
        self.out_dir = out_dir.resolve()
        self.artifacts = self.out_dir / "artifacts"
        self.rows = rows
        self.token = secrets.token_urlsafe(24)
        self.store = ReviewStore.open(self.out_dir)
        self.allowed_hosts = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def asgi(self, ready: Any = None) -> Any:
        """The Starlette application; `ready()` is called once it is up, `flush` when it stops."""
        from contextlib import asynccontextmanager

        from starlette.applications import Starlette
        from starlette.routing import Route

        @asynccontextmanager
        async def lifespan(_: Any) -> Any:
            if ready is not None:
                ready()
            yield
            self.flush()

        routes = [Route("/", self.page), Route("/files/{path:path}", self.file),
                  Route("/api/decision", self.decision, methods=["POST"])]
        return Starlette(routes=routes, lifespan=lifespan)

    def _host_ok(self, request: Any) -> bool:
        return request.headers.get("host", "") in self.allowed_hosts

    async def page(self, request: Any) -> Any:
        from starlette.responses import HTMLResponse, PlainTextResponse

        if not self._host_ok(request):
            return PlainTextResponse("unknown host", status_code=403)
        return HTMLResponse(self.render_page(), headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                         "Referrer-Policy": "no-referrer"})

    def render_page(self) -> str:
        reviews = self.store.reviews()
        scan = scan_results(self.out_dir / RESULTS_FILE, self.rows)
        for record in scan.shown:
            review = reviews.get(row_id(record))
            record["review"] = review.status if review is not None else "pending"
        manifest = read_manifest(self.out_dir) or {}
        outputs = _output_names(manifest)
        page = Page(link=_app_link, script="report.js review.js", connect=True,
                    head=f'\n<meta name="review-token" content="{e(self.token)}">',
                    card_extra=lambda record: self._controls(record, reviews.get(row_id(record)), outputs))
        text = render(scan, manifest, read_inputs(manifest, scan.shown), [], page)
        help_box = ('<p id="help"><kbd>j</kbd>/<kbd>k</kbd> move · <kbd>a</kbd> approve · <kbd>r</kbd> reject · '
                    '<kbd>u</kbd> undo · <kbd>n</kbd> note · <kbd>t</kbd> take · <kbd>/</kbd> search</p>')
        return text.replace('<div id="lightbox" hidden></div>', help_box + '<div id="lightbox" hidden></div>', 1)

    def _controls(self, record: dict[str, Any], review: RowReview | None, outputs: list[str]) -> str:
        takes = self.store.takes(row_id(record)) if review is not None and review.current_take else []
        whole = review.decisions.get(WHOLE_ROW) if review is not None else None
        note = whole.note if whole is not None else ""
        decisions = review.decisions.items() if review is not None else ()
        rejected = [name for name, d in decisions if name and d.decision == "rejected"]
        return (f'{takes_html(takes, review, _app_link)}<div class="review" data-outputs="{e(",".join(outputs))}" '
                f'data-rejected-outputs="{e(",".join(rejected))}">'
                '<button class="approve" data-decide="approved" title="approve (a)">✓ approve</button>'
                '<button class="reject" data-decide="rejected" title="reject (r)">✗ reject</button>'
                f'<input class="note" placeholder="note (n)" value="{e(note)}" maxlength="2000"></div>')

    async def file(self, request: Any) -> Any:
        from starlette.responses import FileResponse, PlainTextResponse

        path = self.artifact_path(request.path_params["path"])
        if path is None or not self._host_ok(request):
            return PlainTextResponse("not found", status_code=404)
        # An artifact opened on its own (an .svg or .html a plugin wrote) runs sandboxed, in an
        # origin of its own: it can never read the page's token or post a decision.
        return FileResponse(path, headers={"Content-Security-Policy": "sandbox; default-src 'none'",
                                           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    def artifact_path(self, relative: str) -> Path | None:
        """The file under the output folder's artifacts/ that `relative` names, or None (outside, or missing)."""
        try:
            path = (self.artifacts / relative).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return None
        inside = path.is_relative_to(self.artifacts.resolve()) and path.is_relative_to(self.out_dir)
        return path if inside and path.is_file() else None

    async def decision(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        refused = self._refusal(request)
        if refused:
            return JSONResponse({"error": refused}, status_code=403)
        try:
            body = await request.json()
            row, decision = str(body["row"]), str(body["decision"])
            output, note = str(body.get("output") or WHOLE_ROW), str(body.get("note") or "")[:2000]
            take = body.get("take")
            if decision not in DECISIONS or (take is not None and not isinstance(take, int)):
                raise ReviewError(f"bad decision {decision!r} or take {take!r}")
            row = self.store.decide(row, decision, output, note, take)  # (a row number: that row's identity)
        except (ValueError, KeyError, TypeError, ReviewError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        review = self.store.reviews().get(row)
        self._annotate_soon()
        return JSONResponse({"row": row, "review": review.status if review else "pending"})

    def _refusal(self, request: Any) -> str | None:
        """Why a state-changing request is refused (None: it may go on)."""
        if not self._host_ok(request):
            return "unknown host"
        origin = request.headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in self.allowed_hosts:
            return "cross-origin request refused"
        token = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return "missing or wrong session token (reload the page)"
        return None

    def _annotate_soon(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(ANNOTATE_DELAY_S, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the review fields into results.jsonl now."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        annotate_results(self.out_dir, self.store)


def _app_link(path: str) -> str:
    from urllib.parse import quote

    return "/files/" + quote(path.removeprefix("artifacts/"))


def _output_names(manifest: dict[str, Any]) -> list[str]:
    """The pipeline's per-row output names, from the manifest's pipeline text."""
    import yaml

    try:
        spec = yaml.safe_load((manifest.get("pipeline") or {}).get("text") or "") or {}
    except yaml.YAMLError:
        return []
    outputs = spec.get("outputs") if isinstance(spec, dict) else None
    return [str(name) for name in outputs] if isinstance(outputs, dict) else []


def serve(out_dir: Path, host: str, port: int, rows: int | None, ready: Any = None) -> None:
    """Run the app until Ctrl-C. `ready(url)` is called once it listens."""
    import uvicorn

    app = ReviewApp(out_dir, host, port, rows)
    url = f"http://{host}:{port}/"
    server = uvicorn.Server(uvicorn.Config(app.asgi(), host=host, port=port, log_level="warning", access_log=False))

    def announce() -> None:  # once the socket listens, so the printed URL answers at once
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started and ready is not None:
            ready(url)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        app.flush()
        app.store.close()
