"""`manifest.json`: what made a run's outputs, written atomically when it starts and when it ends.

It records the pipeline (file, sha256 and text), the input file, package versions (read from the
installed metadata: torch is never imported for this), each stage's model identity (the same one
the run store's cache keys use), each stage's version and providing distribution (also in those
keys: `provenance.py`) and every plugin distribution with its version, the run seed (item
seeds derive from it: `seeding.item_seed`),
devices, placement and residency phases, start and end times, counts per status and, per stage,
time, model load time, loads and peak memory (CUDA max allocated on a GPU, the process's peak RSS
otherwise). `status` is "running" until the run ends ("finished", or "stopped" with `error`), so
a manifest that still says "running" belongs to a run that was killed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .graph import PipelineGraph
from .history import keep_manifest, new_run_id
from .provenance import pipeline_origins, plugin_distributions
from .records import RunPlan, RunSummary
from .sinks import write_atomic

MANIFEST_FILE = "manifest.json"
PACKAGES = ("aigc-pipeline", "torch", "transformers", "diffusers", "accelerate", "huggingface-hub", "pydantic",
            "pluggy")


def start_manifest(graph: PipelineGraph, plan: RunPlan, input_path: Path, rows: int,
                   executor: str = "local") -> dict[str, Any]:
    """The manifest of a run about to start; `executor` says which backend runs it."""
    spec, text = graph.pipeline.spec, graph.pipeline.source_text
    return {
        "manifest_version": 1,
        "run_id": new_run_id(),  # also runs/<run id>/manifest.json, kept by later runs: history.py
        "status": "running",
        "pipeline": {"name": spec.name, "file": graph.pipeline.file,
                     "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "text": text},
        "input": {"file": str(input_path), "path": str(input_path.resolve()), "columns": dict(spec.inputs),
                  "rows": rows},
        "seed": spec.seed,
        "params": {sid: params.model_dump(mode="json") for sid, params in graph.pipeline.params.items()},
        "versions": {"python": platform.python_version(), **package_versions()},
        "models": _models(graph),
        "random_weights": _random_weights(graph),
        "devices": sorted({str(device) for sid, first in plan.placement.items()
                           for device in plan.replicas.get(sid) or [first]}) or ["cpu"],
        "placement": {sid: str(device) for sid, device in plan.placement.items()},
        "replicas": {sid: [str(device) for device in devices]
                     for sid, devices in plan.replicas.items() if len(devices) > 1},
        "executor": executor,
        "stage_versions": pipeline_origins(graph),
        "plugins": plugin_distributions(graph),
        "phases": plan.residency,
        "started_at": _now(),
        "ended_at": None,
    }


def finish_manifest(manifest: dict[str, Any], summary: RunSummary) -> dict[str, Any]:
    """The manifest of a run that ended (also early)."""
    stages = {sid: dataclasses.asdict(stats) for sid, stats in summary.stages.items()}
    for sid, stats in stages.items():
        gpu = manifest["placement"].get(sid, "cpu") != "cpu"
        stats["peak_memory"] = {"kind": "cuda_max_allocated" if gpu else "process_peak_rss",
                                "bytes": stats["peak_memory_bytes"] if gpu else stats["peak_rss_bytes"]}
    return {**manifest, "status": "finished" if summary.ok else "stopped", "ended_at": _now(),
            "seconds": round(summary.seconds, 3), "counts": summary.counts, "group_counts": summary.group_counts,
            "stages": stages, "warnings": summary.warnings, "error": summary.error}


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json (the latest run) and the run's own kept copy (runs/<run id>/)."""
    keep_manifest(out_dir, manifest)
    path = out_dir / MANIFEST_FILE
    write_atomic(path, [json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"])
    return path


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (no imports); None for a package not installed."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _models(graph: PipelineGraph) -> dict[str, Any]:
    models = {}
    for stage_id in graph.order:
        cls, params = graph.stage_class(stage_id), graph.pipeline.params[stage_id]
        try:
            identity = cls.model_identity(params)
        except Exception as exc:  # a plugin's override: the manifest must not stop the run
            identity = f"unknown ({type(exc).__name__}: {exc})"
        if identity:
            models[stage_id] = identity
    return models


def _random_weights(graph: PipelineGraph) -> list[str]:
    """Stages whose model folder holds random weights (`aigc models make-tiny`): the report says so."""
    from .model_files import find_model
    from .tiny import has_random_weights

    stages = []
    for stage_id in graph.order:
        model = getattr(graph.pipeline.params[stage_id], "model", None)
        folder = find_model(model) if isinstance(model, str) and model.strip() else None
        if folder is not None and has_random_weights(folder):
            stages.append(stage_id)
    return stages


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
