"""`llm.text`: generate text from a prompt with a Hugging Face causal language model.

The model is a local folder or a Hugging Face id (see `model_files`): safetensors weights only
unless `allow_pickle: true`, and the model's own Python code (`auto_map`) is never run unless
`trust_remote_code: true`. Heavy libraries are imported in `load`, not when this module is.

Batching: a micro-batch is ONE `generate` call, prompts left-padded with an attention mask (the
position ids follow the mask), so a row sees only its own tokens. `generate_batch` cuts it into
calls of prompts of similar length, and `static_cache` decodes with a static (on a GPU, compiled)
KV cache: see `llm_batching`.

Determinism: every row samples with its own seed (`item.seed`: run seed, row id, stage id).
Tokens are drawn by a logits processor that keeps one `torch.Generator` per row, and `generate`
itself runs greedily over the result, so a row's text does not depend on its batch neighbours,
the batch size, order or resume. Greedy decoding (`temperature: 0`, the default) uses no seed.
Both hold up to floating-point effects of batch shape: on the CPU in float32 the tests find
identical outputs for batch sizes 1 and 8; half precision on a GPU can flip a near-tie.

Stop strings end a row's generation as soon as its new text contains one (an early exit, when
every row of the batch has stopped), and the text is cut at the first one.

Backends: `backend: transformers` (the default) is all of the above; `backend: openai` sends each
row to an OpenAI-compatible endpoint instead (see `aigc_pipeline.served`): the same prompt
formatting choices (`api: chat` lets the server apply the chat template, `completions` sends the
prompt as is), the row's seed forwarded, answers optionally held to a JSON Schema (`record`), and
the tokens each row took in `usage`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from ..content import RECORD, TEXT
from ..devices import Device
from ..errors import MissingDependencyError
from ..models import check_no_remote_code, dtype_keyword, memory_estimate, resolve_model
from ..plugin_manager import hookimpl
from ..served.backend import ROUNDS_PER_BATCH, ServedLlm, estimate_requests
from ..served.params import ServedFields, cache_fields, check_backend_fields, endpoint_of
from ..stage import DeviceNeeds, Stage, StageItem
from .llm_batching import in_length_order, padded_width, static_cache_kwargs

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
HEADROOM = 1.2  # activations and the KV cache of a micro-batch, on top of the weights
HEADROOM_BYTES = 256 * 2**20
LOCAL_ONLY = frozenset({"revision", "dtype", "min_new_tokens", "top_k", "repetition_penalty", "chat_template",
                        "trust_remote_code", "allow_pickle", "generate_batch", "static_cache"})


class LlmParams(ServedFields):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Hugging Face id (e.g. 'gpt2') or a local model folder; "
                       "with backend: openai, the served model's name")
    revision: str | None = Field(None, description="branch, tag or commit of a Hugging Face id")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: as saved")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="most tokens generated per row (sent as max_tokens)",
                                validation_alias=AliasChoices("max_new_tokens", "max_tokens"))
    min_new_tokens: int = Field(0, ge=0, description="no end-of-text before this many tokens")
    temperature: float = Field(0.0, ge=0.0, le=100.0, description="0: greedy; above 0: sample, seeded per row")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sample from the most likely tokens holding this much mass")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens; 0: no limit")
    repetition_penalty: float = Field(1.0, gt=0.0, description="> 1 discourages repeating tokens; 1: off")
    stop: list[str] = Field(default_factory=list, description="stop generating at the first of these strings (cut off)")
    system: str | None = Field(None, description="system prompt: through the chat template if any, else prepended")
    chat_template: bool = Field(True, description="format prompts with the tokenizer's chat template, when it has one")
    strip: bool = Field(True, description="strip leading and trailing whitespace from the generated text")
    trust_remote_code: bool = Field(False, description="run Python code shipped with the model (only models you trust)")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin), which can run code when loaded")
    generate_batch: int | None = Field(
        None, ge=1, description="rows per generate call: the stage's batch is sorted by prompt length and cut into "
                                "calls of this many rows, so short prompts are not padded to long ones (same "
                                "outputs); none: one call per batch")
    static_cache: bool = Field(
        False, description="static KV cache, prompt widths bucketed; on a GPU the decode step is compiled "
                           "(torch.compile: the first call takes tens of seconds); same greedy outputs")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: list[str]) -> list[str]:
        if any(not s for s in stop):
            raise ValueError("a stop string may not be empty")
        return stop

    @model_validator(mode="after")
    def _min_below_max(self) -> LlmParams:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) > max_new_tokens ({self.max_new_tokens})")
        check_backend_fields(self, LOCAL_ONLY)
        return self


class LlmTextStage(Stage[LlmParams]):
    type_name = "llm.text"
    description = ("Generate text from a prompt with a Hugging Face causal LM (batched, seeded per row), "
                   "or with any OpenAI-compatible endpoint (backend: openai)")
    Params = LlmParams
    inputs = {"prompt": TEXT}
    # record: the answer parsed under json_schema (backend: openai); usage: the row's tokens (None: not counted)
    outputs = {"text": TEXT, "record": RECORD, "usage": RECORD}
    default_batch_size = 16

    def __init__(self, params: LlmParams) -> None:
        super().__init__(params)
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Device | None = None
        self.served = ServedLlm(params, self._finish_text) if params.backend == "openai" else None

    @classmethod
    def needs(cls, params: LlmParams) -> DeviceNeeds:
        """GPU if there is one; memory from the safetensors headers (0 when the model is not local yet).
        A served model needs nothing here: a CPU thread waiting on the network."""
        if params.backend == "openai":
            return DeviceNeeds()
        memory = memory_estimate(params.model, params.revision, dtype_bytes=DTYPE_BYTES.get(params.dtype),
                                 headroom=HEADROOM, extra_bytes=HEADROOM_BYTES)
        return DeviceNeeds(kind="any", memory_bytes=memory, dtype=None if params.dtype == "auto" else params.dtype)

    @classmethod
    def model_identity(cls, params: LlmParams) -> Any:
        p = params
        if p.backend == "openai" and p.base_url:  # the endpoint, never its key
            return [{"endpoint": endpoint_of(p.base_url), "model": p.model, "api": p.api}]
        return super().model_identity(params)

    @classmethod
    def cache_params(cls, params: LlmParams) -> dict[str, Any]:
        return cache_fields(params)

    @classmethod
    def in_process(cls, params: LlmParams) -> bool:
        return params.backend != "openai"  # a request cannot crash this process

    @classmethod
    def batch_size_for(cls, params: LlmParams) -> int:
        return ROUNDS_PER_BATCH * params.max_concurrency if params.backend == "openai" else cls.default_batch_size

    def counters(self) -> dict[str, float]:
        return dict(self.served.counters) if self.served is not None else {}

    @classmethod
    def estimate(cls, params: LlmParams, inputs: list[dict[str, Any]]) -> dict[str, Any] | None:
        return estimate_requests(params, [row["prompt"] for row in inputs]) if params.backend == "openai" else None

    @classmethod
    def preflight(cls, params: LlmParams) -> None:
        p = params
        if p.backend == "openai":
            if importlib.util.find_spec("openai") is None:
                raise MissingDependencyError("openai", "the llm.text stage with backend: openai", extra="served")
            return
        for package in ("torch", "transformers"):
            if importlib.util.find_spec(package) is None:
                raise MissingDependencyError(package, "the llm.text stage", extra="models")
        folder = resolve_model(p.model, p.revision, allow_pickle=p.allow_pickle)
        if not p.trust_remote_code:
            check_no_remote_code(folder, p.model)

    def load(self, device: Device) -> None:
        if self.served is not None:
            self.served.budget = self.budget
            self.served.load()
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = self.params
        folder = resolve_model(p.model, p.revision, allow_pickle=p.allow_pickle)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=p.trust_remote_code)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            else:  # any id will do: padded positions are masked out and never decoded
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
        dtype = "auto" if p.dtype == "auto" else getattr(torch, p.dtype)
        model = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=p.trust_remote_code, use_safetensors=None if p.allow_pickle else True,
            **{dtype_keyword("transformers"): dtype},
        )
        self.model = model.to(str(device)).eval()  # type: ignore[arg-type]  # transformers types `to` oddly
        self.tokenizer = tokenizer
        self.device = device

    def unload(self) -> None:
        if self.served is not None:
            self.served.unload()
            return
        self.model = self.tokenizer = self.device = None  # the engine frees the cached GPU memory after

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        live = []
        for item in batch:
            if isinstance(item.inputs["prompt"], str):
                live.append(item)
            else:  # an `any` column can carry anything: fail the row, not the batch
                item.fail(f"the prompt is a {type(item.inputs['prompt']).__name__}, not text")
        if not live:
            return batch
        if self.served is not None:
            self.served.process(live, [self.served_prompt(item.inputs["prompt"]) for item in live])
            return batch
        token_ids = self.tokenizer(
            [self.format_prompt(item.inputs["prompt"]) for item in live], add_special_tokens=not self._uses_chat()
        )["input_ids"]
        ready = [(item, ids) for item, ids in zip(live, token_ids, strict=True) if self._fits(item, ids)]
        if ready:
            token_ids, seeds = [ids for _, ids in ready], [item.seed for item, _ in ready]
            texts = in_length_order(token_ids, self.params.generate_batch,
                                    lambda rows: self.generate([token_ids[r] for r in rows], [seeds[r] for r in rows]))
            for (item, _), text in zip(ready, texts, strict=True):
                item.outputs["text"] = text
                item.outputs["record"] = item.outputs["usage"] = None  # no schema, no tokens counted locally
                if not text:
                    item.flag("the model generated no text")
        return batch

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees: the chat template when there is one, else system + prompt."""
        system = self.params.system
        if self._uses_chat():
            messages = [{"role": "user", "content": prompt}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            try:
                return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            except Exception:  # e.g. "System role not supported": put the system prompt in the user turn
                if not system:
                    raise
                merged = [{"role": "user", "content": f"{system}\n\n{prompt}"}]
                return str(self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True))
        return f"{system}\n\n{prompt}" if system else prompt

    def served_prompt(self, prompt: str) -> Any:
        """What the endpoint gets: chat messages (`api: chat`; the server applies the chat template)
        or, for `api: completions`, the text as a local model without a chat template sees it."""
        system = self.params.system
        if self.params.api == "chat":
            return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]
        return f"{system}\n\n{prompt}" if system else prompt

    def _uses_chat(self) -> bool:
        return self.params.chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def _fits(self, item: StageItem, ids: list[int]) -> bool:
        """Fail (not crash the batch on) a prompt that is empty or too long for the model's context."""
        if not ids:
            bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
            start = bos if bos is not None else eos
            if start is None:
                item.fail("the prompt is empty and the model has no start token")
                return False
            ids.append(start)
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if context is not None and len(ids) + self.params.max_new_tokens > context:
            item.fail(f"the prompt is {len(ids)} tokens; with max_new_tokens {self.params.max_new_tokens} that exceeds "
                      f"the model's context of {context} tokens")
            return False
        return True

    def generate(self, token_ids: list[list[int]], seeds: list[int]) -> list[str]:
        """One `generate` call for the whole micro-batch; returns each row's new text."""
        import torch

        p, pad_id = self.params, self.tokenizer.pad_token_id
        width = padded_width(max(map(len, token_ids)), p.static_cache)
        input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        processors = [SeededSampler(p.temperature, p.top_k, p.top_p, seeds)] if p.temperature > 0 else []
        criteria = [StopStrings(self.tokenizer, p.stop, width)] if p.stop else []
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.model.device), attention_mask=attention_mask.to(self.model.device),
                max_new_tokens=p.max_new_tokens, max_length=None, min_new_tokens=p.min_new_tokens or None,
                do_sample=False, temperature=None, top_p=None, top_k=None,  # sampling is SeededSampler's
                repetition_penalty=p.repetition_penalty, pad_token_id=pad_id,
                logits_processor=_as_list("LogitsProcessorList", processors),
                stopping_criteria=_as_list("StoppingCriteriaList", criteria),
                **static_cache_kwargs(p.static_cache, self.model.device.type),
            )
        end_ids = self._end_ids()
        return [self._finish(_until(row, end_ids)) for row in output[:, width:].tolist()]

    def _end_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos) if isinstance(eos, list) else {eos} if eos is not None else set()
        return ids or ({self.tokenizer.eos_token_id} - {None})

    def _finish(self, new_ids: list[int]) -> str:
        return self._finish_text(self.tokenizer.decode(new_ids, skip_special_tokens=True))

    def _finish_text(self, text: str) -> str:
        text = cut_at_stop(text, self.params.stop)
        return text.strip() if self.params.strip else text


