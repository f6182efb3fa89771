"""End to end on one CUDA GPU: the marketing pipeline on realistic-size random-weight models.

One command on a CUDA machine (nothing is downloaded):

    .venv/bin/python benchmarks/gpu_marketing.py                  # 256 rows, 3 repeats
    .venv/bin/python benchmarks/gpu_marketing.py --quick          # 64 rows, 10 steps, 2 repeats (smoke run)

Without CUDA it exits with status 2 and says so. Steps:

1. Build the models once into `--work-dir` (skipped when already there), `save_pretrained` with
   safetensors, so every arm loads the same files (../shared/BENCHMARKING.md, protocol 1):
   - LM: GPT-2-small shape (12 layers, 768 wide, 12 heads, 1024 positions) with the project's tiny
     byte-level BPE tokenizer (`aigc_pipeline.tiny.lm.build_tokenizer`, 512 tokens);
   - Stable Diffusion 1.5 shape: the SD 1.5 UNet (320/640/1280/1280, cross-attention 768), VAE
     (128/256/512/512), CLIP text encoder (12 layers, 768 wide, 77 positions) with the tiny
     CLIP-format BPE tokenizer, DDIM scheduler with SD 1.5's betas; weights saved in float16.
2. Seeded rows (`--rows`, default 256) of product / audience / features.
3. Arms, interleaved `batched, engine, naive` per repeat after one untimed warm-up of each:
   - engine:  `engine.run` of the marketing pipeline (below): template -> llm.text -> filter.text,
              template -> diffusion.image -> filter.image (the voice-over stage of
              pipelines/marketing.yaml is left out: espeak-ng is a CPU program the baselines
              would have to run too);
   - batched: a hand-written stage-major script on the same folders: all prompts through the LM in
              batches of `--lm-batch` (one `generate` each), then all image prompts through the SD
              pipeline in batches of `--sd-batch`, PNGs written to disk;
   - naive:   the same per row (batch 1), over the first `--naive-rows` rows.
   LLM decoding is greedy with min_new_tokens == max_new_tokens (protocol 3), bfloat16; SD is
   float16, `--steps` DDIM steps at `--size`^2, guidance 7.5, one seeded generator per image.
   cuDNN SDPA is switched off in this process for every arm (protocol 4).
4. Forced-OOM run: the engine again with `gpu_memory=--oom-gpu-memory` (the two models do not fit
   together under it: two residency phases, each model loaded once) and the process capped to
   `--oom-cap-gib` of GPU memory with `torch.cuda.set_per_process_memory_fraction`, and the SD
   batch at `--oom-sd-batch`, so real CUDA out-of-memory errors halve the SD batch. It must
   finish with every row done.

Reported: rows/s per arm (whole run incl. loading from page cache; and the loop from models
resident to last row written), ratios engine/batched and engine/naive, GPU busy fraction
(`torch.cuda.utilization` via pynvml, else `nvidia-smi`, sampled every 0.1 s in a thread), peak GPU
memory, loads per model, OOM retries and final batch sizes. JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
GiB = 2**30
SEED = 1234

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
    with: {{model: "{lm}", dtype: bfloat16, max_new_tokens: {tokens}, min_new_tokens: {tokens}, chat_template: false}}
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
    with: {{model: "{sd}", dtype: float16, steps: {steps}, width: {size}, height: {size}, guidance: 7.5,
            scheduler: DDIMScheduler}}
    batch_size: {sd_batch}
  hero_checked:
    uses: filter.image
    inputs: {{image: hero.image}}
    with: {{min_width: 8, min_height: 8, on_fail: flag}}
outputs: {{copy: checked.text, image: hero_checked.image}}
"""


# ------------------------------------------------------------------ models


def build_models(work: Path) -> tuple[Path, Path]:
    """GPT-2-small-shaped LM and SD-1.5-shaped pipeline, random weights, built once into `work`."""
    lm, sd = work / "lm-gpt2-small", work / "sd15-shape"
    if not (lm / "model.safetensors").exists():
        build_lm(lm)
    if not (sd / "model_index.json").exists():
        build_sd(sd)
    return lm, sd


