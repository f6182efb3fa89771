"""`compose.video`: one finished ad video per row from an image, a voice-over and an optional caption.

The `ffmpeg` program does the work in one run per row: the still image, looped at `fps`, goes
through `zoompan` (a slow push-in to `zoom`, centred), `drawtext` burns the caption in (white with
a dark outline, near the bottom, wrapped to the frame), and the voice-over is encoded as AAC. The
video lasts as long as the audio, or `duration` seconds (the audio then padded with silence or
cut); its frame count is `round(duration * fps)`. Output: MP4, H.264 in yuv420p (browsers play
it), `+faststart`, one encoder thread and bit-exact flags (the same bytes on every run and machine),
tags naming the sources; the first
frame is attached as a PNG poster (the video's `poster` metadata).

The caption is a Jinja2 template (the template stage's sandbox) over the row's columns and any
text input wired to this stage (`inputs: {tagline: tagline.text}`); its text reaches ffmpeg in a
file, never on a command line, and `expansion=none` keeps `%{...}` in it literal.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..content import AUDIO, IMAGE, TEXT, VIDEO, ArtifactData
from ..errors import AigcError
from ..mp4 import MOVFLAGS, ffmpeg_program, tags
from ..plugin_manager import hookimpl
from ..stage import Stage, StageItem
from .template_sandbox import SandboxedTemplate, template_variables

FFMPEG_TIMEOUT_S = 600
FONT_QUERIES = ("DejaVu Sans:bold", "Liberation Sans:bold", "sans-serif:bold")
INSTALL_FONTS = "apt-get install fonts-dejavu-core (scripts/setup.sh does this when run as root)"


class ComposeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caption: str | None = Field(None, description="text burned in near the bottom: a Jinja2 template over the "
                                                   "row's columns and this stage's text inputs")
    duration: float | None = Field(None, gt=0, le=3600, description="seconds; default: the voice-over's length")
    fps: int = Field(25, ge=1, le=60, description="frames per second")
    width: int | None = Field(None, ge=16, le=4096, multiple_of=2, description="frame width; default: the image's")
    height: int | None = Field(None, ge=16, le=4096, multiple_of=2, description="frame height; default: the image's")
    zoom: float = Field(1.1, ge=1.0, le=2.0, description="zoom reached at the end (a slow push-in); 1: a still")
    font_size: int | None = Field(None, ge=4, le=400, description="caption size in pixels; default: height / 12")
    crf: int = Field(20, ge=0, le=51, description="H.264 quality: 0 lossless, 18-23 good, 51 worst")

    @field_validator("caption")
    @classmethod
    def _parses(cls, caption: str | None) -> str | None:
        if caption is not None:
            template_variables(caption)
        return caption


class ComposeVideoStage(Stage[ComposeParams]):
    type_name = "compose.video"
    description = "Image + voice-over (+ caption) -> an MP4 ad video (ffmpeg: pan/zoom, burned-in caption, AAC)."
    Params = ComposeParams
    inputs = {"image": IMAGE, "audio": AUDIO}
    variadic_inputs = TEXT  # texts the caption template names, e.g. {tagline: tagline.text}
    outputs = {"video": VIDEO}
    default_batch_size = 4

    def __init__(self, params: ComposeParams) -> None:
        super().__init__(params)
        self.template = SandboxedTemplate(params.caption) if params.caption else None

    @classmethod
    def variables(cls, params: ComposeParams) -> set[str]:
        return template_variables(params.caption) if params.caption else set()

    @classmethod
    def preflight(cls, params: ComposeParams) -> None:
        ffmpeg_program("the compose.video stage")
        if params.caption:
            find_font()

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        program = ffmpeg_program("the compose.video stage")
        for item in batch:
            try:
                item.outputs["video"] = self._compose(program, item)
            except ComposeError as exc:
                item.fail(str(exc))
        return batch

    def _compose(self, program: str, item: StageItem) -> ArtifactData:
        image, audio = Path(str(item.inputs["image"].path)), Path(str(item.inputs["audio"].path))
        caption = self.template.render(item.inputs).strip() if self.template else ""
        duration = self.params.duration or audio_seconds(audio)
        width, height = self._size(image)
        frames = max(1, round(duration * self.params.fps))
        metadata: dict[str, Any] = {
            "image": str(item.inputs["image"]), "audio": str(item.inputs["audio"]), "caption": caption,
            "duration_s": round(duration, 3), "fps": self.params.fps, "frames": frames, "width": width,
            "height": height,
        }
        with tempfile.TemporaryDirectory(prefix="aigc-compose-") as work:
            folder = Path(work)
            command = self._command(program, image, audio, caption, folder, (width, height, frames, duration), metadata)
            run_ffmpeg(command, folder)
            video, poster = (folder / "out.mp4").read_bytes(), (folder / "poster.png").read_bytes()
        return ArtifactData(video, ".mp4", metadata, {"poster": ArtifactData(poster, ".png", {"of": "first frame"})})

    def _size(self, image: Path) -> tuple[int, int]:
        from PIL import Image

        with Image.open(image) as opened:
            natural = opened.size
        width = self.params.width or max(16, natural[0] - natural[0] % 2)
        height = self.params.height or max(16, natural[1] - natural[1] % 2)
        return width, height

    def _command(self, program: str, image: Path, audio: Path, caption: str, folder: Path,
                 shape: tuple[int, int, int, float], metadata: dict[str, Any]) -> list[str]:
        width, height, frames, duration = shape
        video_filter = self._video_filter(caption, folder, width, height, frames)
        command = [program, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                   "-loop", "1", "-framerate", str(self.params.fps), "-i", str(image), "-i", str(audio),
                   "-filter_complex", f"{video_filter},split[v][p];[1:a]apad[a]",
                   "-map", "[v]", "-map", "[a]", "-frames:v", str(frames), "-t", f"{duration:.6f}",
                   "-c:v", "libx264", "-threads", "1", "-preset", "veryfast", "-crf", str(self.params.crf),
                   "-pix_fmt", "yuv420p",
                   "-c:a", "aac", "-b:a", "128k", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                   "-flags:a", "+bitexact", "-movflags", MOVFLAGS]
        for key, value in tags(metadata).items():
            command += ["-metadata", f"{key}={value}"]
        return command + ["out.mp4", "-map", "[p]", "-frames:v", "1", "-update", "1", "poster.png"]

    def _video_filter(self, caption: str, folder: Path, width: int, height: int, frames: int) -> str:
        """Scale up (a smooth zoom needs sub-pixel room), push in to `zoom` over the video, caption."""
        zoom = f"1+{self.params.zoom - 1:.6f}*on/{max(frames - 1, 1)}"
        chain = [f"[0:v]scale={width * 4}:{height * 4}:flags=lanczos,setsar=1",
                 f"zoompan=z='{zoom}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s={width}x{height}:fps={self.params.fps}"]
        if caption:
            size = self.params.font_size or max(8, height // 12)
            (folder / "caption.txt").write_text(wrap(caption, width, size), encoding="utf-8")
            (folder / "font.ttf").symlink_to(find_font())
            chain.append(f"drawtext=fontfile=font.ttf:textfile=caption.txt:expansion=none:fontsize={size}:"
                         f"fontcolor=white:borderw={max(1, size // 12)}:bordercolor=black@0.8:"
                         f"line_spacing={size // 4}:x=(w-text_w)/2:y=h-text_h-h/14")
        chain.append("format=yuv420p")
        return ",".join(chain)


class ComposeError(AigcError):
    """ffmpeg could not compose one row's video; the row fails with this reason."""


