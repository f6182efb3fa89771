"""End to end on one CUDA GPU: the marketing pipeline on realistic-size random-weight models.

One command on a CUDA machine (nothing is downloaded; `gpu_run.sh` first installs what a bare GPU
machine lacks from wheels carried in `.whl/`, see benchmarks/README.md):

    python3 benchmarks/gpu_marketing.py                 # the recorded figures, about 7 minutes on an H200
    python3 benchmarks/gpu_marketing.py --dry-run       # tiny shapes, 8 rows, on the CPU: every code path

Without CUDA (and without --dry-run) it exits with status 2 and says so. Steps:

1. Build the models once into `--work-dir` (skipped when already there), `save_pretrained` with
   safetensors, so every arm loads the same files (../shared/BENCHMARKING.md, protocol 1):
   - LM: GPT-2-small shape (12 layers, 768 wide, 12 heads, 1024 positions) with the project's tiny
     byte-level BPE tokenizer (`aigc_pipeline.tiny.lm.build_tokenizer`, 512 tokens);
   - Stable Diffusion 1.5 shape: the SD 1.5 UNet (320/640/1280/1280, cross-attention 768), VAE
     (128/256/512/512), CLIP text encoder (12 layers, 768 wide, 77 positions) with the tiny
     CLIP-format BPE tokenizer, DDIM scheduler with SD 1.5's betas; weights saved in float16.
   - TTS: a VITS of MMS-TTS size (VitsConfig's defaults) with the tiny character tokenizer.
   `--dry-run`: a 2-layer, 64-wide LM and `aigc_pipeline.tiny`'s SD-style pipeline and VITS instead.
2. Text alone (`gpu_text.py`): `--text-batch` (256) prompts, `--tokens` (64) new tokens, bfloat16:
   eager HF `generate` in a hand-written script against the engine's `llm.text` eager and with
   `static_cache: true` (static KV cache, bucketed widths, torch.compile): tokens/s, the first
   (compiling) call's time, rows whose greedy text equals the script's.
3. Seeded rows (`--rows`, 256) of product / audience / features. Arms, interleaved `batched, engine,
   naive` per repeat after one untimed warm-up of each:
   - engine:  `engine.run` of the marketing pipeline (below): template -> llm.text -> filter.text
              -> tts (the VITS backend: espeak-ng is not on the GPU machine), template ->
              diffusion.image -> filter.image; diffusion in micro-batches of 2 x `--sd-batch`,
              pipeline calls of `--sd-batch` (PNG encoding overlaps the next call);
   - batched: a hand-written stage-major script on the same folders: all prompts through the LM in
              batches of `--lm-batch` (one `generate` each), then all image prompts through the SD
              pipeline in batches of `--sd-batch`, then every text through VITS one at a time
              (as the tts stage does), PNGs and WAVs written to disk;
   - naive:   the same per row (batch 1), over the first `--naive-rows` rows.
   LLM decoding is greedy with min_new_tokens == max_new_tokens (protocol 3), bfloat16; SD is
   float16, `--steps` DDIM steps at `--size`^2, guidance 7.5, one seeded generator per image.
   cuDNN SDPA is switched off in this process for every arm (protocol 4).
4. Phases: the engine again over `--phase-rows` rows with `--gpu-memory` set to fit the larger model
   alone but not both (from the stages' own estimates): two residency phases, one load per model.
5. Forced OOM: the engine over `--oom-rows` rows under the same `--gpu-memory`, the process capped
   to `--oom-cap-gib` of GPU memory (`torch.cuda.set_per_process_memory_fraction`) and the SD batch
   at `--oom-sd-batch`, so real CUDA out-of-memory errors halve the SD batch; every row must end done.

Reported: rows/s per arm (whole run incl. loading from page cache; and the loop from models
resident to last row written), ratios engine/batched and engine/naive, GPU busy (sampled from NVML
every 0.1 s: the engine's own per-phase figure and, for every arm, over the whole run), peak GPU
memory, the engine's per-model weights memory, loads per model, phases, OOM retries. JSON under
`--out` (and under $OUT when that is set, for the device tool).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
GiB = 2**30
SEED = 1234
DEVICE = "cuda"  # "cpu" under --dry-run

PRODUCTS = ["trail shoe", "desk lamp", "kettle", "pillow", "backpack", "headphones", "water bottle", "rain jacket",
            "coffee grinder", "yoga mat", "phone case", "wool sweater", "garden hose", "camping stove"]
AUDIENCES = ["weekend hikers", "students", "coffee lovers", "side sleepers", "commuters", "new parents", "runners"]
FEATURES = ["waterproof", "USB-C", "dimmable", "washable", "lightweight", "recycled materials", "two-year warranty",
            "quiet", "foldable", "keeps warm for 12 hours", "fits in a pocket", "grippy sole"]

PIPELINE = """
name: gpu_marketing
inputs: {{product: str, audience: str, features: "list[str]"}}
seed: 1234
stages:
  prompt:
    uses: template
    with:
      template: "Write a 40-word ad for {{{{ product }}}}, aimed at {{{{ audience }}}}.
        Mention: {{{{ features | join(', ') }}}}."
  copy:
    uses: llm.text
    inputs: {{prompt: prompt.text}}
    with: {{model: "{lm}", dtype: {lm_dtype}, max_new_tokens: {tokens}, min_new_tokens: {tokens}, chat_template: false}}
    batch_size: {lm_batch}
  checked:
    uses: filter.text
    inputs: {{text: copy.text}}
    with: {{max_words: 200, blocklist: [guaranteed, cure, miracle], on_fail: flag}}
  image_prompt:
    uses: template
    with: {{template: "studio product photo of {{{{ product }}}}, clean background, soft light"}}
  hero:
    uses: diffusion.image
    inputs: {{prompt: image_prompt.text}}
    with: {{model: "{sd}", dtype: {sd_dtype}, steps: {steps}, width: {size}, height: {size}, guidance: 7.5,
            scheduler: DDIMScheduler, pipeline_batch: {sd_call}}}
    batch_size: {sd_batch}
  hero_checked:
    uses: filter.image
    inputs: {{image: hero.image}}
    with: {{min_width: 8, min_height: 8, on_fail: flag}}
  voice:
    uses: tts
    inputs: {{text: checked.text}}
    with: {{backend: transformers, model: "{tts}"}}
    batch_size: {lm_batch}
