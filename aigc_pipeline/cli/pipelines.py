"""The commands that check or describe pipelines and plugins without running anything: `aigc validate`,
`schema`, `stages`, `plugins` and `graph`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from ..engine import Engine
from ..errors import AigcError
from ..spec import pipeline_json_schema
from .console import FileArg, PluginOpt, SetOpt, err, fail, out, warn


def validate(file: FileArg, set_: SetOpt = None, plugin: PluginOpt = None) -> None:
    """Check a pipeline file completely (schema, params, references, types, cycles) without running it."""
    try:
        graph = Engine(plugins=plugin).load(file, set_ or [])
    except AigcError as exc:
        fail(exc)
    warn(graph.warnings)
    out.print(f"ok: {file} — pipeline '{graph.pipeline.spec.name}', {len(graph.order)} stages: "
              + " → ".join(graph.order), highlight=False, markup=False, soft_wrap=True)


def schema() -> None:
    """Print the JSON Schema of pipeline files (with every installed stage type's params)."""
    try:
        registry = Engine(entry_points=None).registry
    except AigcError as exc:
        fail(exc)
    sys.stdout.write(json.dumps(pipeline_json_schema(registry), indent=2) + "\n")


def stages(plugin: PluginOpt = None) -> None:
    """List stage types: params, ports, device needs, and the plugin that provides each."""
    from ..listing import stage_rows

    try:
        engine = Engine(plugins=plugin, entry_points=None)
    except AigcError as exc:
        fail(exc)
    for row in stage_rows(engine.registry):
        out.print(f"[bold]{row['type']}[/]  ({row['plugin']})  {row['description']}", highlight=False)
        for key in ("inputs", "outputs", "device", "params"):
            out.print(f"    {key}: {row[key]}", highlight=False, markup=False)


def plugins(plugin: PluginOpt = None) -> None:
    """List loaded plugins, where each comes from, and what each registers."""
    from ..listing import plugin_rows

    try:
        engine = Engine(plugins=plugin, entry_points=None)
    except AigcError as exc:
        fail(exc)
    table = Table()
    for column in ("plugin", "source", "stage types", "hooks"):
        table.add_column(column)
    for row in plugin_rows(engine.pm, engine.registry):
        table.add_row(row["name"], row["source"], row["stages"], row["hooks"])
    out.print(table)


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
        fail(exc)
    sys.stdout.write(checked.to_mermaid() if format == "mermaid" else checked.to_dot())
