"""Preflight reports every missing model of a pipeline in one error, before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_missing_model_is_named_in_one_error_offline(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home"), "COLUMNS": "250",
           "NO_COLOR": "1"}
    executable = Path(sys.executable).with_name("aigc")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "aigc_pipeline.cli"]
    done = subprocess.run(
        [*command, "run", str(ROOT / "pipelines" / "marketing.yaml"), "-i", str(ROOT / "pipelines" / "data" /
         "products.csv"), "-o", str(tmp_path / "out"), "-q", "--set", "copy.model=gpt2",
         "--set", "hero.model=stable-diffusion-v1-5/stable-diffusion-v1-5"],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: 2 stages cannot run; nothing was loaded or run")
    assert "stage 'copy' (llm.text): model 'gpt2' is not a local folder" in done.stderr
    assert "stage 'hero' (diffusion.image): model 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in done.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_one_failing_stage_keeps_its_own_error(tmp_path: Path) -> None:
    from aigc_pipeline import Engine, StageError
    from aigc_pipeline.planning import preflight

    missing = tmp_path / "no-such-model"
    graph = Engine().load_text(f"""
name: one
inputs: {{product: str}}
stages:
  prompt: {{uses: template, with: {{template: "ad for {{{{ product }}}}"}}}}
  copy: {{uses: llm.text, inputs: {{prompt: prompt.text}}, with: {{model: "{missing}"}}}}
""")
    with pytest.raises(StageError, match=f"stage 'copy' \\(llm.text\\): model '{missing}': no such folder"):
        preflight(graph)
