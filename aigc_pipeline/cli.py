"""The `aigc` command: parses arguments, calls the engine, prints. No engine logic here.

Exit codes: 0 success (rows may still be filtered or failed: see the summary), 1 the run stopped
early (e.g. a stage failed to load), 2 bad usage or invalid input (pipeline file, input file,
plugins, placement, output folder): nothing ran, 128 + N stopped by signal N (143: SIGTERM,
130: SIGINT; results so far are written, see signals.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .devices import Device
from .engine import Engine, estimate
from .errors import AigcError, PipelineFileError, Problem
from .progress import RichProgress, gpu_lines
from .residency import MemoryCap, format_bytes
from .signals import listen, received
from .spec import pipeline_json_schema

app = typer.Typer(help="Run declared pipelines of AI content-generation stages over rows of data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)

PluginOpt = Annotated[Optional[list[str]], typer.Option("--plugin", help="import and register this plugin module (explicit; pipeline files cannot)")]  # noqa: UP045, E501
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a stage param: STAGE.PARAM=VALUE (YAML value)")]  # noqa: UP045, E501
FileArg = Annotated[Path, typer.Argument(help="pipeline file (YAML)")]


def _fail(exc: AigcError, code: int = 2) -> None:
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


def _warn(warnings: list[Problem]) -> None:
    for warning in warnings:
        err.print(f"  {warning}", style="yellow", highlight=False, markup=False, soft_wrap=True)


@app.command()
def validate(file: FileArg, set_: SetOpt = None, plugin: PluginOpt = None) -> None:
    """Check a pipeline file completely (schema, params, references, types, cycles) without running it."""
    try:
        graph = Engine(plugins=plugin).load(file, set_ or [])
    except AigcError as exc:
        _fail(exc)
    _warn(graph.warnings)
    out.print(f"ok: {file} — pipeline '{graph.pipeline.spec.name}', {len(graph.order)} stages: "
              + " → ".join(graph.order), highlight=False, markup=False, soft_wrap=True)


@app.command()
def run(
    file: FileArg,
    input: Annotated[Path, typer.Option("--input", "-i", help="rows: .csv or .jsonl")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder (results.jsonl, artifacts)")] = Path("out"),  # noqa: E501
    limit: Annotated[Optional[int], typer.Option(help="run only the first N rows", min=0)] = None,  # noqa: UP045
    set_: SetOpt = None,
    plugin: PluginOpt = None,
    device: Annotated[Optional[str], typer.Option(help="device for model stages: cpu, cuda, cuda:N")] = None,  # noqa: UP045
    gpu_memory: Annotated[Optional[str], typer.Option(help="cap on each GPU's memory for models: e.g. 6GiB, 0.5 (of the total); models that do not fit together run in phases")] = None,  # noqa: UP045, E501
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard the results stored in the output folder and run everything")] = False,  # noqa: E501
    executor: Annotated[Optional[str], typer.Option(help="where stages run: local (this process, the default), ray, or a backend a plugin registers")] = None,  # noqa: UP045, E501
    ray_address: Annotated[Optional[str], typer.Option(help="join this Ray cluster (e.g. auto, ray://head:10001); implies --executor ray")] = None,  # noqa: UP045, E501
    retake: Annotated[Optional[str], typer.Option("--retake", help="rejected: another take (a new seed) of the rows rejected in aigc review, and only of those")] = None,  # noqa: UP045, E501
    rerun: Annotated[Optional[list[str]], typer.Option("--rerun", metavar="STAGE", help="run this stage again instead of reusing its stored results (and what its new outputs change); repeatable")] = None,  # noqa: UP045, E501
    format_: Annotated[str, typer.Option("--format", help="results.jsonl always; parquet: results.parquet beside it")] = "jsonl",  # noqa: E501
    retry_quarantined: Annotated[bool, typer.Option("--retry-quarantined", help="give rows quarantined for crashing the process another chance (they run alone)")] = False,  # noqa: E501
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", metavar="USD", min=0, help="stop starting paid requests once this much could be spent (stages with a price); rows not started are not_run, a re-run continues")] = None,  # noqa: UP045, E501
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print rows, requests, estimated tokens and cost per stage that spends money; run nothing, call nothing")] = False,  # noqa: E501
) -> None:
    """Run a pipeline over every row of an input file.

    Re-running over the same --out resumes: results stored in its run.sqlite are reused and only
    what is missing (or changed) runs. Writes results.jsonl, manifest.json and report.html.
    """
    with _run_errors():
        engine = Engine(plugins=plugin)
        graph = engine.load(file, set_ or [])
        _warn(graph.warnings)
        if dry_run:
            _print_estimate(estimate(graph, input, limit))
            return
        if not quiet:
            engine.register(RichProgress(err), name="aigc-cli-progress")
        backend = _backend(engine, executor, ray_address)
        result = engine.run(graph, input, out_dir, limit=limit, device=Device.parse(device) if device else None,
                            gpu_memory=MemoryCap.parse(gpu_memory) if gpu_memory else None, fresh=fresh,
                            backend=backend, retake=retake, rerun=rerun, retry_quarantined=retry_quarantined,
                            keep_results=False, max_cost=max_cost, results_format=format_)
    _finish_run(result)


@contextmanager
def _run_errors() -> Iterator[None]:
    """`aigc run`'s errors as messages and exit codes, never tracebacks."""
    try:
        yield
    except AigcError as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:  # a stop signal before the execution began: nothing ran
        err.print(f"error: {exc or 'interrupted'} before any row ran", style="red", highlight=False, markup=False)
        _exit_after_signal(getattr(exc, "signum", 2))
    except ValueError as exc:  # a bad --device, --gpu-memory or --executor
        err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None


