"""The `tts` stage: every backend end to end through `aigc run`, its params, needs and preflight.

Each run is `template -> tts` over a few rows; the WAVs it writes are opened with `wave`. Texts
that look like options (`-h`, `--version`) or shell code must be spoken, never obeyed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.audio import WavInfo, encode_wav, parse_wav_stream, pcm16_rms, read_wav, tone
from aigc_pipeline.cli import app
from aigc_pipeline.content import Artifact
from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import MissingDependencyError, PipelineFileError, StageError
from aigc_pipeline.stages.tts import TtsParams, TtsStage, speakable
from aigc_pipeline.testing import CPU_ONLY, run_text

PIPELINE = """\
name: voice
inputs: {line: str}
seed: 7
stages:
  script: {uses: template, with: {template: "{{ line }}"}}
  voice: {uses: tts, inputs: {text: script.text}, with: WITH, batch_size: BATCH}
outputs: {audio: voice.audio}
"""
SHORT, LONG = "Hi.", "A much longer sentence, spoken slowly and clearly, takes a good deal more time to say."
SHELL = "$(touch PWNED); `touch PWNED` && echo x > PWNED | cat"
LINES = [SHORT, "Hello there, friend.", "-h", "--version", SHELL, LONG]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def pipeline_text(with_: dict[str, Any], batch_size: int = 8) -> str:
    return PIPELINE.replace("WITH", json.dumps(with_)).replace("BATCH", str(batch_size))


def run_cli(tmp_path: Path, with_: dict[str, Any], name: str = "out", batch_size: int = 8,
            lines: list[str] | None = None) -> tuple[Any, Path, list[dict[str, Any]]]:
    """`aigc run` a template -> tts pipeline over `lines`: (CLI result, output folder, results.jsonl rows)."""
    rows = [{"line": spoken(line, tmp_path)} for line in (lines or LINES)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / f"{name}.yaml").write_text(pipeline_text(with_, batch_size), encoding="utf-8")
    out = tmp_path / name
    done = CliRunner().invoke(
        app,
        ["run", str(tmp_path / f"{name}.yaml"), "-i", str(tmp_path / "rows.jsonl"), "-o", str(out), "-q"],
        catch_exceptions=False,
    )
    written = out / "results.jsonl"
    results = [json.loads(x) for x in written.read_text(encoding="utf-8").splitlines()] if written.exists() else []
    return done, out, results


def spoken(line: str, tmp_path: Path) -> str:
    """The row's text: PWNED stands for a file that must never be created."""
    return line.replace("PWNED", str(tmp_path / "pwned"))


def wavs(out: Path, results: list[dict[str, Any]]) -> list[tuple[WavInfo, bytes]]:
    """The WAV of every row, opened with the standard library's `wave`; every row must be done."""
    assert [r["status"] for r in results] == ["done"] * len(results), results
    found = []
    for result in results:
        path = out / result["outputs"]["audio"]["path"]
        assert path.suffix == ".wav" and path.parent == out / "artifacts" / "voice"
        with wave.open(str(path), "rb") as reader:
            assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
            assert reader.getnframes() > 0
        found.append(read_wav(path))
    return found


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------ stub


def test_stub_length_follows_the_text_and_is_identical_for_any_batch_size(tmp_path: Path) -> None:
    first, out1, results1 = run_cli(tmp_path, {"backend": "stub", "sample_rate": 22050}, "b1", batch_size=1)
    second, out4, results4 = run_cli(tmp_path, {"backend": "stub", "sample_rate": 22050}, "b4", batch_size=4)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    audio1, audio4 = wavs(out1, results1), wavs(out4, results4)
    assert [pcm for _, pcm in audio1] == [pcm for _, pcm in audio4]
    for line, (info, _) in zip(LINES, audio1, strict=True):
        assert info.sample_rate == 22050
        assert info.duration_s == pytest.approx(max(0.2, 0.06 * len(spoken(line, tmp_path))), abs=1 / 22050)
    durations = [info.duration_s for info, _ in audio1]
    assert durations[LINES.index(LONG)] > durations[LINES.index(SHORT)]
    for r1, r4 in zip(results1, results4, strict=True):
        path1, path4 = out1 / r1["outputs"]["audio"]["path"], out4 / r4["outputs"]["audio"]["path"]
        assert path1.read_bytes() == path4.read_bytes()
    assert len({pcm[:4000] for _, pcm in audio1}) == len(LINES)  # the pitch differs per row (its seed)


def test_stub_records_sample_rate_and_duration_in_the_artifact(tmp_path: Path) -> None:
    rows = [{"line": SHORT}, {"line": LONG}, {"line": "   "}]
    run = run_text(pipeline_text({"backend": "stub"}), rows, tmp_path / "out", Engine(), inventory=CPU_ONLY)
    short, long, blank = run.results
    assert blank.status == "failed"
    assert blank.error == {"stage": "voice", "reason": "nothing to speak: the text is empty"}
    for result in (short, long):
        artifact = result.outputs["audio"]
        assert isinstance(artifact, Artifact) and artifact.path.is_file()
        info, _ = read_wav(artifact.path)
        assert artifact.metadata["sample_rate"] == info.sample_rate == 16000
        assert artifact.metadata["duration_s"] == pytest.approx(info.duration_s, abs=1e-3)
        assert artifact.metadata["backend"] == "stub"
    first_line = json.loads(run.results_path.read_text(encoding="utf-8").splitlines()[0])
    assert first_line["outputs"]["audio"]["path"] == short.outputs["audio"].relpath
    assert first_line["outputs"]["audio"]["sample_rate"] == short.outputs["audio"].metadata["sample_rate"]


