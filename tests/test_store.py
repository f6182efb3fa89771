"""The run store's parts: cache keys, stored values, in-flight markers and crash counts."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

from pydantic import BaseModel

from aigc_pipeline.content import Artifact
from aigc_pipeline.store import STORE_FILE, NewResult, RunStore, decode_outputs, encode_outputs, item_key, stage_prefix
from aigc_pipeline.testing import run_text

IDENTITY = {"pipeline": "p", "inputs": {"text": "str"}}


class Params(BaseModel):
    a: int = 1
    b: str = "x"


def test_keys_depend_on_type_params_models_seed_and_inputs_only() -> None:
    prefix = stage_prefix("t", Params(), [])
    key = item_key(prefix, 5, {"x": {"b": 1, "a": [1, 2]}, "y": "text"})
    assert key == item_key(prefix, 5, {"y": "text", "x": {"a": [1, 2], "b": 1}})  # key order does not matter
    assert key != item_key(prefix, 6, {"x": {"b": 1, "a": [1, 2]}, "y": "text"})
    assert key != item_key(stage_prefix("t", Params(a=2), []), 5, {"x": {"b": 1, "a": [1, 2]}, "y": "text"})
    assert key != item_key(stage_prefix("u", Params(), []), 5, {"x": {"b": 1, "a": [1, 2]}, "y": "text"})
    assert key != item_key(stage_prefix("t", Params(), [{"model": "m", "files": "1"}]), 5,
                           {"x": {"b": 1, "a": [1, 2]}, "y": "text"})
    assert item_key(prefix, 5, {"x": object()}) is None  # not JSON: never cached


def test_artifacts_count_by_content_not_path(tmp_path: Path) -> None:
    prefix = stage_prefix("t", Params(), [])
    one = Artifact("artifacts/a/000001.image.png", tmp_path / "1.png", {}, "d1")
    moved = Artifact("artifacts/b/000009.image.png", tmp_path / "9.png", {"seed": 1}, "d1")
    other = Artifact("artifacts/a/000001.image.png", tmp_path / "1.png", {}, "d2")
    assert item_key(prefix, 1, {"image": one}) == item_key(prefix, 1, {"image": moved})
    assert item_key(prefix, 1, {"image": one}) != item_key(prefix, 1, {"image": other})


def test_outputs_round_trip_and_a_missing_artifact_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "artifacts" / "s" / "000000.image.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"png")
    digest = hashlib.sha256(b"png").hexdigest()
    artifact = Artifact("artifacts/s/000000.image.png", path.resolve(), {"seed": 3, "width": 8}, digest)
    encoded = encode_outputs({"image": artifact, "text": "hi", "record": {"n": [1, 2.5]}})
    assert encoded is not None
    assert decode_outputs(encoded, tmp_path) == {"image": artifact, "text": "hi", "record": {"n": [1, 2.5]}}
    path.write_bytes(b"pn")  # changed size: not the file that was recorded
    assert decode_outputs(encoded, tmp_path) is None
    path.unlink()
    assert decode_outputs(encoded, tmp_path) is None
    assert encode_outputs({"x": object()}) is None


def test_in_flight_markers_left_by_a_dead_run_count_as_crashes(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path, IDENTITY)
    store.begin("s", [("k1", 1), ("k2", 2)])
    store.finish("s", [NewResult("k1", 1, "done", None, '{"text": "a"}', [])], ["k1"])
    store.begin("s", [("k3", 3)])
    store.close()  # k2 and k3 stay in flight: as if the process died

    again = RunStore.open(tmp_path, IDENTITY)
    assert again.crashed_items == 2 and again.crashes("k2") == 1 and again.crashes("k1") == 0
    again.begin("s", [("k2", 2)])
    again.close()
    third = RunStore.open(tmp_path, IDENTITY)
    assert third.crashes("k2") == 2 and third.quarantined() == [("s", 2)]
    third.begin("s", [("k3", 3)])
    third.finish("s", [], ["k3"])  # k3 ran fine (or failed) this time: no longer a suspect
    assert set(third.lookup(["k1", "k2", "k3"])) == {"k1"}
    third.close()
    assert RunStore.open(tmp_path, IDENTITY).crashes("k3") == 0


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    (tmp_path / "artifacts" / "s").mkdir(parents=True)
    stale = [tmp_path / ".results.jsonl.abc.tmp", tmp_path / "artifacts" / "s" / ".000001.image.png.x.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    RunStore.open(tmp_path, IDENTITY).close()
    assert not any(path.exists() for path in stale)


def test_a_finished_run_leaves_every_result_in_run_sqlite_itself(tmp_path: Path) -> None:
    """The WAL is folded in when the run ends: run.sqlite copied alone still holds the results."""
    pipeline = ("name: wal\ninputs: {text: str}\nstages:\n"
                "  t: {uses: test.noop, inputs: {value: inputs.text}, with: {store: true}}\n")
    run_text(pipeline, [{"text": str(i)} for i in range(20)], tmp_path / "out")
    uri = f"{(tmp_path / 'out' / STORE_FILE).resolve().as_uri()}?mode=ro&immutable=1"  # immutable: no WAL read
    with closing(sqlite3.connect(uri, uri=True)) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 20
