"""Acceptance: the first-party plugins in `plugins/` install with pip and work through `aigc`.

Both distributions are built from copies of their sources and installed with
`pip install --target` into a temporary folder (the shared venv is never changed); the `aigc`
subprocesses find them through PYTHONPATH, as for any pip-installed package. Each plugin's own
test suite runs against that installation too. Webhook traffic goes only to a server on
127.0.0.1 started by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aigc_pipeline.row_identity import row_identity

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
DISTRIBUTIONS = ("aigc-brand-kit", "aigc-webhook")
IGNORED = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache", "out")

BRANDED = """\
name: branded
inputs: {color: str}
plugins: [brand_kit]
stages:
  canvas: {uses: test.canvas, inputs: {color: inputs.color}}
  branded: {uses: brand.overlay, inputs: {image: canvas.image},
            with: {logo: logo.png, position: top-left, margin: 4, logo_width: 0.25, opacity: 1.0}}
outputs: {image: branded.image}
"""

COPY = """\
name: copy
inputs: {product: str}
stages:
  brief: {uses: template, with: {template: "buy {{ product }}"}}
  copy: {uses: filter.text, inputs: {text: brief.text}, with: {blocklist: [cheap]}}
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("first_party")
    for name in DISTRIBUTIONS:
        shutil.copytree(PLUGINS / name, root / name, ignore=IGNORED)
    return root


@pytest.fixture(scope="module")
def site(sources: Path) -> Path:
    target = sources / "site"
    # --no-build-isolation: setuptools comes from the venv, so the build needs no index at all.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--quiet", "--target", str(target),
               *(str(sources / name) for name in DISTRIBUTIONS)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return target


def environment(site: Path, *extra_paths: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIGC_WEBHOOK_") and not k.lower().endswith("_proxy")}
    paths = [str(site), *map(str, extra_paths), os.environ.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, paths)), "COLUMNS": "250", "NO_COLOR": "1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **variables}


