"""A generator architecture from a third-party plugin (installed into a temporary --target, as
tests/test_third_party_plugin.py does) runs in a `latent.image` pipeline through the `aigc` command;
the built-in architectures register through the same hook; an unknown name lists the registered ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_pipeline.generators.registry import registered_architectures
from aigc_pipeline.plugin_manager import get_plugin_manager

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent.parent / "plugin_fixtures" / "aigc-tinygan"
PIPELINE = """\
name: plugin_gan
inputs: {product: str}
seed: 2
stages:
  art: {uses: latent.image, with: {model: checker, scale: 3}}
outputs: {art: art.image}
"""
SAVE_MODEL = """\
import sys, torch
from pathlib import Path
from aigc_tinygan import aigc_register_generators
from aigc_pipeline.generators.folders import save_generator
torch.manual_seed(0)
[cls] = aigc_register_generators()
save_generator(cls(latent_dim=4, size=6), Path(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinygan")
    source = shutil.copytree(FIXTURE, root / "src")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--quiet", "--target", str(root / "site"), str(source)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    return root / "site"


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def aigc() -> str:
    executable = Path(sys.executable).with_name("aigc")
    return str(executable) if executable.exists() else "aigc"


def test_a_plugin_architecture_runs_in_a_pipeline(site: Path, tmp_path: Path) -> None:
    saved = run(site, tmp_path, sys.executable, "-c", SAVE_MODEL, "checker")
    assert saved.returncode == 0, saved.stderr
    assert json.loads((tmp_path / "checker" / "config.json").read_text())["architecture"] == "checker_gan"
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "rows.csv").write_text("product\nkettle\nlamp\n")
    done = run(site, tmp_path, aigc(), "run", "p.yaml", "-i", "rows.csv", "-o", "out", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == ["done", "done"]
    art = rows[0]["outputs"]["art"]
    assert art["architecture"] == "checker_gan" and (art["width"], art["height"]) == (18, 18)
    images = [(tmp_path / "out" / row["outputs"]["art"]["path"]).read_bytes() for row in rows]
    assert images[0] != images[1]  # a latent per row


def test_without_the_plugin_the_architecture_is_unknown(tmp_path: Path, site: Path) -> None:
    saved = run(site, tmp_path, sys.executable, "-c", SAVE_MODEL, "checker")
    assert saved.returncode == 0, saved.stderr
    (tmp_path / "p.yaml").write_text(PIPELINE)
    (tmp_path / "rows.csv").write_text("product\nkettle\n")
    done = run(Path("/nonexistent"), tmp_path, aigc(), "run", "p.yaml", "-i", "rows.csv", "-o", "out", "-q")
    assert done.returncode != 0
    assert "unknown generator architecture 'checker_gan'" in done.stderr
    assert "conditional_dcgan, dcgan, vae_decoder" in done.stderr


def test_builtin_architectures_register_through_the_hook() -> None:
    found = registered_architectures(get_plugin_manager(()))
    assert sorted(found) == ["conditional_dcgan", "dcgan", "vae_decoder"]
    assert all(cls.__module__.startswith("aigc_pipeline.generators.") for cls in found.values())
