"""Tiny random-weight models, built offline in seconds, as standard Hugging Face folders.

No machine here can download weights, so tests, the demo and the benchmarks run the real loading
code (`from_pretrained`, safetensors) on folders built here from small configs. Their outputs
are noise, and every folder says so in its README. One builder module per model family, each
with `build(folder, seed) -> folder`; `make_tiny` builds the ones asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path

BUILDERS: dict[str, str] = {
    "lm": "aigc_pipeline.tiny.lm",
    "sd": "aigc_pipeline.tiny.diffusion",
    "tts": "aigc_pipeline.tiny.tts",
    "text-classifier": "aigc_pipeline.tiny.text_classifier",
    "image-classifier": "aigc_pipeline.tiny.image_classifier",
    "video": "aigc_pipeline.tiny.video",
}

NOTICE = """# Tiny random-weight models (aigc-pipeline)

Built offline by `aigc models make-tiny` from small configs with random weights. They run
every real code path (tokenizers, `from_pretrained`, safetensors, generation, denoising,
speech synthesis) but their outputs are NOISE: gibberish text, noise images, buzzing audio.
Use real models (`model: gpt2`, a Stable Diffusion folder, ...) for real content.
"""


def has_random_weights(folder: str | Path) -> bool:
    """Whether a model folder was built by `make_tiny` (its README carries the notice): its outputs are noise."""
    try:
        with (Path(folder) / "README.md").open(encoding="utf-8") as handle:
            return handle.readline().strip() == NOTICE.splitlines()[0]
    except (OSError, UnicodeDecodeError):
        return False


def make_tiny(out_dir: str | Path, kinds: list[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Build the tiny models named in `kinds` (default: all) under `out_dir`; return their folders."""
    out = Path(out_dir)
    wanted = list(BUILDERS) if not kinds else kinds
    unknown = [kind for kind in wanted if kind not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown tiny model kind(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(NOTICE, encoding="utf-8")
    built = {}
    for kind in wanted:
        builder = importlib.import_module(BUILDERS[kind])
        built[kind] = builder.build(out / kind, seed=seed)
        (built[kind] / "README.md").write_text(NOTICE, encoding="utf-8")
    return built
