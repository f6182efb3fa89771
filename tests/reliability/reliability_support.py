"""Helpers of the reliability suite: `aigc` in-process (exit code + output), a small tmpfs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app

TEXT_PIPELINE = """
name: t
inputs: {text: str}
stages:
  p: {uses: template, with: {template: "x {{ text }}"}}
outputs: {t: p.text}
"""


def aigc(*args: str) -> tuple[int, str]:
    """Run `aigc ARGS` in this process: (exit code, stdout + stderr). An uncaught exception fails the test."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        raise AssertionError(f"a traceback: {type(exc).__name__}: {exc}") from exc
    return result.exit_code, result.output


@contextmanager
def small_tmpfs(parent: Path, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted under `parent` for the block (root only, where the kernel allows it);
    skips the test otherwise. Disk-full and read-only cases need a real file system that says so."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = parent / "tmpfs"
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