outputs: {{copy: checked.text, image: hero_checked.image, audio: voice.audio}}
"""


# ------------------------------------------------------------------ models


def build_models(work: Path, tiny: bool = False) -> tuple[Path, Path, Path]:
    """GPT-2-small-shaped LM, SD-1.5-shaped pipeline and MMS-TTS-shaped VITS, random weights, built
    once into `work` (`tiny`: a 2-layer LM and aigc_pipeline.tiny's SD and VITS, for --dry-run)."""
    lm, sd = (work / "lm-tiny", work / "sd-tiny") if tiny else (work / "lm-gpt2-small", work / "sd15-shape")
    tts = work / ("tts-tiny" if tiny else "tts-mms-shape")
    if not (tts / "model.safetensors").exists():
        build_tts(tts, tiny)
    if not (lm / "model.safetensors").exists():
        build_lm(lm, {"n_embd": 64, "n_layer": 2, "n_head": 4} if tiny else {})
    if not (sd / "model_index.json").exists():
        if tiny:
            from aigc_pipeline.tiny.diffusion import build

            build(sd, seed=SEED)
        else:
            build_sd(sd)
    return lm, sd, tts


def build_tts(folder: Path, tiny: bool) -> None:
    """aigc_pipeline.tiny's VITS, or the same tokenizer with VitsConfig's default (MMS-TTS) sizes."""
    from aigc_pipeline.tiny import tts

    tts.build(folder, seed=SEED)
    if tiny:
        return
    import torch
    from transformers import VitsConfig, VitsModel

    vocab_size = len(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
    torch.manual_seed(SEED)
    model = VitsModel(VitsConfig(vocab_size=vocab_size, pad_token_id=0, sampling_rate=tts.SAMPLE_RATE)).eval()
    model.save_pretrained(folder, safe_serialization=True)


def build_lm(folder: Path, shape: dict[str, int]) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from aigc_pipeline.tiny.lm import build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 1024
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024,
                        **({"n_embd": 768, "n_layer": 12, "n_head": 12} | shape),
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").write_text("GPT-2-small-shaped random-weight model (benchmark): it outputs noise.\n")


def build_sd(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from aigc_pipeline.tiny.diffusion import BOS, CORPUS, EOS, MAX_LENGTH, NUM_MERGES, _write_bpe_files, clip_bpe

    vocab, merges = clip_bpe(CORPUS, NUM_MERGES)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)  # type: ignore[arg-type]
    torch.manual_seed(SEED)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 860M parameters is faster there
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=MAX_LENGTH, projection_dim=768, hidden_act="quick_gelu",
            bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS]))
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, norm_num_groups=32)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    pipe: Any = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                        scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    pipe.to(torch.float16).to("cpu").save_pretrained(folder, safe_serialization=True)
    _write_bpe_files(folder / "tokenizer", vocab, merges)
    (folder / "README.md").write_text("Stable-Diffusion-1.5-shaped random-weight pipeline (benchmark): noise.\n")
    del pipe, unet, vae, text_encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ rows


