"""What `aigc run` prints: the dry run's estimates, and a finished run's table of stages, model
memory, GPU use, row counts and cost ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from ..progress import gpu_lines
from ..residency import format_bytes
from .console import err, out


def print_estimate(estimates: list[Any]) -> None:
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


def ledger_lines(summary: Any) -> list[str]:
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


def print_summary(summary: Any, results_path: Path) -> None:
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
