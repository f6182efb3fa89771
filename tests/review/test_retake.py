"""--retake rejected: only the rejected rows' stages run again, with a new seed per take; every take
is kept; approving an earlier take exports that take; aigc export writes what was approved."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import ReviewError
from aigc_pipeline.review.decisions import ReviewStore
from aigc_pipeline.review.export import export_approved
from aigc_pipeline.review.takes import stages_to_reseed
from aigc_pipeline.testing import ModelStage, run_text

PIPELINE = """
name: retake_demo
inputs: {sku: str, text: str}
key: [sku]
seed: 3
stages:
  line: {uses: template, with: {template: "about {{ text }}"}}
  copy: {uses: test.model, inputs: {text: line.text}, with: {name: copywriter, memory_gib: 0}}
  picture: {uses: test.image, inputs: {text: line.text}, with: {size: 8}}
outputs: {copy: copy.text, image: picture.image}
"""
ROWS = [{"sku": f"SKU-{n}", "text": word} for n, word in enumerate(["sun", "moon", "star", "sky", "sea"])]
ROOT = Path(__file__).resolve().parents[2]


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_retake_of_rejected_images_runs_only_those_images(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_text(PIPELINE, ROWS, out)
    before = _results(out)
    store = ReviewStore.open(out)
    for name in ("0", "2", "4"):
        store.decide(name, "approved")
    store.decide("1", "rejected", output="image")
    store.decide("3", "rejected", output="image", note="too dark")
    store.close()
    ModelStage.log.clear()
    result = run_text(PIPELINE, ROWS, out, retake="rejected")
    assert not [event for event in ModelStage.log if event[0] in ("load", "batch")]  # the copy was kept
    picture = result.summary.stages["picture"]
    assert (picture.done, picture.cached) == (5, 3)
    after = _results(out)
    for row in range(5):
        same = after[row]["outputs"]["image"]["path"] == before[row]["outputs"]["image"]["path"]
        assert same == (row not in (1, 3)), row
        assert after[row]["outputs"]["copy"] == before[row]["outputs"]["copy"]
    assert [r["review"] for r in after] == ["approved", "pending", "approved", "pending", "approved"]
    assert [r.get("take", 0) for r in after] == [0, 1, 0, 1, 0]
    for row in (1, 3):  # both takes' files are kept
        assert (out / before[row]["outputs"]["image"]["path"]).is_file()
        assert ".take1." in after[row]["outputs"]["image"]["path"]
    store = ReviewStore.open(out)
    assert [take for take, _, _ in store.takes("3")] == [0, 1]
    assert store.takes("3")[1][1] == ["picture"]
    store.decide("1", "approved", take=0)  # the reviewer preferred the first take
    store.decide("3", "approved")
    store.close()
    ModelStage.log.clear()
    again = run_text(PIPELINE, ROWS, out)  # a plain re-run keeps every take's seed: nothing runs
    assert again.summary.stages["picture"].cached == 5 and not ModelStage.log
    assert [r["outputs"] for r in _results(out)] == [r["outputs"] for r in after]

    exported = tmp_path / "export"
    assert export_approved(out, exported) == 5
    listing = [json.loads(line) for line in (exported / "approved.jsonl").read_text().splitlines()]
    assert [(e["name"], e["take"]) for e in listing] == [("SKU-0", 0), ("SKU-1", 0), ("SKU-2", 0), ("SKU-3", 1),
                                                         ("SKU-4", 0)]
    assert (exported / "SKU-1.image.png").read_bytes() == (out / before[1]["outputs"]["image"]["path"]).read_bytes()
    assert (exported / "SKU-3.image.png").read_bytes() == (out / after[3]["outputs"]["image"]["path"]).read_bytes()
    assert (exported / "SKU-0.copy.txt").read_text() == before[0]["outputs"]["copy"]
    assert export_approved(out, tmp_path / "approved.zip") == 5
    assert export_approved(out, tmp_path / "approved.csv") == 5
    table = list(csv.DictReader((tmp_path / "approved.csv").open(encoding="utf-8")))
    assert table[3]["sku"] == "SKU-3" and table[3]["take"] == "1"
    assert (tmp_path / table[3]["image"]).read_bytes() == (exported / "SKU-3.image.png").read_bytes()
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert export_approved(out, tmp_path / "approved.parquet") == 5
    assert pq.read_table(tmp_path / "approved.parquet").column("copy").to_pylist() == [r["outputs"]["copy"]
                                                                                         for r in before]


def test_a_retake_without_rejected_rows_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_text(PIPELINE, ROWS, out)
    with pytest.raises(ReviewError, match="no row of .* is rejected"):
        run_text(PIPELINE, ROWS, out, retake="rejected")
    with pytest.raises(ReviewError, match="only choice is 'rejected'"):
        run_text(PIPELINE, ROWS, out, retake="everything")


def test_the_stages_a_retake_reseeds() -> None:
    graph = Engine().load(ROOT / "pipelines" / "marketing.yaml")
    assert stages_to_reseed(graph, ["copy"]) == ["prompt", "copy", "checked"]  # the voice follows the copy
    assert stages_to_reseed(graph, ["image"]) == ["image_prompt", "hero", "hero_checked"]
    assert stages_to_reseed(graph, ["audio"]) == ["voice"]  # the approved copy it speaks stays
    assert set(stages_to_reseed(graph, ["copy", "image", "audio", "video"])) == set(graph.order)


def test_the_commands_say_what_is_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aigc_pipeline.cli import app

    out = tmp_path / "out"
    text = "name: t\ninputs: {sku: str, text: str}\nstages: {line: {uses: template, with: {template: '{{ text }}'}}}\n"
    run_text(text, ROWS, out)
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    runner = CliRunner()
    wrong = runner.invoke(app, ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "out-input.jsonl"), "-o",
                                str(out), "-q", "--retake", "all"])
    assert wrong.exit_code == 2 and "only choice is 'rejected'" in wrong.output
    nothing = runner.invoke(app, ["review", str(tmp_path / "nowhere")])
    assert nothing.exit_code == 2 and "holds no run store" in nothing.output
    unasked = runner.invoke(app, ["export", str(out), "--to", str(tmp_path / "x")])
    assert unasked.exit_code == 2 and "--approved" in unasked.output
    bad = runner.invoke(app, ["export", str(out), "--approved", "--to", str(tmp_path / "x.pdf")])
    assert bad.exit_code == 2 and "a .zip, a .csv or a .parquet" in bad.output
    none = runner.invoke(app, ["export", str(out), "--approved", "--to", str(tmp_path / "none")])
    assert none.exit_code == 0 and "exported 0 approved rows" in none.output