# ---------------------------------------------------------------------------------------- espeak


@needs_espeak
def test_espeak_speaks_every_text_and_never_runs_one(tmp_path: Path) -> None:
    done, out, results = run_cli(tmp_path, {"backend": "espeak", "voice": "en", "speed": 170})
    assert done.exit_code == 0, done.output
    audio = wavs(out, results)
    by_line = dict(zip(LINES, audio, strict=True))
    for line, (info, pcm) in by_line.items():
        assert info.sample_rate >= 16000, line
        assert pcm16_rms(pcm) > 0.01, f"{line!r} is silent"
    assert by_line[LONG][0].duration_s > 2 * by_line[SHORT][0].duration_s
    # Read as options, these would print help or a version instead of a WAV, and the row would fail.
    assert 0.2 < by_line["-h"][0].duration_s < 3
    assert 0.5 < by_line["--version"][0].duration_s < 4
    assert by_line[SHELL][0].duration_s > 3  # all of it was spoken
    assert not (tmp_path / "pwned").exists()


@needs_espeak
def test_espeak_records_voice_and_speed(tmp_path: Path) -> None:
    rows = [{"line": LONG}]
    slow = run_text(pipeline_text({"speed": 100}), rows, tmp_path / "slow", Engine(), inventory=CPU_ONLY)
    fast = run_text(pipeline_text({"speed": 300}), rows, tmp_path / "fast", Engine(), inventory=CPU_ONLY)
    slow_audio, fast_audio = slow.results[0].outputs["audio"], fast.results[0].outputs["audio"]
    assert slow_audio.metadata["backend"] == "espeak" and slow_audio.metadata["voice"] == "en"
    assert (slow_audio.metadata["speed"], fast_audio.metadata["speed"]) == (100, 300)
    assert slow_audio.metadata["duration_s"] > 2 * fast_audio.metadata["duration_s"]
    assert slow_audio.metadata["sample_rate"] == read_wav(slow_audio.path)[0].sample_rate


def test_espeak_missing_stops_the_run_before_any_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    done, out, results = run_cli(tmp_path, {"backend": "espeak"})
    assert done.exit_code == 2
    message = flat(done.stderr)
    assert ("stage 'voice' (tts): the tts stage's 'espeak' backend needs the program 'espeak-ng', "
            "which is not on PATH; install it: apt-get") in message
    assert "apt-get install espeak-ng" in message and "backend: stub" in message
    assert results == [] and not (out / "artifacts").exists()


@needs_espeak
def test_espeak_unknown_voice_is_a_preflight_error(tmp_path: Path) -> None:
    done, _, results = run_cli(tmp_path, {"backend": "espeak", "voice": "xx-nosuchvoice"})
    assert done.exit_code == 2 and results == []
    assert "espeak-ng cannot use voice 'xx-nosuchvoice'" in flat(done.stderr)
    assert "'espeak-ng --voices' lists the installed voices" in flat(done.stderr)


# ---------------------------------------------------------------------------------- transformers


def test_transformers_tiny_vits_is_reproducible_for_any_batch_size(tmp_path: Path, tiny_model: Any) -> None:
    model = str(tiny_model("tts"))
    lines = [SHORT, "-h", LONG, "日本語"]  # the last has no character in the tiny model's vocabulary
    with_ = {"backend": "transformers", "model": model}
    first, out1, results1 = run_cli(tmp_path, with_, "t1", batch_size=4, lines=lines)
    second, out2, results2 = run_cli(tmp_path, with_, "t2", batch_size=1, lines=lines)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    for results in (results1, results2):
        assert results[3]["status"] == "failed"
        assert results[3]["error"]["reason"] == "none of the text's characters are in the model's vocabulary"
    audio1, audio2 = wavs(out1, results1[:3]), wavs(out2, results2[:3])
    for (info, pcm), (_, pcm2) in zip(audio1, audio2, strict=True):
        assert info.sample_rate == 16000 and info.duration_s > 0
        assert pcm == pcm2
    for r1, r2 in zip(results1[:3], results2[:3], strict=True):
        path1, path2 = out1 / r1["outputs"]["audio"]["path"], out2 / r2["outputs"]["audio"]["path"]
        assert path1.read_bytes() == path2.read_bytes()
    assert audio1[0][1] != audio1[1][1]


