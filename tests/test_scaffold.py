"""`aigc init plugin NAME`: names, files, refusals, and (slow) the scaffold installs, lists and tests green."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigc_pipeline import __version__, scaffold
from aigc_pipeline.cli import app
from aigc_pipeline.scaffold import PluginNames, plugin_names, scaffold_plugin

EXPECTED_FILES = ["pyproject.toml", "README.md", "aigc_demo_scaffold/__init__.py", "aigc_demo_scaffold/stages.py",
                  "tests/test_stages.py"]


def test_names_are_derived_from_the_one_given() -> None:
    assert plugin_names("aigc-watermark") == PluginNames(
        "aigc-watermark", "aigc_watermark", "watermark", "watermark.example", __version__)
    assert plugin_names("brandy").entry_point == "brandy"
    names = plugin_names("aigc_tone_score")
    assert (names.package, names.entry_point, names.stage_type) == (
        "aigc_tone_score", "tone_score", "tone_score.example")
    assert plugin_names("aigc").stage_type == "aigc.example"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "must be lowercase letters and digits"),
        ("Watermark", "must be lowercase letters and digits"),
        ("-x", "starting with a letter"),
        ("x-", "words joined by '-' or '_'"),
        ("a--b", "words joined by '-' or '_'"),
        ("../evil", "must be lowercase"),
        ("a" * 61, "at most 60 characters"),
        ("aigc-3d", "the part after 'aigc-' must start with a letter (e.g. 'aigc-x3d')"),
        ("json", "would make a package 'json' that hides an existing module"),
        ("class", "would make a package 'class'"),
        ("aigc-pipeline", "would make a package 'aigc_pipeline'"),
    ],
)
def test_bad_names_are_refused(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        scaffold_plugin(name, tmp_path)
    assert expected in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_scaffold_writes_an_installable_package(tmp_path: Path) -> None:
    names, files = scaffold_plugin("aigc-demo-scaffold", tmp_path)
    root = tmp_path / "aigc-demo-scaffold"
    assert files == [root / relpath for relpath in EXPECTED_FILES]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(EXPECTED_FILES)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "aigc-demo-scaffold"
    assert project["project"]["entry-points"]["aigc_pipeline"] == {"demo_scaffold": "aigc_demo_scaffold"}
    assert project["project"]["dependencies"] == [f"aigc-pipeline>={__version__}"]
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    for path in files:
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")  # valid Python, no placeholders left
        assert "$" not in path.read_text(), path
    assert 'type_name = "demo_scaffold.example"' in (root / "aigc_demo_scaffold" / "stages.py").read_text()
    assert "plugins: [demo_scaffold]" in (root / "tests" / "test_stages.py").read_text()
    assert names.stage_type in (root / "README.md").read_text()


def test_an_existing_folder_is_never_touched(tmp_path: Path) -> None:
    existing = tmp_path / "aigc-demo-scaffold"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists; nothing was written"):
        scaffold_plugin("aigc-demo-scaffold", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["aigc-demo-scaffold"]
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]


def test_a_name_that_is_already_importable_or_installed_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="a module named 'typer' is already importable"):
        scaffold_plugin("typer", tmp_path)
    monkeypatch.setattr(scaffold, "installed_plugins", lambda: {"demo_scaffold": _FakeEntryPoint()})
    with pytest.raises(ValueError, match="a plugin named 'demo_scaffold' is already installed by distribution 'other'"):
        scaffold_plugin("aigc-demo-scaffold", tmp_path)
    assert list(tmp_path.iterdir()) == []


class _FakeEntryPoint:
    class dist:  # noqa: N801 - mimics EntryPoint.dist
        name = "other"


def test_a_failure_half_way_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaffold, "STAGES", "$not_a_name")
    with pytest.raises(KeyError):
        scaffold_plugin("aigc-demo-scaffold", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scaffold_plugin("aigc-demo-scaffold", tmp_path / "nope")


def test_cli_init_plugin(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["init", "plugin", "aigc-demo-scaffold", "--dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert f"created {tmp_path / 'aigc-demo-scaffold'}: plugin 'demo_scaffold' with the stage type " \
           "'demo_scaffold.example'" in done.output
    assert f"pip install -e {tmp_path / 'aigc-demo-scaffold'}" in done.output
    again = runner.invoke(app, ["init", "plugin", "aigc-demo-scaffold", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["init", "plugin", "Bad Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "must be lowercase letters" in bad.output


@pytest.mark.slow
def test_scaffold_installs_with_pip_lists_its_stage_and_its_test_passes(tmp_path: Path) -> None:
    _, files = scaffold_plugin("aigc-demo-scaffold", tmp_path)
    root, site = files[0].parent, tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(site), str(root)]
    subprocess.run(pip, check=True, capture_output=True, text=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "250", "NO_COLOR": "1"}
    aigc = shutil.which("aigc", path=str(Path(sys.executable).parent))
    command = [aigc] if aigc else [sys.executable, "-m", "aigc_pipeline.cli"]
    listed = subprocess.run([*command, "stages"], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "demo_scaffold.example  (demo_scaffold)  Example: upper-case the text" in listed.stdout
    # The venv's pytest script, not `python -m pytest`: the package must come from the install, not the folder.
    pytest_script = Path(sys.executable).with_name("pytest")
    tests = subprocess.run([str(pytest_script), "-q", "-p", "no:cacheprovider"], cwd=root, capture_output=True,
                           text=True, env=env, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout


def test_the_scaffolded_stage_is_generic_in_its_params(tmp_path: Path) -> None:
    scaffold_plugin("aigc-demo-typed", tmp_path)
    source = (tmp_path / "aigc-demo-typed" / "aigc_demo_typed" / "stages.py").read_text()
    assert "class ExampleStage(Stage[ExampleParams]):" in source
    assert "self.p " not in source and "self.p." not in source  # no untyped alias of the params
    assert "self.params.suffix" in source
