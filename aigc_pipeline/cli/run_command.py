"""`aigc run`: run a pipeline over the rows of an input file, then print what it did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..devices import Device
from ..engine import Engine, estimate
from ..errors import AigcError
from ..progress import RichProgress
from ..residency import MemoryCap
from ..signals import received
from .console import FileArg, PluginOpt, SetOpt, err, exit_after_signal, fail, out, warn
from .run_summary import ledger_lines, print_estimate, print_summary


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
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="worker processes for CPU-bound stages such as templates (local executor); default: one per core for runs of 4096 rows or more; 0: none")] = None,  # noqa: UP045, E501
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
        engine, graph = _load(file, set_ or [], plugin)
        if dry_run:
            print_estimate(estimate(graph, input, limit))
            return
        if not quiet:
            engine.register(RichProgress(err), name="aigc-cli-progress")
        backend = _backend(engine, executor, ray_address, workers)
        result = engine.run(graph, input, out_dir, limit=limit, device=Device.parse(device) if device else None,
                            gpu_memory=MemoryCap.parse(gpu_memory) if gpu_memory else None, fresh=fresh,
                            backend=backend, retake=retake, rerun=rerun, retry_quarantined=retry_quarantined,
                            keep_results=False, max_cost=max_cost, results_format=format_)
    finish_run(result)


def _load(file: Path, overrides: list[str], plugins: list[str] | None) -> tuple[Engine, Any]:
    """The engine with its plugins, and the pipeline file checked (its warnings printed)."""
    engine = Engine(plugins=plugins)
    graph = engine.load(file, overrides)
    warn(graph.warnings)
    return engine, graph


@contextmanager
def _run_errors() -> Iterator[None]:
    """`aigc run`'s errors as messages and exit codes, never tracebacks."""
    try:
        yield
    except AigcError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:  # a stop signal before the execution began: nothing ran
        err.print(f"error: {exc or 'interrupted'} before any row ran", style="red", highlight=False, markup=False)
        exit_after_signal(getattr(exc, "signum", 2))
    except ValueError as exc:  # a bad --device, --gpu-memory or --executor
        err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None


def finish_run(result: Any) -> None:
    """Print a run's summary and where its files are; exit 1 if it stopped early, 128 + N after signal N."""
    print_summary(result.summary, result.results_path)
    for line in ledger_lines(result.summary):
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
        exit_after_signal(received() or 0)
    if not result.summary.ok:
        raise typer.Exit(1)


def _backend(engine: Engine, executor: str | None, ray_address: str | None, workers: int | None = None) -> Any:
    """The executor backend the options ask for: any registered one (`aigc_register_executors`)."""
    from ..executors import make_backend

    backend = make_backend(engine.pm, executor or ("ray" if ray_address else "local"), ray_address)
    if workers is not None:
        if not hasattr(backend, "workers"):
            raise ValueError(f"--workers sets the local executor's worker processes; --executor "
                             f"{executor or 'ray'} has none")
        backend.workers = workers
    return backend
