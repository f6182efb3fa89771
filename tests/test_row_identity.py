"""Row identity: seeds, store keys and artifact names follow a row's key or values, never its position."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.content import TEXT
from aigc_pipeline.errors import InputDataError, RunStoreError
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.row_identity import identify_rows, row_identity
from aigc_pipeline.sources import InputRow
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.store import STORE_FILE
from aigc_pipeline.testing import fake_engine, run_text


def rows_of(*values: dict[str, Any]) -> list[InputRow]:
    return [InputRow(index, index + 2, dict(value)) for index, value in enumerate(values)]


def test_unkeyed_rows_are_named_by_their_values_and_exact_duplicates_stay_distinct() -> None:
    named = list(identify_rows(rows_of({"a": 1}, {"a": 2}, {"a": 1}, {"a": 1}), None))
    ids = [row.identity for row in named]
    assert ids[0] == row_identity({"a": 1}) and ids[1] == row_identity({"a": 2})
    assert len(set(ids)) == 4  # the copies of {"a": 1} are occurrences 0, 1 and 2
    assert ids[2] == row_identity({"a": 1}, occurrence=1) and ids[3] == row_identity({"a": 1}, occurrence=2)
    # the same values elsewhere in the file: the same identities
    moved = list(identify_rows(rows_of({"a": 2}, {"a": 1}, {"a": 9}, {"a": 1}), None))
    assert [moved[1].identity, moved[0].identity, moved[3].identity] == ids[:3]


def test_keyed_rows_are_named_by_their_key_and_a_duplicate_key_is_rejected_naming_both_lines() -> None:
    rows = rows_of({"sku": "A", "text": "x"}, {"sku": "B", "text": "y"}, {"sku": "A", "text": "z"})
    named = list(identify_rows(rows, ["sku"]))
    assert named[0].identity == row_identity({"sku": "A", "text": "other"}, ["sku"])  # text is not in the key
    assert named[1].identity is not None and named[2].identity is None
    assert named[2].error == ("line 4: duplicate key (sku='A'): line 2 has the same; "
                              "rows of a keyed input need distinct keys")


def test_rejected_rows_get_no_identity() -> None:
    bad = InputRow(0, 1, None, "line 1: missing value for column 'a'")
    assert list(identify_rows([bad], None)) == [bad]


class SeedStage(Stage):
    """Outputs the item's seed as text, and counts what it processed."""

    type_name = "test.seed_text"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    processed: list[str] = []

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            SeedStage.processed.append(item.inputs["text"])
            item.outputs["text"] = f"{item.inputs['text']}:{item.seed}"
        return batch


class Stages:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [SeedStage]


PIPELINE = """
name: ids
inputs: {sku: str, text: str}
KEY
seed: 5
stages:
  s: {uses: test.seed_text, inputs: {text: inputs.text}, batch_size: 4}
outputs: {out: s.text}
"""


def seeded(result: Any) -> dict[str, str]:
    return {r.outputs["out"].split(":")[0]: r.outputs["out"] for r in result.results if r.status == "done"}


@pytest.mark.parametrize("key", ["", "key: [sku]"])
def test_shuffling_inserting_and_deleting_rows_keeps_every_other_rows_seed_and_stored_result(
    tmp_path: Path, key: str
) -> None:
    engine = fake_engine(Stages())
    pipeline = PIPELINE.replace("KEY", key)
    first = [{"sku": f"S{i}", "text": f"t{i}"} for i in range(8)]
    before = run_text(pipeline, first, tmp_path / "out", engine=engine)
    edited = [row for row in reversed(first) if row["sku"] not in ("S2", "S5")]
    edited[3:3] = [{"sku": "N1", "text": "new one"}, {"sku": "N2", "text": "new two"}]
    SeedStage.processed = []
    after = run_text(pipeline, edited, tmp_path / "out", engine=engine)
    assert SeedStage.processed == ["new one", "new two"]  # only the inserted rows ran
    assert after.summary.stages["s"].cached == 6
    old, new = seeded(before), seeded(after)
    assert all(new[text] == old[text] for text in new if text in old)
    # results.jsonl stays in input order, with each row's own line
    lines = [json.loads(line) for line in after.results_path.read_text().splitlines()]
    assert [line["outputs"]["out"].split(":")[0] for line in lines] == [row["text"] for row in edited]
    assert [line["line"] for line in lines] == list(range(1, 9))