def _print_estimate(estimates: list[Any]) -> None:
    """The dry run's table: what each stage that spends money would send (estimated, nothing called)."""
    if not estimates:
        out.print("dry run: no stage of this pipeline calls a paid or served model", highlight=False)
        return
    table = Table(title="dry run (estimates; nothing was called)", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True)
    for index, column in enumerate(("stage", "type", "rows", "requests", "prompt tokens", "completion tokens (max)",
                                    "cost (max)")):
        table.add_column(column, justify="left" if index < 2 else "right")
    for e in estimates:
        cost = "no price" if e.cost_usd is None else f"${e.cost_usd:.4f}"
        table.add_row(e.stage, e.type_name, str(e.rows), str(e.requests), f"~{e.prompt_tokens}",
                      str(e.completion_tokens), cost)
    out.print(table)
    for e in estimates:
        if e.unknown_inputs:
            out.print(f"{e.stage}: {e.unknown_inputs} row(s) take their prompt from a model stage: not counted",
                      highlight=False, markup=False)


def _ledger_lines(summary: Any) -> list[str]:
    """"copy: 256 requests, 31 retries, 3584 + 2048 tokens, $0.0123" for each stage with counters."""
    lines = []
    for stage_id, stats in summary.stages.items():
        c = getattr(stats, "counters", None)
        if not c:
            continue
        parts = [f"{int(c.get('requests', 0))} requests", f"{int(c.get('retries', 0))} retries",
                 f"{int(c.get('prompt_tokens', 0))} prompt + {int(c.get('completion_tokens', 0))} completion tokens"]
        if "cost_usd" in c:
            parts.append(f"${c['cost_usd']:.4f}")
        if c.get("not_run"):
            parts.append(f"{int(c['not_run'])} not started (cost cap)")
        lines.append(f"{stage_id}: " + ", ".join(parts))
    return lines


def _finish_run(result: Any) -> None:
    """Print a run's summary and where its files are; exit 1 if it stopped early, 128 + N after signal N."""
    _print_summary(result.summary, result.results_path)
    for line in _ledger_lines(result.summary):
        out.print(f"ledger: {line}", highlight=False, markup=False, soft_wrap=True)
    if result.groups_path is not None and result.summary.group_counts:
        groups = ", ".join(f"{n} {status}" for status, n in result.summary.group_counts.items() if n)
        out.print(f"groups: {groups} → {result.groups_path}", highlight=False)
    report_path = result.results_path.parent / "report.html"
    if report_path.exists():
        out.print(f"report: {report_path}", highlight=False, markup=False, soft_wrap=True)
    if result.errors_path is not None:
        err.print(f"tracebacks: {result.errors_path}", highlight=False, markup=False)
    if not result.summary.ok:
        err.print(f"error: the run stopped early: {result.summary.error}", style="red", highlight=False, markup=False)
    if received() is not None:
        _exit_after_signal(received() or 0)
    if not result.summary.ok:
        raise typer.Exit(1)


