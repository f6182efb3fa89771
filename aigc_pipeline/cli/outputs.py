"""The commands over a run's output folder: `aigc report`, `review`, `export` and `history`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from ..errors import AigcError
from ..residency import format_bytes
from .console import err, fail, out


def report(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder (results.jsonl, manifest.json)")],
    rows: Annotated[str, typer.Option("--rows", help="rows a large run's report shows: N (rows that need a look, and a sample of N done rows) or all")] = "1000",  # noqa: E501
    bundle: Annotated[bool, typer.Option("--bundle", help="write report-bundle.html: one file with the artifacts inside, to mail or move")] = False,  # noqa: E501
) -> None:
    """Rebuild a run's report.html from its output folder (or, with --bundle, a self-contained copy)."""
    from ..report import write_report
    from ..sinks import RESULTS_FILE

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


def review(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder")],
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8765,
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless others must reach it")] = "127.0.0.1",  # noqa: E501
    rows: Annotated[str, typer.Option("--rows", help="rows shown for a large run: N or all (as aigc report)")] = "1000",  # noqa: E501
) -> None:
    """Approve or reject a run's rows in a local web app (Ctrl-C stops); decisions go to the run store."""
    from ..review.app import serve

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
        fail(exc)
    except KeyboardInterrupt:
        pass


def export(
    out_dir: Annotated[Path, typer.Argument(help="a run's output folder")],
    to: Annotated[Path, typer.Option("--to", help="a folder, or a .zip, .csv or .parquet file")],
    approved: Annotated[bool, typer.Option("--approved", help="export the rows a reviewer approved (aigc review)")] = False,  # noqa: E501
) -> None:
    """Export the approved rows of a run (the approved take's texts and files), named from their key columns."""
    from ..review.export import export_approved

    if not approved:
        err.print("error: say what to export: --approved (the rows approved in aigc review)", style="red",
                  highlight=False, markup=False)
        raise typer.Exit(2)
    try:
        count = export_approved(out_dir, to)
    except AigcError as exc:
        fail(exc)
    out.print(f"exported {count} approved row{'s' * (count != 1)} → {to}", highlight=False, markup=False,
              soft_wrap=True)


def history(out_dir: Annotated[Path, typer.Argument(help="a run's output folder")]) -> None:
    """List the runs made in an output folder: when, how long, their counts, what each made and reused."""
    from ..history import history_rows

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
