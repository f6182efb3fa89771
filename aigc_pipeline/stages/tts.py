"""`tts`: text to speech, one WAV file (16-bit PCM, mono) per row.

Three backends, chosen with `backend:`:

- `espeak` (default): real, offline, robotic speech from the `espeak-ng` program. The text goes to
  its stdin, never through a shell or the argument list, so a text like `-h` or `$(rm -rf ~)` is
  spoken, not read as an option or run. `preflight` checks the program and the voice.
- `transformers`: a VITS text-to-speech model (`VitsModel`: Meta's MMS-TTS family, e.g.
  `facebook/mms-tts-eng`, or `aigc models make-tiny`'s `tts`) through `transformers`. VITS draws
  noise for its durations and latents with torch's global RNG over the whole batch tensor, so a
  batched call would make an item's audio depend on its neighbours; the stage therefore runs the
  items of a micro-batch one at a time, each seeded with `item.seed`: the audio of a row is the
  same for any batch size, order or resume.
- `stub`: a sine tone, 0.06 s per character (at least 0.2 s), its pitch from `item.seed`;
  standard library only, for tests and dry runs (`--set voice.backend=stub`).

Params that belong to another backend are ignored, so one `--set STAGE.backend=stub` turns a
pipeline into a dry run; only `model` without an explicit `backend` is an error (it would be
ignored by the default backend). An empty text fails its row. The stage returns `ArtifactData`
(WAV bytes with `sample_rate`, `duration_s`, `backend` and the voice or model in its metadata);
the engine writes the file. Heavy imports (torch, transformers) happen in `load`, never here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..audio import PCM16_MAX, encode_wav, parse_wav_stream, tone
from ..content import AUDIO, TEXT, ArtifactData
from ..devices import Device
from ..errors import AigcError, MissingDependencyError, MissingProgramError, ModelUnavailableError
from ..models import memory_estimate, resolve_model
from ..plugin_manager import hookimpl
from ..seeding import torch_seeded
from ..stage import DeviceNeeds, Stage, StageItem

ESPEAK = "espeak-ng"
ESPEAK_TIMEOUT_S = 120
INSTALL_ESPEAK = (
    "apt-get install espeak-ng (Debian/Ubuntu; scripts/setup.sh does this when run as root), "
    "dnf install espeak-ng (Fedora), brew install espeak-ng (macOS); or use 'backend: stub' for a dry run"
)
VOICE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_+-]{0,63}"  # en, en-us, en+f3, zh-yue: never an option or a path
STUB_SECONDS_PER_CHAR = 0.06
STUB_MIN_SECONDS = 0.2
VITS_MODEL_TYPES = ("vits",)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
HEADROOM = 1.5  # activations of one text (the decoder upsamples 256x), on top of the weights
HEADROOM_BYTES = 128 * 2**20


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["espeak", "transformers", "stub"] = Field(
        "espeak", description="espeak: offline speech (espeak-ng); transformers: a VITS model; stub: a test tone"
    )
    voice: str = Field("en", description="espeak: voice ('espeak-ng --voices' lists them)")
    speed: int = Field(175, ge=80, le=500, description="espeak: words per minute")
    model: str | None = Field(None, description="transformers: a local folder or Hugging Face id of a VITS model")
    revision: str | None = Field(None, description="transformers: the model's git revision on the Hub")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="transformers: weight dtype")
    trust_remote_code: bool = Field(False, description="transformers: run the model repository's own code")
    allow_pickle: bool = Field(False, description="transformers: allow pickle weights (.bin), which can run code")
    sample_rate: int = Field(16_000, ge=8_000, le=96_000, description="stub: samples per second")

    @field_validator("voice", mode="after")
    @classmethod
    def _voice_name(cls, voice: str) -> str:
        if not re.fullmatch(VOICE_PATTERN, voice):
            raise ValueError(f"not a voice name: letters, digits, '-', '_' or '+', like en, en-us, de or en+f3 "
                             f"('{ESPEAK} --voices' lists them)")
        return voice

    @field_validator("model", mode="after")
    @classmethod
    def _not_blank(cls, model: str | None) -> str | None:
        if model is not None and not model.strip():
            raise ValueError("model must not be empty")
        return model

    @model_validator(mode="after")
    def _model_matches_backend(self) -> TtsParams:
        if self.backend == "transformers" and self.model is None:
            raise ValueError("backend 'transformers' needs 'model': a local folder or a Hugging Face id "
                             "of a VITS model, e.g. facebook/mms-tts-eng")
        if self.model is not None and "backend" not in self.model_fields_set:
            raise ValueError("'model' is used by backend 'transformers' only; add 'backend: transformers'")
        return self


def _espeak_program() -> str:
    program = shutil.which(ESPEAK)
    if program is None:
        raise MissingProgramError(ESPEAK, "the tts stage's 'espeak' backend", INSTALL_ESPEAK)
    return program


def _check_espeak(voice: str) -> None:
    """The program is installed and knows the voice (one silent run, `-q`: a few milliseconds)."""
    program = _espeak_program()
    try:
        done = subprocess.run([program, "-q", "-v", voice], input=b"a", capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AigcError(f"'{program}' could not be run: {exc}") from exc
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = said[-1] if said else f"exit code {done.returncode}"
        raise AigcError(f"{ESPEAK} cannot use voice '{voice}' ({why}); '{ESPEAK} --voices' lists the installed voices")


def _check_vits(params: TtsParams) -> Path:
    """The model resolves to a folder with allowed weights, is a VITS model, and its tokenizer can run."""
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "the tts stage's backend 'transformers'", extra="models")
    if params.model is None:  # TtsParams refuses this already; kept for params built without validation
        raise ModelUnavailableError("backend 'transformers' needs 'model'")
    folder = resolve_model(params.model, params.revision, allow_pickle=params.allow_pickle)
    config = _read_json(folder / "config.json", params.model)
    model_type = config.get("model_type")
    if model_type not in VITS_MODEL_TYPES and not params.trust_remote_code:
        raise ModelUnavailableError(
            f"model '{params.model}' is a '{model_type}' model; the tts stage runs VITS models "
            f"(model_type {', '.join(VITS_MODEL_TYPES)}: e.g. facebook/mms-tts-eng)"
        )
    tokenizer_config = folder / "tokenizer_config.json"
    options = _read_json(tokenizer_config, params.model) if tokenizer_config.is_file() else {}
    for option, package, what in (("phonemize", "phonemizer", "converts text to phonemes"),
                                  ("is_uroman", "uroman", "romanizes text first")):
        if options.get(option) and importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, f"model '{params.model}' (its tokenizer {what})")
    return folder


def _read_json(path: Path, model: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"model '{model}': cannot read {path.name}: {exc}") from exc
    return data if isinstance(data, dict) else {}


class SpeechError(Exception):
    """A backend could not speak one text; the row fails with this reason."""


class StubSpeaker:
    """A tone per text: length from the text, pitch from the seed. No dependencies."""

    def __init__(self, params: TtsParams) -> None:
        self.sample_rate = params.sample_rate

    def speak(self, text: str, seed: int) -> ArtifactData:
        seconds = max(STUB_MIN_SECONDS, STUB_SECONDS_PER_CHAR * len(text))
        frequency = 220 + seed % 440
        pcm = tone(frequency, seconds, self.sample_rate)
        return _wav(pcm, self.sample_rate, {"backend": "stub", "frequency_hz": frequency})


class EspeakSpeaker:
    """espeak-ng as a subprocess per text: text on stdin, a WAV stream on stdout."""

    def __init__(self, params: TtsParams) -> None:
        self.voice, self.speed = params.voice, params.speed
        self.argv = [_espeak_program(), "-b", "1", "-v", self.voice, "-s", str(self.speed), "--stdout"]

    def speak(self, text: str, seed: int) -> ArtifactData:
        try:
            done = subprocess.run(self.argv, input=text.encode("utf-8"), capture_output=True,
                                  timeout=ESPEAK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise SpeechError(f"{ESPEAK} took longer than {ESPEAK_TIMEOUT_S} s") from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip()
            raise SpeechError(f"{ESPEAK} exited with code {done.returncode}: {said[-300:]}")
        try:
            info, pcm = parse_wav_stream(done.stdout)
        except ValueError as exc:
            raise SpeechError(f"{ESPEAK} did not write a WAV stream: {exc}") from None
        if info.sample_width != 2 or info.channels != 1:
            raise SpeechError(f"{ESPEAK} wrote {info.channels} channel(s) of {8 * info.sample_width}-bit audio")
        return _wav(pcm, info.sample_rate, {"backend": "espeak", "voice": self.voice, "speed": self.speed})


class VitsSpeaker:
    """A VITS model via transformers, one text at a time under the item's seed (see the module docstring)."""

    def __init__(self, params: TtsParams, device: Device) -> None:
        import torch
        from transformers import AutoModelForTextToWaveform, AutoTokenizer

        self.params, self.device = params, device
        folder = _check_vits(params)
        remote = params.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        model = AutoModelForTextToWaveform.from_pretrained(
            folder, trust_remote_code=remote, use_safetensors=None if params.allow_pickle else True
        )
        self.model = model.to(device=str(device), dtype=getattr(torch, params.dtype)).eval()
        self.sample_rate = int(model.config.sampling_rate)

    def speak(self, text: str, seed: int) -> ArtifactData:
        import torch

        if not speakable(self.tokenizer, text):
            raise SpeechError("none of the text's characters are in the model's vocabulary")
        encoded = self.tokenizer(text, return_tensors="pt")
        gpu = [self.device.index or 0] if self.device.is_gpu else []
        with torch_seeded(seed, gpu), torch.inference_mode():
            output = self.model(**encoded.to(str(self.device)))
        waveform = output.waveform[0]
        lengths = getattr(output, "sequence_lengths", None)
        if lengths is not None:
            waveform = waveform[: int(lengths[0])]
        samples = waveform.float().clamp(-1.0, 1.0).mul(PCM16_MAX).round().to(torch.int16).cpu().numpy()
        return _wav(samples.astype("<i2").tobytes(), self.sample_rate, {"backend": "transformers",
                                                                         "model": self.params.model})

    def close(self) -> None:
        del self.model  # the engine frees the cached GPU memory once the stage has unloaded


