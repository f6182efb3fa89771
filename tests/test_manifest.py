"""manifest.json: what made a run's outputs, written when it starts and when it ends."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from aigc_pipeline.manifest import MANIFEST_FILE, start_manifest
from aigc_pipeline.testing import fake_engine, run_text

PIPELINE = """
name: manifest_demo
inputs: {text: str}
seed: 11
stages:
  say: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "> "}}
  picture: {uses: test.image, inputs: {text: say.text}}
outputs: {text: say.text, image: picture.image}
"""


def test_the_manifest_records_the_run(tmp_path: Path) -> None:
    result = run_text(PIPELINE, [{"text": "a"}, {"text": "b"}], tmp_path / "out", overrides=["picture.size=4"])
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["status"] == "finished" and manifest["error"] is None
    assert manifest["pipeline"]["name"] == "manifest_demo" and manifest["pipeline"]["text"] == PIPELINE
    assert manifest["pipeline"]["sha256"] == hashlib.sha256(PIPELINE.encode()).hexdigest()
    assert manifest["params"]["picture"] == {"size": 4}  # --set overrides included
    assert manifest["seed"] == 11 and manifest["input"]["rows"] == 2 and manifest["input"]["columns"] == {"text": "str"}
    assert manifest["versions"]["aigc-pipeline"] and manifest["versions"]["python"].count(".") == 2
    assert manifest["placement"] == {"say": "cpu", "picture": "cpu"} and manifest["devices"] == ["cpu"]
    assert manifest["executor"] == "local" and manifest["replicas"] == {}
    assert manifest["counts"]["done"] == 2 and manifest["started_at"] <= manifest["ended_at"]
    picture = manifest["stages"]["picture"]
    assert picture["done"] == 2 and picture["seconds"] >= 0 and picture["load_seconds"] >= 0
    assert picture["loads"] == 0  # test.image has no model: nothing loads
    assert picture["peak_memory"]["kind"] == "process_peak_rss" and picture["peak_memory"]["bytes"] > 0
    assert result.summary.ok


def test_the_manifest_names_model_identities(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"x" * 10)
    engine = fake_engine()
    graph = engine.load_text(PIPELINE, "<test>")
    from aigc_pipeline.stage import Stage

    assert Stage.model_identity(graph.pipeline.params["say"]) == []  # no model param: no identity
    from pydantic import BaseModel

    class Params(BaseModel):
        model: str
        revision: str | None = None

    found = Stage.model_identity(Params(model=str(model)))
    assert found[0]["model"] == str(model) and len(found[0]["files"]) == 32
    (model / "model.safetensors").write_bytes(b"y" * 11)  # new weights: a new identity, so a cache miss
    assert Stage.model_identity(Params(model=str(model)))[0]["files"] != found[0]["files"]


def test_a_manifest_of_a_killed_run_still_says_running(tmp_path: Path) -> None:
    engine = fake_engine()
    graph = engine.load_text(PIPELINE, "<test>")
    from aigc_pipeline.planning import make_plan

    manifest = start_manifest(graph, make_plan(graph, engine.pm), tmp_path / "rows.jsonl", 3)
    assert manifest["status"] == "running" and manifest["ended_at"] is None


def test_building_the_manifest_imports_no_torch(tmp_path: Path) -> None:
    import subprocess

    code = ("import sys\nfrom pathlib import Path\nfrom aigc_pipeline.testing import run_text\n"
            f"run_text({PIPELINE!r}, [{{'text': 'a'}}], Path({str(tmp_path / 'out')!r}))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
