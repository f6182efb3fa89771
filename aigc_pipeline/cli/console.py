"""What every `aigc` command shares: the consoles, the common options, and how a user error or a
stop signal ends a command (a message and an exit code, never a traceback)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import AigcError, PipelineFileError, Problem

out = Console()
err = Console(stderr=True)

PluginOpt = Annotated[Optional[list[str]], typer.Option("--plugin", help="import and register this plugin module (explicit; pipeline files cannot)")]  # noqa: UP045, E501
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a stage param: STAGE.PARAM=VALUE (YAML value)")]  # noqa: UP045, E501
FileArg = Annotated[Path, typer.Argument(help="pipeline file (YAML)")]


def fail(exc: AigcError, code: int = 2) -> None:
    # One problem per line, never wrapped (soft_wrap): each line starts with file:line:column, so
    # editors and grep can jump to it; at most 20 of them, so the message fits on one screen.
    if isinstance(exc, PipelineFileError):
        errors = [p for p in exc.problems if p.severity == "error"]
        where = escape(errors[0].file if errors else "pipeline")
        err.print(f"[bold red]error:[/] {where} is invalid ({len(errors)} problem{'s' * (len(errors) != 1)}); "
                  "nothing was loaded or run", highlight=False, soft_wrap=True)
        for problem in exc.problems[:20]:
            err.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        if len(exc.problems) > 20:
            err.print(f"  ... and {len(exc.problems) - 20} more", highlight=False)
    else:
        err.print("error: " + str(exc), style="red", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(warnings: list[Problem]) -> None:
    for warning in warnings:
        err.print(f"  {warning}", style="yellow", highlight=False, markup=False, soft_wrap=True)


def exit_after_signal(signum: int) -> None:
    """Exit with 128 + the signal's number, as a shell reports a process the signal ended. Through
    os._exit: micro-batches abandoned after the grace period may still be running in model code,
    and waiting for them (or tearing down under them) is what the signal asked not to do."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)