def make_rows(count: int) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    return [{"product": rng.choice(PRODUCTS), "audience": rng.choice(AUDIENCES),
             "features": rng.sample(FEATURES, rng.randint(1, 3))} for _ in range(count)]


def ad_prompt(row: dict[str, Any]) -> str:
    return (f"Write a 40-word ad for {row['product']}, aimed at {row['audience']}. "
            f"Mention: {', '.join(row['features'])}.")


def image_prompt(row: dict[str, Any]) -> str:
    return f"studio product photo of {row['product']}, clean background, soft light"


# ------------------------------------------------------------------ GPU helpers (no-ops on the CPU)


def busy_sampler() -> Any:
    """The engine's own NVML sampler (aigc_pipeline.gpu_busy) over cuda:0; on the CPU it samples nothing."""
    from aigc_pipeline.devices import Device
    from aigc_pipeline.gpu_busy import BusySampler

    return BusySampler([Device("cuda", 0)] if DEVICE == "cuda" else [])


def busy_of(sampler: Any) -> float | None:
    return next(iter(sampler.fractions().values()), None)


def reset_peak() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated()) if DEVICE == "cuda" else 0


def free_gpu() -> None:
    import torch

    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ arms


def engine_arm(rows_path: Path, pipeline: str, out: Path, **options: Any) -> dict[str, Any]:
    from aigc_pipeline.engine import Engine

    engine = Engine()
    graph = engine.load_text(pipeline, "<gpu_marketing>")
    if "cache" in inspect.signature(engine.run).parameters:
        options["cache"] = False  # every repeat does the work; no run store reuse
    reset_peak()
    with busy_sampler() as busy:
        started = time.perf_counter()
        result = engine.run(graph, rows_path, out, **options)
        whole = time.perf_counter() - started
    stages = result.summary.stages
    statuses = [r.status for r in result.results]
    models = ("copy", "hero", "voice")
    loads = max(stages[sid].load_seconds for sid in models)
    return {
        "whole_s": whole, "in_engine_s": result.summary.seconds, "loop_s": result.summary.seconds - loads,
        "rows": len(statuses), "done": statuses.count("done"), "error": result.summary.error,
        "busy": busy_of(busy), "peak_gpu_bytes": peak_bytes(),
        "busy_in_phases": {sid: getattr(stages[sid], "gpu_busy", None) for sid in models},
        "model_bytes": {sid: getattr(stages[sid], "model_bytes", 0) for sid in models},
        "phase_peak_bytes": {sid: stages[sid].peak_memory_bytes for sid in models},
        "first_batch_s": {sid: getattr(stages[sid], "first_batch_seconds", None) for sid in models},
        "loads": {sid: stages[sid].loads for sid in models},
        "oom_retries": {sid: stages[sid].oom_retries for sid in models},
        "phases": phases_of(out),
        "warnings": list(result.summary.warnings),
        "stage_seconds": {sid: s.seconds for sid, s in stages.items()},
    }


def phases_of(out: Path) -> list[list[str]] | None:
    """The residency phases the run recorded in its manifest."""
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("phases")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


