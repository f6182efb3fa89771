"""LLM stage throughput: the engine's `llm.text` against a hand-written batched script and a naive loop.

All arms load the same random-weight GPT-2 folder (built once, `save_pretrained`, safetensors),
read the same seeded rows from the same JSONL file, build the same prompts and decode greedily
with `min_new_tokens == max_new_tokens`, so every row generates exactly N tokens in every arm:

- engine:  a pipeline file `template -> llm.text` (below), `engine.run(graph, input.jsonl, out_dir)`.
- batched: a hand-written script that batches exactly as well: the same tokenizer settings (chat
           template, left padding, pad token), the same batch size, ONE `generate` per batch.
- naive:   the same script with one `generate` per row (batch 1, so no padding).

Two figures per arm, both in this process:
- *whole run*: read the input JSONL, load tokenizer + model from the folder, generate, write the
  results JSONL (fsync). For the engine, the `engine.run` call (it loads the model inside).
- *generate loop*: for the scripts, from "model resident" to the last row decoded (chat template,
  tokenize, `generate`, decode, per batch); for the engine, the llm stage's own time
  (`summary.stages['copy'].seconds`, less its `load_seconds` where this package version counts
  the load inside the first micro-batch), split by a timing plugin (`aigc_process_batch` wrapper)
  into `stage.process` and the engine's bookkeeping around it (run store, result records).

Arms are interleaved (batched, engine, naive, batched, engine, naive, ...) after one untimed
warm-up of each; we report medians, the ratio of medians and the spread, as
../shared/BENCHMARKING.md asks. torch's intra-op threads are set once (`--threads`) for all arms.
The engine's outputs must equal the batched script's row for row (asserted).

    .venv/bin/python benchmarks/throughput.py                 # medium LM, 256 rows, 32 tokens, batch 32
    .venv/bin/python benchmarks/throughput.py --quick         # small LM, 128 rows, 2 repeats
    .venv/bin/python benchmarks/throughput.py --with-diffusion --profile   # the recorded run

Results go to stdout and to benchmarks/results/throughput-<date>[-quick].json.
`--profile` adds one untimed run of the engine and of the batched script under cProfile.
`--with-diffusion` adds the same comparison for `diffusion.image` on make_tiny's sd.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import GcTimer, git_state, import_seconds, machine, package_versions, spread
from length_batching import length_section, print_section

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 1234

# The medium LM: the protocol's reference "tiny LM (4 layers, 256 wide)"; small: make_tiny's own.
LM_SIZES = {
    "small": None,  # aigc_pipeline.tiny.lm as built by make_tiny: 2 layers, 64 wide
    "medium": {"n_layer": 4, "n_embd": 256, "n_head": 4},
}

# ---------------------------------------------------------------------------------------------
# inputs

PRODUCTS = [
    "a waterproof hiking backpack", "an espresso machine", "wireless earbuds", "a lightweight student laptop",
    "a merino wool sweater", "fresh sourdough bread", "a smart thermostat", "a vegan burger",
    "trail running shoes", "a ceramic coffee mug", "noise-cancelling headphones", "plant-based face cream",
    "a folding electric scooter", "a cast iron skillet", "a reading lamp", "an insulated water bottle",
    "a standing desk", "a mechanical keyboard", "a children's bicycle", "a yoga mat",
]
AUDIENCES = ["students", "commuters", "coffee lovers", "parents", "hikers", "home cooks", "gamers",
             "office workers", "runners", "travellers"]
FEATURES = [
    "waterproof", "lightweight", "long battery life", "dishwasher safe", "free shipping", "two-year warranty",
    "recycled materials", "folds flat", "quiet", "fast charging", "made in Europe", "vegan", "350 ml",
    "fits in a backpack", "easy to clean", "adjustable height", "gift wrapping", "energy saving",
    "thirty hours of music", "non-stick",
]
COLUMNS = {"product": "str", "audience": "str", "features": "list[str]"}
TEMPLATE = "Write a short ad for {{ product }}, aimed at {{ audience }}. Mention: {{ features | join(', ') }}."


def make_rows(rows: int, seed: int = SEED) -> list[dict[str, Any]]:
    """Deterministic rows (a seeded generator); prompts of varied length. Every arm uses these."""
    rng = random.Random(seed)
    return [
        {"product": rng.choice(PRODUCTS), "audience": rng.choice(AUDIENCES),
         "features": rng.sample(FEATURES, rng.randint(1, 5))}
        for _ in range(rows)
    ]


def prompt_of(row: dict[str, Any]) -> str:
    """The hand-written scripts' version of TEMPLATE (the engine renders TEMPLATE with Jinja2)."""
    return f"Write a short ad for {row['product']}, aimed at {row['audience']}. Mention: {', '.join(row['features'])}."


def write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pipeline_yaml(model: Path, new_tokens: int, batch_size: int) -> str:
    return "\n".join([
        "name: llm_throughput",
        f"inputs: {json.dumps(COLUMNS)}",
        f"seed: {SEED}",
        "stages:",
        "  prompt:",
        "    uses: template",
        f"    with: {{template: {json.dumps(TEMPLATE)}}}",
        "  copy:",
        "    uses: llm.text",
        "    inputs: {prompt: prompt.text}",
        f"    with: {{model: {json.dumps(str(model))}, max_new_tokens: {new_tokens}, "
        f"min_new_tokens: {new_tokens}, temperature: 0}}",
        f"    batch_size: {batch_size}",
        "outputs: {prompt: prompt.text, text: copy.text}",
        "",
    ])