def _exit_after_signal(signum: int) -> None:
    """Exit with 128 + the signal's number, as a shell reports a process the signal ended. Through
    os._exit: micro-batches abandoned after the grace period may still be running in model code,
    and waiting for them (or tearing down under them) is what the signal asked not to do."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _backend(engine: Engine, executor: str | None, ray_address: str | None) -> Any:
    """The executor backend the options ask for: any registered one (`aigc_register_executors`)."""
    from .executors import make_backend

    return make_backend(engine.pm, executor or ("ray" if ray_address else "local"), ray_address)


def _print_summary(summary: Any, results_path: Path) -> None:
    columns = ("stage", "type", "device", "done", "filtered", "failed", "flagged", "cached", "loads", "time")
    rows = [(stage_id, stats.type_name, stats.device, str(stats.done), str(stats.filtered), str(stats.failed),
             str(stats.flagged), str(stats.cached), str(stats.loads), f"{stats.seconds:.2f}s")
            for stage_id, stats in summary.stages.items()]
    # `cached`: of the done and filtered items, those reused from the run store (run.sqlite).
    # A light box: ten columns fit in 80 characters without cutting stage or type names.
    table = Table(title="stages", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < 3 else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    memory = _memory_lines(summary)
    if memory:
        out.print("model memory: " + ", ".join(memory), highlight=False, markup=False, soft_wrap=True)
    gpu = gpu_lines(summary)
    if gpu:
        out.print("on the GPU: " + "; ".join(gpu), highlight=False, markup=False, soft_wrap=True)
    counts = ", ".join(f"{count} {status}" for status, count in summary.counts.items() if count)
    out.print(f"rows: {counts or 'none'} in {summary.seconds:.2f}s → {results_path}", highlight=False)
    for warning in summary.warnings:
        err.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)


def _memory_lines(summary: Any) -> list[str]:
    """"copy ~1.2 GiB (peak 1.0 GiB on cuda:0)" for each stage with an estimate or a measured peak."""
    lines = []
    for stage_id, stats in summary.stages.items():
        if not (stats.memory_bytes or stats.peak_memory_bytes):
            continue
        text = f"{stage_id} ~{format_bytes(stats.memory_bytes)}" if stats.memory_bytes else f"{stage_id} ~?"
        if stats.peak_memory_bytes:
            text += f" (peak {format_bytes(stats.peak_memory_bytes)} on {stats.device})"
        lines.append(text)
    return lines


@app.command()
def report(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder (results.jsonl, manifest.json)")],
    rows: Annotated[str, typer.Option("--rows", help="rows a large run's report shows: N (rows that need a look, and a sample of N done rows) or all")] = "1000",  # noqa: E501
    bundle: Annotated[bool, typer.Option("--bundle", help="write report-bundle.html: one file with the artifacts inside, to mail or move")] = False,  # noqa: E501
) -> None:
    """Rebuild a run's report.html from its output folder (or, with --bundle, a self-contained copy)."""
    from .report import write_report
    from .sinks import RESULTS_FILE

    if not (out_dir / RESULTS_FILE).is_file():
        err.print(f"error: {out_dir} holds no {RESULTS_FILE}; give the --out folder of a run", style="red",
                  highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if rows != "all" and not (rows.isdigit() and int(rows) > 0):
        err.print(f"error: --rows must be a number above 0 or 'all', got {rows!r}", style="red", highlight=False,
                  markup=False)
        raise typer.Exit(2)
    path = write_report(out_dir, None if rows == "all" else int(rows), bundle)
    size = f" ({format_bytes(path.stat().st_size)})" if bundle else ""
    out.print(f"report: {path}{size}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def review(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder")],
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8765,
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless others must reach it")] = "127.0.0.1",  # noqa: E501
    rows: Annotated[str, typer.Option("--rows", help="rows shown for a large run: N or all (as aigc report)")] = "1000",  # noqa: E501
) -> None:
    """Approve or reject a run's rows in a local web app (Ctrl-C stops); decisions go to the run store."""
    from .review.app import serve

    if rows != "all" and not (rows.isdigit() and int(rows) > 0):
        err.print(f"error: --rows must be a number above 0 or 'all', got {rows!r}", style="red", markup=False)
        raise typer.Exit(2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"warning: binding to {host}: anyone who can reach it and gets the page can record decisions",
                  style="yellow", highlight=False, markup=False)

    def ready(url: str) -> None:
        out.print(f"review app: {url}  (Ctrl-C stops)", highlight=False, markup=False, soft_wrap=True)

    try:
        serve(out_dir, host, port, None if rows == "all" else int(rows), ready)
    except AigcError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


