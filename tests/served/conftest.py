"""A real OpenAI-compatible server for the served-model tests: `transformers serve` on the tiny LM.

Started once per session on 127.0.0.1 (a free port, CPU only) and stopped after. It needs
fastapi and uvicorn (the test extra); without them the tests that use it skip and say so.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
def served_lm(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedLM]:
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