def test_transformers_metadata_and_needs(tmp_path: Path, tiny_model: Any) -> None:
    model = str(tiny_model("tts"))
    params = TtsParams(backend="transformers", model=model)
    needs = TtsStage.needs(params)
    assert needs.kind == "any" and needs.dtype == "float32" and needs.memory_bytes > 0
    missing = TtsStage.needs(TtsParams(backend="transformers", model=str(tmp_path / "nowhere")))
    assert (missing.kind, missing.memory_bytes) == ("any", 0)
    run = run_text(pipeline_text({"backend": "transformers", "model": model}), [{"line": SHORT}],
                   tmp_path / "out", Engine(), inventory=CPU_ONLY)
    artifact = run.results[0].outputs["audio"]
    assert artifact.metadata["backend"] == "transformers" and artifact.metadata["model"] == model
    assert artifact.metadata["sample_rate"] == 16000 and artifact.metadata["duration_s"] > 0


def test_transformers_preflight_refuses_pickle_and_non_vits_models(tmp_path: Path, tiny_model: Any) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model("tts"), pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(Exception, match="pickle weights only"):
        TtsStage.preflight(TtsParams(backend="transformers", model=str(pickled)))
    other = tmp_path / "other"
    shutil.copytree(tiny_model("tts"), other)
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    with pytest.raises(Exception, match="is a 'gpt2' model; the tts stage runs VITS models"):
        TtsStage.preflight(TtsParams(backend="transformers", model=str(other)))
    phonemizing = tmp_path / "phonemizing"
    shutil.copytree(tiny_model("tts"), phonemizing)
    options = json.loads((phonemizing / "tokenizer_config.json").read_text(encoding="utf-8"))
    (phonemizing / "tokenizer_config.json").write_text(json.dumps({**options, "phonemize": True}), encoding="utf-8")
    if importlib.util.find_spec("phonemizer") is None:
        with pytest.raises(MissingDependencyError, match="needs the package 'phonemizer'"):
            TtsStage.preflight(TtsParams(backend="transformers", model=str(phonemizing)))
    graph = Engine().load_text(pipeline_text({"backend": "transformers", "model": str(other)}))
    with pytest.raises(StageError, match="stage 'voice' \\(tts\\): model .* is a 'gpt2' model"):
        Engine().run(graph, _rows(tmp_path), tmp_path / "out", inventory=CPU_ONLY)


def test_only_characters_outside_the_vocabulary_are_unspeakable(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    vocab = tmp_path / "vocab.json"  # as in facebook/mms-tts-eng: the pad (blank) token is the letter 'k'
    vocab.write_text(json.dumps({"k": 0, " ": 1, "a": 2, "i": 3}), encoding="utf-8")
    tokenizer = transformers.VitsTokenizer(str(vocab), pad_token="k", unk_token=None, phonemize=False)
    assert speakable(tokenizer, "KKK") and speakable(tokenizer, "a!")
    assert not speakable(tokenizer, "日本語") and not speakable(tokenizer, "?!  ")


def _rows(tmp_path: Path) -> Path:
    path = tmp_path / "one-row.jsonl"
    path.write_text(json.dumps({"line": SHORT}) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ params and needs


@pytest.mark.parametrize(
    ("with_", "message"),
    [
        ({"backend": "transformers"}, "backend 'transformers' needs 'model'"),
        ({"model": "facebook/mms-tts-eng"}, "add 'backend: transformers'"),
        ({"voice": "-w/tmp/x"}, "not a voice name: letters, digits"),
        ({"voice": "../../etc"}, "(got '../../etc')"),
        ({"speed": 5}, "greater than or equal to 80"),
        ({"backend": "festival"}, "'espeak', 'transformers' or 'stub'"),
        ({"pitch": 50}, "unknown key 'pitch'"),
    ],
)
def test_bad_params_are_pipeline_file_errors(with_: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineFileError) as caught:
        Engine().load_text(pipeline_text(with_))
    assert message in str(caught.value)


def test_params_of_another_backend_are_ignored_for_a_dry_run() -> None:
    params = TtsParams.model_validate({"backend": "stub", "model": "facebook/mms-tts-eng", "voice": "de"})
    assert TtsStage.needs(params).kind == "cpu"
    assert TtsStage.needs(TtsParams()).kind == "cpu"  # default: espeak
    TtsStage.preflight(params)  # nothing to check for the stub


def test_importing_the_stage_imports_no_torch() -> None:
    code = "import sys, aigc_pipeline.stages.tts; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ WAV helpers


def test_a_streamed_wav_header_is_read_by_its_layout() -> None:
    pcm = tone(440, 0.1, 8000)
    wav = bytearray(encode_wav(pcm, 8000))
    wav[4:8] = wav[40:44] = (0x7FFFFFFF).to_bytes(4, "little")  # espeak-ng --stdout: sizes unknown
    info, data = parse_wav_stream(bytes(wav) + b"\x01")  # and a partial trailing sample
    assert info == WavInfo(8000, 1, 2, 800) and data == pcm
    assert read_wav(encode_wav(data, info.sample_rate)) == (info, pcm)
    with pytest.raises(ValueError, match="not a WAV stream"):
        parse_wav_stream(b"Usage: espeak-ng [options] [words]")
    assert pcm16_rms(b"\x00\x00" * 100) == 0.0 and 0.15 < pcm16_rms(pcm) < 0.25