def wrap(text: str, width: int, font_size: int) -> str:
    """Caption lines that fit the frame (a bold sans glyph is about 0.6 of the size wide)."""
    columns = max(8, int(width * 0.9 / (font_size * 0.6)))
    return "\n".join(textwrap.wrap(" ".join(text.split()), columns)) or " "


def run_ffmpeg(command: list[str], folder: Path) -> None:
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ComposeError(f"ffmpeg took longer than {FFMPEG_TIMEOUT_S} s") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ComposeError(f"ffmpeg failed: {said[-1] if said else f'exit code {done.returncode}'}")


def audio_seconds(path: Path) -> float:
    """The length of the voice-over: from the WAV header, else from ffprobe."""
    from ..audio import read_wav

    try:
        return read_wav(path)[0].duration_s
    except Exception:  # not a WAV (mp3, ogg), or a broken one: ask ffprobe
        pass
    probe = shutil.which("ffprobe")
    if probe is None:
        raise ComposeError(f"cannot read the length of {path.name}: not a WAV, and ffprobe is not installed")
    done = subprocess.run([probe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    try:
        return float(done.stdout.strip())
    except ValueError:
        raise ComposeError(f"cannot read the length of {path.name}: {done.stderr.strip()[:200]}") from None


def find_font() -> Path:
    """A bold sans font file for the caption (fontconfig's choice, else a known path)."""
    matcher = shutil.which("fc-match")
    candidates: list[str] = []
    if matcher:
        for query in FONT_QUERIES:
            done = subprocess.run([matcher, "-f", "%{file}", query], capture_output=True, text=True, timeout=30)
            candidates.append(done.stdout.strip())
    candidates += ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
                   "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"]
    for candidate in candidates:
        if candidate and candidate.lower().endswith((".ttf", ".otf")) and Path(candidate).is_file():
            return Path(candidate)
    raise AigcError(f"compose.video's caption needs a TrueType font and none was found; install one: {INSTALL_FONTS}")


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [ComposeVideoStage]