def aigc(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("aigc")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "aigc_pipeline.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def results(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def write_logo(path: Path) -> Path:
    logo = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    logo.paste((255, 0, 0, 255), (0, 0, 20, 20))
    logo.save(path)
    return path


def test_stages_and_plugins_list_the_first_party_plugins(site: Path, tmp_path: Path) -> None:
    env = environment(site)
    stages = aigc(env, tmp_path, "stages")
    assert stages.returncode == 0, stages.stderr
    assert "brand.overlay  (brand_kit)  Put a logo or a line of text on each image" in stages.stdout
    assert "brand.voice  (brand_kit)  Check text against a brand file" in stages.stdout
    plugins = aigc(env, tmp_path, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    webhook = next(line for line in plugins.stdout.splitlines() if "│ webhook " in line)
    assert "entry point (aigc-webhook 0.1.0)" in webhook
    assert "aigc_item_finished, aigc_run_finish, aigc_run_start" in webhook
    brand_kit = next(line for line in plugins.stdout.splitlines() if "│ brand_kit " in line)
    assert "entry point (aigc-brand-kit 0.1.0)" in brand_kit and "brand.overlay, brand.voice" in brand_kit


def test_brand_voice_example_runs_as_its_readme_says(site: Path, sources: Path) -> None:
    folder = sources / "aigc-brand-kit"
    done = aigc(environment(site), folder, "run", "examples/voice.yaml", "-i", "examples/rows.jsonl", "-o",
                "out/voice", "-q")
    assert done.returncode == 0, done.stderr
    rows = results(folder / "out" / "voice")
    assert [row["status"] for row in rows] == ["done", "filtered", "filtered"]
    assert rows[0]["outputs"] == {"copy": "Acme kettle: simple, warm mornings."}
    assert rows[1]["error"]["reason"].startswith("forbidden term(s): cheap, guaranteed")


def test_brand_overlay_runs_and_a_corrupt_image_fails_only_its_row(site: Path, sources: Path, tmp_path: Path) -> None:
    # The image source is the plugin's test-only stage, imported explicitly with --plugin.
    env = environment(site, sources / "aigc-brand-kit" / "tests")
    write_logo(tmp_path / "logo.png")
    (tmp_path / "p.yaml").write_text(BRANDED)
    (tmp_path / "rows.jsonl").write_text('{"color": "blue"}\n{"color": "corrupt"}\n{"color": "green"}\n')
    done = aigc(env, tmp_path, "run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "--plugin", "canvas_stage", "-q")
    assert done.returncode == 0, done.stderr
    rows = results(tmp_path / "out")
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[1]["error"]["stage"] == "branded"
    assert rows[1]["error"]["reason"].startswith(
        f"cannot brand image 'artifacts/canvas/{row_identity({'color': 'corrupt'})}.image.png': UnidentifiedImageError")
    written = rows[2]["outputs"]["image"]  # a path, or {"path": ..., **metadata}
    relpath = written if isinstance(written, str) else written["path"]
    assert relpath == f"artifacts/branded/{row_identity({'color': 'green'})}.image.png"
    with Image.open(tmp_path / "out" / relpath) as image:
        assert image.getpixel((6, 6)) == (255, 0, 0) and image.getpixel((90, 60)) == (0, 128, 0)


def test_a_corrupt_logo_stops_the_run_before_any_row_naming_stage_and_file(
    site: Path, sources: Path, tmp_path: Path
) -> None:
    env = environment(site, sources / "aigc-brand-kit" / "tests")
    (tmp_path / "logo.png").write_bytes(b"not an image")
    (tmp_path / "p.yaml").write_text(BRANDED)
    (tmp_path / "rows.jsonl").write_text('{"color": "blue"}\n')
    done = aigc(env, tmp_path, "run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "--plugin", "canvas_stage", "-q")
    assert done.returncode == 2
    assert "stage 'branded' (brand.overlay): logo 'logo.png' is not a readable image" in done.stderr
    assert not (tmp_path / "out" / "artifacts").exists()


class Recorder:
    """A real HTTP endpoint on 127.0.0.1 that answers 200 and keeps every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server naming
                recorder.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield recorder
    recorder.server.shutdown()
    recorder.server.server_close()


@pytest.mark.parametrize("how", ["pipeline", "flag"])
def test_webhook_reports_a_cli_run(site: Path, tmp_path: Path, recorder: Recorder, how: str) -> None:
    env = environment(site, AIGC_WEBHOOK_URL=recorder.url, AIGC_WEBHOOK_ROWS="1")
    (tmp_path / "p.yaml").write_text(COPY + ("plugins: [webhook]\n" if how == "pipeline" else ""))
    (tmp_path / "rows.jsonl").write_text('{"product": "kettle"}\n{"product": "cheap lamp"}\n')
    flag = ["--plugin", "aigc_webhook"] if how == "flag" else []
    done = aigc(env, tmp_path, "run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "-q", *flag)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    assert [body["event"] for body in recorder.bodies] == ["row.finished", "row.finished", "run.finished"]
    summary = recorder.bodies[-1]
    assert summary["pipeline"] == "copy" and summary["ok"] is True
    assert summary["counts"]["done"] == 1 and summary["counts"]["filtered"] == 1
    assert summary["rows_delivery"] == {"sent": 2, "failed": 0, "skipped": 0}


def test_webhook_endpoint_down_does_not_fail_the_cli_run(site: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = environment(site, AIGC_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook?key=secret", AIGC_WEBHOOK_RETRIES="2",
                      AIGC_WEBHOOK_BACKOFF="0.01")
    (tmp_path / "p.yaml").write_text(COPY + "plugins: [webhook]\n")
    (tmp_path / "rows.jsonl").write_text('{"product": "kettle"}\n')
    started = time.monotonic()
    done = aigc(env, tmp_path, "run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "-q")
    assert time.monotonic() - started < 20
    assert done.returncode == 0, done.stderr
    assert results(tmp_path / "out")[0]["status"] == "done"
    assert f"warning: webhook: run summary not delivered to http://127.0.0.1:{port}/hook (" in done.stderr
    assert "gave up after 3 attempts: ConnectionRefusedError" in done.stderr and "secret" not in done.stderr


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_the_plugin_test_suite_passes_against_the_installed_plugin(site: Path, sources: Path, name: str) -> None:
    # The venv's pytest script, not `python -m pytest`, so the package comes from the install, not the folder.
    pytest_script = Path(sys.executable).with_name("pytest")
    done = subprocess.run([str(pytest_script), "-q", "-p", "no:cacheprovider"], cwd=sources / name,
                          capture_output=True, text=True, env=environment(site), timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
