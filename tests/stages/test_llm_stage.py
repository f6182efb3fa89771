"""`llm.text` on the tiny random-weight GPT-2: real loading, batched generation, seeds, safety checks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from aigc_pipeline import CPU, Engine, ModelUnavailableError, StageError, StageItem
from aigc_pipeline.cli import app
from aigc_pipeline.stages.llm import LlmParams, LlmTextStage, cut_at_stop

pytest.importorskip("transformers")

PRODUCTS = [
    "ceramic mug", "hiking backpack", "espresso machine", "wireless earbuds", "merino sweater", "laptop",
    "electric scooter", "running shoes", "smart thermostat", "vegan burger", "headphones", "skincare set",
]
PROMPTS = [f"Write a short ad for a {product}." for product in PRODUCTS]

PIPELINE = """
name: llm_test
inputs: {product: str}
seed: SEED
stages:
  prompt: {uses: template, with: {template: "Write a short ad for a {{ product }}."}}
  copy: {uses: llm.text, inputs: {prompt: prompt.text}, batch_size: BATCH,
         with: {model: MODEL, max_new_tokens: 10, temperature: TEMPERATURE}}
outputs: {copy: copy.text}
"""


@pytest.fixture(scope="module")
def lm(tiny_model: Any) -> Path:
    return tiny_model("lm")  # type: ignore[no-any-return]


def stage_for(folder: Path | str, **params: Any) -> LlmTextStage:
    stage = LlmTextStage(LlmParams(model=str(folder), **params))
    stage.load(CPU)
    return stage


def generate(stage: LlmTextStage, prompts: list[str], batch_size: int, seed: int = 7) -> list[str | None]:
    items = [StageItem(index, {"prompt": prompt}, (seed, "copy")) for index, prompt in enumerate(prompts)]
    for start in range(0, len(items), batch_size):
        stage.process(items[start : start + batch_size])
    return [item.outputs.get("text") for item in items]


def write_pipeline(
    tmp_path: Path, model: str, batch: int = 8, seed: int = 7, temperature: float = 0.0
) -> tuple[str, str]:
    text = PIPELINE.replace("MODEL", json.dumps(model)).replace("BATCH", str(batch))
    pipeline = tmp_path / "llm.yaml"
    pipeline.write_text(text.replace("SEED", str(seed)).replace("TEMPERATURE", str(temperature)), encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"product": p}) + "\n" for p in PRODUCTS), encoding="utf-8")
    return str(pipeline), str(rows)


def aigc_run(tmp_path: Path, name: str, model: str, **options: Any) -> tuple[Any, Path]:
    pipeline, rows = write_pipeline(tmp_path, model, **options)
    out = tmp_path / name
    return CliRunner().invoke(app, ["run", pipeline, "-i", rows, "-o", str(out), "-q"]), out


def outputs(out: Path) -> list[Any]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in records] == ["done"] * len(PRODUCTS), records
    return [r["outputs"]["copy"] for r in records]


def flat(text: str) -> str:
    return " ".join(text.split())


# --- end to end through the CLI ---------------------------------------------------------------


def test_aigc_run_writes_generated_text_for_every_row(tmp_path: Path, lm: Path) -> None:
    done, out = aigc_run(tmp_path, "out", str(lm))
    assert done.exit_code == 0, done.output
    texts = outputs(out)
    assert all(isinstance(text, str) for text in texts)
    assert sum(bool(text) for text in texts) >= len(texts) // 2
    assert len(set(texts)) > 1  # the prompts differ, and so does the noise
    assert "llm.text" in done.stdout


@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampling"])
def test_same_seed_same_text_whatever_the_batch_size(tmp_path: Path, lm: Path, temperature: float) -> None:
    runs = {}
    for name, batch in (("first", 8), ("again", 8), ("one_by_one", 1)):
        done, out = aigc_run(tmp_path, name, str(lm), batch=batch, temperature=temperature)
        assert done.exit_code == 0, done.output
        runs[name] = outputs(out)
    assert runs["first"] == runs["again"] == runs["one_by_one"]
    if temperature:
        done, out = aigc_run(tmp_path, "other_seed", str(lm), temperature=temperature, seed=8)
        assert outputs(out) != runs["first"]


def test_a_missing_model_stops_the_run_before_any_row(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    done, out = aigc_run(tmp_path, "out", missing)
    assert done.exit_code == 2
    message = flat(done.output)
    assert f"model '{missing}'" in message and "aigc models make-tiny" in message and "stage 'copy'" in message
    assert not (out / "results.jsonl").exists()  # no row ran

    engine = Engine()
    graph = engine.load(write_pipeline(tmp_path, missing)[0])
    with pytest.raises(StageError) as raised:
        engine.run(graph, write_pipeline(tmp_path, missing)[1], tmp_path / "api")
    assert isinstance(raised.value.__cause__, ModelUnavailableError)


def test_a_hub_id_missing_offline_says_how_to_provide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelUnavailableError, match="'aigc-test/not-cached-lm' is not a local folder nor in the local"):
        LlmTextStage.preflight(LlmParams(model="aigc-test/not-cached-lm"))
    done, out = aigc_run(tmp_path, "out", "aigc-test/not-cached-lm")
    assert done.exit_code == 2
    assert "HF_HUB_OFFLINE" in flat(done.output) and "HF_HOME" in flat(done.output)
    assert not (out / "results.jsonl").exists()


# --- generation controls ------------------------------------------------------------------------


def spy_generate(stage: LlmTextStage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Record (input_ids, output) of every generate call of this stage's model."""
    calls: list[tuple[Any, Any]] = []
    original = stage.model.generate

    def recording(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        calls.append((kwargs["input_ids"], output))
        return output

    monkeypatch.setattr(stage.model, "generate", recording)
    return calls


def test_one_generate_call_per_micro_batch_within_max_new_tokens(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = stage_for(lm, max_new_tokens=7)
    calls = spy_generate(stage, monkeypatch)
    generate(stage, PROMPTS, batch_size=5)
    assert len(calls) == 3  # 12 rows in micro-batches of 5
    for input_ids, output in calls:
        assert output.shape[1] - input_ids.shape[1] <= 7
    stage.unload()
    assert stage.model is None and stage.tokenizer is None


def test_min_new_tokens_holds_off_the_end_token(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = stage_for(lm, max_new_tokens=6, min_new_tokens=6, temperature=1.0)
    calls = spy_generate(stage, monkeypatch)
    generate(stage, PROMPTS, batch_size=12)
    [(input_ids, output)] = calls
    new = output[:, input_ids.shape[1] :]
    assert new.shape == (12, 6)
    assert not (new == stage.tokenizer.eos_token_id).any()


def test_a_stop_string_cuts_the_text_and_ends_generation(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = generate(stage_for(lm, max_new_tokens=20, strip=False), PROMPTS, batch_size=12)
    row, text = max(enumerate(full), key=lambda pair: len(pair[1] or ""))
    assert text is not None and len(text) > 8
    # two characters from the middle, not a replacement character (a UTF-8 sequence split across tokens)
    stop = next(text[i : i + 2] for i in range(4, len(text) - 1) if "\ufffd" not in text[i : i + 2])
    stage = stage_for(lm, max_new_tokens=20, strip=False, stop=["never appears here", stop])
    calls = spy_generate(stage, monkeypatch)
    [cut] = generate(stage, [PROMPTS[row]], batch_size=1)
    assert cut == text[: text.find(stop)]
    [(input_ids, output)] = calls
    assert output.shape[1] - input_ids.shape[1] < 20  # stopped early


def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop("one. two\n\nthree", ["\n\n", "."]) == "one"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    assert cut_at_stop("anything", []) == "anything"


def test_rows_are_independent_of_order_and_neighbours_when_sampling(lm: Path) -> None:
    stage = stage_for(lm, max_new_tokens=8, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.2)
    items = [StageItem(index, {"prompt": prompt}, (3, "copy")) for index, prompt in enumerate(PROMPTS)]
    stage.process(items)
    together = {item.id: item.outputs["text"] for item in items}
    shuffled = [StageItem(index, {"prompt": PROMPTS[index]}, (3, "copy")) for index in (11, 2, 7)]
    stage.process(shuffled)
    assert {item.id: item.outputs["text"] for item in shuffled} == {i: together[i] for i in (11, 2, 7)}


def test_a_prompt_too_long_for_the_context_fails_only_its_row(lm: Path) -> None:
    stage = stage_for(lm, max_new_tokens=8)
    items = [StageItem(0, {"prompt": "mug " * 400}, (1, "copy")), StageItem(1, {"prompt": "mug"}, (1, "copy"))]
    stage.process(items)
    assert items[0].verdict == "failed" and "exceeds the model's context of 256 tokens" in (items[0].reason or "")
    assert items[1].verdict is None and isinstance(items[1].outputs["text"], str)


def test_a_prompt_that_is_not_text_fails_only_its_row(lm: Path) -> None:
    stage = stage_for(lm, max_new_tokens=4)
    items = [StageItem(0, {"prompt": {"a": 1}}, (1, "copy")), StageItem(1, {"prompt": "mug"}, (1, "copy"))]
    stage.process(items)
    assert items[0].verdict == "failed" and items[0].reason == "the prompt is a dict, not text"
    assert items[1].verdict is None and isinstance(items[1].outputs["text"], str)


def test_an_empty_prompt_starts_from_the_start_token(lm: Path) -> None:
    stage = stage_for(lm, max_new_tokens=4, chat_template=False)
    [text] = generate(stage, [""], batch_size=1)
    assert isinstance(text, str)


# --- system prompt --------------------------------------------------------------------------------


def test_the_system_prompt_goes_through_the_chat_template(lm: Path) -> None:
    stage = stage_for(lm, system="Be brief.", max_new_tokens=8)
    assert stage.format_prompt("Hi") == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    plain = stage_for(lm, max_new_tokens=8)
    assert plain.format_prompt("Hi") == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert generate(stage, PROMPTS, batch_size=12) != generate(plain, PROMPTS, batch_size=12)


def test_without_a_chat_template_the_system_prompt_is_prepended(lm: Path) -> None:
    stage = stage_for(lm, system="Be brief.", chat_template=False)
    assert stage.format_prompt("Hi") == "Be brief.\n\nHi"
    stage.tokenizer.chat_template = None
    stage.params = LlmParams(model=str(lm), system="Be brief.")
    assert stage.format_prompt("Hi") == "Be brief.\n\nHi"
    assert stage_for(lm, chat_template=False).format_prompt("Hi") == "Hi"


def test_a_template_without_a_system_role_gets_it_in_the_user_turn(lm: Path) -> None:
    stage = stage_for(lm, system="Be brief.")
    stage.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}[{{ m['content'] }}]{% endfor %}"
    )
    assert stage.format_prompt("Hi") == "[Be brief.\n\nHi]"


# --- model safety: pickle weights and remote code ------------------------------------------------


@pytest.fixture(scope="module")
def pickle_lm(lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM with its weights as a pickle file (pytorch_model.bin) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickle") / "lm"
    shutil.copytree(lm, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(lm / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path, lm: Path, pickle_lm: Path) -> None:
    with pytest.raises(ModelUnavailableError, match=r"pickle weights only \(pytorch_model.bin\).*allow_pickle: true"):
        LlmTextStage.preflight(LlmParams(model=str(pickle_lm)))
    done, out = aigc_run(tmp_path, "out", str(pickle_lm))
    assert done.exit_code == 2 and "allow_pickle: true" in flat(done.output)
    assert not (out / "results.jsonl").exists()

    LlmTextStage.preflight(LlmParams(model=str(pickle_lm), allow_pickle=True))
    allowed = generate(stage_for(pickle_lm, allow_pickle=True, max_new_tokens=6), PROMPTS[:4], batch_size=4)
    assert allowed == generate(stage_for(lm, max_new_tokens=6), PROMPTS[:4], batch_size=4)  # the same weights


def test_from_pretrained_gets_safe_defaults(lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    seen: dict[str, dict[str, Any]] = {}
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def recording(*args: Any, _name: str = cls.__name__, _original: Any = original, **kwargs: Any) -> Any:
            seen[_name] = kwargs
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    stage_for(lm)
    assert seen["AutoModelForCausalLM"]["trust_remote_code"] is False
    assert seen["AutoModelForCausalLM"]["use_safetensors"] is True
    assert seen["AutoTokenizer"]["trust_remote_code"] is False
    stage_for(lm, trust_remote_code=True, allow_pickle=True)
    assert seen["AutoModelForCausalLM"]["trust_remote_code"] is True
    assert seen["AutoModelForCausalLM"]["use_safetensors"] is None  # safetensors still preferred when present
    assert seen["AutoTokenizer"]["trust_remote_code"] is True


CUSTOM_CODE = """
from pathlib import Path
Path(__file__).with_name("CUSTOM_CODE_RAN").write_text("the model's own code was imported")
from transformers import GPT2Config, GPT2LMHeadModel
class CustomConfig(GPT2Config):
    model_type = "MODEL_TYPE"
class CustomModel(GPT2LMHeadModel):
    config_class = CustomConfig
"""


def custom_code_model(lm: Path, folder: Path, model_type: str) -> Path:
    """The tiny LM, with config.json pointing at Python code shipped in the folder (auto_map)."""
    shutil.copytree(lm, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "custom.py").write_text(CUSTOM_CODE.replace("MODEL_TYPE", model_type), encoding="utf-8")
    return folder


def test_a_model_that_needs_its_own_code_is_refused(tmp_path: Path, lm: Path) -> None:
    folder = custom_code_model(lm, tmp_path / "custom", "aigc_custom_lm")
    refusal = r"needs its own Python code.*custom\.CustomModel.*trust_remote_code"
    with pytest.raises(ModelUnavailableError, match=refusal):
        LlmTextStage.preflight(LlmParams(model=str(folder)))
    done, out = aigc_run(tmp_path, "out", str(folder))
    assert done.exit_code == 2 and "trust_remote_code: true" in flat(done.output)
    assert not (out / "results.jsonl").exists()
    assert not (folder / "CUSTOM_CODE_RAN").exists()


def test_a_known_model_type_loads_the_built_in_class_not_the_shipped_code(tmp_path: Path, lm: Path) -> None:
    folder = custom_code_model(lm, tmp_path / "custom", "gpt2")
    LlmTextStage.preflight(LlmParams(model=str(folder)))
    stage = stage_for(folder, max_new_tokens=4)
    assert type(stage.model).__name__ == "GPT2LMHeadModel"
    assert all(isinstance(text, str) for text in generate(stage, PROMPTS[:2], batch_size=2))
    assert not (folder / "CUSTOM_CODE_RAN").exists()


# --- params and device needs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"model": "gpt2", "max_new_tokens": 4, "min_new_tokens": 5}, "min_new_tokens (5) > max_new_tokens (4)"),
        ({"model": "gpt2", "stop": ["ok", ""]}, "a stop string may not be empty"),
        ({"model": "gpt2", "temprature": 0.7}, "Extra inputs are not permitted"),
        ({"model": "gpt2", "temperature": -1}, "greater than or equal to 0"),
        ({"model": "gpt2", "dtype": "float8"}, "'auto', 'float32', 'float16' or 'bfloat16'"),
        ({"model": ""}, "at least 1 character"),
    ],
)
def test_params_are_checked(params: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(error)):
        LlmParams.model_validate(params)


def test_needs_estimates_memory_from_the_weights_without_loading(lm: Path, tmp_path: Path) -> None:
    stored = (lm / "model.safetensors").stat().st_size
    auto = LlmTextStage.needs(LlmParams(model=str(lm)))
    half = LlmTextStage.needs(LlmParams(model=str(lm), dtype="float16"))
    assert auto.kind == "any" and auto.dtype is None and half.dtype == "float16"
    assert stored < auto.memory_bytes < stored * 2 + 2**30
    assert half.memory_bytes < auto.memory_bytes
    assert LlmTextStage.needs(LlmParams(model=str(tmp_path / "missing"))).memory_bytes == 0


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_on_a_gpu_rows_do_not_depend_on_the_batch(lm: Path) -> None:
    from aigc_pipeline import Device

    for temperature in (0.0, 0.9):
        stage = LlmTextStage(LlmParams(model=str(lm), max_new_tokens=10, temperature=temperature, dtype="float32"))
        stage.load(Device("cuda", 0))
        assert stage.model.device.type == "cuda"
        assert generate(stage, PROMPTS, batch_size=1) == generate(stage, PROMPTS, batch_size=8)
        stage.unload()