def test_a_store_keyed_by_position_is_refused_in_one_line(tmp_path: Path) -> None:
    engine = fake_engine(Stages())
    pipeline = PIPELINE.replace("KEY", "")
    run_text(pipeline, [{"sku": "a", "text": "b"}], tmp_path / "out", engine=engine)
    with sqlite3.connect(tmp_path / "out" / STORE_FILE) as db:  # as the older engine wrote it
        (text,) = db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
        db.execute("UPDATE meta SET value = ? WHERE name = 'identity'", (text.replace('"schema":"2"', '"schema":"1"'),))
    with pytest.raises(RunStoreError) as caught:
        run_text(pipeline, [{"sku": "a", "text": "b"}], tmp_path / "out", engine=engine)
    message = str(caught.value)
    assert "\n" not in message and "keyed by row position" in message
    assert "--fresh" in message and "--out" in message
    fresh = run_text(pipeline, [{"sku": "a", "text": "b"}], tmp_path / "out", engine=engine, fresh=True)
    assert fresh.summary.counts["done"] == 1


def test_a_duplicate_key_in_a_run_rejects_the_later_row_naming_both_lines(tmp_path: Path) -> None:
    engine = fake_engine(Stages())
    rows = [{"sku": "A", "text": "x"}, {"sku": "B", "text": "y"}, {"sku": "A", "text": "z"}]
    result = run_text(PIPELINE.replace("KEY", "key: [sku]"), rows, tmp_path / "out", engine=engine)
    assert [r.status for r in result.results] == ["done", "done", "rejected"]
    assert result.results[2].error == {"stage": "input", "reason": (
        "line 3: duplicate key (sku='A'): line 1 has the same; rows of a keyed input need distinct keys")}


def test_identities_are_the_ones_earlier_versions_computed() -> None:
    # pinned: store keys, seeds and artifact names of existing runs derive from these texts
    values = {"product": "Lampe é", "price": 12.5, "n": 3, "ok": True, "tags": ["a"], "x": None}
    assert row_identity(values) == "379ca1b997a940cbc5b7"
    assert row_identity(values, None, 2) == "e69bdc05691b7c17305c"
    assert row_identity({"sku": "A1", "x": 1}, ["sku"]) == "3ff63fcb6bbbac57f3ff"
    from aigc_pipeline.row_identity import group_identity

    assert group_identity("agg", "k") == "g54fdf6daaa7dd7f037ba"


@pytest.mark.parametrize("spill", ["in memory", "spilled to sqlite"])
def test_duplicates_are_numbered_and_keys_rejected_across_windows_of_rows(spill: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from aigc_pipeline import row_identity as module
    from aigc_pipeline.row_identity import WINDOW_ROWS

    if spill == "spilled to sqlite":  # every window's digests leave memory: earlier copies are found in the file
        monkeypatch.setattr(module, "SPILL_ROWS", 1)

    count = 2 * WINDOW_ROWS + 5  # copies of a row fall in three windows
    named = list(identify_rows(rows_of(*({"a": index % 3} for index in range(count))), None))
    assert [row.identity for row in named[-3:]] == [
        row_identity({"a": (count - 3 + n) % 3}, None, (count - 3 + n) // 3) for n in range(3)]
    assert len({row.identity for row in named}) == count
    keyed = list(identify_rows(rows_of(*({"k": index % (WINDOW_ROWS + 1)} for index in range(count))), ["k"]))
    assert [row.line for row in keyed if row.identity is not None] == list(range(2, WINDOW_ROWS + 3))
    late = keyed[WINDOW_ROWS + 1]  # the first copy of k=0, in the second window
    assert late.error is not None and late.error.startswith(f"line {WINDOW_ROWS + 3}: duplicate key (k=0): line 2 ")


def test_an_input_unreadable_half_way_still_yields_the_rows_read_before_the_error() -> None:
    def source() -> Iterator[InputRow]:
        yield from rows_of({"a": 1}, {"a": 2})
        raise InputDataError("line 4: not JSON")

    named = identify_rows(source(), None)
    assert [row.identity for row in (next(named), next(named))] == [row_identity({"a": 1}), row_identity({"a": 2})]
    with pytest.raises(InputDataError, match="line 4"):
        next(named)
