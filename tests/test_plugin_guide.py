"""The guide's model stage (docs/writing-a-plugin.md) runs as written, on public names only.

The test takes the sentiment scorer's code block out of the guide, writes it as a plugin module,
checks that it imports nothing of aigc_pipeline but public names (no underscore, no internal
module), and runs it in a pipeline on the tiny random-weight text classifier.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import aigc_pipeline
import aigc_pipeline.models
from aigc_pipeline import NUMBER
from aigc_pipeline.testing import fake_engine, run_text

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"
PUBLIC = {"aigc_pipeline": set(aigc_pipeline.__all__), "aigc_pipeline.models": set(aigc_pipeline.models.__all__)}

PIPELINE = """
name: guide_sentiment
inputs: {text: str}
stages:
  mood: {uses: sentiment.score, inputs: {text: inputs.text}, with: {model: MODEL, label: toxic}}
outputs: {score: mood.score}
"""


def guide_stage_source() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("A sentiment scorer, complete")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)  # type: ignore[union-attr]


def test_the_guide_stage_imports_only_public_names() -> None:
    imported: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(guide_stage_source())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aigc_pipeline"):
            imported += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("aigc_pipeline") for alias in node.names)
    assert imported, "the guide's stage imports aigc_pipeline"
    for module, name in imported:
        assert module in PUBLIC, f"{module} is not a public module"
        assert name in PUBLIC[module] and not name.startswith("_"), f"{module}.{name} is not public"


def load_guide_module(folder: Path) -> Any:
    path = folder / "guide_sentiment.py"
    path.write_text(guide_stage_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("guide_sentiment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["guide_sentiment"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("guide_sentiment", None)
    return module


def test_the_guide_stage_scores_texts_as_numbers(tiny_model: Any, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    module = load_guide_module(tmp_path)
    assert module.SentimentStage.outputs == {"score": NUMBER}
    pipeline = PIPELINE.replace("MODEL", str(tiny_model("text-classifier")))
    rows = [{"text": "what a lovely day"}, {"text": "you are an idiot"}, {"text": ""}]
    result = run_text(pipeline, rows, tmp_path / "out", engine=fake_engine(module))
    assert result.summary.ok, result.summary.error
    scores = [r.outputs["score"] for r in result.results]
    assert [r.status for r in result.results] == ["done"] * 3
    assert all(isinstance(score, float) and 0.0 <= score <= 1.0 for score in scores)
    stats = result.summary.stages["mood"]
    assert (stats.loads, stats.unloads) == (1, 1)
