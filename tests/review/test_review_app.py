"""The review app's HTTP surface: decisions stored and shown in results.jsonl; refused from other
origins, without the session token or for another Host; files served only from artifacts/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from aigc_pipeline.review.app import TOKEN_HEADER, ReviewApp
from aigc_pipeline.review.decisions import ReviewStore
from aigc_pipeline.store import RunStore
from aigc_pipeline.testing import run_text

XSS = '<script>alert(1)</script><img src=x onerror=alert(2)>'
PIPELINE = """
name: review_demo
inputs: {text: str}
seed: 3
stages:
  line: {uses: template, with: {template: "about {{ text }}"}}
  picture: {uses: test.image, inputs: {text: line.text}, with: {size: 8}}
outputs: {copy: line.text, image: picture.image}
"""
BASE = "http://127.0.0.1:8765"


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    run_text(PIPELINE, [{"text": "sun"}, {"text": XSS}, {"text": "moon"}], folder)
    (tmp_path / "secret.txt").write_text("secret", encoding="utf-8")
    return folder


def _client(out: Path) -> tuple[ReviewApp, TestClient]:
    app = ReviewApp(out)
    return app, TestClient(app.asgi(), base_url=BASE)


def _post(client: TestClient, app: ReviewApp, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/api/decision", json=body, headers={TOKEN_HEADER: app.token, "Origin": BASE, **headers})


def test_decisions_are_stored_escaped_and_written_to_results(out: Path) -> None:
    app, client = _client(out)
    page = client.get("/")
    assert page.status_code == 200 and app.token in page.text
    assert XSS not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    approved = _post(client, app, {"row": "0", "decision": "approved", "note": "<b>fine</b>"})
    assert approved.json()["review"] == "approved"
    assert _post(client, app, {"row": "1", "decision": "rejected", "output": "image"}).json()["review"] == "rejected"
    assert _post(client, app, {"row": "2", "decision": "maybe"}).status_code == 400
    app.flush()
    reviews = [json.loads(line)["review"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert reviews == ["approved", "rejected", "pending"]
    again, client2 = _client(out)  # a restart: the decisions are in the run store
    text = client2.get("/").text
    assert text.count('data-review="approved" tabindex') == 1 and text.count('data-review="rejected" tabindex') == 1
    assert "&lt;b&gt;fine&lt;/b&gt;" in text


def test_requests_from_elsewhere_are_refused(out: Path) -> None:
    app, client = _client(out)
    body = {"row": "0", "decision": "approved"}
    assert _post(client, app, body, Origin="http://evil.example").status_code == 403
    assert client.post("/api/decision", json=body, headers={"Origin": BASE}).status_code == 403  # no token
    assert _post(client, app, body, **{TOKEN_HEADER: "guess"}).status_code == 403
    assert _post(client, app, body, Host="evil.example").status_code == 403  # DNS rebinding
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert ReviewStore.open(out).reviews() == {}


def test_only_artifacts_are_served(out: Path) -> None:
    app, client = _client(out)
    first = json.loads((out / "results.jsonl").read_text().splitlines()[0])["outputs"]["image"]["path"]
    assert client.get("/files/" + first.removeprefix("artifacts/")).status_code == 200
    for path in ("../run.sqlite", "..%2Frun.sqlite", "../results.jsonl", "../../secret.txt", "%2E%2E/run.sqlite",
                 "/etc/passwd", "picture/missing.png"):
        assert client.get(f"/files/{path}").status_code == 404, path
    (out / "artifacts" / "page.html").write_text("<script>fetch('/')</script>", encoding="utf-8")
    served = client.get("/files/page.html")  # a stage's own file, opened alone: sandboxed
    assert served.status_code == 200 and served.headers["content-security-policy"].startswith("sandbox")
    assert served.headers["x-content-type-options"] == "nosniff"
    (out / "artifacts" / "link.png").symlink_to(out.parent / "secret.txt")
    assert client.get("/files/link.png").status_code == 404  # a link out of the folder


def test_an_old_store_gains_the_review_tables_and_still_resumes(out: Path, tmp_path: Path) -> None:
    store = ReviewStore.open(out)
    store.decide("0", "approved")
    store.close()
    result = run_text(PIPELINE, [{"text": "sun"}, {"text": XSS}, {"text": "moon"}], out)
    assert result.summary.stages["picture"].cached == 3  # nothing re-ran: the store is the same store
    opened = RunStore.open(out, {"pipeline": "review_demo", "inputs": {"text": "str"}})
    opened.close()
