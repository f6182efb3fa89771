"""Acceptance: a plugin shipped as its own distribution works through the `aigc` command.

The plugin source trees in `plugin_fixtures/` are built and installed with
`pip install --target`, into a temporary folder only (the shared venv is never changed); the
`aigc` subprocesses find their dist-info through PYTHONPATH, exactly as for a pip-installed
package. `aigc-lazy` records every import of itself, so the tests can see what the engine imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "plugin_fixtures"
DISTRIBUTIONS = ("aigc-shout", "aigc-lazy")

BUILTIN_ONLY = """\
name: builtin_only
inputs: {product: str}
stages:
  brief: {uses: template, with: {template: "buy {{ product }}"}}
"""

SHOUTING = """\
name: shouting
inputs: {product: str}
plugins: [shout]
stages:
  brief: {uses: template, with: {template: "buy {{ product }}"}}
  loud: {uses: shout, inputs: {text: brief.text}, with: {suffix: "!!"}}
outputs: {loud: loud.text}
"""

USES_LAZY = """\
name: uses_lazy
inputs: {product: str}
stages:
  lazy: {uses: lazy.stage, inputs: {text: inputs.product}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both fixture distributions, built from copies of their sources and installed in one folder."""
    root = tmp_path_factory.mktemp("third_party")
    sources = [shutil.copytree(FIXTURES / name, root / "src" / name) for name in DISTRIBUTIONS]
    target = root / "site"
    # --no-build-isolation: setuptools comes from the venv, so the build needs no index at all.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, sources)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return target


def aigc(site: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `aigc ARGS` with the plugins on the path; also return the lazy plugin's imports."""
    marker = tmp_path / f"imports-{len(list(tmp_path.glob('imports-*')))}.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "AIGC_TEST_IMPORT_MARKER": str(marker), "COLUMNS": "250", "NO_COLOR": "1"}
    executable = Path(sys.executable).with_name("aigc")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "aigc_pipeline.cli"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    imports = marker.read_text().splitlines() if marker.exists() else []
    return done, imports


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return name


@pytest.fixture
def rows(tmp_path: Path) -> str:
    return write(tmp_path, "rows.jsonl", '{"product": "kettle"}\n{"product": "lamp"}\n')


def test_stages_lists_the_plugin_stage_with_its_plugin(site: Path, tmp_path: Path) -> None:
    done, _ = aigc(site, tmp_path, "stages")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("shout "))
    assert "(shout)" in line and "upper-case the text" in line
    assert "suffix: str = '!'" in done.stdout
    assert "lazy.stage  (lazy)" in done.stdout
    assert "template  (aigc_pipeline.stages.template)" in done.stdout


def test_plugins_lists_the_plugin_with_its_distribution(site: Path, tmp_path: Path) -> None:
    done, _ = aigc(site, tmp_path, "plugins")
    assert done.returncode == 0, done.stderr
    shout_row = next(line for line in done.stdout.splitlines() if "│ shout " in line)
    assert "entry point (aigc-shout 1.2.3)" in shout_row
    assert "entry point (aigc-lazy 0.0.1)" in done.stdout


def test_run_uses_the_plugin_stage_and_imports_only_the_named_plugin(site: Path, tmp_path: Path, rows: str) -> None:
    done, imports = aigc(site, tmp_path, "run", write(tmp_path, "p.yaml", SHOUTING), "-i", rows, "-o", "out", "-q")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["status"], r["outputs"]) for r in results] == [
        ("done", {"loud": "BUY KETTLE!!"}),
        ("done", {"loud": "BUY LAMP!!"}),
    ]
    assert imports == []  # `plugins: [shout]` loads shout and nothing else


def test_builtin_only_pipeline_imports_no_plugin(site: Path, tmp_path: Path, rows: str) -> None:
    pipeline = write(tmp_path, "p.yaml", BUILTIN_ONLY)
    validated, imports = aigc(site, tmp_path, "validate", pipeline)
    assert validated.returncode == 0, validated.stderr
    assert imports == []
    ran, imports = aigc(site, tmp_path, "run", pipeline, "-i", rows, "-o", "out", "-q")
    assert ran.returncode == 0, ran.stderr
    assert imports == []


def test_pipeline_using_a_plugin_stage_imports_that_plugin(site: Path, tmp_path: Path, rows: str) -> None:
    done, imports = aigc(site, tmp_path, "run", write(tmp_path, "p.yaml", USES_LAZY), "-i", rows, "-o", "out", "-q")
    assert done.returncode == 0, done.stderr
    assert imports == ["imported aigc_lazy_plugin"]
    first = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert first["outputs"] == {"lazy.text": "lazy:kettle"}


def test_pipeline_naming_an_uninstalled_plugin_lists_the_installed_ones(site: Path, tmp_path: Path) -> None:
    done, imports = aigc(site, tmp_path, "validate", write(tmp_path, "p.yaml", BUILTIN_ONLY + "plugins: [nope]\n"))
    assert done.returncode == 2
    assert "plugin 'nope'" in done.stderr and "not installed" in done.stderr
    assert "lazy, shout" in done.stderr
    assert imports == []


def test_pipeline_file_cannot_import_a_module_path(site: Path, tmp_path: Path) -> None:
    # aigc_lazy_plugin is importable (it is on the path), but it is a module, not a registered name.
    pipeline = write(tmp_path, "p.yaml", USES_LAZY + "plugins: [aigc_lazy_plugin]\n")
    done, imports = aigc(site, tmp_path, "validate", pipeline)
    assert done.returncode == 2
    assert "plugin 'aigc_lazy_plugin'" in done.stderr and "not installed" in done.stderr
    assert imports == []


def test_cli_plugin_option_imports_a_module_path(site: Path, tmp_path: Path) -> None:
    pipeline = write(tmp_path, "p.yaml", USES_LAZY)
    done, imports = aigc(site, tmp_path, "validate", pipeline, "--plugin", "aigc_lazy_plugin")
    assert done.returncode == 0, done.stderr
    assert imports == ["imported aigc_lazy_plugin"]


def test_cli_plugin_option_naming_an_installed_entry_point_module_registers_it_once(
    site: Path, tmp_path: Path
) -> None:
    # `aigc stages` loads every entry point, so the module arrives twice: as `lazy` and as --plugin.
    done, imports = aigc(site, tmp_path, "stages", "--plugin", "aigc_lazy_plugin")
    assert done.returncode == 0, done.stderr
    assert "lazy.stage  (lazy)" in done.stdout
    assert imports == ["imported aigc_lazy_plugin"]
