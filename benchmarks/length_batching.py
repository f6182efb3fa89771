"""Length-aware generate calls in `llm.text` on mixed-length prompts (a section of throughput.py).

Prompts of widely varied length (seeded: 2 to 36 words, 12 to ~170 tokens of the tiny BPE). Three
arms of the same engine pipeline (`inputs.prompt -> llm.text`), the same model folder, greedy,
min_new_tokens == max_new_tokens, interleaved after one untimed warm-up of each, medians of `--repeats`:

- off:   `batch_size: B`, one `generate` call per batch of B rows in input order (the default);
- on:    `batch_size: K*B, generate_batch: B`: each batch of K*B rows sorted by prompt length and
         cut into calls of B rows (the same call size as `off`, less padding);
- wide:  `batch_size: K*B`, one call of K*B rows in input order (what a larger batch alone does).

The arms' texts must be equal row for row (asserted). Reported: rows/s of the stage loop (model
resident to last row: `StageStats.seconds` less the load), the ratio on/off, and the share of
computed prompt positions that are padding in each arm (from the prompts' token counts).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

WORDS = ("waterproof lightweight backpack coffee morning hikers students recycled quiet warm foldable pocket "
         "commuters travel espresso crema sweater merino lamp dimmable kettle scooter battery trail shoe").split()


def mixed_prompts(count: int, seed: int) -> list[str]:
    """Seeded prompts whose lengths spread from 2 to 36 words."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        words = rng.choice((2, 3, 5, 8, 12, 18, 26, 36))
        prompts.append("Write an ad: " + " ".join(rng.choice(WORDS) for _ in range(words)) + ".")
    return prompts


def pipeline(model: Path, new_tokens: int, batch_size: int, generate_batch: int | None) -> str:
    extra = f", generate_batch: {generate_batch}" if generate_batch else ""
    return (
        "name: length_batching\ninputs: {prompt: str}\nseed: 1234\nstages:\n"
        f"  copy:\n    uses: llm.text\n    inputs: {{prompt: inputs.prompt}}\n    batch_size: {batch_size}\n"
        f"    with: {{model: {json.dumps(str(model))}, max_new_tokens: {new_tokens}, min_new_tokens: {new_tokens}, "
        f"chat_template: false{extra}}}\n"
        "outputs: {text: copy.text}\n"
    )


class Arm:
    def __init__(self, name: str, yaml: str, work: Path) -> None:
        from aigc_pipeline import Engine

        self.name, self.work = name, work
        self.engine = Engine()
        self.graph = self.engine.load_text(yaml, f"<length batching: {name}>")

    def __call__(self, input_path: Path, rows: int) -> dict[str, Any]:
        out = self.work / f"out-length-{self.name}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run store: nothing reused
        started, cpu = time.perf_counter(), time.process_time()
        result = self.engine.run(self.graph, input_path, out)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        summary = result.summary
        if summary.error or summary.counts.get("done") != rows:
            raise SystemExit(f"length batching, arm {self.name}: error={summary.error!r} counts={summary.counts}")
        copy = summary.stages["copy"]
        loop = copy.seconds - copy.load_seconds
        return {"rows": rows, "run_s": wall, "loop_s": loop, "load_s": copy.load_seconds, "cpu_s": cpu,
                "rows_per_s": rows / loop, "texts": [r.outputs.get("text") for r in result.results]}


def length_section(folder: Path, work: Path, rows: int, batch: int, factor: int, new_tokens: int,
                   repeats: int) -> dict[str, Any]:
    """Run the three arms interleaved; check equal texts; medians, ratio and padding shares."""
    from statistics import median

    from transformers import AutoTokenizer

    from aigc_pipeline.stages.llm_batching import padding_share

    prompts = mixed_prompts(rows, seed=1234)
    input_path = work / "input-mixed.jsonl"
    input_path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    arms = {"off": Arm("off", pipeline(folder, new_tokens, batch, None), work),
            "on": Arm("on", pipeline(folder, new_tokens, batch * factor, batch), work),
            "wide": Arm("wide", pipeline(folder, new_tokens, batch * factor, None), work)}
    for arm in arms.values():  # untimed warm-up
        arm(input_path, rows)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name, arm in arms.items():
            record = arm(input_path, rows)
            runs[name].append(record)
            print(f"[length {repeat + 1}/{repeats}] {name:<5} loop {record['loop_s']:.3f} s "
                  f"({record['rows_per_s']:.1f} rows/s), run {record['run_s']:.3f} s, CPU {record['cpu_s']:.3f} s",
                  flush=True)
    reference = runs["off"][0]["texts"]
    equal = all(r["texts"] == reference for arm_runs in runs.values() for r in arm_runs)
    if not equal:
        raise SystemExit("length batching: the arms' texts differ")
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(folder)(prompts)["input_ids"]]
    loops = {name: [r["loop_s"] for r in arm_runs] for name, arm_runs in runs.items()}
    cpus = {name: [r["cpu_s"] for r in arm_runs] for name, arm_runs in runs.items()}
    return {
        "rows": rows, "new_tokens": new_tokens, "call_size": batch, "sorted_window": batch * factor,
        "prompt_tokens": {"min": min(lengths), "median": median(lengths), "max": max(lengths)},
        "texts_equal_across_arms": equal,
        "padding_share": {"off": padding_share(lengths, batch, sort=False),
                          "on": padding_share(lengths, batch, sort=True),
                          "wide": padding_share(lengths, batch * factor, sort=False)},
        "loop_s": {name: {"median": median(v), "min": min(v), "max": max(v), "samples": v}
                   for name, v in loops.items()},
        "cpu_s": {name: {"median": median(v), "min": min(v), "max": max(v), "samples": v}
                  for name, v in cpus.items()},
        "speedup_on_over_off": median(loops["off"]) / median(loops["on"]),
        "cpu_ratio_off_over_on": median(cpus["off"]) / median(cpus["on"]),
        "speedup_on_over_wide": median(loops["wide"]) / median(loops["on"]),
        "interleaved": "off, on, wide per repeat after one untimed warm-up of each",
    }


def print_section(section: dict[str, Any]) -> None:
    pad = section["padding_share"]
    print(f"\nlength-aware generate calls ({section['rows']} rows, prompts {section['prompt_tokens']} tokens, "
          f"calls of {section['call_size']} sorted within {section['sorted_window']}):")
    for name in ("off", "on", "wide"):
        loop = section["loop_s"][name]
        print(f"  {name:<5} loop {loop['median']:.3f} s (min {loop['min']:.3f}, max {loop['max']:.3f}), "
              f"CPU {section['cpu_s'][name]['median']:.3f} s, padding {pad[name]:.0%}")
    print(f"  on/off speed-up {section['speedup_on_over_off']:.2f}x "
          f"(CPU time {section['cpu_ratio_off_over_on']:.2f}x), on/wide {section['speedup_on_over_wide']:.2f}x; "
          f"texts equal: {section['texts_equal_across_arms']}")
