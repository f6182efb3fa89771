"""Acceptance of defect 1 with real (tiny) models: an llm + image + voice pipeline stopped twice
by SIGTERM as `timeout` sends it, then run to the end, gives the uninterrupted run's results and
artifacts, byte for byte, with no row quarantined (`batch_invariant: true` keeps each image
independent of which rows shared its batch). The 200-row version was run by hand for issue 13.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from reliability_support import HANG_PLUGIN, finish, signal_like_timeout, start, store_counts, wait_for_results

ROWS = 24
PIPELINE = """
name: acceptance
inputs: {text: str}
seed: 1234
stages:
  prompt: {uses: template, with: {template: "Write an ad for {{ text }}."}}
  copy:
    uses: llm.text
    inputs: {prompt: prompt.text}
    with: {model: models/tiny/lm, max_new_tokens: 8, temperature: 0.8}
    batch_size: 4
  image_prompt: {uses: template, with: {template: "photo of {{ text }}"}}
  hero:
    uses: diffusion.image
    inputs: {prompt: image_prompt.text}
    with: {model: models/tiny/sd, steps: 2, width: 32, height: 32, batch_invariant: true}
    batch_size: 4
  voice: {uses: tts, inputs: {text: copy.text}, with: {backend: stub, sample_rate: 8000}}
outputs: {copy: copy.text, image: hero.image, audio: voice.audio}
"""


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "artifacts").rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_sigterms_then_a_full_run_give_the_uninterrupted_results(tmp_path: Path, tiny_model: object) -> None:
    pytest.importorskip("diffusers")
    for kind in ("lm", "sd"):
        shutil.copytree(tiny_model(kind), tmp_path / "models" / "tiny" / kind)  # type: ignore[operator]
    (tmp_path / "pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": f"product {i}"}) + "\n" for i in range(ROWS)))
    (tmp_path / "hang_plugin.py").write_text(HANG_PLUGIN, encoding="utf-8")
    code, output = finish(start(tmp_path, "reference"))
    assert code == 0, output
    out = tmp_path / "out"
    for _ in range(2):  # like `timeout 9 aigc run ...; timeout 6 aigc run ...`, at points of progress
        process = start(tmp_path, "out")
        wait_for_results(process, out, store_counts(out)["results"] + ROWS + 8)
        signal_like_timeout(process, signal.SIGTERM)
        code, output = finish(process)
        assert code in (0, 128 + signal.SIGTERM), output
        assert store_counts(out)["inflight"] == 0 and store_counts(out)["suspects"] == 0
    code, output = finish(start(tmp_path, "out"))
    assert code == 0, output
    assert (out / "results.jsonl").read_bytes() == (tmp_path / "reference" / "results.jsonl").read_bytes()
    assert tree(out) == tree(tmp_path / "reference")
    assert store_counts(out)["suspects"] == 0
