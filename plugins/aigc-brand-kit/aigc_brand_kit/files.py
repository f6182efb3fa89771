"""Files the brand stages read (logo, font, brand file): checked before a run, named in every error."""

from __future__ import annotations

from pathlib import Path

from aigc_pipeline import AigcError


class BrandKitError(AigcError):
    """A brand asset (logo, font, brand file) is missing or unusable; the message names the file."""


def existing_file(path: str, what: str, param: str) -> Path:
    """`path` as a Path if it is a readable file; otherwise a BrandKitError saying how to fix it.

    Relative paths are relative to the working directory the run starts in.
    """
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise BrandKitError(f"{what} '{path}' (param '{param}') does not exist (looked at {resolved.absolute()})")
    if not resolved.is_file():
        raise BrandKitError(f"{what} '{path}' (param '{param}') is not a file")
    return resolved