def build_lm(folder: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from aigc_pipeline.tiny.lm import build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 1024
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=768, n_layer=12, n_head=12,
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


# ------------------------------------------------------------------ GPU busy sampler


class BusySampler:
    """Samples GPU utilisation (percent of time a kernel ran) every `interval` s in a thread."""

    def __init__(self, index: int = 0, interval: float = 0.1) -> None:
        self.index, self.interval = index, interval
        self.samples: list[float] = []
        self.source = self._pick_source()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick_source(self) -> str | None:
        import torch

        try:
            torch.cuda.utilization(self.index)
            return "torch.cuda.utilization"
        except Exception:  # no pynvml
            pass
        if shutil.which("nvidia-smi"):
            return "nvidia-smi"
        return None

    def _read(self) -> float | None:
        if self.source == "torch.cuda.utilization":
            import torch

            return float(torch.cuda.utilization(self.index))
        if self.source == "nvidia-smi":
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(self.index)], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        return None

    def __enter__(self) -> BusySampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    value = self._read()
                except Exception:
                    value = None
                if value is not None:
                    self.samples.append(value)

        if self.source is not None:
            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def fraction(self) -> float | None:
        return statistics.mean(self.samples) / 100 if self.samples else None


# ------------------------------------------------------------------ arms


def engine_arm(rows_path: Path, pipeline: str, out: Path, **options: Any) -> dict[str, Any]:
    import torch

    from aigc_pipeline.engine import Engine

    engine = Engine()
    graph = engine.load_text(pipeline, "<gpu_marketing>")
    if "cache" in inspect.signature(engine.run).parameters:
        options["cache"] = False  # every repeat does the work; no run store reuse
    torch.cuda.reset_peak_memory_stats()
    with BusySampler() as busy:
        started = time.perf_counter()
        result = engine.run(graph, rows_path, out, **options)
        whole = time.perf_counter() - started
    stages = result.summary.stages
    statuses = [r.status for r in result.results]
    loads = max(stages["copy"].load_seconds, stages["hero"].load_seconds)
    return {
        "whole_s": whole, "in_engine_s": result.summary.seconds, "loop_s": result.summary.seconds - loads,
        "rows": len(statuses), "done": statuses.count("done"), "error": result.summary.error,
        "busy": busy.fraction, "busy_source": busy.source, "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
        "loads": {sid: stages[sid].loads for sid in ("copy", "hero")},
        "oom_retries": {sid: stages[sid].oom_retries for sid in ("copy", "hero")},
        "warnings": list(result.summary.warnings),
        "stage_seconds": {sid: s.seconds for sid, s in stages.items()},
    }


class Scripted:
    """The hand-written arms: the same folders, tokenizer settings and decoding as the stages."""

    def __init__(self, lm: Path, sd: Path, args: argparse.Namespace) -> None:
        self.lm_folder, self.sd_folder, self.args = lm, sd, args

    def load(self) -> None:
        import torch
        from diffusers import StableDiffusionPipeline
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.lm_folder)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(self.lm_folder, torch_dtype=torch.bfloat16).to("cuda").eval()
        pipe = StableDiffusionPipeline.from_pretrained(str(self.sd_folder), torch_dtype=torch.float16)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to("cuda")

    def unload(self) -> None:
        import torch

        self.model = self.pipe = None
        gc.collect()
        torch.cuda.empty_cache()

    def copy(self, rows: list[dict[str, Any]]) -> list[str]:
        import torch

        tokens = self.args.tokens
        batch = self.tokenizer([ad_prompt(r) for r in rows], return_tensors="pt", padding=True).to("cuda")
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

    def run(self, rows: list[dict[str, Any]], out: Path, lm_batch: int, sd_batch: int) -> dict[str, Any]:
        """Load, then stage-major: every row through the LM, then every row through SD; write results."""
        import torch

        out.mkdir(parents=True, exist_ok=True)
        torch.cuda.reset_peak_memory_stats()
        with BusySampler() as busy:
            started = time.perf_counter()
            self.load()
            resident = time.perf_counter()
            texts: list[str] = []
            for start in range(0, len(rows), lm_batch):
                texts += self.copy(rows[start : start + lm_batch])
            for start in range(0, len(rows), sd_batch):
                self.images(rows[start : start + sd_batch], start, out)
            with open(out / "results.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"row": i, "copy": t}) + "\n" for i, t in enumerate(texts))
            end = time.perf_counter()
        peak = torch.cuda.max_memory_allocated()
        self.unload()
        return {"whole_s": end - started, "loop_s": end - resident, "rows": len(rows), "done": len(texts),
                "busy": busy.fraction, "peak_gpu_bytes": peak}


# ------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-rows", type=int, default=32, help="rows the naive per-row loop runs (it is slow)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per row (min == max)")
    parser.add_argument("--lm-batch", type=int, default=64)
    parser.add_argument("--sd-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--oom-gpu-memory", default="2.5GiB",
                        help="--gpu-memory of the forced-OOM run: below LM + SD together, so they swap in phases")
    parser.add_argument("--oom-cap-gib", type=float, default=6.0,
                        help="forced-OOM run: the process may allocate at most this much GPU memory")
    parser.add_argument("--oom-sd-batch", type=int, default=64, help="forced-OOM run: SD batch size to start from")
    parser.add_argument("--skip-oom", action="store_true")
    parser.add_argument("--quick", action="store_true", help="64 rows, 10 steps, 2 repeats, 8 naive rows")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "aigc-gpu-marketing")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.steps, args.repeats, args.naive_rows = 64, 10, 2, 8
    return args


