"""The `aigc` command: parses arguments, calls the engine, prints. No engine logic here.

Exit codes: 0 success (rows may still be filtered or failed: see the summary), 1 the run stopped
early (e.g. a stage failed to load), 2 bad usage or invalid input (pipeline file, input file,
plugins, placement, output folder): nothing ran, 128 + N stopped by signal N (143: SIGTERM,
130: SIGINT; results so far are written, see signals.py).
"""

from __future__ import annotations

import os

import typer

from ..signals import listen
from .outputs import export, history, report, review
from .pipelines import graph, plugins, schema, stages, validate
from .run_command import run
from .tools import init_plugin, make_tiny, train_digits

app = typer.Typer(help="Run declared pipelines of AI content-generation stages over rows of data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Registered here, not by decorators in each module, so `aigc --help` lists them in this order.
for command in (validate, run, report, review, export, schema, stages, history, plugins, graph):
    app.command()(command)

models_app = typer.Typer(help="Model utilities.", no_args_is_help=True)
app.add_typer(models_app, name="models")
models_app.command("make-tiny")(make_tiny)
models_app.command("train-digits")(train_digits)

init_app = typer.Typer(help="Create new projects from templates.", no_args_is_help=True)
app.add_typer(init_app, name="init")
init_app.command("plugin")(init_plugin)


# Model libraries print their own progress bars and advice, which garble the run's display;
# a user who wants them sets these variables (setdefault keeps the user's choice).
QUIET_LIBRARIES = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def main() -> None:
    listen()
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    app()
