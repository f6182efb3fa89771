"""The checked graph: order, wiring, default results, warnings, and the Mermaid / DOT renderings."""

from __future__ import annotations

import re

import pytest
from conftest import SAMPLE

from aigc_pipeline import Engine, PipelineFileError, PipelineGraph
from aigc_pipeline.graph import INPUTS, Ref
from aigc_pipeline.testing import FakeStages

MERMAID_ID = r"[A-Za-z_][A-Za-z0-9_]*"
MERMAID_KEYWORDS = {"end", "graph", "flowchart", "subgraph", "style", "class", "classDef", "click", "linkStyle"}


def _load(text: str) -> PipelineGraph:
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    return engine.load_text(text, "test.yaml")


@pytest.fixture(scope="module")
def sample() -> PipelineGraph:
    return Engine().load(SAMPLE)


def test_sample_order_wiring_and_results(sample: PipelineGraph) -> None:
    assert sample.order == ["brief", "copy", "tagline"]
    assert sorted(sample.graph.edges) == [("brief", "copy"), ("copy", "tagline")]
    assert sample.wiring["copy"] == {"text": Ref("brief", "text")}
    assert sample.wiring["tagline"] == {"copy": Ref("copy", "text"), "product": Ref(INPUTS, "product")}
    assert set(sample.wiring["brief"]) == {"product", "audience", "features", "price"}
    assert sample.results == {"copy": Ref("copy", "text"), "tagline": Ref("tagline", "text")}
    assert sample.warnings == []


def test_order_is_deterministic_among_independent_stages() -> None:
    graph = _load("""\
name: fan
inputs: {text: str}
stages:
  zeta: {uses: test.echo, inputs: {text: inputs.text}}
  alpha: {uses: test.echo, inputs: {text: inputs.text}}
  mid: {uses: test.echo, inputs: {text: zeta.text}}
""")
    assert graph.order == ["alpha", "zeta", "mid"]


def test_default_results_are_the_outputs_of_the_last_stages() -> None:
    graph = _load("""\
name: chain
inputs: {text: str}
stages:
  a: {uses: test.echo, inputs: {text: inputs.text}}
  b: {uses: test.echo, inputs: {text: a.text}}
  c: {uses: test.noop, inputs: {value: inputs.text}}
""")
    assert graph.results == {"b.text": Ref("b", "text"), "c.value": Ref("c", "value")}


def test_warnings_for_unused_stage_and_column_are_not_errors() -> None:
    graph = _load("""\
name: unused
inputs: {text: str, spare: int}
stages:
  used: {uses: test.echo, inputs: {text: inputs.text}}
  idle: {uses: test.echo, inputs: {text: inputs.text}}
outputs: {out: used.text}
""")
    assert [(w.severity, w.line, w.stage) for w in graph.warnings] == [("warning", 5, "idle"), ("warning", 2, None)]
    assert "column 'spare' is declared but never used" in str(graph.warnings[1])


def test_every_graph_problem_is_reported_in_file_order() -> None:
    with pytest.raises(PipelineFileError) as info:
        _load("""\
name: many
inputs: {text: str, n: int}
stages:
  a: {uses: test.echo, inputs: {text: inputs.n}}
  b: {uses: test.echo, inputs: {text: a.txt}}
  c: {uses: test.echo, inputs: {text: inputs.txet}}
outputs: {x: d.text}
""")
    assert [(p.line, p.stage, p.field) for p in info.value.problems] == [
        (4, "a", "inputs.text"), (5, "b", "inputs.text"), (6, "c", "inputs.text"), (7, None, "outputs.x")]


def test_template_reads_another_stage_through_a_named_input() -> None:
    graph = _load("""\
name: chain
inputs: {text: str}
stages:
  first: {uses: test.echo, inputs: {text: inputs.text}}
  second: {uses: template, inputs: {prev: first.text}, with: {template: "{{ prev }} / {{ text }}"}}
""")
    assert graph.wiring["second"] == {"prev": Ref("first", "text"), "text": Ref(INPUTS, "text")}


def test_a_template_cannot_read_a_stage_output_without_naming_it() -> None:
    with pytest.raises(PipelineFileError) as info:
        _load("""\
name: t
inputs: {text: str}
stages:
  first: {uses: test.echo, inputs: {text: inputs.text}}
  second: {uses: template, with: {template: "{{ first }}"}}
""")
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (5, "template")
    assert "add 'inputs: {first: <stage>.<port>}'" in (problem.hint or "")


# ---------------------------------------------------------------- Mermaid and DOT


def _mermaid_node_ids(text: str) -> set[str]:
    ids: set[str] = set()
    for line in text.splitlines()[1:]:
        edge = re.fullmatch(rf"\s*({MERMAID_ID}) -->\|[^|]*\| ({MERMAID_ID})", line)
        node = re.fullmatch(rf"\s*({MERMAID_ID})[\[(].*[\])]", line)
        assert edge or node, f"not a Mermaid node or edge: {line!r}"
        ids.update(edge.groups() if edge else node.groups())  # type: ignore[union-attr]
    return ids


def test_mermaid_has_every_stage_and_edge_with_valid_node_ids(sample: PipelineGraph) -> None:
    text = sample.to_mermaid()
    assert text.startswith("flowchart LR\n")
    ids = _mermaid_node_ids(text)
    assert all("." not in node and node not in MERMAID_KEYWORDS for node in ids)
    for stage_id in sample.order:
        assert f'["{stage_id}<br/>' in text
    assert re.search(r"st_brief -->\|text → text\| st_copy", text)
    assert re.search(r"st_copy -->\|text → copy\| st_tagline", text)
    assert re.search(r"in_product -->\|product\| st_tagline", text)


def test_mermaid_node_ids_are_safe_for_keywords_and_collisions() -> None:
    graph = _load("""\
name: tricky
inputs: {text: str}
stages:
  end: {uses: test.echo, inputs: {text: inputs.text}}
  in_text: {uses: test.echo, inputs: {text: end.text}}
outputs: {"a.b": in_text.text, "a_b": end.text, "raw": inputs.text}
""")
    text = graph.to_mermaid()
    ids = _mermaid_node_ids(text)
    assert "end" not in ids
    assert len({i for i in ids if i.startswith("out_")}) == 3  # 'a.b' and 'a_b' stay two nodes
    node_lines = [line.split("[")[0].split("(")[0].strip() for line in text.splitlines()[1:] if "-->" not in line]
    assert len(node_lines) == len(set(node_lines)), "a node is declared twice"
    assert not re.search(r"^\s*inputs -->", text, re.M) and "in_text -->|text| out_2" in text  # column -> output


def test_dot_has_every_stage_and_edge(sample: PipelineGraph) -> None:
    text = sample.to_dot()
    assert text.startswith('digraph "product_copy" {') and text.rstrip().endswith("}")
    for stage_id in sample.order:
        assert f'"{stage_id}" [shape=box' in text
    assert '"brief" -> "copy"' in text and '"copy" -> "tagline"' in text
    assert '"inputs.product" -> "tagline"' in text
    assert text.count("{") == text.count("}")


def test_dot_quotes_output_names() -> None:
    graph = _load("""\
name: q
inputs: {text: str}
stages:
  a: {uses: test.echo, inputs: {text: inputs.text}}
outputs: {'say "hi"': a.text}
""")
    assert '"out.say \\"hi\\"" [shape=oval, label="say \\"hi\\""];' in graph.to_dot()