class Scripted:
    """The hand-written arms: the same folders, tokenizer settings and decoding as the stages."""

    def __init__(self, lm: Path, sd: Path, tts: Path, args: argparse.Namespace) -> None:
        self.lm_folder, self.sd_folder, self.tts_folder, self.args = lm, sd, tts, args

    def load(self) -> None:
        import torch
        from diffusers import StableDiffusionPipeline
        from transformers import AutoModelForCausalLM, AutoTokenizer, VitsModel

        self.tokenizer = AutoTokenizer.from_pretrained(self.lm_folder)
        self.tokenizer.padding_side = "left"
        lm_dtype, sd_dtype = (torch.bfloat16, torch.float16) if DEVICE == "cuda" else (torch.float32, torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(self.lm_folder, dtype=lm_dtype).to(DEVICE).eval()
        pipe = StableDiffusionPipeline.from_pretrained(str(self.sd_folder), dtype=sd_dtype)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(DEVICE)
        self.voice_tokenizer = AutoTokenizer.from_pretrained(self.tts_folder)
        self.voice = VitsModel.from_pretrained(self.tts_folder).to(DEVICE).eval()

    def unload(self) -> None:
        self.model = self.pipe = self.voice = None
        free_gpu()

    def copy(self, rows: list[dict[str, Any]]) -> list[str]:
        import torch

        tokens = self.args.tokens
        batch = self.tokenizer([ad_prompt(r) for r in rows], return_tensors="pt", padding=True).to(DEVICE)
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def images(self, rows: list[dict[str, Any]], first_index: int, out: Path) -> None:
        import torch

        from aigc_pipeline.stage import item_seed

        size = self.args.size
        generators = [torch.Generator("cpu").manual_seed(item_seed(SEED, first_index + i, "hero"))
                      for i in range(len(rows))]
        with torch.inference_mode():
            result = self.pipe(prompt=[image_prompt(r) for r in rows], num_inference_steps=self.args.steps,
                               guidance_scale=7.5, width=size, height=size, generator=generators, output_type="pil")
        for i, image in enumerate(result.images):
            image.save(out / f"hero-{first_index + i}.png")

    def voices(self, texts: list[str], out: Path) -> None:
        """One VITS call per text (as the tts stage: VITS draws noise over the whole batch), seeded per row."""
        import torch

        from aigc_pipeline.audio import PCM16_MAX, encode_wav
        from aigc_pipeline.stage import item_seed

        for index, text in enumerate(texts):
            torch.manual_seed(item_seed(SEED, index, "voice"))
            encoded = self.voice_tokenizer(text, return_tensors="pt").to(DEVICE)
            with torch.inference_mode():
                waveform = self.voice(**encoded).waveform[0]
            pcm = waveform.float().clamp(-1, 1).mul(PCM16_MAX).round().to(torch.int16).cpu().numpy()
            (out / f"voice-{index}.wav").write_bytes(encode_wav(pcm.astype("<i2").tobytes(), 16_000))

    def run(self, rows: list[dict[str, Any]], out: Path, lm_batch: int, sd_batch: int) -> dict[str, Any]:
        """Load, then stage-major: every row through the LM, then SD, then TTS; write results."""
        out.mkdir(parents=True, exist_ok=True)
        reset_peak()
        with busy_sampler() as busy:
            started = time.perf_counter()
            self.load()
            resident = time.perf_counter()
            texts: list[str] = []
            for start in range(0, len(rows), lm_batch):
                texts += self.copy(rows[start : start + lm_batch])
            for start in range(0, len(rows), sd_batch):
                self.images(rows[start : start + sd_batch], start, out)
            self.voices(texts, out)
            with open(out / "results.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"row": i, "copy": t}) + "\n" for i, t in enumerate(texts))
            end = time.perf_counter()
        peak = peak_bytes()
        self.unload()
        return {"whole_s": end - started, "loop_s": end - resident, "rows": len(rows), "done": len(texts),
                "busy": busy_of(busy), "peak_gpu_bytes": peak}


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the three arms (2 fit 8 min)")
    parser.add_argument("--naive-rows", type=int, default=16, help="rows the naive per-row loop runs (it is slow)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per row (min == max)")
    parser.add_argument("--lm-batch", type=int, default=64)
    parser.add_argument("--sd-batch", type=int, default=16, help="images per pipeline call (script and engine)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--text-batch", type=int, default=256, help="text alone: prompts per generate call")
    parser.add_argument("--text-passes", type=int, default=3, help="text alone: passes per arm (the first untimed)")
    parser.add_argument("--phase-rows", type=int, default=64, help="rows of the --gpu-memory phases run")
    parser.add_argument("--oom-rows", type=int, default=64, help="rows of the forced-OOM run")
    parser.add_argument("--oom-cap-gib", type=float, default=6.0,
                        help="forced-OOM run: the process may allocate at most this much GPU memory")
    parser.add_argument("--oom-sd-batch", type=int, default=64, help="forced-OOM run: SD batch size to start from")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--with-continuous", action="store_true",
                        help="text alone: also transformers' continuous batching (generate_batch), for comparison "
                             "(not in --dry-run: on the CPU it sized a 5 GiB paged cache and ran for minutes)")
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument("--skip-oom", action="store_true")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU, tiny models and shapes, 8 rows: every code path, no meaningful figure")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "aigc-gpu-marketing")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.dry_run:
        args.rows, args.repeats, args.naive_rows, args.tokens, args.lm_batch, args.sd_batch = 8, 1, 2, 4, 4, 2
        args.steps, args.size, args.text_batch, args.text_passes, args.phase_rows, args.oom_rows = 2, 64, 8, 2, 8, 8
        args.oom_sd_batch = 4
        args.work_dir = args.work_dir.with_name(args.work_dir.name + "-dry-run")
    return args


def require_cuda(dry_run: bool) -> None:
    global DEVICE
    try:
        import torch
    except ImportError:
        print("gpu_marketing: needs torch (pip install '.[models]', a CUDA build of torch for the figures)",
              file=sys.stderr)
        raise SystemExit(2) from None
    if dry_run:
        DEVICE = "cpu"
        print("gpu_marketing: --dry-run on the CPU with tiny models: the code paths, not the figures")
        return
    if not torch.cuda.is_available():
        print(f"gpu_marketing: no CUDA device here (torch {torch.__version__}); this benchmark runs on a CUDA GPU "
              "only (--dry-run checks it on the CPU). Nothing was run.", file=sys.stderr)
        raise SystemExit(2)


def median_of(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def marketing_pipeline(args: argparse.Namespace, models: tuple[Path, Path, Path], sd_batch: int,
                       sd_call: int | None) -> str:
    lm, sd, tts = models
    lm_dtype, sd_dtype = ("bfloat16", "float16") if DEVICE == "cuda" else ("float32", "float32")
    return PIPELINE.format(lm=lm, sd=sd, tts=tts, tokens=args.tokens, lm_batch=args.lm_batch, steps=args.steps,
                           size=args.size, sd_batch=sd_batch, sd_call=sd_call or "null", lm_dtype=lm_dtype,
                           sd_dtype=sd_dtype)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    args = parse_args()
    require_cuda(args.dry_run)
    import torch

    if DEVICE == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)  # protocol 4: in every arm (same process)
    else:
        torch.set_num_threads(1)  # the same in every thread: engine stage threads and the scripts alike
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lm, sd, tts = build_models(args.work_dir, tiny=args.dry_run)
    build_s = time.perf_counter() - started
    device_name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)"
    print(f"device: {device_name}; models built/found in {build_s:.1f}s under {args.work_dir}", flush=True)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=args.work_dir))
    text = None if args.skip_text else text_alone(args, lm, runs)
    rows = make_rows(args.rows)
    rows_path = write_rows(args.work_dir / f"rows-{args.rows}.jsonl", rows)
    samples = interleaved_arms(args, (lm, sd, tts), rows, rows_path, runs)
    summary, ratios = summarise(samples)
    budget = phase_budget(lm, sd)
    phases = None if args.skip_phases else phases_run(args, (lm, sd, tts), rows, budget, runs)
    forced = None if args.skip_oom else forced_oom_run(args, (lm, sd, tts), rows, budget, runs)
    record = {
        "benchmark": "gpu_marketing", "date": dt.date.today().isoformat(), "config": vars(args) | {
            "work_dir": str(args.work_dir), "out": str(args.out), "cudnn_sdp": False, "gpu_memory": budget},
        "device": device_name, "versions": versions(), "build_s": build_s, "text_alone": text,
        "summary": summary, "ratios": ratios, "engine_loads_per_model": samples["engine"][-1]["loads"],
        "phases_run": phases, "forced_oom": forced, "samples": samples,
        "total_s": time.perf_counter() - started,
    }
    print_figures(record)
    write_record(args, record)


