"""Stage versions in the store's keys: a plugin release re-runs its stage and what depends on it only.

A small plugin distribution is written here, built and installed with `pip install --target` into
a temporary folder, once per version (the shared venv is never changed); `aigc` subprocesses find
it through PYTHONPATH, as for a pip-installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aigc_pipeline.content import TEXT
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.testing import fake_engine, run_text

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "aigc-stamp"
version = "DIST_VERSION"
dependencies = ["aigc-pipeline"]

[project.entry-points.aigc_pipeline]
stamp = "aigc_stamp"

[tool.setuptools]
py-modules = ["aigc_stamp"]
"""

MODULE = '''\
from aigc_pipeline import TEXT, Stage, StageItem, hookimpl


class Stamp(Stage):
    type_name = "stamp"
    version = "STAGE_VERSION"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = item.inputs["text"] + " [stamp STAGE_VERSION]"
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [Stamp]
'''

PIPELINE = """\
name: stamped
inputs: {product: str}
plugins: [stamp]
stages:
  brief: {uses: template, with: {template: "buy {{ product }}"}}
  side: {uses: template, with: {template: "{{ brief }} today"}, inputs: {brief: brief.text}}
  stamp: {uses: stamp, inputs: {text: brief.text}}
  tail: {uses: template, with: {template: "{{ stamped }}!"}, inputs: {stamped: stamp.text}}
outputs: {tail: tail.text, side: side.text}
"""


def install(root: Path, dist_version: str, stage_version: str) -> Path:
    """Build and install aigc-stamp at these versions into its own folder; return that folder."""
    source = root / f"src-{dist_version}"
    source.mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT.replace("DIST_VERSION", dist_version))
    (source / "aigc_stamp.py").write_text(MODULE.replace("STAGE_VERSION", stage_version))
    target = root / f"site-{dist_version}"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return target


def aigc(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "250", "NO_COLOR": "1"}
    executable = Path(sys.executable).with_name("aigc")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "aigc_pipeline.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def stage_counts(out: Path) -> dict[str, tuple[int, int]]:
    """(done, cached) per stage, from the manifest of the run that just ended."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {sid: (stats["done"], stats["cached"]) for sid, stats in manifest["stages"].items()}


@pytest.mark.slow
def test_a_new_plugin_version_reruns_its_stage_and_what_depends_on_it_only(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "rows.jsonl").write_text('{"product": "kettle"}\n{"product": "lamp"}\n')
    run = ("run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "-q")
    first = install(tmp_path, "1.0", "1")
    done = aigc(first, tmp_path, *run)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["plugins"]["aigc-stamp"] == "1.0"
    assert manifest["stage_versions"]["stamp"] == {"type": "stamp", "version": "1", "distribution": "aigc-stamp",
                                                   "distribution_version": "1.0"}
    assert manifest["stage_versions"]["brief"]["distribution"] == "aigc-pipeline"
    again = aigc(first, tmp_path, *run)  # the same version: everything is reused
    assert again.returncode == 0, again.stderr
    # (templates are not stored: they render again)
    assert stage_counts(tmp_path / "out") == {"brief": (2, 0), "side": (2, 0), "stamp": (2, 2), "tail": (2, 0)}

    second = install(tmp_path, "1.1", "2")
    done = aigc(second, tmp_path, *run)
    assert done.returncode == 0, done.stderr
    # stamp's new version ran it again (templates are never stored)
    assert stage_counts(tmp_path / "out") == {"brief": (2, 0), "side": (2, 0), "stamp": (2, 0), "tail": (2, 0)}
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["outputs"]["tail"] for r in results] == ["buy kettle [stamp 2]!", "buy lamp [stamp 2]!"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["plugins"]["aigc-stamp"] == "1.1" and manifest["stage_versions"]["stamp"]["version"] == "2"


class Counting(Stage):
    """Appends a fixed mark; counts the items it processed."""

    type_name = "test.mark"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    processed = 0

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        Counting.processed += len(batch)
        for item in batch:
            item.outputs["text"] = item.inputs["text"] + "."
        return batch


class Plugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [Counting]


RERUN = """
name: rerun
inputs: {text: str}
stages:
  first: {uses: test.mark, inputs: {text: inputs.text}}
  second: {uses: test.mark, inputs: {text: first.text}}
"""


def stats(result: Any) -> dict[str, tuple[int, int]]:
    return {sid: (s.done, s.cached) for sid, s in result.summary.stages.items()}


def test_rerun_runs_the_stage_again_and_reuses_what_its_equal_outputs_feed(tmp_path: Path) -> None:
    engine = fake_engine(Plugin())
    rows = [{"text": "a"}, {"text": "b"}]
    run_text(RERUN, rows, tmp_path / "out", engine=engine)
    Counting.processed = 0
    again = run_text(RERUN, rows, tmp_path / "out", engine=engine, rerun=["first"])
    assert Counting.processed == 2  # first ran again; its outputs came out equal, so second is reused
    assert stats(again) == {"first": (2, 0), "second": (2, 2)}


def test_rerun_of_an_unknown_stage_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--rerun frist: pipeline 'rerun' has no stage 'frist'; did you mean 'first'"):
        run_text(RERUN, [{"text": "a"}], tmp_path / "out", engine=fake_engine(Plugin()), rerun=["frist"])
    assert not (tmp_path / "out" / "results.jsonl").exists()


class Grown(Stage):
    """Version 1 had only `text`; this one also has `length` (its author forgot to bump `version`)."""

    type_name = "test.mark"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT, "length": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"], item.outputs["length"] = item.inputs["text"] + ".", str(len(item.inputs["text"]))
        return batch


class GrownPlugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [Grown]


def test_a_stored_result_without_a_port_the_stage_has_now_runs_again(tmp_path: Path) -> None:
    rows = [{"text": "a"}, {"text": "bb"}]
    run_text(RERUN, rows, tmp_path / "out", engine=fake_engine(Plugin()))
    grown = RERUN.replace("  second: {uses: test.mark, inputs: {text: first.text}}\n",
                          "  second: {uses: test.mark, inputs: {text: first.text}}\noutputs: {length: second.length}\n")
    again = run_text(grown, rows, tmp_path / "out", engine=fake_engine(GrownPlugin()))
    assert again.summary.ok, again.summary.error
    assert [r.outputs["length"] for r in again.results] == ["2", "3"]
    assert stats(again) == {"first": (2, 0), "second": (2, 0)}
