"""Shared fixtures: the broken pipeline files (each with the error it must produce) and tiny models.

Every file in `broken_pipelines/` starts with comment lines that state what rejecting it must say:

    # expect: <text the problem line must contain>
    # line: <the line the problem must point at>
    # column: / stage: / field: / hint: <optional, checked when given>
    # xfail: <why the engine cannot do this yet>   (optional; strict)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mp4_checks import CHROMIUM, CHROMIUM_ARGS, play

ROOT = Path(__file__).resolve().parent.parent
BROKEN_DIR = Path(__file__).resolve().parent / "broken_pipelines"
SAMPLE = ROOT / "pipelines" / "product_copy.yaml"
_HEADER = re.compile(r"^# (expect|line|column|stage|field|hint|xfail): (.*)$")


@dataclass
class BrokenCase:
    path: Path
    expect: str
    line: int
    optional: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> BrokenCase:
        header: dict[str, str] = {}
        for text in path.read_text(encoding="utf-8").splitlines():
            match = _HEADER.match(text)
            if not match:
                break
            header[match.group(1)] = match.group(2).strip()
        assert "expect" in header and "line" in header, f"{path.name}: needs '# expect:' and '# line:' first"
        line = int(header.pop("line"))
        return cls(path, header.pop("expect"), line, header)

    def matches(self, problem: object) -> bool:
        """Whether one Problem says and points at what this case expects."""
        wanted = {"line": self.line, **{k: v for k, v in self.optional.items() if k in ("stage", "field")}}
        if "column" in self.optional:
            wanted["column"] = int(self.optional["column"])
        if any(getattr(problem, key) != value for key, value in wanted.items()):
            return False
        hint = self.optional.get("hint")
        return self.expect in str(problem) and (hint is None or hint in (getattr(problem, "hint", None) or ""))


def _broken_params() -> list[Any]:
    params: list[Any] = []
    for path in sorted(BROKEN_DIR.glob("*.yaml")):
        case = BrokenCase.read(path)
        reason = case.optional.get("xfail")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=path.stem, marks=marks))
    return params


@pytest.fixture(params=_broken_params())
def broken(request: pytest.FixtureRequest) -> BrokenCase:
    """One broken pipeline file with the problem it must produce."""
    return request.param  # type: ignore[no-any-return]


class TinyModels:
    """Builds each tiny model kind at most once per test session, on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Path] = {}

    def __call__(self, kind: str) -> Path:
        if kind not in self.built:
            from aigc_pipeline.tiny import make_tiny

            self.built.update(make_tiny(self.root, [kind], seed=0))
        return self.built[kind]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """`tiny_model("lm")` -> the folder of a tiny random-weight model (built once per session)."""
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def models_dir(tiny_model: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder whose models/tiny/* are the session's tiny models (the paths the example
    pipelines in pipelines/ use); the test runs in it."""
    import shutil

    for kind in ("lm", "sd"):
        target = tmp_path / "models" / "tiny" / kind
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tiny_model(kind), target)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# A real OpenAI-compatible server for the served-model tests (tests/served): `transformers serve`
# on the tiny LM, started once per session on 127.0.0.1 (a free port, CPU only) and stopped after.
# It needs fastapi and uvicorn (the test extra); without them the tests that use it skip and say so.

START_TIMEOUT = 180  # seconds: importing torch + transformers on a loaded 2-core machine


@dataclass
class ServedLM:
    folder: Path  # the model folder (also the served model's name)
    base_url: str  # http://127.0.0.1:PORT/v1
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def served_lm(tiny_model: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedLM]:
    missing = [name for name in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"`transformers serve` needs {', '.join(missing)} (pip install -e '.[test]')")
    folder = tiny_model("lm")
    port = free_port()
    log = tmp_path_factory.mktemp("served") / "serve.log"
    command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", str(folder),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`transformers serve` did not start within {START_TIMEOUT} s:\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield ServedLM(folder, f"http://127.0.0.1:{port}/v1", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Module scope: Playwright allows one sync session at a time, and other test modules start their own.
@pytest.fixture(scope="module")
def browser_play() -> Iterator[Callable[[Path, list[str]], list[tuple[int, float]]]]:
    """`browser_play(root, relpaths)` -> (readyState, duration) of each video in headless Chromium,
    served from `root` over HTTP on 127.0.0.1."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh installs it when run as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield functools.partial(play, browser)
        finally:
            browser.close()
