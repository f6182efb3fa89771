"""The public API is explicit and pinned, and importing it is light (no torch)."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys

import aigc_pipeline

PUBLIC_API = [
    "ANY",
    "AUDIO",
    "CPU",
    "IMAGE",
    "NUMBER",
    "RECORD",
    "TEXT",
    "VIDEO",
    "AigcError",
    "Artifact",
    "ArtifactData",
    "ContentType",
    "Device",
    "DeviceNeeds",
    "Engine",
    "InputDataError",
    "Inventory",
    "ItemResult",
    "MissingDependencyError",
    "ModelUnavailableError",
    "PipelineFileError",
    "PipelineGraph",
    "PlacementError",
    "PluginError",
    "PreflightError",
    "Problem",
    "RunInfo",
    "RunResult",
    "RunSummary",
    "Stage",
    "StageError",
    "StageItem",
    "__version__",
    "hookimpl",
]

HEAVY = ("torch", "transformers", "diffusers")


def isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then everything else (ruff's RUF022 order)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a decision: change this list with it."""
    assert aigc_pipeline.__all__ == PUBLIC_API


def test_all_is_sorted() -> None:
    assert aigc_pipeline.__all__ == sorted(aigc_pipeline.__all__, key=isort_style)
    assert len(set(aigc_pipeline.__all__)) == len(aigc_pipeline.__all__)


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from aigc_pipeline import *", namespace)
    for name in aigc_pipeline.__all__:
        assert namespace[name] is getattr(aigc_pipeline, name), name


def test_nothing_public_is_left_out_of_all() -> None:
    public = {name for name in dir(aigc_pipeline) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(aigc_pipeline, name))}
    assert public - modules == set(aigc_pipeline.__all__) - {"__version__"}


def test_version_matches_the_installed_distribution() -> None:
    assert aigc_pipeline.__version__ == importlib.metadata.version("aigc-pipeline")


IMPORT_CHECK = f"""
import importlib.util, json, sys
heavy = {HEAVY!r}
found = [name for name in heavy if importlib.util.find_spec(name) is not None]
import aigc_pipeline, aigc_pipeline.cli, aigc_pipeline.testing
aigc_pipeline.Engine().registry  # imports every built-in plugin and stage module
imported = [name for name in heavy if name in sys.modules]
import torch  # proves the check above could have failed
print(json.dumps({{"found": found, "imported": imported, "torch": torch.__version__}}))
"""


def test_import_loads_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "torch" in report["found"], "torch is not installed: this test would prove nothing"
    assert report["imported"] == []
