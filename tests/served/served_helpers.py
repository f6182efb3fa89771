"""Pipelines and runs for the served-model tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from aigc_pipeline import Engine

PRODUCTS = ["soap", "bread", "green tea", "a red bicycle", "socks", "coffee beans", "a lamp", "honey"]


def write_rows(folder: Path, count: int, name: str = "rows.csv") -> Path:
    path = folder / name
    lines = ["product"] + [f"{PRODUCTS[i % len(PRODUCTS)]} {i}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def served_pipeline(base_url: str, model: str, **with_: Any) -> str:
    stage = {"backend": "openai", "base_url": base_url, "model": model, "max_tokens": 8, **with_}
    spec = {
        "name": "served", "inputs": {"product": "str"},
        "stages": {
            "prompt": {"uses": "template", "with": {"template": "Write about {{ product }}"}},
            "copy": {"uses": "llm.text", "inputs": {"prompt": "prompt.text"}, "with": stage},
        },
        "outputs": {"copy": "copy.text", "record": "copy.record"},
    }
    return yaml.safe_dump(spec, sort_keys=False)


def run_text(text: str, rows: Path, out: Path, **options: Any) -> Any:
    engine = Engine()
    return engine.run(engine.load_text(text), rows, out, **options)


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
