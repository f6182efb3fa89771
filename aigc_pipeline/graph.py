"""From a validated spec to a checked DAG of stages (dag.py), in a deterministic order.

Checks, all before any model loads: every reference resolves (`inputs.<column>` or
`<stage>.<port>`), every required port is connected, port types match, no cycles. Stages whose
outputs nobody uses and columns nobody reads are warnings. Renders as Mermaid or DOT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .content import ContentType, column_content_type
from .dag import Dag, find_cycle, topological_order
from .errors import PipelineFileError, Problem
from .registry import StageRegistry
from .spec import Pipeline, did_you_mean, in_file_order

INPUTS = "inputs"  # the reserved source name for row columns in references


@dataclass(frozen=True)
class Ref:
    """A reference to a value: a row column (`source == "inputs"`) or a stage's output port."""

    source: str
    name: str

    @property
    def is_column(self) -> bool:
        return self.source == INPUTS

    def __str__(self) -> str:
        return f"{self.source}.{self.name}"


@dataclass
class PipelineGraph:
    """The checked graph: stage order, each stage's wired inputs, the run's result fields."""

    pipeline: Pipeline
    registry: StageRegistry
    graph: Dag
    order: list[str]
    wiring: dict[str, dict[str, Ref]]
    results: dict[str, Ref]
    warnings: list[Problem] = field(default_factory=list)
    # "row": runs once per row; "group": downstream of a reducing stage (aggregate), once per group.
    domains: dict[str, str] = field(default_factory=dict)

    def stage_class(self, stage_id: str) -> Any:
        return self.registry.stage_class(self.pipeline.spec.stages[stage_id].uses)

    def result_fields(self, domain: str) -> dict[str, Ref]:
        """The results written per row ("row") or per group ("group")."""
        return {name: ref for name, ref in self.results.items() if self.domain_of(ref) == domain}

    def domain_of(self, ref: Ref) -> str:
        """Whether a value exists per row or per group (a reducing stage's outputs are per group)."""
        if ref.is_column:
            return "row"
        return "group" if self.stage_class(ref.source).reduces else self.domains.get(ref.source, "row")

    def to_mermaid(self) -> str:
        # Node ids get a prefix per kind: bare stage ids can be Mermaid keywords ('end', 'style',
        # 'class') and could collide with a column or output node; labels keep the real names.
        lines = ["flowchart LR"]
        outputs = {name: f"out_{index}" for index, name in enumerate(self.results)}
        for column in self.pipeline.spec.inputs:
            lines.append(f'    in_{column}[/"{column}"/]')
        for stage_id in self.order:
            uses = _mermaid_text(self.pipeline.spec.stages[stage_id].uses)
            lines.append(f'    st_{stage_id}["{stage_id}<br/>{uses}"]')
        for stage_id in self.order:
            for port, ref in self.wiring[stage_id].items():
                source = f"in_{ref.name}" if ref.is_column else f"st_{ref.source}"
                label = port if ref.is_column else f"{ref.name} → {port}"
                lines.append(f"    {source} -->|{label}| st_{stage_id}")
        for name, ref in self.results.items():
            lines.append(f'    {outputs[name]}(["{_mermaid_text(name)}"])')
            source = f"in_{ref.name}" if ref.is_column else f"st_{ref.source}"
            lines.append(f"    {source} -->|{ref.name}| {outputs[name]}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        lines = [f"digraph {_dot_id(self.pipeline.spec.name)} {{", "  rankdir=LR;"]
        for column in self.pipeline.spec.inputs:
            lines.append(f'  "inputs.{column}" [shape=parallelogram];')
        for stage_id in self.order:
            uses = self.pipeline.spec.stages[stage_id].uses
            lines.append(f'  "{stage_id}" [shape=box, label="{stage_id}\\n{uses}"];')
        for stage_id in self.order:
            for port, ref in self.wiring[stage_id].items():
                source = str(ref) if ref.is_column else ref.source
                lines.append(f'  "{source}" -> "{stage_id}" [label="{ref.name} → {port}"];')
        for name, ref in self.results.items():
            node, source = _dot_id(f"out.{name}"), str(ref) if ref.is_column else ref.source
            lines.append(f"  {node} [shape=oval, label={_dot_id(name)}];")
            lines.append(f'  "{source}" -> {node} [label="{ref.name}"];')
        return "\n".join(lines) + "\n}\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_graph(pipeline: Pipeline, registry: StageRegistry) -> PipelineGraph:
    """Check every connection and return the graph; raise PipelineFileError listing all problems."""
    checker = _GraphChecker(pipeline, registry)
    return checker.build()


class _GraphChecker:
    def __init__(self, pipeline: Pipeline, registry: StageRegistry) -> None:
        self.pipeline = pipeline
        self.spec = pipeline.spec
        self.registry = registry
        self.locator = pipeline.locator
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.graph = Dag()

    def build(self) -> PipelineGraph:
        if INPUTS in self.spec.stages:
            self._error(("stages", INPUTS), f"'{INPUTS}' is reserved for row columns; rename this stage", key=True,
                        stage=INPUTS)
        self.graph.add_nodes_from(self.spec.stages)
        wiring = {stage_id: self._wire_stage(stage_id) for stage_id in self.spec.stages}
        results = self._resolve_results()
        self._check_cycles()
        if self.problems:
            raise PipelineFileError(in_file_order(self.problems))
        self._warn_unused(wiring, results)
        order = topological_order(self.graph)
        results = results or self._default_results(wiring, order)
        domains = self._check_domains(order, wiring)
        if self.problems:
            raise PipelineFileError(in_file_order(self.problems))
        return PipelineGraph(self.pipeline, self.registry, self.graph, order, wiring, results, self.warnings, domains)

    def _error(self, path: tuple[Any, ...], message: str, key: bool = False, **extra: Any) -> None:
        self.problems.append(self.locator.problem(path, message, key=key, **extra))

    def _class(self, stage_id: str) -> Any:
        return self.registry.stage_class(self.spec.stages[stage_id].uses)

    def _wire_stage(self, stage_id: str) -> dict[str, Ref]:
        cls = self._class(stage_id)
        stage = self.spec.stages[stage_id]
        wired: dict[str, Ref] = {}
        for port, text in stage.inputs.items():
            path = ("stages", stage_id, "inputs", port)
            expected = cls.inputs.get(port, cls.variadic_inputs)
            if expected is None:
                ports = _describe_ports(cls.inputs)
                hint = did_you_mean(port, list(cls.inputs)) or f"'{stage.uses}' inputs: {ports}"
                self._error(path, f"'{stage.uses}' has no input port '{port}'", key=True,
                            stage=stage_id, field=f"inputs.{port}", hint=hint)
                continue
            ref = self._resolve(text, path, stage_id, f"inputs.{port}", expected)
            if ref is not None:
                wired[port] = ref
        for port in cls.inputs:
            if port not in stage.inputs:
                self._error(("stages", stage_id), f"input port '{port}' ({cls.inputs[port]}) is not connected",
                            key=True, stage=stage_id, field="inputs", hint=f"add 'inputs: {{{port}: <stage>.<port>}}'")
        self._wire_variables(stage_id, cls, wired)
        return wired

    def _wire_variables(self, stage_id: str, cls: Any, wired: dict[str, Ref]) -> None:
        """Wire the names a stage reads (template variables) to its ports or to row columns."""
        for name in sorted(cls.variables(self.pipeline.params[stage_id])):
            if name in self.spec.stages[stage_id].inputs:
                continue
            if name in self.spec.inputs:
                wired[name] = Ref(INPUTS, name)
                continue
            choices = list(self.spec.inputs) + list(self.spec.stages[stage_id].inputs)
            hint = did_you_mean(name, choices) or f"columns: {', '.join(self.spec.inputs) or 'none'}; " \
                f"to use another stage's output, add 'inputs: {{{name}: <stage>.<port>}}'"
            param = self._param_mentioning(stage_id, name)
            self._error(("stages", stage_id, "with") + ((param,) if param else ()), f"uses variable '{name}', which "
                        "is neither a declared column nor one of this stage's inputs", stage=stage_id,
                        field=param or "with", hint=hint)

    def _param_mentioning(self, stage_id: str, name: str) -> str | None:
        """The param whose text names `name` (a template), to point at its line, or at its `--set`."""
        params = self.spec.stages[stage_id].with_
        return next((key for key, value in params.items() if isinstance(value, str) and name in value), None)

    def _resolve(
        self, text: str, path: tuple[Any, ...], stage_id: str | None, field_name: str, expected: ContentType | None
    ) -> Ref | None:
        source, dot, name = text.partition(".")
        if not dot or not source or not name:
            self._error(path, f"reference '{text}' must be 'inputs.<column>' or '<stage>.<port>'",
                        stage=stage_id, field=field_name)
            return None
        ref = Ref(source, name)
        produced = self._produced_type(ref, path, stage_id, field_name)
        if produced is None:
            return None
        if expected is not None and not expected.accepts(produced):
            self._error(path, f"type mismatch: '{text}' is {produced} but the port takes {expected}",
                        stage=stage_id, field=field_name, hint=self._ports_hint(ref))
            return None
        if not ref.is_column and stage_id is not None:
            self.graph.add_edge(ref.source, stage_id)
        return ref

    def _produced_type(
        self, ref: Ref, path: tuple[Any, ...], stage_id: str | None, field_name: str
    ) -> ContentType | None:
        if ref.is_column:
            if ref.name in self.spec.inputs:
                return column_content_type(self.spec.inputs[ref.name])
            columns = ", ".join(self.spec.inputs) or "none"
            hint = did_you_mean(ref.name, list(self.spec.inputs)) or f"declared columns: {columns}"
            self._error(path, f"unknown column '{ref.name}' (not declared under 'inputs:')",
                        stage=stage_id, field=field_name, hint=hint)
            return None
        if ref.source not in self.spec.stages:
            hint = did_you_mean(ref.source, list(self.spec.stages)) or f"stages: {', '.join(self.spec.stages)}"
            self._error(path, f"unknown stage '{ref.source}' in reference '{ref}'", stage=stage_id, field=field_name,
                        hint=hint)
            return None
        outputs: dict[str, ContentType] = self._class(ref.source).outputs
        if ref.name not in outputs:
            hint = did_you_mean(ref.name, list(outputs)) or self._ports_hint(ref)
            self._error(path, f"stage '{ref.source}' has no output port '{ref.name}'", stage=stage_id,
                        field=field_name, hint=hint)
            return None
        return outputs[ref.name]

    def _ports_hint(self, ref: Ref) -> str:
        if ref.is_column:
            return "columns: " + ", ".join(f"{c} ({column_content_type(t)})" for c, t in self.spec.inputs.items())
        return f"'{ref.source}' outputs: {_describe_ports(self._class(ref.source).outputs)}"

    def _resolve_results(self) -> dict[str, Ref]:
        results: dict[str, Ref] = {}
        for name, text in self.spec.outputs.items():
            ref = self._resolve(text, ("outputs", name), None, f"outputs.{name}", None)
            if ref is not None:
                results[name] = ref
        return results

    def _check_domains(self, order: list[str], wiring: dict[str, dict[str, Ref]]) -> dict[str, str]:
        """Stages after a reducing stage run once per group; they may read only group values."""
        domains: dict[str, str] = {}
        for stage_id in order:
            cls = self._class(stage_id)
            sources = {ref.source: ref for ref in wiring[stage_id].values()}
            grouped = [src for src in sources
                       if src != INPUTS and (domains[src] == "group" or self._class(src).reduces)]
            domains[stage_id] = "group" if grouped and not cls.reduces else "row"
            if cls.reduces and grouped:
                self._error(("stages", stage_id), f"reads '{grouped[0]}', which is already aggregated; "
                            "aggregating twice is not supported", key=True, stage=stage_id, field="inputs")
            elif grouped:
                per_row = [str(ref) for src, ref in sources.items() if src not in grouped]
                if per_row:
                    self._error(("stages", stage_id), f"runs once per group (after '{grouped[0]}') but reads "
                                f"'{per_row[0]}', a per-row value", key=True, stage=stage_id, field="inputs",
                                hint=f"use it in the template of '{grouped[0]}' instead")
        return domains

    def _default_results(self, wiring: dict[str, dict[str, Ref]], order: list[str]) -> dict[str, Ref]:
        """Without 'outputs:', a run's results are the outputs of the stages nothing consumes."""
        consumed = {ref.source for refs in wiring.values() for ref in refs.values()}
        last = [sid for sid in order if sid not in consumed]
        return {f"{sid}.{port}": Ref(sid, port) for sid in last for port in self._class(sid).outputs}

    def _check_cycles(self) -> None:
        cycle = find_cycle(self.graph)
        if cycle is None:
            return
        members = [edge[0] for edge in cycle]
        start = members.index(min(members))  # report from the same stage whichever edge the search met first
        stages = members[start:] + members[:start] + [members[start]]
        first, previous = stages[0], stages[-2]
        # Point at the input that closes the loop: the first stage's port fed by the previous stage.
        port = next(p for p, text in self.spec.stages[first].inputs.items() if text.partition(".")[0] == previous)
        self._error(("stages", first, "inputs", port), "cycle: " + " -> ".join(stages), stage=first,
                    field=f"inputs.{port}", hint="a stage cannot depend on its own output, directly or through others")

    def _warn_unused(self, wiring: dict[str, dict[str, Ref]], results: dict[str, Ref]) -> None:
        used_columns = {ref.name for refs in wiring.values() for ref in refs.values() if ref.is_column}
        used_columns |= {ref.name for ref in results.values() if ref.is_column}
        consumed = {ref.source for refs in wiring.values() for ref in refs.values()}
        consumed |= {ref.source for ref in results.values()}
        if results:
            for stage_id in self.spec.stages:
                if stage_id not in consumed:
                    self.warnings.append(self.locator.problem(
                        ("stages", stage_id), "its outputs are not used by any stage or by 'outputs:'",
                        key=True, stage=stage_id, severity="warning"))
        for column in self.spec.inputs:
            if column not in used_columns:
                self.warnings.append(self.locator.problem(
                    ("inputs", column), f"column '{column}' is declared but never used", key=True, severity="warning"))


def _describe_ports(ports: dict[str, ContentType]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in ports.items()) or "none"