@app.command()
def export(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder")],
    to: Annotated[Path, typer.Option("--to", help="a folder, or a .zip, .csv or .parquet file")],
    approved: Annotated[bool, typer.Option("--approved", help="export the rows a reviewer approved (aigc review)")] = False,  # noqa: E501
) -> None:
    """Export the approved rows of a run (the approved take's texts and files), named from their key columns."""
    from .review.export import export_approved

    if not approved:
        err.print("error: say what to export: --approved (the rows approved in aigc review)", style="red",
                  highlight=False, markup=False)
        raise typer.Exit(2)
    try:
        count = export_approved(out_dir, to)
    except AigcError as exc:
        _fail(exc)
    out.print(f"exported {count} approved row{'s' * (count != 1)} → {to}", highlight=False, markup=False,
              soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (with every installed stage type's params)."""
    try:
        registry = Engine(entry_points=None).registry
    except AigcError as exc:
        _fail(exc)
    sys.stdout.write(json.dumps(pipeline_json_schema(registry), indent=2) + "\n")


@app.command()
def stages(plugin: PluginOpt = None) -> None:
    """List stage types: params, ports, device needs, and the plugin that provides each."""
    from .listing import stage_rows

    try:
        engine = Engine(plugins=plugin, entry_points=None)
    except AigcError as exc:
        _fail(exc)
    for row in stage_rows(engine.registry):
        out.print(f"[bold]{row['type']}[/]  ({row['plugin']})  {row['description']}", highlight=False)
        for key in ("inputs", "outputs", "device", "params"):
            out.print(f"    {key}: {row[key]}", highlight=False, markup=False)


@app.command()
def history(out_dir: Annotated[Path, typer.Argument(help="a run's output folder")]) -> None:
    """List the runs made in an output folder: when, how long, their counts, what each made and reused."""
    from .history import history_rows

    runs = history_rows(out_dir)
    if not runs:
        err.print(f"error: {out_dir} holds no run history (runs/*/manifest.json); give the --out folder of a run",
                  style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    # The run id is its UTC start time (plus 4 hex digits), kept whole: it names runs/<run id>/.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("run (UTC start)", no_wrap=True, min_width=20)
    table.add_column("status", no_wrap=True)
    for column in ("secs", "done", "filt", "fail", "made", "reused", "loads"):  # fits 80 columns
        table.add_column(column, justify="right", no_wrap=True)
    for run in runs:
        counts = run["counts"]
        seconds = f"{run['seconds']:.1f}" if isinstance(run["seconds"], (int, float)) else "-"
        table.add_row(str(run["run_id"]), str(run["status"]), seconds,
                      *(str(counts.get(key, 0)) for key in ("done", "filtered", "failed")),
                      str(run["made_now"]), str(run["reused"]), str(run["loads"]))
    out.print(table)


@app.command()
def plugins(plugin: PluginOpt = None) -> None:
    """List loaded plugins, where each comes from, and what each registers."""
    from .listing import plugin_rows

    try:
        engine = Engine(plugins=plugin, entry_points=None)
    except AigcError as exc:
        _fail(exc)
    table = Table()
    for column in ("plugin", "source", "stage types", "hooks"):
        table.add_column(column)
    for row in plugin_rows(engine.pm, engine.registry):
        table.add_row(row["name"], row["source"], row["stages"], row["hooks"])
    out.print(table)


@app.command()
def graph(
    file: FileArg,
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot")] = "mermaid",
    plugin: PluginOpt = None,
) -> None:
    """Print a pipeline's graph as Mermaid (default) or Graphviz DOT."""
    if format not in ("mermaid", "dot"):
        err.print(f"error: --format must be 'mermaid' or 'dot', got {format!r}", style="red", markup=False)
        raise typer.Exit(2)
    try:
        checked = Engine(plugins=plugin).load(file)
    except AigcError as exc:
        _fail(exc)
    sys.stdout.write(checked.to_mermaid() if format == "mermaid" else checked.to_dot())


models_app = typer.Typer(help="Model utilities.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("make-tiny")
def make_tiny(
    out_dir: Annotated[Path, typer.Argument(help="folder to build the models in")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="build only this kind (repeatable)")] = None,  # noqa: UP045
    seed: int = 0,
) -> None:
    """Build tiny random-weight models offline (LM, Stable Diffusion, text-to-video, TTS, classifiers): noise."""
    from .tiny import make_tiny as build

    try:
        built = build(out_dir, only, seed)
    except ValueError as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    for kind, folder in built.items():
        out.print(f"{kind:<17} {folder}", highlight=False, markup=False)
    out.print("random weights: these models produce noise, not content", style="yellow")


def _default_stop_signals() -> None:
    """Give SIGTERM / SIGHUP their default action and SIGINT its KeyboardInterrupt back: main() makes
    them set a flag that only a run reads, so a long command that is not a run would ignore them."""
    import signal

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@models_app.command("train-digits")
def train_digits(
    out_dir: Annotated[Path, typer.Argument(help="folder for digits-cgan/, digits-vae/, report.json")],
    gan_epochs: Annotated[int, typer.Option(min=1, help="conditional DCGAN training epochs")] = 80,
    vae_epochs: Annotated[int, typer.Option(min=1, help="VAE training epochs")] = 100,
    seed: int = 0,
    grid: Annotated[Optional[Path], typer.Option(help="also write a PNG grid of generated digits here")] = None,  # noqa: UP045
) -> None:
    """Train a conditional DCGAN and a VAE on scikit-learn's real handwritten digits (no download) and check them."""
    from .training.digits import train_digits as train

    _default_stop_signals()  # not a run: nothing to save first, so a stop signal ends it at once
    report = train(out_dir, gan_epochs=gan_epochs, vae_epochs=vae_epochs, seed=seed, grid=grid)
    per_digit = " ".join(f"{digit}:{share:.0%}" for digit, share in enumerate(report.gan_recognised_per_digit))
    for line in (
        f"trained and checked in {report.seconds:.1f} s ({report.cpu_seconds:.1f} s of CPU, "
        f"{report.threads} torch thread) "
        f"({report.train_rows} training digits, {report.test_rows} held out)",
        f"classifier (SVM) accuracy on held-out real digits: {report.classifier_accuracy:.1%}",
        f"conditional GAN images recognised as the requested digit: {report.gan_recognised:.1%} ({per_digit})",
        f"VAE reconstruction error (held-out, mean squared, pixels in [0, 1]): {report.vae_reconstruction_mse:.4f}",
        f"generators: {out_dir / 'digits-cgan'}, {out_dir / 'digits-vae'}; figures: {out_dir / 'report.json'}",
    ):
        out.print(line, highlight=False, markup=False)


init_app = typer.Typer(help="Create new projects from templates.", no_args_is_help=True)
app.add_typer(init_app, name="init")


@init_app.command("plugin")
def init_plugin(
    name: Annotated[str, typer.Argument(help="distribution and folder name, e.g. aigc-watermark")],
    directory: Annotated[Path, typer.Option("--dir", help="create the plugin folder inside this folder")] = Path("."),
) -> None:
    """Create an installable plugin package: pyproject.toml with an entry point, an example stage, a test, a README."""
    from .scaffold import scaffold_plugin

    try:
        names, files = scaffold_plugin(name, directory)
    except (ValueError, OSError) as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    folder = files[0].parent
    out.print(f"created {folder}: plugin '{names.entry_point}' with the stage type '{names.stage_type}'",
              highlight=False, markup=False, soft_wrap=True)
    for path in files:
        out.print(f"  {path}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"next:\n  pip install -e {folder}    # then 'aigc stages' lists {names.stage_type}\n"
              f"  pytest {folder}", highlight=False, markup=False, soft_wrap=True)


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


if __name__ == "__main__":
    main()
