"""WAV helpers for audio stages, standard library only: encode, read, measure, make a tone.

Audio travels between stages as WAV files (16-bit PCM). Stages build the bytes with
`encode_wav` and return them as `ArtifactData`; the engine writes the file. `parse_wav_stream`
reads a WAV that a program streamed to stdout, whose header sizes are placeholders (espeak-ng
`--stdout` writes 0x7fffffff-ish sizes because it cannot seek back), and `read_wav` reads a
finished file strictly, through the `wave` module.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PCM16_MAX = 32767


@dataclass(frozen=True)
class WavInfo:
    """The format and length of a WAV: enough to check or describe it."""

    sample_rate: int
    channels: int
    sample_width: int  # bytes per sample: 2 for 16-bit PCM
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def encode_wav(pcm: bytes, sample_rate: int, channels: int = 1, sample_width: int = 2) -> bytes:
    """A complete WAV file (header and data) around little-endian PCM samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(sample_width)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def read_wav(source: bytes | str | Path) -> tuple[WavInfo, bytes]:
    """(format, PCM data) of a WAV file or its bytes; raises wave.Error / EOFError when it is not one."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with handle, wave.open(handle, "rb") as reader:
        info = WavInfo(reader.getframerate(), reader.getnchannels(), reader.getsampwidth(), reader.getnframes())
        return info, reader.readframes(info.frames)


def parse_wav_stream(data: bytes) -> tuple[WavInfo, bytes]:
    """(format, PCM data) of a streamed WAV: trusts the chunks' layout, not the sizes in its header.

    The data chunk runs to the end of `data` when its declared size is larger than what is there
    (the streaming placeholder); a trailing odd byte of a partial sample is dropped.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"not a WAV stream (starts with {data[:12]!r})")
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV stream has its data chunk before the fmt chunk")
            audio_format, channels, rate, _, _, bits = fmt
            if audio_format != 1:
                raise ValueError(f"WAV stream is not PCM (format {audio_format})")
            pcm = data[body : body + size]
            frame_bytes = channels * (bits // 8)
            pcm = pcm[: len(pcm) - len(pcm) % frame_bytes]
            return WavInfo(rate, channels, bits // 8, len(pcm) // frame_bytes), pcm
        offset = body + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


def pcm16_from_floats(samples: Iterable[float]) -> bytes:
    """Little-endian 16-bit PCM from float samples in [-1, 1] (values outside are clipped)."""
    clipped = array("h", (round(max(-1.0, min(1.0, s)) * PCM16_MAX) for s in samples))
    if sys.byteorder == "big":
        clipped.byteswap()
    return clipped.tobytes()


def pcm16_rms(pcm: bytes) -> float:
    """Root mean square of 16-bit little-endian PCM, from 0.0 (silence) to 1.0 (full scale)."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / PCM16_MAX


def tone(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.3, fade_s: float = 0.01) -> bytes:
    """A sine tone as 16-bit PCM, faded in and out over `fade_s` so it starts and ends without a click."""
    frames = max(1, round(seconds * sample_rate))
    fade = max(1, min(frames // 2, round(fade_s * sample_rate)))
    step = 2 * math.pi * frequency / sample_rate
    return pcm16_from_floats(
        amplitude * min(1.0, i / fade, (frames - 1 - i) / fade) * math.sin(step * i) for i in range(frames)
    )