def speakable(tokenizer: Any, text: str) -> bool:
    """Whether anything of `text` is left after the tokenizer's own normalization.

    A VITS tokenizer lowercases and drops characters outside its vocabulary before it puts the
    blank (id 0) between characters; ids alone cannot tell, since MMS models use a letter as the
    pad token (`k` in facebook/mms-tts-eng).
    """
    prepare = getattr(tokenizer, "prepare_for_tokenization", None)
    prepared = prepare(text)[0] if callable(prepare) else text
    return bool(str(prepared).strip())


def _wav(pcm: bytes, sample_rate: int, metadata: dict[str, Any]) -> ArtifactData:
    if not pcm:
        raise SpeechError("the backend produced no audio")
    duration = len(pcm) / 2 / sample_rate
    info = {"sample_rate": sample_rate, "duration_s": round(duration, 4), **metadata}
    return ArtifactData(encode_wav(pcm, sample_rate), ".wav", info)


class TtsStage(Stage[TtsParams]):
    type_name = "tts"
    description = "Speak text as a WAV file per row: espeak-ng, a VITS model (transformers), or a stub tone."
    Params = TtsParams
    inputs = {"text": TEXT}
    outputs = {"audio": AUDIO}
    default_batch_size = 8

    def __init__(self, params: TtsParams) -> None:
        super().__init__(params)
        self.speaker: StubSpeaker | EspeakSpeaker | VitsSpeaker | None = None

    @classmethod
    def preflight(cls, params: TtsParams) -> None:
        if params.backend == "espeak":
            _check_espeak(params.voice)
        elif params.backend == "transformers":
            _check_vits(params)

    @classmethod
    def needs(cls, params: TtsParams) -> DeviceNeeds:
        if params.backend != "transformers":
            return DeviceNeeds("cpu")
        # From the safetensors headers when the model is on this machine already (never downloads).
        memory = memory_estimate(params.model or "", params.revision, dtype_bytes=DTYPE_BYTES[params.dtype],
                                 headroom=HEADROOM, extra_bytes=HEADROOM_BYTES)
        return DeviceNeeds("any", memory, params.dtype)

    def load(self, device: Device) -> None:
        params = self.params
        if params.backend == "stub":
            self.speaker = StubSpeaker(params)
        elif params.backend == "espeak":
            self.speaker = EspeakSpeaker(params)
        else:
            self.speaker = VitsSpeaker(params, device)

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        if self.speaker is None:
            raise AigcError("the tts stage was not loaded: call load(device) before process()")
        for item in batch:
            text = item.inputs["text"]
            if not isinstance(text, str) or not text.strip():
                item.fail("nothing to speak: the text is empty" if isinstance(text, str)
                          else f"expected text, got {type(text).__name__}")
                continue
            try:
                item.outputs["audio"] = self.speaker.speak(text, item.seed)
            except SpeechError as exc:
                item.fail(str(exc))
        return batch

    def unload(self) -> None:
        if isinstance(self.speaker, VitsSpeaker):
            self.speaker.close()
        self.speaker = None


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [TtsStage]
