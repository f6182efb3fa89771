"""Text alone on the GPU (a section of gpu_marketing.py): `llm.text`'s static-cache path against eager
HF `generate` at a large batch, greedy, min_new_tokens == max_new_tokens.

- script, eager: a hand-written loop, the same folder, tokenizer settings (left padding, no chat
  template), dtype and batch: `model.generate` on the same `batch` prompts `passes` times; the first
  pass is a warm-up, the median of the others is reported.
- engine, eager and engine, static cache: one `engine.run` each over the same prompts repeated
  `passes` times (`batch_size: batch`, so one micro-batch per pass and one model load per run); a
  timing plugin (`aigc_process_batch` wrapper) times every micro-batch; the first includes the
  compile (reported as the first-call time), the median of the others is reported.

- script, continuous (opt-in, `continuous=True`): transformers' continuous batching
  (`model.generate_batch`, paged attention) on the same prompts, for comparison.

Tokens/s = batch x new tokens / seconds per pass (continuous: the tokens it actually generated).
Greedy identity: the rows whose text equals the eager script's (the engine decodes the same token
ids with the tokenizer, stripped).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

PIPELINE = """
name: gpu_text
inputs: {{prompt: str, copy_index: int}}
seed: 1234
stages:
  copy:
    uses: llm.text
    inputs: {{prompt: inputs.prompt}}
    with: {{model: "{lm}", dtype: {dtype}, max_new_tokens: {tokens}, min_new_tokens: {tokens}, chat_template: false,
            static_cache: {static}}}
    batch_size: {batch}
outputs: {{copy: copy.text}}
"""


class BatchTimer:
    """A plugin that records the seconds of every `aigc_process_batch` call of the stage `copy`."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def plugin(self) -> Any:
        from aigc_pipeline import hookimpl

        timer = self

        class Plugin:
            @hookimpl(wrapper=True)
            def aigc_process_batch(self, stage_id: str) -> Any:
                started = time.perf_counter()
                try:
                    return (yield)
                finally:
                    if stage_id == "copy":
                        timer.sync()
                        timer.seconds.append(time.perf_counter() - started)

        return Plugin()

    @staticmethod
    def sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def script_eager(lm: Path, prompts: list[str], tokens: int, dtype: str, device: str, passes: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(lm, dtype=getattr(torch, dtype)).to(device).eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    seconds, texts = [], []
    for _ in range(passes):
        BatchTimer.sync()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                           skip_special_tokens=True)]
        BatchTimer.sync()
        seconds.append(time.perf_counter() - started)
    del model
    return {"seconds": seconds, "texts": texts}


def script_continuous(lm: Path, prompts: list[str], tokens: int, dtype: str, device: str,
                      passes: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(lm)
    model = AutoModelForCausalLM.from_pretrained(lm, dtype=getattr(torch, dtype)).to(device).eval()
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    seconds, texts, generated = [], [], 0
    for _ in range(passes):
        BatchTimer.sync()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate_batch(ids, generation_config=config, progress_bar=False)
        BatchTimer.sync()
        seconds.append(time.perf_counter() - started)
        rows = [out[key].generated_tokens for key in sorted(out, key=lambda key: int(key.rsplit("_", 1)[-1]))]
        generated = sum(len(row) for row in rows)
        texts = [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
    del model
    return {"seconds": seconds, "texts": texts, "generated_tokens": generated}


def engine_passes(lm: Path, prompts: list[str], tokens: int, dtype: str, passes: int, static: bool,
                  work: Path) -> dict[str, Any]:
    from aigc_pipeline import Engine

    name = "static" if static else "eager"
    rows = work / f"text-rows-{len(prompts)}x{passes}.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "copy_index": k}) + "\n"
                            for k in range(passes) for p in prompts), encoding="utf-8")
    timer = BatchTimer()
    engine = Engine()
    engine.register(timer.plugin(), name="gpu_text_timer")
    graph = engine.load_text(PIPELINE.format(lm=lm, dtype=dtype, tokens=tokens, static=str(static).lower(),
                                             batch=len(prompts)), f"<gpu_text {name}>")
    out = work / f"text-engine-{name}"
    shutil.rmtree(out, ignore_errors=True)
    result = engine.run(graph, rows, out, cache=False)
    copy = result.summary.stages["copy"]
    texts = [r.outputs.get("copy") for r in result.results]
    return {"seconds": timer.seconds, "texts": texts[-len(prompts):], "loads": copy.loads,
            "first_batch_s": copy.first_batch_seconds, "done": result.summary.counts.get("done"),
            "error": result.summary.error}


def text_section(lm: Path, prompts: list[str], tokens: int, dtype: str, device: str, passes: int,
                 work: Path, continuous: bool = False) -> dict[str, Any]:
    """Eager script, engine eager, engine static cache (and continuous batching): tokens/s,
    first-call time, greedy identity."""
    arms = {"script_eager": script_eager(lm, prompts, tokens, dtype, device, passes),
            "engine_eager": engine_passes(lm, prompts, tokens, dtype, passes, False, work),
            "engine_static": engine_passes(lm, prompts, tokens, dtype, passes, True, work)}
    if continuous:
        arms["script_continuous"] = script_continuous(lm, prompts, tokens, dtype, device, passes)
    reference = arms["script_eager"]["texts"]
    figures: dict[str, Any] = {}
    for name, arm in arms.items():
        timed = arm["seconds"][1:] or arm["seconds"]
        per_pass = statistics.median(timed)
        made = arm.get("generated_tokens", len(prompts) * tokens)
        figures[name] = {"tokens_per_s": made / per_pass, "pass_s": per_pass, "generated_tokens": made,
                         "first_pass_s": arm["seconds"][0], "passes_s": arm["seconds"],
                         "rows_identical_to_script": sum(a == b for a, b in zip(arm["texts"], reference, strict=True))}
        for key in ("loads", "first_batch_s", "done", "error"):
            if key in arm:
                figures[name][key] = arm[key]
    figures["ratio_static_over_script_eager"] = (figures["engine_static"]["tokens_per_s"]
                                                 / figures["script_eager"]["tokens_per_s"])
    figures["ratio_engine_eager_over_script_eager"] = (figures["engine_eager"]["tokens_per_s"]
                                                       / figures["script_eager"]["tokens_per_s"])
    figures["config"] = {"batch": len(prompts), "new_tokens": tokens, "dtype": dtype, "passes": passes,
                         "timed": "median of passes 2..N (pass 1: warm-up / compile)"}
    return figures