def text_alone(args: argparse.Namespace, lm: Path, runs: Path) -> dict[str, Any]:
    from gpu_text import text_section

    prompts = [ad_prompt(r) for r in make_rows(args.text_batch)]
    dtype = "bfloat16" if DEVICE == "cuda" else "float32"
    section = text_section(lm, prompts, args.tokens, dtype, DEVICE, args.text_passes, runs, args.with_continuous)
    free_gpu()
    print("text alone: " + ", ".join(f"{name} {arm['tokens_per_s']:.0f} tok/s" for name, arm in section.items()
                                     if isinstance(arm, dict) and "tokens_per_s" in arm), flush=True)
    return section


def interleaved_arms(args: argparse.Namespace, models: tuple[Path, Path, Path], rows: list[dict[str, Any]],
                     rows_path: Path, runs: Path) -> dict[str, list[dict[str, Any]]]:
    """Warm-up of each arm, then `repeats` rounds of batched, engine, naive."""
    warm_path = write_rows(args.work_dir / "rows-warmup.jsonl", rows[: 2 * args.sd_batch])
    pipeline = marketing_pipeline(args, models, 2 * args.sd_batch, args.sd_batch)
    script = Scripted(*models, args)
    script.run(rows[: args.sd_batch], runs / "warm-batched", args.lm_batch, args.sd_batch)
    engine_arm(warm_path, pipeline, runs / "warm-engine")
    script.run(rows[:2], runs / "warm-naive", 1, 1)
    samples: dict[str, list[dict[str, Any]]] = {"batched": [], "engine": [], "naive": []}
    for repeat in range(args.repeats):
        samples["batched"].append(script.run(rows, runs / f"batched-{repeat}", args.lm_batch, args.sd_batch))
        samples["engine"].append(engine_arm(rows_path, pipeline, runs / f"engine-{repeat}"))
        samples["naive"].append(script.run(rows[: args.naive_rows], runs / f"naive-{repeat}", 1, 1))
        print(f"repeat {repeat + 1}: " + ", ".join(
            f"{arm} {s[-1]['rows'] / s[-1]['whole_s']:.2f} rows/s (busy {s[-1]['busy']})"
            for arm, s in samples.items()), flush=True)
    bad = [s for s in samples["engine"] if s["done"] != s["rows"]]
    if bad:
        print(f"warning: engine runs with rows not done: {[(s['done'], s['rows'], s['error']) for s in bad]}")
    return samples


