"""`filter.text`'s classifier check on the tiny random-weight text classifier, and the CLI end to end.

The tiny model's scores are noise; what is tested is the real path: preflight (model, pickle,
label), loading with transformers, batched scoring, the threshold, and device needs.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.devices import Device
from aigc_pipeline.errors import ModelUnavailableError, StageError
from aigc_pipeline.records import ItemResult
from aigc_pipeline.stages.filters import TextFilterParams, TextFilterStage
from aigc_pipeline.testing import CPU_ONLY, fake_engine, run_text

pytest.importorskip("transformers")

TEXTS = [
    "Fresh bread, baked every morning and delivered to your door.",
    "You are an idiot and everyone hates your stupid product.",
    "Revenue grew by twelve percent.",
    "",
    "A lightweight laptop for students, with a bright screen, a quiet keyboard and a battery that lasts all day.",
    "I hate this.",
    "Thanks for your order!",
    "The weather service expects heavy rain in the north this week, with strong winds on the coast.",
    "ok",
    "What a terrible, useless company.",
]


@pytest.fixture(scope="module")
def classifier(tiny_model: Any) -> str:
    return str(tiny_model("text-classifier"))


def pipeline(params: dict[str, Any], batch_size: int | None = None) -> str:
    batch = f", batch_size: {batch_size}" if batch_size else ""
    return ("name: t\ninputs: {text: str}\nstages:\n"
            f"  gate: {{uses: filter.text, inputs: {{text: inputs.text}}, with: {json.dumps(params)}{batch}}}\n")


def gate(tmp_path: Path, params: dict[str, Any], texts: list[str], batch_size: int | None = None) -> list[ItemResult]:
    rows = [{"text": text} for text in texts]
    return run_text(pipeline(params, batch_size), rows, tmp_path, fake_engine(), inventory=CPU_ONLY).results


def scores_of(stage: TextFilterStage, texts: list[str]) -> list[float]:
    assert stage.classifier is not None
    return stage.classifier.scores(texts)


def loaded(params: dict[str, Any]) -> TextFilterStage:
    stage = TextFilterStage(TextFilterParams.model_validate(params))
    stage.load(Device("cpu"))
    return stage


def test_threshold_zero_fails_every_text_and_above_one_none(classifier: str, tmp_path: Path) -> None:
    check = {"model": classifier, "label": "toxic"}
    failed = gate(tmp_path / "all", {"classifier": {**check, "threshold": 0.0}}, TEXTS)
    assert [r.status for r in failed] == ["filtered"] * len(TEXTS)
    for result in failed:
        assert result.error is not None
        reason = result.error["reason"]
        assert reason.startswith("classifier: 'toxic' score 0.") and reason.endswith(" >= threshold 0"), reason
    passed = gate(tmp_path / "none", {"classifier": {**check, "threshold": 1.01}}, TEXTS)
    assert [r.status for r in passed] == ["done"] * len(TEXTS)
    assert [r.outputs["gate.text"] for r in passed] == TEXTS


def test_the_threshold_splits_by_score_and_flag_mode_keeps_the_texts(classifier: str, tmp_path: Path) -> None:
    stage = loaded({"classifier": {"model": classifier, "label": "toxic"}})
    scores = scores_of(stage, TEXTS)
    stage.unload()
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 3  # noise, but spread out
    threshold = sorted(scores)[len(scores) // 2]
    params = {"classifier": {"model": classifier, "label": "toxic", "threshold": threshold}, "on_fail": "flag"}
    results = gate(tmp_path, params, TEXTS)
    assert [r.status for r in results] == ["done"] * len(TEXTS)
    assert [bool(r.flags) for r in results] == [s >= threshold for s in scores]


def test_scores_do_not_depend_on_batch_sizes(classifier: str, tmp_path: Path) -> None:
    one = loaded({"classifier": {"model": classifier, "label": "toxic", "batch_size": 1}})
    eight = loaded({"classifier": {"model": classifier, "label": "toxic", "batch_size": 8}})
    alone, batched = scores_of(one, TEXTS), scores_of(eight, TEXTS)
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(alone, batched, strict=True))
    flagged = []
    for size in (1, 8):
        params = {"classifier": {"model": classifier, "label": "toxic", "threshold": 0.0, "batch_size": size},
                  "on_fail": "flag"}
        flagged.append([r.flags for r in gate(tmp_path / str(size), params, TEXTS, batch_size=size)])
    assert flagged[0] == flagged[1]


def test_the_classifier_skips_texts_other_checks_dropped(classifier: str) -> None:
    stage = loaded({"classifier": {"model": classifier, "label": "toxic", "threshold": 1.01}, "max_words": 3})
    assert stage.classifier is not None
    seen: list[list[str]] = []
    real = stage.classifier.scores
    stage.classifier.scores = lambda texts: seen.append(texts) or real(texts)  # type: ignore[method-assign, func-returns-value]
    from aigc_pipeline.stage import StageItem

    batch = [StageItem(i, {"text": text}, (0, "gate")) for i, text in enumerate(["ok then", "far too many words here"])]
    stage.process(batch)
    assert seen == [["ok then"]]
    assert [item.verdict for item in batch] == [None, "filtered"]


def test_multi_label_models_score_with_a_sigmoid(classifier: str, tmp_path: Path) -> None:
    import torch

    folder = Path(shutil.copytree(classifier, tmp_path / "multi"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    stage = loaded({"classifier": {"model": str(folder), "label": "toxic"}})
    assert stage.classifier is not None
    encoded = stage.classifier.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = stage.classifier.model(**encoded).logits.sigmoid()[:, 1].tolist()
    assert scores_of(stage, TEXTS[:2]) == pytest.approx(expected, abs=1e-6)


def test_unknown_label_missing_and_pickle_only_models_stop_before_the_run(classifier: str, tmp_path: Path) -> None:
    rows = [{"text": "hello"}]
    with pytest.raises(StageError) as info:
        run_text(pipeline({"classifier": {"model": classifier, "label": "toxicity"}}), rows, tmp_path / "a",
                 fake_engine(), inventory=CPU_ONLY)
    assert f"classifier '{classifier}' has no label 'toxicity'; its labels: ok, toxic" in str(info.value)
    assert "stage 'gate' (filter.text)" in str(info.value)
    with pytest.raises(StageError, match="no such folder; give a local model folder"):
        run_text(pipeline({"classifier": {"model": str(tmp_path / "nope"), "label": "toxic"}}), rows, tmp_path / "b",
                 fake_engine(), inventory=CPU_ONLY)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(Path(classifier) / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    params = TextFilterParams.model_validate({"classifier": {"model": str(pickled), "label": "ok"}})
    with pytest.raises(ModelUnavailableError, match="pickle weights only"):
        TextFilterStage.preflight(params)
    assert not (tmp_path / "a" / "results.jsonl").exists()  # nothing ran


def test_needs_any_device_with_a_memory_estimate(classifier: str) -> None:
    needs = TextFilterStage.needs(TextFilterParams.model_validate({"classifier": {"model": classifier, "label": "ok"}}))
    weights = (Path(classifier) / "model.safetensors").stat().st_size
    assert needs.kind == "any" and weights < needs.memory_bytes < weights + 2**30


def test_cli_run_redacts_flags_and_classifies(classifier: str, tmp_path: Path) -> None:
    pipeline_file = tmp_path / "gate.yaml"
    pipeline_file.write_text(
        "name: newsroom\ninputs: {text: str}\nstages:\n"
        "  gate:\n    uses: filter.text\n    inputs: {text: inputs.text}\n"
        f"    with: {{pii: true, on_fail: redact, dedupe: {{mode: near, threshold: 0.8}},\n"
        f"           classifier: {{model: '{classifier}', label: toxic, threshold: 1.01}}}}\n"
        "outputs: {text: gate.text}\n", encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    texts = ["Contact press@example.org or +1 202-555-0143 for tickets.", "Tickets on sale Friday, 2024 prices.",
             "Contact press@example.org or +1 202-555-0143 for tickets!"]
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    done = CliRunner().invoke(app, ["run", str(pipeline_file), "-i", str(rows), "-o", str(tmp_path / "out"), "-q"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["status"] for line in lines] == ["done", "done", "filtered"]
    assert lines[0]["outputs"] == {"text": "Contact [email] or [phone] for tickets."}
    assert lines[0]["flags"] == [{"stage": "gate", "reason": "redacted PII: 1 email, 1 phone"}]
    assert lines[1]["outputs"] == {"text": texts[1]} and "flags" not in lines[1]
    assert lines[2]["error"] == {"stage": "gate", "reason": "near-duplicate of row 0 (similarity 1.00 >= 0.8)"}
    written = (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8")
    assert "press@" not in written and "555-0143" not in written