def build_models(work: Path, size: str) -> Path:
    """Build the LM once into `work` (safetensors); every arm loads this folder."""
    from aigc_pipeline.tiny import make_tiny

    small = make_tiny(work / "tiny", ["lm"])["lm"]
    shape = LM_SIZES[size]
    if shape is None:
        return small
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from aigc_pipeline.tiny import NOTICE
    from aigc_pipeline.tiny.lm import CONTEXT

    folder = work / f"lm-{size}"
    tokenizer = AutoTokenizer.from_pretrained(small)  # the same tokenizer and chat template
    tokenizer.save_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=CONTEXT, initializer_range=0.2, **shape,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").write_text(NOTICE, encoding="utf-8")
    return folder


def parameters(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118  (safe_open has no __iter__)
            count = 1
            for dim in handle.get_slice(key).get_shape():
                count *= dim
            total += count
    return total


class ProcessTimer:
    """A plugin timing every stage call (`aigc_process_batch` wrapper): the stages' own `process`
    time, without the engine's bookkeeping around it (run store, artifacts, result records)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = {}

    def hookimpl(self) -> Any:
        from aigc_pipeline import hookimpl

        timer = self

        class Plugin:
            @hookimpl(wrapper=True)
            def aigc_process_batch(self, stage_id: str) -> Any:
                started = time.perf_counter()
                try:
                    return (yield)
                finally:
                    timer.seconds[stage_id] = timer.seconds.get(stage_id, 0.0) + time.perf_counter() - started

        return Plugin()


def stage_seconds_include_load() -> bool:
    """Whether `StageStats.seconds` counts the model load: this package version loads a stage lazily,
    inside its first micro-batch (`StageRunner(..., load=...)`), and times that batch whole."""
    import inspect

    from aigc_pipeline.stage_runner import StageRunner

    return "load" in inspect.signature(StageRunner).parameters


def _prepare() -> None:
    """Same starting state for every timed run: no garbage left by the previous one."""
    gc.collect()


# ---------------------------------------------------------------------------------------------
# the hand-written scripts (batched, and naive = batch 1)


def script_run(folder: Path, input_path: Path, out_path: Path, new_tokens: int, batch_size: int,
               profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """What a user would write: read rows, load, one `generate` per batch, write. Timed inside."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wall0, cpu0 = time.perf_counter(), time.process_time()
    with input_path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    prompts = [prompt_of(row) for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", use_safetensors=True).eval()
    loaded = time.perf_counter()
    if profiler:
        profiler.enable()
    texts: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chats = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                   add_generation_prompt=True)
                     for p in prompts[start:start + batch_size]]
            encoded = tokenizer(chats, padding=True, add_special_tokens=False, return_tensors="pt")
            output = model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)
            new = output[:, encoded["input_ids"].shape[1]:]
            texts.extend(text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True))
    looped = time.perf_counter()
    if profiler:
        profiler.disable()
    with out_path.open("w", encoding="utf-8") as handle:
        for prompt, text in zip(prompts, texts, strict=True):
            handle.write(json.dumps({"prompt": prompt, "text": text}, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"rows": len(rows), "run_s": wall, "cpu_s": cpu,
            "load_s": loaded - wall0,  # read the input, build prompts, load tokenizer + model
            "loop_s": looped - loaded, "generate_calls": -(-len(rows) // batch_size),
            "new_tokens_per_row": int(new.shape[1]) if texts else 0, "prompts": prompts, "texts": texts}


class ScriptArm:
    def __init__(self, name: str, folder: Path, work: Path, new_tokens: int, batch_size: int) -> None:
        self.name, self.folder, self.work = name, folder, work
        self.new_tokens, self.batch_size = new_tokens, batch_size

    def run(self, input_path: Path, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
        _prepare()
        with GcTimer() as gct:
            record = script_run(self.folder, input_path, self.work / f"{self.name}.jsonl", self.new_tokens,
                                self.batch_size, profiler)
        return {**record, "gc_s": gct.seconds, "gc_collections": gct.collections}


# ---------------------------------------------------------------------------------------------
# engine arm


class EngineArm:
    def __init__(self, folder: Path, work: Path, new_tokens: int, batch_size: int) -> None:
        from aigc_pipeline import Engine

        self.work, self.batch_size = work, batch_size
        self.engine = Engine()
        self.timer = ProcessTimer()
        self.engine.register(self.timer.hookimpl(), name="throughput_timer")
        self.includes_load = stage_seconds_include_load()
        self.yaml = pipeline_yaml(folder, new_tokens, batch_size)
        started = time.perf_counter()
        self.graph = self.engine.load_text(self.yaml, "<throughput benchmark>")
        self.load_text_seconds = time.perf_counter() - started

    def run(self, input_path: Path, rows: int, out_name: str = "out-engine") -> dict[str, Any]:
        # a fresh output folder every run: the engine's run store would otherwise resume (reuse results)
        shutil.rmtree(self.work / out_name, ignore_errors=True)
        self.timer.reset()
        _prepare()
        with GcTimer() as gct:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = self.engine.run(self.graph, input_path, self.work / out_name)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        summary = result.summary
        if summary.error or summary.counts.get("done") != rows:
            raise SystemExit(f"engine run went wrong: error={summary.error!r} counts={summary.counts}")
        copy = summary.stages["copy"]
        expected = -(-rows // self.batch_size)
        if copy.batches != expected or getattr(copy, "cached", 0):
            raise SystemExit(f"the engine's llm stage ran {copy.batches} micro-batches (expected {expected}), "
                             f"{getattr(copy, 'cached', 0)} rows from its run store: not the same work")
        record = {
            "rows": rows, "run_s": wall, "cpu_s": cpu, "in_engine_s": summary.seconds,
            "gc_s": gct.seconds, "gc_collections": gct.collections,
            # in-stage time from "model resident": StageStats.seconds, less the load when it counts it
            "loop_s": copy.seconds - (copy.load_seconds if self.includes_load else 0.0),
            "stage_s": copy.seconds, "load_s": copy.load_seconds, "generate_calls": copy.batches,
            "process_s": self.timer.seconds.get("copy", 0.0),  # inside stage.process only
            "stage_seconds": {sid: round(st.seconds, 4) for sid, st in summary.stages.items()},
            "stage_load_seconds": {sid: round(st.load_seconds, 4) for sid, st in summary.stages.items()},
            "stage_batches": {sid: st.batches for sid, st in summary.stages.items()},
            "prompts": [r.outputs.get("prompt") for r in result.results],
            "texts": [r.outputs.get("text") for r in result.results],
        }
        with result.results_path.open("rb") as handle:
            lines = sum(1 for _ in handle)
        if lines != rows:
            raise SystemExit(f"results.jsonl has {lines} lines, expected {rows}")
        return record

    def profile(self, input_path: Path, top: int) -> dict[str, str]:
        return profile_engine_run(self.engine, self.graph, input_path, self.work / "out-profile", top)


def profile_engine_run(engine: Any, graph: Any, input_path: Path, out: Path, top: int) -> dict[str, str]:
    """One untimed run under cProfile: each stage's thread (wrapping `_Flow.run_stage` here, in the
    benchmark; the package is not changed) and the calling thread."""
    from aigc_pipeline.executors import local

    profiles: dict[str, cProfile.Profile] = {}
    original = local._Flow.run_stage

    def profiled_run_stage(flow: Any, stage_id: str) -> None:
        profiler = profiles.setdefault(stage_id, cProfile.Profile())
        profiler.enable()
        try:
            original(flow, stage_id)
        finally:
            profiler.disable()

    main = cProfile.Profile()
    local._Flow.run_stage = profiled_run_stage  # type: ignore[method-assign,assignment]
    try:
        shutil.rmtree(out, ignore_errors=True)
        _prepare()
        main.enable()
        engine.run(graph, input_path, out)
        main.disable()
    finally:
        local._Flow.run_stage = original  # type: ignore[method-assign]
    return {"main_thread": _top(pstats.Stats(main), top),
            **{f"stage_{sid}": _top(pstats.Stats(p), top) for sid, p in profiles.items()}}


def _top(stats: pstats.Stats, top: int, sort: str = "tottime") -> str:
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return "\n".join(line for line in buffer.getvalue().splitlines() if line.strip())


# ---------------------------------------------------------------------------------------------
# optional: diffusion


class DiffusionBench:
    """`diffusion.image` on make_tiny's sd: the engine vs one pipeline call per batch vs one per row.

    The scripts mirror the stage: `AutoPipelineForText2Image.from_pretrained` (safetensors,
    float32), the same prompts, steps, size and guidance, one CPU generator per image seeded with
    the engine's own per-row seed (`item_seed`), PIL output encoded as PNG and written to a file.
    """

    TEMPLATE = "studio product photo of {{ product }}, clean background"

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from aigc_pipeline import Engine
        from aigc_pipeline.stage import item_seed
        from aigc_pipeline.tiny import make_tiny

        self.work = work
        self.folder = make_tiny(work / "tiny", ["sd"])["sd"]
        rows = make_rows(args.diffusion_rows, SEED + 1)
        self.rows = len(rows)
        self.input_path = write_input(work / "input-sd.jsonl", rows)
        self.steps, self.size, self.batch = args.diffusion_steps, args.diffusion_size, args.diffusion_batch_size
        self.prompts = [f"studio product photo of {row['product']}, clean background" for row in rows]
        self.yaml = "\n".join([
            "name: sd_throughput", f"inputs: {json.dumps(COLUMNS)}", f"seed: {SEED}", "stages:",
            "  prompt:", "    uses: template", f"    with: {{template: {json.dumps(self.TEMPLATE)}}}",
            "  hero:", "    uses: diffusion.image", "    inputs: {prompt: prompt.text}",
            f"    with: {{model: {json.dumps(str(self.folder))}, steps: {self.steps}, width: {self.size}, "
            f"height: {self.size}}}",
            f"    batch_size: {self.batch}", "outputs: {image: hero.image}", "",
        ])
        self.engine = Engine()
        self.timer = ProcessTimer()
        self.engine.register(self.timer.hookimpl(), name="throughput_timer")
        self.includes_load = stage_seconds_include_load()
        self.graph = self.engine.load_text(self.yaml, "<throughput benchmark: diffusion>")
        self.guidance = self.graph.pipeline.params["hero"].guidance
        self.seeds = [item_seed(SEED, index, "hero") for index in range(self.rows)]

    def engine_run(self) -> dict[str, Any]:
        out = self.work / "out-sd"
        shutil.rmtree(out, ignore_errors=True)  # no resume from the run store
        self.timer.reset()
        _prepare()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = self.engine.run(self.graph, self.input_path, out)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        summary = result.summary
        if summary.error or summary.counts.get("done") != self.rows:
            raise SystemExit(f"engine diffusion run went wrong: {summary.error!r} {summary.counts}")
        hero = summary.stages["hero"]
        if hero.batches != -(-self.rows // self.batch) or getattr(hero, "cached", 0):
            raise SystemExit(f"the engine's diffusion stage ran {hero.batches} batches: not the same work")
        return {"rows": self.rows, "run_s": wall, "cpu_s": cpu,
                "loop_s": hero.seconds - (hero.load_seconds if self.includes_load else 0.0), "stage_s": hero.seconds,
                "load_s": hero.load_seconds, "process_s": self.timer.seconds.get("hero", 0.0),
                "calls": hero.batches, "images": [out / r.outputs["image"].relpath for r in result.results]}

    def script(self, batch_size: int, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
        import torch
        from diffusers import AutoPipelineForText2Image

        _prepare()
        out = self.work / f"sd-script-{batch_size}"
        out.mkdir(exist_ok=True)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        pipe = AutoPipelineForText2Image.from_pretrained(str(self.folder), dtype=torch.float32, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        loaded = time.perf_counter()
        if profiler:
            profiler.enable()
        paths, calls = [], 0
        with torch.inference_mode():
            for start in range(0, len(self.prompts), batch_size):
                generators = [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds[start:start + batch_size]]
                images = pipe(prompt=self.prompts[start:start + batch_size], num_inference_steps=self.steps,
                              guidance_scale=self.guidance, width=self.size, height=self.size,
                              generator=generators, output_type="pil").images
                calls += 1
                for n, image in enumerate(images):
                    paths.append(out / f"{start + n:06d}.png")
                    image.save(paths[-1], format="PNG")
        looped = time.perf_counter()
        if profiler:
            profiler.disable()
        return {"rows": self.rows, "run_s": looped - wall0, "cpu_s": time.process_time() - cpu0,
                "loop_s": looped - loaded, "load_s": loaded - wall0, "calls": calls, "images": paths}

    def profile(self, top: int) -> dict[str, str]:
        profile = profile_engine_run(self.engine, self.graph, self.input_path, self.work / "out-sd-profile", top)
        profiler = cProfile.Profile()
        self.script(self.batch, profiler)
        profile["batched_script_loop"] = _top(pstats.Stats(profiler), top)
        return profile


def diffusion_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The optional diffusion comparison (`--with-diffusion`); skipped if the stage is missing."""
    try:
        from aigc_pipeline.stages import diffusion as stage_module
    except ImportError as exc:
        return {"skipped": f"aigc_pipeline.stages.diffusion is not importable: {exc}"}
    bench = DiffusionBench(args, work)
    arms = {"batched": lambda: bench.script(bench.batch), "engine": bench.engine_run, "naive": lambda: bench.script(1)}
    runs = run_interleaved(arms, args.diffusion_repeats, "sd ")
    profile = bench.profile(args.top) if args.profile else None
    check = _same_pixels(runs["engine"][-1]["images"], runs["batched"][-1]["images"], runs["naive"][-1]["images"])
    for arm_runs in runs.values():
        for record in arm_runs:
            record.pop("images")
    results: dict[str, Any] = {f"{name}_{key}": spread([r[key] for r in rs])
                               for name, rs in runs.items() for key in ("run_s", "loop_s", "load_s", "cpu_s")}
    results["engine_process_s"] = spread([r["process_s"] for r in runs["engine"]])
    results["engine_bookkeeping_s"] = spread([r["loop_s"] - r["process_s"] for r in runs["engine"]])
    results["ratios"] = {f"{ref}_over_engine_{key.removesuffix('_s')}": _ratio(runs[ref], runs["engine"], key)
                         for ref in ("batched", "naive") for key in ("run_s", "loop_s")}
    results["ratios"]["batched_over_engine_cpu"] = _ratio(runs["batched"], runs["engine"], "cpu_s")
    results["ratios"]["naive_over_batched_loop"] = _ratio(runs["naive"], runs["batched"], "loop_s")
    return {"config": {"rows": bench.rows, "steps": bench.steps, "size": bench.size, "batch_size": bench.batch,
                       "guidance": bench.guidance, "repeats": args.diffusion_repeats,
                       "engine_stage_seconds_include_load": bench.includes_load,
                       "model": "make_tiny sd (random weights)", "stage_module": stage_module.__name__,
                       "pipeline": bench.yaml.replace(str(bench.folder), "<work>/" + bench.folder.name)},
            "check": check, "results": results, "runs": runs, **({"profile": profile} if profile else {})}


def run_interleaved(arms: dict[str, Any], repeats: int, label: str = "",
                    warm_up: bool = True) -> dict[str, list[dict[str, Any]]]:
    """One untimed warm-up of each arm (unless done already), then `repeats` rounds of every arm in turn."""
    for arm in arms.values() if warm_up else ():
        arm()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name, arm in arms.items():
            record = arm()
            runs[name].append(record)
            print(f"[{label}{repeat + 1}/{repeats}] {name:<8} {record['rows']:>5} rows: run {record['run_s']:.3f} s, "
                  f"loop {record['loop_s']:.3f} s, load {record['load_s']:.3f} s, CPU {record['cpu_s']:.3f} s"
                  + (f", GC {record['gc_s']:.3f} s" if "gc_s" in record else ""), flush=True)
    return runs


def _same_pixels(engine: list[Path], batched: list[Path], naive: list[Path]) -> dict[str, Any]:
    """How many images equal the engine's: exactly, and at most one level off per pixel."""
    import numpy as np
    from PIL import Image

    def pixels(path: Path) -> Any:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    mine = [pixels(path) for path in engine]
    out: dict[str, Any] = {"images": len(mine)}
    for name, paths in (("batched", batched), ("naive", naive)):
        theirs = [pixels(path) for path in paths]
        diffs = [int(np.abs(a - b).max()) for a, b in zip(mine, theirs, strict=True)]
        out[f"{name}_identical"] = sum(d == 0 for d in diffs)
        out[f"{name}_max_level_diff"] = max(diffs)
    return out


# ---------------------------------------------------------------------------------------------
# reporting


def _ratio(reference: list[dict[str, Any]], engine: list[dict[str, Any]], key: str,
           per_row: bool = False) -> dict[str, Any]:
    """reference time / engine time (> 1: the engine is faster): ratio of medians, and per adjacent pair."""
    def value(record: dict[str, Any]) -> float:
        return record[key] / record["rows"] if per_row else record[key]

    ref, eng = [value(r) for r in reference], [value(r) for r in engine]
    pairs = [r / e for r, e in zip(ref, eng, strict=True)]
    return {"median": statistics.median(ref) / statistics.median(eng), "min": min(pairs), "max": max(pairs),
            "pairs": pairs}


def versions() -> dict[str, str | None]:
    return package_versions(["aigc-pipeline", "torch", "transformers", "tokenizers", "safetensors", "diffusers",
                             "accelerate", "jinja2", "pydantic", "pluggy"])


def cpu_machine() -> dict[str, Any]:
    import torch

    return {"device": "cpu", **machine(), "cuda_available": torch.cuda.is_available()}


def threads_in_new_thread() -> int:
    """torch's intra-op thread count as a freshly started thread sees it (the engine's stage threads)."""
    import torch

    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    return seen[0]


def print_report(report: dict[str, Any]) -> None:
    cfg, res = report["config"], report["results"]
    print()
    print(f"llm.text throughput: {cfg['lm_size']} LM ({cfg['lm_shape']}), {cfg['rows']} rows "
          f"(naive {cfg['naive_rows']}), {cfg['new_tokens']} new tokens per row, batch {cfg['batch_size']}, "
          f"torch threads {cfg['torch_threads']}; {cfg['repeats']} interleaved repeats; medians (min..max)")
    print(f"{'arm':<8} {'whole run s':>21} {'rows/s':>7} {'generate loop s':>21} {'rows/s':>7} {'tok/s':>6} "
          f"{'CPU s':>21} {'load s':>6} {'GC s':>5}")

    def cell(d: dict[str, float]) -> str:
        return f"{d['median']:>7.2f} ({d['min']:.2f}..{d['max']:.2f})"

    for arm in ("batched", "engine", "naive"):
        whole, loop, cpu = res[f"{arm}_run_s"], res[f"{arm}_loop_s"], res[f"{arm}_cpu_s"]
        rows = cfg["naive_rows"] if arm == "naive" else cfg["rows"]
        print(f"{arm:<8} {cell(whole):>21} {rows / whole['median']:>7.1f} {cell(loop):>21} "
              f"{rows / loop['median']:>7.1f} {rows * cfg['new_tokens'] / loop['median']:>6.0f} {cell(cpu):>21} "
              f"{res[f'{arm}_load_s']['median']:>6.2f} {res[f'{arm}_gc_s']['median']:>5.2f}")
    print(f"engine breakdown (medians): in-stage {res['engine_stage_s']['median']:.3f} s as StageStats.seconds "
          f"({'includes' if cfg['engine_stage_seconds_include_load'] else 'excludes'} the model load), of which "
          f"stage.process {res['engine_process_s']['median']:.3f} s and engine bookkeeping around it "
          f"{res['engine_bookkeeping_s']['median']:.3f} s; whole run - in-stage = "
          f"{res['engine_run_s']['median'] - res['engine_loop_s']['median']:.3f} s")
    print()
    print("ratios: reference time / engine time (> 1: the engine is faster); naive ones per row")
    for key, label in (("batched_over_engine_run", "batched / engine, whole run"),
                       ("batched_over_engine_loop", "batched / engine, generate loop"),
                       ("batched_over_engine_cpu", "batched / engine, CPU time"),
                       ("naive_over_engine_run", "naive / engine, whole run"),
                       ("naive_over_engine_loop", "naive / engine, generate loop"),
                       ("naive_over_engine_cpu", "naive / engine, CPU time"),
                       ("naive_over_batched_loop", "naive / batched, generate loop")):
        ratio = res["ratios"][key]
        print(f"{label:<34} {ratio['median']:>6.2f}x of medians (per pair {ratio['min']:.2f}..{ratio['max']:.2f})")
    t = report["targets"]
    print(f"targets: engine >= {t['vs_batched']}x batched: whole run {'met' if t['met_batched_run'] else 'MISSED'}, "
          f"loop {'met' if t['met_batched_loop'] else 'MISSED'}; engine >= {t['vs_naive']}x naive: whole run "
          f"{'met' if t['met_naive_run'] else 'MISSED'}, loop {'met' if t['met_naive_loop'] else 'MISSED'}")
    check = report["check"]
    print(f"same work: engine == batched, row for row: {check['engine_equals_batched']} "
          f"(prompts {check['prompts_equal']}); naive == batched: {check['naive_equal_rows']}/{cfg['naive_rows']} "
          "rows; "
          f"{check['new_tokens_per_row']} new tokens per row; generate calls per run: "
          f"batched {check['generate_calls']['batched']}, engine {check['generate_calls']['engine']}, "
          f"naive {check['generate_calls']['naive']}")
    print(f"setup (untimed): build models {report['setup']['build_s']:.2f} s, engine load_text "
          f"{report['setup']['engine_load_text_s'] * 1e3:.1f} ms; fresh-process import: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in report["setup"]["import_s"].items() if v is not None))
    print(f"load average before/after: {report['load_average']['before']} / {report['load_average']['after']}")
    if "diffusion" in report:
        sd = report["diffusion"]
        if "skipped" in sd:
            print(f"\ndiffusion: skipped ({sd['skipped']})")
        else:
            c, check = sd["config"], sd["check"]
            print(f"\ndiffusion.image: make_tiny sd, {c['rows']} images, {c['steps']} steps, {c['size']}x{c['size']}, "
                  f"guidance {c['guidance']}, batch {c['batch_size']}; {c['repeats']} interleaved repeats; "
                  "medians (min..max)")
            for arm in ("batched", "engine", "naive"):
                whole, loop = sd["results"][f"{arm}_run_s"], sd["results"][f"{arm}_loop_s"]
                print(f"{arm:<10} whole {whole['median']:.2f} s ({whole['min']:.2f}..{whole['max']:.2f}), "
                      f"loop {loop['median']:.2f} s ({loop['min']:.2f}..{loop['max']:.2f}), "
                      f"{c['rows'] / loop['median']:.1f} images/s in the loop")
            for key, ratio in sd["results"]["ratios"].items():
                print(f"{key:<30} {ratio['median']:.2f}x of medians (per pair {ratio['min']:.2f}..{ratio['max']:.2f})")
            r = sd["results"]
            print(f"engine breakdown (medians): in-stage less load {r['engine_loop_s']['median']:.3f} s, of which "
                  f"stage.process (pipeline call + PNG encode) {r['engine_process_s']['median']:.3f} s, "
                  f"bookkeeping (artifact files with fsync, run store) {r['engine_bookkeeping_s']['median']:.3f} s")
            print(f"same images as the engine's: batched {check['batched_identical']}/{check['images']} identical "
                  f"(max diff {check['batched_max_level_diff']} levels), naive {check['naive_identical']}/"
                  f"{check['images']} (max diff {check['naive_max_level_diff']})")


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="rows (default 256; --quick: 128)")
    parser.add_argument("--naive-rows", type=int, default=None,
                        help="rows for the naive loop, the first N of the same rows (default 128; --quick: --rows); "
                             "naive figures are compared per row")
    parser.add_argument("--batch-size", type=int, default=32, help="micro-batch size, engine and script (default 32)")
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per row, min = max (default 32)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per arm, interleaved (default 3; --quick: 2)")
    parser.add_argument("--lm-size", choices=sorted(LM_SIZES), default=None,
                        help="medium: 4 layers x 256 wide (default); small: make_tiny's 2 x 64 (--quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for every arm (default 1: on a shared 2-core machine a "
                             "2-thread OpenMP team slows down up to 8x whenever another process takes a core)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run: small LM, 128 rows, 2 repeats")
    parser.add_argument("--profile", action="store_true",
                        help="also one untimed run of the engine and of the batched script under cProfile")
    parser.add_argument("--top", type=int, default=20, help="profile lines per table (default 20)")
    parser.add_argument("--target-batched", type=float, default=0.9, help="engine vs batched script (default 0.9)")
    parser.add_argument("--target-naive", type=float, default=5.0, help="engine vs naive loop (default 5)")
    parser.add_argument("--with-diffusion", action="store_true",
                        help="also diffusion.image on make_tiny's sd: engine vs batched call vs per row")
    parser.add_argument("--diffusion-rows", type=int, default=32)
    parser.add_argument("--diffusion-batch-size", type=int, default=8)
    parser.add_argument("--diffusion-steps", type=int, default=4)
    parser.add_argument("--diffusion-size", type=int, default=64)
    parser.add_argument("--diffusion-repeats", type=int, default=3)
    parser.add_argument("--length-aware", action="store_true",
                        help="add length_batching.py's section: mixed-length prompts, generate_batch on vs off")
    parser.add_argument("--length-only", action="store_true", help="run only that section (implies --length-aware)")
    parser.add_argument("--length-rows", type=int, default=128)
    parser.add_argument("--length-factor", type=int, default=4, help="on arm: batch_size = factor x --batch-size")
    parser.add_argument("--work-dir", type=Path, default=None, help="models, inputs and outputs (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default benchmarks/results/throughput-<date>[-quick].json)")
    args = parser.parse_args(argv)
    args.rows = args.rows or (128 if args.quick else 256)
    args.naive_rows = min(args.naive_rows or (args.rows if args.quick else 128), args.rows)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.lm_size = args.lm_size or ("small" if args.quick else "medium")
    if min(args.rows, args.naive_rows, args.repeats, args.batch_size, args.new_tokens, args.threads) < 1:
        parser.error("--rows, --naive-rows, --repeats, --batch-size, --new-tokens and --threads must be positive")
    return args


class LlmBench:
    """The LLM comparison: the model folder, the rows and the three arms."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        built = time.perf_counter()
        self.folder = build_models(work, args.lm_size)
        self.build_s = time.perf_counter() - built
        self.parameters = parameters(self.folder)
        rows = make_rows(args.rows)
        self.input_path = write_input(work / "input.jsonl", rows)
        self.naive_input = (self.input_path if args.naive_rows == args.rows
                            else write_input(work / "input-naive.jsonl", rows[: args.naive_rows]))
        self.warm_input = write_input(work / "input-warm.jsonl", rows[: min(args.rows, args.batch_size)])
        self.batched = ScriptArm("batched", self.folder, work, args.new_tokens, args.batch_size)
        self.naive = ScriptArm("naive", self.folder, work, args.new_tokens, 1)
        self.engine = EngineArm(self.folder, work, args.new_tokens, args.batch_size)
        self.args = args

    def run(self) -> dict[str, list[dict[str, Any]]]:
        rows, warm_rows = self.args.rows, min(self.args.rows, self.args.batch_size)
        # untimed warm-up of each arm (imports, first-call caches), over the first batch of rows
        self.batched.run(self.warm_input)
        self.engine.run(self.warm_input, warm_rows, "out-warm")
        self.naive.run(self.warm_input)
        arms = {"batched": lambda: self.batched.run(self.input_path),
                "engine": lambda: self.engine.run(self.input_path, rows),
                "naive": lambda: self.naive.run(self.naive_input)}
        return run_interleaved(arms, self.args.repeats, warm_up=False)

    def profile(self) -> dict[str, str]:
        profile = self.engine.profile(self.input_path, self.args.top)
        profiler = cProfile.Profile()
        self.batched.run(self.input_path, profiler)
        profile["batched_script_loop"] = _top(pstats.Stats(profiler), self.args.top)
        profile["batched_script_loop_cumulative"] = _top(pstats.Stats(profiler), self.args.top, "cumulative")
        return profile


def check_same_work(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The engine's outputs equal the batched script's, row for row (greedy, same batches); every
    row got exactly `new_tokens` new tokens. Raises SystemExit otherwise. Drops the texts."""
    reference = runs["batched"][0]
    engine_equal = all(r["texts"] == reference["texts"] for r in runs["engine"])
    prompts_equal = all(r["prompts"] == reference["prompts"] for r in runs["engine"])
    naive_equal = sum(a == b for a, b in zip(runs["naive"][0]["texts"], reference["texts"], strict=False))
    if not (engine_equal and prompts_equal):
        pairs = zip(runs["engine"][0]["texts"], reference["texts"], strict=True)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        raise SystemExit(f"the engine's outputs differ from the batched script's (prompts equal: {prompts_equal}; "
                         f"first differing row: {first})")
    measured = {r["new_tokens_per_row"] for arm in ("batched", "naive") for r in runs[arm]}
    if measured != {args.new_tokens}:
        raise SystemExit(f"the scripts generated {sorted(measured)} new tokens per row, not {args.new_tokens}")
    for arm_runs in runs.values():
        for record in arm_runs:
            record.pop("prompts")
            record.pop("texts")
    return {"engine_equals_batched": engine_equal, "prompts_equal": prompts_equal,
            "naive_equal_rows": naive_equal,
            "new_tokens_per_row": args.new_tokens,  # the engine's texts equal the batched script's: same tokens
            "generate_calls": {arm: arm_runs[0]["generate_calls"] for arm, arm_runs in runs.items()},
            "engine_model_loads_per_run": 1}


def llm_results(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    results: dict[str, Any] = {f"{arm}_{key}": spread([r[key] for r in arm_runs])
                               for arm, arm_runs in runs.items()
                               for key in ("run_s", "loop_s", "load_s", "cpu_s", "gc_s")}
    for key in ("in_engine_s", "stage_s", "process_s"):
        results[f"engine_{key}"] = spread([r[key] for r in runs["engine"]])
    results["engine_bookkeeping_s"] = spread([r["loop_s"] - r["process_s"] for r in runs["engine"]])
    results["ratios"] = {
        "batched_over_engine_run": _ratio(runs["batched"], runs["engine"], "run_s"),
        "batched_over_engine_loop": _ratio(runs["batched"], runs["engine"], "loop_s"),
        "batched_over_engine_cpu": _ratio(runs["batched"], runs["engine"], "cpu_s"),
        "naive_over_engine_run": _ratio(runs["naive"], runs["engine"], "run_s", per_row=True),
        "naive_over_engine_loop": _ratio(runs["naive"], runs["engine"], "loop_s", per_row=True),
        "naive_over_engine_cpu": _ratio(runs["naive"], runs["engine"], "cpu_s", per_row=True),
        "naive_over_batched_loop": _ratio(runs["naive"], runs["batched"], "loop_s", per_row=True),
    }
    return results


def llm_config(args: argparse.Namespace, bench: LlmBench, chunk: int) -> dict[str, Any]:
    shape = LM_SIZES[args.lm_size] or {"n_layer": 2, "n_embd": 64, "n_head": 4}
    return {"rows": args.rows, "naive_rows": args.naive_rows, "batch_size": args.batch_size,
            "new_tokens": args.new_tokens, "tokens_generated_per_run": args.rows * args.new_tokens,
            "repeats": args.repeats, "seed": SEED, "lm_size": args.lm_size,
            "lm_shape": f"GPT-2, {shape['n_layer']} layers x {shape['n_embd']} wide, {shape['n_head']} heads",
            "lm_parameters": bench.parameters, "torch_threads": args.threads,
            "torch_threads_in_new_thread": threads_in_new_thread(), "engine_chunk_size": chunk,
            "decoding": "greedy, min_new_tokens == max_new_tokens, left padding, float32",
            "warm_up": "one untimed run of each arm over the first batch of rows",
            "interleaved": "batched, engine, naive, batched, engine, naive, ...",
            "engine_run": "engine.run defaults, a fresh (emptied) output folder per run",
            "engine_stage_seconds_include_load": bench.engine.includes_load,
            "engine_loop": "StageStats.seconds of the llm stage, less its load_seconds when it counts them",
            "pipeline": bench.engine.yaml.replace(str(bench.folder), "<work>/" + bench.folder.name)}


def targets(args: argparse.Namespace, ratios: dict[str, Any]) -> dict[str, Any]:
    return {"vs_batched": args.target_batched, "vs_naive": args.target_naive,
            "met_batched_run": ratios["batched_over_engine_run"]["median"] >= args.target_batched,
            "met_batched_loop": ratios["batched_over_engine_loop"]["median"] >= args.target_batched,
            "met_naive_run": ratios["naive_over_engine_run"]["median"] >= args.target_naive,
            "met_naive_loop": ratios["naive_over_engine_loop"]["median"] >= args.target_naive}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    date = dt.datetime.now(dt.UTC)
    import torch

    from aigc_pipeline.executors.local import MIN_CHUNK

    torch.set_num_threads(args.threads)
    chunk = max(MIN_CHUNK, args.batch_size)
    if chunk % args.batch_size:
        print(f"warning: batch size {args.batch_size} does not divide the engine's chunk of {chunk} rows, so the "
              "engine's micro-batches differ from the script's (and outputs may differ)", file=sys.stderr)
    load_before = os.getloadavg()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="aigc-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.length_only:
        return length_only(args, work, date, started)
    try:
        bench = LlmBench(args, work)
        length = run_length_section(args, bench.folder, work) if args.length_aware else None
        runs = bench.run()
        profile = bench.profile() if args.profile else None
        diffusion = diffusion_section(args, work) if args.with_diffusion else None
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    check = check_same_work(args, runs)
    results = llm_results(runs)
    report: dict[str, Any] = {
        "benchmark": "llm-throughput",
        "date": date.isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),  # no machine paths
        "config": llm_config(args, bench, chunk),
        "versions": versions(),
        "git": git_state(),
        "machine": cpu_machine(),
        "setup": {"build_s": bench.build_s, "engine_load_text_s": bench.engine.load_text_seconds,
                  "import_s": {"torch + transformers": import_seconds(
                      "import torch, transformers; from transformers import AutoModelForCausalLM"),
                      "aigc_pipeline": import_seconds("import aigc_pipeline")}},
        "check": check,
        "targets": targets(args, results["ratios"]),
        "results": results,
        "runs": runs,
        **({"profile": profile} if profile else {}),
        **({"diffusion": diffusion} if diffusion is not None else {}),
        **({"length_aware": length} if length is not None else {}),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "total_seconds": time.perf_counter() - started,
    }
    print_report(report)
    if length is not None:
        print_section(length)
    sd_profile = {f"diffusion, {key}": text for key, text in (diffusion or {}).get("profile", {}).items()}
    for key, text in [*(profile or {}).items(), *sd_profile.items()]:
        print(f"\nprofile, {key}:")
        print(text)
    out = args.out or HERE / "results" / f"throughput-{date.date().isoformat()}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out}  ({report['total_seconds']:.0f} s in all)")
    return 0


def run_length_section(args: argparse.Namespace, folder: Path, work: Path) -> dict[str, Any]:
    return length_section(folder, work, args.length_rows, args.batch_size, args.length_factor, args.new_tokens,
                          args.repeats)


def length_only(args: argparse.Namespace, work: Path, date: dt.datetime, started: float) -> int:
    """Only the length-aware section: its own result file."""
    load_before = os.getloadavg()
    try:
        folder = build_models(work, args.lm_size)
        section = run_length_section(args, folder, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "llm-length-aware", "date": date.isoformat(timespec="seconds"),
              "command": " ".join([os.path.relpath(sys.executable), *sys.argv]), "lm_size": args.lm_size,
              "torch_threads": args.threads, "versions": versions(), "git": git_state(), "machine": cpu_machine(),
              "length_aware": section,
              "load_average": {"before": [round(x, 2) for x in load_before],
                               "after": [round(x, 2) for x in os.getloadavg()]},
              "total_seconds": time.perf_counter() - started}
    print_section(section)
    out = args.out or HERE / "results" / f"length-aware-{date.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out}  ({report['total_seconds']:.0f} s in all; load average {report['load_average']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
