"""Helpers of the reliability suite: `aigc` in-process (exit code + output)."""

from __future__ import annotations

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
