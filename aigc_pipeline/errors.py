"""Every exception the engine raises on purpose.

    AigcError                      base: catch this to catch anything the engine means to raise
    ├── PipelineFileError          a pipeline file is wrong; carries one or more Problems (file:line)
    ├── PluginError                a plugin failed to import, register, or answer a hook
    ├── InputDataError             the input data as a whole is unusable (missing file, missing column)
    ├── PlacementError             a stage cannot be placed on any device that exists
    ├── StageError                 a stage failed outside of a single item (load, unload); chained
    ├── PreflightError             several stages failed their checks before the run (all listed)
    ├── ModelUnavailableError      a model cannot be found or may not be loaded (pickle weights)
    ├── MissingDependencyError     an optional package is needed; says what to install
    ├── MissingProgramError        a system program (e.g. espeak-ng) is not on PATH
    ├── RunStoreError              the output folder holds another pipeline's results, or is in use
    ├── OutputFolderError          the output folder cannot be written (a file, read-only, full, a link)
    └── ReviewError                a review, retake or export request cannot be met (no run store...)

Errors about a single row never escape as exceptions: the executor records them on the item
(status, stage, reason in results.jsonl) and the rest of the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AigcError(Exception):
    """Base class of every error the engine raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, located as precisely as the engine can."""

    message: str
    file: str = "<pipeline>"
    line: int | None = None
    column: int | None = None
    stage: str | None = None
    field: str | None = None
    hint: str | None = None
    severity: str = "error"

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        parts = [f"{self.location()}: "]
        if self.severity != "error":
            parts.append(f"{self.severity}: ")
        if self.stage:
            parts.append(f"stage '{self.stage}': ")
        if self.field:
            parts.append(f"{self.field}: ")
        parts.append(self.message)
        if self.hint:
            parts.append(f"; {self.hint}")
        return "".join(parts)


class PipelineFileError(AigcError):
    """A pipeline file (or a --set override) is invalid. Lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PluginError(AigcError):
    """A plugin could not be loaded or misbehaved; names the plugin."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin '{plugin}': {message}")


class InputDataError(AigcError):
    """The input data cannot be used at all (as opposed to one bad row)."""


class PlacementError(AigcError):
    """No device can run a stage as asked."""


class StageError(AigcError):
    """A stage failed as a whole (e.g. while loading); re-raised with stage id and type."""

    def __init__(self, stage_id: str, type_name: str, message: str) -> None:
        self.stage_id = stage_id
        self.type_name = type_name
        self.message = message
        super().__init__(f"stage '{stage_id}' ({type_name}): {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its three parts (Ray workers send it to the driver), not the joined text.
        return (type(self), (self.stage_id, self.type_name, self.message))


class PreflightError(AigcError):
    """Several stages failed their checks before the run (missing models...): every one listed."""

    def __init__(self, problems: list[StageError]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{len(problems)} stages cannot run; nothing was loaded or run:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class ModelUnavailableError(AigcError):
    """A model is not a local folder nor in the cache, or its weights may not be loaded."""


class MissingDependencyError(AigcError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, needed_for: str, extra: str | None = None) -> None:
        how = f"pip install 'aigc-pipeline[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{needed_for} needs the package '{package}', which is not installed; run: {how}")


class MissingProgramError(AigcError):
    """A program the stage runs is not installed."""

    def __init__(self, program: str, needed_for: str, how: str) -> None:
        self.program = program
        super().__init__(f"{needed_for} needs the program '{program}', which is not on PATH; install it: {how}")


class RunStoreError(AigcError):
    """The run store (`run.sqlite` in the output folder) cannot serve this run; says what to do."""


class OutputFolderError(AigcError):
    """The output folder cannot take the run's files: it is a file, read-only, full, or holds a link."""


class ReviewError(AigcError):
    """A review, retake or export request cannot be met (no run store, an unknown decision or row)."""