def summarise(samples: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, float]]:
    summary: dict[str, Any] = {}
    for arm, arm_samples in samples.items():
        busy = [s["busy"] for s in arm_samples]
        summary[arm] = {
            "rows_per_s_whole": statistics.median(s["rows"] / s["whole_s"] for s in arm_samples),
            "rows_per_s_loop": statistics.median(s["rows"] / s["loop_s"] for s in arm_samples),
            "spread_whole_s": [min(s["whole_s"] for s in arm_samples), max(s["whole_s"] for s in arm_samples)],
            "busy_whole_run": statistics.median(busy) if None not in busy else None,
            "peak_gpu_gib": max(s["peak_gpu_bytes"] for s in arm_samples) / GiB,
        }
    engine = samples["engine"][-1]
    summary["engine"]["busy_in_phases"] = engine["busy_in_phases"]
    summary["engine"]["model_gib"] = {sid: b / GiB for sid, b in engine["model_bytes"].items()}
    ratios = {
        f"engine/{other} ({figure})": summary["engine"][f"rows_per_s_{figure}"] / summary[other][f"rows_per_s_{figure}"]
        for other in ("batched", "naive") for figure in ("whole", "loop")
    }
    return summary, ratios


def phase_budget(lm: Path, sd: Path) -> str:
    """A --gpu-memory that holds the larger model alone but not both (from the stages' own estimates)."""
    from aigc_pipeline.stages.diffusion import DiffusionImageStage, DiffusionParams
    from aigc_pipeline.stages.llm import LlmParams, LlmTextStage

    text = LlmTextStage.needs(LlmParams(model=str(lm), dtype="bfloat16")).memory_bytes
    image = DiffusionImageStage.needs(DiffusionParams(model=str(sd), dtype="float16")).memory_bytes
    return f"{(max(text, image) + min(text, image) // 2) // 2**20}MiB"