def cut_at_stop(text: str, stop: list[str]) -> str:
    """`text` up to (not including) the earliest of the stop strings."""
    cuts = [index for index in (text.find(s) for s in stop) if index >= 0]
    return text[: min(cuts)] if cuts else text


def _until(ids: list[int], end_ids: set[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in end_ids:
            return ids[:index]
    return ids


def _as_list(kind: str, items: list[Any]) -> Any:
    import transformers.generation as generation

    return getattr(generation, kind)(items)


class SeededSampler:
    """A logits processor that samples each row's next token with that row's own generator.

    It applies temperature, top-k and top-p, draws one uniform number per row from the row's
    `torch.Generator` (on the CPU, so CPU and GPU runs draw the same numbers) and picks the token
    by inverse CDF, then returns scores that are -inf everywhere but there: `generate`, running
    greedily, takes that token. A row's draws never depend on the other rows of the batch.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float, seeds: list[int]) -> None:
        import torch
        from transformers.generation import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.warpers: list[Any] = [TemperatureLogitsWarper(temperature)]
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for warper in self.warpers:
            scores = warper(input_ids, scores)
        cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
        draws = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        targets = (draws.to(cdf.device) * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(1)
        chosen = torch.searchsorted(cdf, targets, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)


class StopStrings:
    """A stopping criterion: a row is done once its new text contains one of the stop strings.

    Each step decodes only the last few new tokens of each unfinished row (a stop string that
    just completed lies within them: every token is at least one byte). The text is cut after
    generation anyway; stopping early only saves work.
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.start = prompt_width
        self.window = max(len(s.encode()) for s in stop) + 1
        self.done: set[int] = set()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.start:]
        rows = [row for row in range(new.shape[0]) if row not in self.done]
        tails = self.tokenizer.batch_decode(new[rows, -self.window:].tolist(), skip_special_tokens=True)
        self.done.update(row for row, tail in zip(rows, tails, strict=True) if any(s in tail for s in self.stop))
        return torch.tensor([row in self.done for row in range(new.shape[0])], device=input_ids.device)


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [LlmTextStage]
