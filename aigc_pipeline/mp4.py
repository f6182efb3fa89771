"""MP4 files that browsers play: H.264 video in yuv420p (plus AAC audio when composed).

`encode_frames` turns generated frames (a numpy array) into MP4 bytes through PyAV (libav's
libx264 encoder, in-process); `compose.video` runs the `ffmpeg` program instead, because its
filters (zoompan, drawtext) do the per-frame work. Metadata (prompt, seed, model) is stored as
MP4 tags (`use_metadata_tags`), so `ffprobe -show_format` shows it. PyAV is imported on use.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError, MissingProgramError

MOVFLAGS = "+faststart+use_metadata_tags"  # moov first (plays while loading); custom tags kept
INSTALL_FFMPEG = (
    "apt-get install ffmpeg (Debian/Ubuntu; scripts/setup.sh does this when run as root), dnf install ffmpeg "
    "(Fedora), brew install ffmpeg (macOS)"
)


def encode_frames(frames: Any, fps: int, metadata: dict[str, Any], crf: int = 18) -> bytes:
    """MP4 bytes of `frames` (T x H x W x 3, uint8 RGB; H and W even) at `fps`, tagged with `metadata`."""
    try:
        import av
    except ImportError:
        raise MissingDependencyError("av", "writing MP4 video (PyAV)", extra="models") from None
    with tempfile.TemporaryDirectory(prefix="aigc-mp4-") as folder:  # +faststart re-reads the file by name
        path = Path(folder) / "video.mp4"
        _write(av, path, frames, fps, tags(metadata), crf)
        return path.read_bytes()


def _write(av: Any, path: Path, frames: Any, fps: int, metadata: dict[str, str], crf: int) -> None:
    count, height, width, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4", options={"movflags": MOVFLAGS}) as container:
        container.metadata.update(metadata)
        stream: Any = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1  # x264's output depends on its thread count: one, for the same bytes everywhere
        stream.options = {"crf": str(crf), "preset": "medium"}
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def tags(metadata: dict[str, Any]) -> dict[str, str]:
    """MP4 tags: strings; non-strings as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


def ffmpeg_program(needed_for: str) -> str:
    program = shutil.which("ffmpeg")
    if program is None:
        raise MissingProgramError("ffmpeg", needed_for, INSTALL_FFMPEG)
    return program
