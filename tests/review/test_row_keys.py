"""Review decisions and takes follow the row's identity (results.jsonl `id`), not its position: a
sheet reordered between the review and `--retake` keeps every decision with its row; a store an
older version keyed by row number is re-keyed once a run writes results with ids."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aigc_pipeline.review.decisions import ReviewStore
from aigc_pipeline.row_identity import row_identity
from aigc_pipeline.store import STORE_FILE
from aigc_pipeline.testing import run_text

PIPELINE = """
name: retake_demo
inputs: {sku: str, text: str}
key: [sku]
seed: 3
stages:
  line: {uses: template, with: {template: "about {{ text }}"}}
  picture: {uses: test.image, inputs: {text: line.text}, with: {size: 8}}
outputs: {copy: line.text, image: picture.image}
"""
ROWS = [{"sku": f"SKU-{n}", "text": word} for n, word in enumerate(["sun", "moon", "star", "sky", "sea"])]
SKU_OF = {row["text"]: row["sku"] for row in ROWS}  # the copy is "about <text>"


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _by_sku(records: list[dict]) -> dict[str, dict]:
    return {SKU_OF[r["outputs"]["copy"].split()[-1]]: r for r in records}


def test_results_carry_the_row_identity(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_text(PIPELINE, ROWS + [{"sku": "SKU-9"}], out, results_format="parquet")
    records = _results(out)
    assert [r["id"] for r in records[:5]] == [row_identity(row, ["sku"]) for row in ROWS]
    assert records[5]["status"] == "rejected" and records[5]["id"] == "5"  # no identity: its row number
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert pq.read_table(out / "results.parquet").column("id").to_pylist() == [r["id"] for r in records]


def test_a_decision_stays_with_its_row_when_the_sheet_is_reordered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_text(PIPELINE, ROWS, out)
    before = _results(out)
    ids = [r["id"] for r in before]
    store = ReviewStore.open(out)
    store.decide(ids[0], "approved")
    store.decide(ids[1], "rejected", output="image")
    assert store.decide("2", "approved") == ids[2]  # a row number names the row it is in results.jsonl
    assert set(store.reviews()) == {ids[0], ids[1], ids[2]}
    store.close()

    reordered = ROWS[::-1]  # SKU-1 is now the fourth row, SKU-3 the second
    run_text(PIPELINE, reordered, out, retake="rejected")
    after, old = _by_sku(_results(out)), _by_sku(before)
    assert [r["id"] for r in _results(out)] == ids[::-1]
    assert {sku: r.get("take", 0) for sku, r in after.items()} == {"SKU-0": 0, "SKU-1": 1, "SKU-2": 0, "SKU-3": 0,
                                                                    "SKU-4": 0}
    assert {sku: r["review"] for sku, r in after.items()} == {"SKU-0": "approved", "SKU-1": "pending",
                                                              "SKU-2": "approved", "SKU-3": "pending",
                                                              "SKU-4": "pending"}
    for sku, record in after.items():  # only SKU-1's image was made again
        same = record["outputs"]["image"]["path"] == old[sku]["outputs"]["image"]["path"]
        assert same == (sku != "SKU-1"), sku
    store = ReviewStore.open(out)
    assert [take for take, _, _ in store.takes(ids[1])] == [0, 1]
    store.close()


def _as_an_older_version_left_it(out: Path, decisions: list[tuple[str, str, str]]) -> None:
    """results.jsonl without ids, and decisions keyed by row number with no mark of how rows are keyed."""
    lines = [json.dumps({k: v for k, v in r.items() if k != "id"}) for r in _results(out)]
    (out / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ReviewStore.open(out).close()  # the review tables, as the older version created them
    db = sqlite3.connect(out / STORE_FILE)
    with db:
        db.execute("DELETE FROM review_meta")
        db.executemany("INSERT INTO reviews VALUES (?, ?, 0, ?, '', 0)", decisions)
    db.close()


def test_an_older_store_keyed_by_row_number_is_rekeyed_by_identity(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_text(PIPELINE, ROWS, out)
    ids = [r["id"] for r in _results(out)]
    _as_an_older_version_left_it(out, [("0", "", "approved"), ("1", "image", "rejected")])
    store = ReviewStore.open(out)
    assert store.by_position and set(store.reviews()) == {"0", "1"}  # its results have no ids yet: as before
    store.close()

    run_text(PIPELINE, ROWS, out, retake="rejected")  # planned by row number; its results have ids
    store = ReviewStore.open(out)
    assert not store.by_position and set(store.reviews()) == {ids[0], ids[1]}
    assert [take for take, _, _ in store.takes(ids[1])] == [0, 1]
    store.close()
    records = _results(out)
    assert [r["review"] for r in records] == ["approved", "pending", "pending", "pending", "pending"]
    assert [r.get("take", 0) for r in records] == [0, 1, 0, 0, 0]

    run_text(PIPELINE, ROWS[::-1], out)  # from now on, positions no longer matter
    assert {sku: r["review"] for sku, r in _by_sku(_results(out)).items()}["SKU-0"] == "approved"
