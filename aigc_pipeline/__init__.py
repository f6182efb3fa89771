"""aigc-pipeline: run declared pipelines of AI content-generation stages over batches of rows.

Importing this package is light: no torch, transformers or diffusers until a model stage loads.
"""

from .content import ANY, AUDIO, IMAGE, NUMBER, RECORD, TEXT, VIDEO, Artifact, ArtifactData, ContentType
from .devices import CPU, Device, Inventory
from .engine import Engine, RunResult
from .errors import (
    AigcError,
    InputDataError,
    MissingDependencyError,
    ModelUnavailableError,
    PipelineFileError,
    PlacementError,
    PluginError,
    PreflightError,
    Problem,
    StageError,
)
from .graph import PipelineGraph
from .plugin_manager import hookimpl
from .records import ItemResult, RunInfo, RunSummary
from .stage import DeviceNeeds, Stage, StageItem

__version__ = "0.1.0"

__all__ = [
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
