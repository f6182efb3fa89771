"""Defects 4-7: a damaged store, a full disk, a linked artifacts folder, a changed artifact.

Each ends in a clear message saying what to do (--fresh, free space, remove the link) or in the
artifact running again; never in a traceback, never in a good results.jsonl replaced by a worse one.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from reliability_support import aigc, small_tmpfs

from aigc_pipeline.content import ArtifactData
from aigc_pipeline.sinks import ArtifactWriter

PIPELINE = """
name: out_test
inputs: {text: str}
seed: 3
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  picture: {uses: test.image, inputs: {text: prompt.text}}
outputs: {text: prompt.text, image: picture.image}
"""
ROWS = 40


def setup(folder: Path, rows: int = ROWS) -> None:
    (folder / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (folder / "rows.jsonl").write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(rows)))


def run(folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    return aigc("run", str(folder / "p.yaml"), "-i", str(folder / "rows.jsonl"), "-o", str(out), "-q",
                "--plugin", "aigc_pipeline.testing", *extra)


@pytest.fixture
def done(tmp_path: Path) -> Path:
    """A finished run's output folder, its store checkpointed into run.sqlite (no -wal file)."""
    setup(tmp_path)
    code, output = run(tmp_path, tmp_path / "out")
    assert code == 0, output
    with sqlite3.connect(tmp_path / "out" / "run.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / "out" / f"run.sqlite{suffix}").unlink(missing_ok=True)
    return tmp_path / "out"


def test_a_truncated_store_is_a_clear_error_naming_fresh(done: Path) -> None:
    good = (done / "results.jsonl").read_bytes()
    store = done / "run.sqlite"
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    code, output = run(done.parent, done)
    assert code == 2 and "damaged" in output and "--fresh" in output, output
    assert (done / "results.jsonl").read_bytes() == good
    code, output = run(done.parent, done, "--fresh")
    assert code == 0 and (done / "results.jsonl").read_bytes() == good, output


def test_a_garbled_store_never_replaces_good_results(done: Path) -> None:
    good = (done / "results.jsonl").read_bytes()
    store = done / "run.sqlite"
    data = bytearray(store.read_bytes())
    page = 4096
    for start in range(page, len(data), page):  # every page after the first: headers and cells
        data[start + 8 : start + 200] = os.urandom(192)
    store.write_bytes(bytes(data))
    code, output = run(done.parent, done)
    assert code in (1, 2) and "--fresh" in output, output
    assert (done / "results.jsonl").read_bytes() == good


def test_a_same_size_changed_artifact_runs_again(done: Path) -> None:
    good = (done / "results.jsonl").read_bytes()
    image = done / json.loads(good.splitlines()[5])["outputs"]["image"]["path"]
    original = image.read_bytes()
    image.write_bytes(original[:-4] + b"XXXX")
    code, output = run(done.parent, done)
    assert code == 0, output
    assert image.read_bytes() == original and (done / "results.jsonl").read_bytes() == good


def test_a_linked_artifacts_folder_is_refused_and_nothing_is_written_or_deleted_there(done: Path,
                                                                                     tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".precious.png.1234.tmp").write_text("not the engine's")
    shutil.rmtree(done / "artifacts")
    (done / "artifacts").symlink_to(elsewhere, target_is_directory=True)
    code, output = run(done.parent, done)
    assert code == 2 and "symbolic link" in output, output
    assert sorted(p.name for p in elsewhere.iterdir()) == [".precious.png.1234.tmp"]


def test_a_linked_stage_folder_is_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / "artifacts").mkdir(parents=True)
    (tmp_path / "out" / "artifacts" / "picture").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError, match="symbolic link"):
        ArtifactWriter(tmp_path / "out").save("picture", 0, "image", ArtifactData(b"png", ".png"))
    assert list(elsewhere.iterdir()) == []


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` up to `leave` bytes."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with (folder / "filler").open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def test_a_full_disk_is_a_clear_error_and_results_survive(tmp_path: Path) -> None:
    setup(tmp_path, rows=300)
    with small_tmpfs(tmp_path, size="4m") as disk:
        out = disk / "out"
        fill(disk, 600 * 1024)  # room for the store, not for 300 artifacts (a page each)
        code, output = run(tmp_path, out)
        assert code == 1 and "free space" in output and "rows:" in output, output  # the summary, too
        (disk / "filler").unlink()
        code, output = run(tmp_path, out)
        assert code == 0, output
        good = (out / "results.jsonl").read_bytes()
        assert good.count(b'"status": "done"') == 300
        fill(disk, 0)
        code, output = run(tmp_path, out)
        assert code in (1, 2) and "free space" in output, output
        assert (out / "results.jsonl").read_bytes() == good