def require_cuda() -> None:
    try:
        import torch
    except ImportError:
        print("gpu_marketing: needs torch with CUDA (pip install '.[models]' with a CUDA build of torch)",
              file=sys.stderr)
        raise SystemExit(2) from None
    if not torch.cuda.is_available():
        print(f"gpu_marketing: no CUDA device here (torch {torch.__version__}); this benchmark runs on a CUDA GPU "
              "only. Nothing was run.", file=sys.stderr)
        raise SystemExit(2)


def median_of(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def main() -> None:
    args = parse_args()
    require_cuda()
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)  # protocol 4: in every arm (same process)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lm, sd = build_models(args.work_dir)
    build_s = time.perf_counter() - started
    rows = make_rows(args.rows)
    rows_path = args.work_dir / f"rows-{args.rows}.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    warm_path = args.work_dir / "rows-warmup.jsonl"
    warm_path.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.sd_batch]), encoding="utf-8")
    pipeline = PIPELINE.format(lm=lm, sd=sd, tokens=args.tokens, lm_batch=args.lm_batch, steps=args.steps,
                               size=args.size, sd_batch=args.sd_batch)
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=args.work_dir))
    script = Scripted(lm, sd, args)

    print(f"device: {torch.cuda.get_device_name(0)}; models built/found in {build_s:.1f}s under {args.work_dir}")
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
            for arm, s in samples.items()))
    bad = [s for s in samples["engine"] if s["done"] != s["rows"]]
    if bad:
        print(f"warning: engine runs with rows not done: {[(s['done'], s['rows'], s['error']) for s in bad]}")

    summary: dict[str, Any] = {}
    for arm, arm_samples in samples.items():
        summary[arm] = {
            "rows_per_s_whole": statistics.median(s["rows"] / s["whole_s"] for s in arm_samples),
            "rows_per_s_loop": statistics.median(s["rows"] / s["loop_s"] for s in arm_samples),
            "spread_whole_s": [min(s["whole_s"] for s in arm_samples), max(s["whole_s"] for s in arm_samples)],
            "busy": statistics.median(s["busy"] for s in arm_samples) if all(s["busy"] is not None for s in arm_samples)
            else None,
            "peak_gpu_gib": max(s["peak_gpu_bytes"] for s in arm_samples) / GiB,
        }
    ratios = {
        f"engine/{other} ({figure})": summary["engine"][f"rows_per_s_{figure}"] / summary[other][f"rows_per_s_{figure}"]
        for other in ("batched", "naive") for figure in ("whole", "loop")
    }
    loads = samples["engine"][-1]["loads"]

    forced = None
    if not args.skip_oom:
        forced = forced_oom_run(args, rows_path, lm, sd, runs)

    record = {
        "benchmark": "gpu_marketing", "date": dt.date.today().isoformat(), "config": vars(args) | {
            "work_dir": str(args.work_dir), "out": str(args.out), "cudnn_sdp": False},
        "device": torch.cuda.get_device_name(0), "versions": versions(), "build_s": build_s,
        "summary": summary, "ratios": ratios, "engine_loads_per_model": loads, "forced_oom": forced,
        "samples": samples,
    }
    print(json.dumps({"summary": summary, "ratios": ratios, "loads": loads, "forced_oom": forced}, indent=2,
                     default=str))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_marketing-{record['date']}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"-> {path}")


def forced_oom_run(args: argparse.Namespace, rows_path: Path, lm: Path, sd: Path, runs: Path) -> dict[str, Any]:
    """The engine with models that do not fit together and a process memory cap that makes SD run out."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.oom_cap_gib * GiB / total), 0)
    pipeline = PIPELINE.format(lm=lm, sd=sd, tokens=args.tokens, lm_batch=args.lm_batch, steps=args.steps,
                               size=args.size, sd_batch=args.oom_sd_batch)
    try:
        result = engine_arm(rows_path, pipeline, runs / "forced-oom", gpu_memory=args.oom_gpu_memory)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    result["all_rows_done"] = result["done"] == result["rows"]
    print(f"forced OOM: {result['done']}/{result['rows']} done, loads {result['loads']}, "
          f"OOM retries {result['oom_retries']}, warnings {result['warnings']}")
    return result


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
