"""The output folder is the only place a run writes to or deletes from.

A symbolic link inside it (`artifacts/` replaced by a link to another folder, say) would carry
writes and deletions elsewhere, so every path the engine writes or deletes under the output
folder is checked, folder by folder, to be a real folder inside it first. The user's own `--out`
may itself be a link: that is where they chose to put the run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import OutputFolderError


def prepare_output_folder(out_dir: Path) -> None:
    """Create `out_dir` and prove it is a folder this process can write in, with no linked `artifacts/`.

    Raises OutputFolderError saying what is wrong and what to do, before any model loads.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder; give a folder (it is created if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(f"cannot write in the output folder {out_dir}: {exc.strerror or exc}; "
                                "give a folder you can write to") from None
    artifacts = out_dir / "artifacts"
    for folder in (artifacts, *(artifacts.iterdir() if real_folder(artifacts) else ())):
        if folder.is_symlink():
            raise OutputFolderError(f"{folder} is a symbolic link (to {os.readlink(folder)}); a run writes only "
                                    "inside its output folder: remove the link, or give another --out")


def real_folder(path: Path) -> bool:
    """Whether `path` is a folder and not a link to one."""
    return path.is_dir() and not path.is_symlink()


def checked_path(out_dir: Path, relpath: str) -> Path:
    """`out_dir / relpath`, after checking that no folder on the way is a link or escapes `out_dir`.

    Raises OSError (an item's artifact then fails with the reason) when one does. Missing folders
    are fine: the writer creates them, as real folders.
    """
    parts = Path(relpath).parts
    if Path(relpath).is_absolute() or ".." in parts:
        raise OSError(f"{relpath} is not a path inside the output folder")
    folder = out_dir
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise OSError(f"{folder} is a symbolic link; a run writes only inside its output folder")
    return out_dir / relpath


def intact_artifact(out_dir: Path, relpath: str, size: int, digest: str | None) -> bool:
    """Whether a stored artifact is still what the run store recorded: a regular file inside the
    output folder (no link on the way) with the recorded size and sha256. A same-size file with
    other bytes (a damaged disk, a hand edit, a half copy) is not served as done: it runs again."""
    try:
        path = checked_path(out_dir, relpath)
        if path.is_symlink() or path.stat().st_size != size:
            return False
        if digest is None:
            return True
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        return hasher.hexdigest() == digest
    except OSError:
        return False
