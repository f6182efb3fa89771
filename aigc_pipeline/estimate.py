"""`aigc run --dry-run`: rows, requests, tokens and cost per spending stage, without calling anything.

Cheap stages (no model work: templates, filters) run for real, in this process, so a served
stage's estimate sees the very prompts the run would send. A stage that spends money answers
`Stage.estimate(params, inputs)` from those inputs instead of running. Values that only a model
stage could produce are unknown: the stages that read them count what they can and say so.
Nothing is written, no model is loaded and no endpoint is called.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .devices import CPU
from .graph import PipelineGraph
from .sources import InputRow
from .stage import StageItem

UNKNOWN = object()  # a value a model stage would produce: not known before the run


@dataclass
class StageEstimate:
    stage: str
    type_name: str
    rows: int
    requests: int
    prompt_tokens: int
    completion_tokens: int  # at most: max_new_tokens per request
    cost_usd: float | None  # None: no price given
    unknown_inputs: int = 0  # rows whose prompt comes from a model stage (not counted)


def estimate_run(graph: PipelineGraph, rows: Iterable[InputRow]) -> list[StageEstimate]:
    """Estimates for every stage that spends (in pipeline order)."""
    values = [{f"inputs.{name}": value for name, value in row.values.items()}
              for row in rows if row.values is not None and row.error is None]
    estimates = []
    for stage_id in graph.order:
        cls, params = graph.stage_class(stage_id), graph.pipeline.params[stage_id]
        wiring = [(port, str(ref)) for port, ref in graph.wiring[stage_id].items()]
        known = [row for row in values if all(row.get(key, UNKNOWN) is not UNKNOWN for _, key in wiring)]
        spend = cls.estimate(params, [{port: row[key] for port, key in wiring} for row in known])
        if spend is not None:
            unknown = len(values) - len(known)
            estimates.append(StageEstimate(stage_id, cls.type_name, len(values), unknown_inputs=unknown, **spend))
        if spend is not None or cls.needs(params).model_work or cls.reduces:
            for row in values:  # what this stage produces is not known before the run
                row.update({f"{stage_id}.{port}": UNKNOWN for port in cls.outputs})
            continue
        _run_cheap(graph, stage_id, known, wiring)
    return estimates


def _run_cheap(graph: PipelineGraph, stage_id: str, rows: list[dict[str, Any]], wiring: list[tuple[str, str]]) -> None:
    """Run a stage without model work over the rows whose inputs are known, in place."""
    cls, params = graph.stage_class(stage_id), graph.pipeline.params[stage_id]
    stage = cls(params)
    stage.load(CPU)
    try:
        items = [StageItem(index, {port: row[key] for port, key in wiring}, (graph.pipeline.spec.seed, stage_id))
                 for index, row in enumerate(rows)]
        stage.process(items)
    finally:
        stage.unload()
    for row, item in zip(rows, items, strict=True):
        row.update({f"{stage_id}.{port}": item.outputs.get(port, UNKNOWN) if item.verdict is None else UNKNOWN
                    for port in cls.outputs})