def phases_run(args: argparse.Namespace, models: tuple[Path, Path, Path], rows: list[dict[str, Any]], budget: str,
               runs: Path) -> dict[str, Any]:
    """The engine under a --gpu-memory that fits one model at a time: phases, one load each."""
    path = write_rows(args.work_dir / f"rows-phases-{args.phase_rows}.jsonl", rows[: args.phase_rows])
    pipeline = marketing_pipeline(args, models, 2 * args.sd_batch, args.sd_batch)
    result = engine_arm(path, pipeline, runs / "phases", gpu_memory=budget)
    result["all_rows_done"] = result["done"] == result["rows"]
    print(f"phases run (--gpu-memory {budget}): phases {result['phases']}, loads {result['loads']}, "
          f"{result['done']}/{result['rows']} done, {result['rows'] / result['whole_s']:.2f} rows/s", flush=True)
    return result


def forced_oom_run(args: argparse.Namespace, models: tuple[Path, Path, Path], rows: list[dict[str, Any]],
                   budget: str, runs: Path) -> dict[str, Any]:
    """The engine with models that do not fit together and a process memory cap that makes SD run out."""
    import torch

    path = write_rows(args.work_dir / f"rows-oom-{args.oom_rows}.jsonl", rows[: args.oom_rows])
    pipeline = marketing_pipeline(args, models, args.oom_sd_batch, None)
    free_gpu()
    if DEVICE == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.oom_cap_gib * GiB / total), 0)
    try:
        result = engine_arm(path, pipeline, runs / "forced-oom", gpu_memory=budget)
    finally:
        if DEVICE == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
    result["all_rows_done"] = result["done"] == result["rows"]
    print(f"forced OOM: {result['done']}/{result['rows']} done, loads {result['loads']}, "
          f"OOM retries {result['oom_retries']}, warnings {result['warnings']}", flush=True)
    return result


def print_figures(record: dict[str, Any]) -> None:
    """Every figure of the acceptance, one per line."""
    summary, ratios, text = record["summary"], record["ratios"], record["text_alone"]
    lines = [f"device {record['device']}; {record['config']['rows']} rows; total {record['total_s']:.0f} s"]
    for arm in ("engine", "batched", "naive"):
        s = summary[arm]
        lines.append(f"{arm:<8} {s['rows_per_s_whole']:.2f} rows/s whole, {s['rows_per_s_loop']:.2f} loop; "
                     f"busy (whole run) {s['busy_whole_run']}; peak {s['peak_gpu_gib']:.2f} GiB")
    lines += [f"{name}: {value:.2f}x" for name, value in ratios.items()]
    lines.append(f"engine GPU busy in its phases {summary['engine']['busy_in_phases']}; model memory "
                 f"{ {k: round(v, 3) for k, v in summary['engine']['model_gib'].items()} } GiB; "
                 f"loads {record['engine_loads_per_model']}")
    if text:
        for name in ("script_eager", "engine_eager", "engine_static", "script_continuous"):
            if name not in text:
                continue
            arm = text[name]
            lines.append(f"text alone {name}: {arm['tokens_per_s']:.0f} tok/s, first pass {arm['first_pass_s']:.1f} s, "
                         f"rows identical to the script {arm['rows_identical_to_script']}/{text['config']['batch']}")
        lines.append(f"text alone static/eager script: {text['ratio_static_over_script_eager']:.2f}x")
    for key in ("phases_run", "forced_oom"):
        run = record[key]
        if run:
            lines.append(f"{key}: phases {run['phases']}, loads {run['loads']}, OOM retries {run['oom_retries']}, "
                         f"all rows done {run['all_rows_done']}, warnings {run['warnings']}")
    print("\n== figures ==\n" + "\n".join(lines), flush=True)


def write_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"gpu_marketing-{record['date']}{'-dry-run' if args.dry_run else ''}.json"
    text = json.dumps(record, indent=2, default=str) + "\n"
    (args.out / name).write_text(text, encoding="utf-8")
    print(f"-> {args.out / name}")
    if os.environ.get("OUT"):  # the device tool brings back what is written there
        Path(os.environ["OUT"], name).write_text(text, encoding="utf-8")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "diffusers", "accelerate", "aigc-pipeline"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        found["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                      text=True).stdout.strip()
    except OSError:
        pass
    return found


if __name__ == "__main__":
    main()
