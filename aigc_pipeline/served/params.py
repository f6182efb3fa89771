"""The `with:` fields of a served model: where it is, how to reach it, how hard to push it, what it costs.

`llm.text` takes these beside its own fields; they apply with `backend: openai` only. Secrets are
never fields: `api_key_env` names the environment variable that holds the key, and a pipeline file
that carries a key (an `api_key` field, a key-like value, a password in the URL) is rejected.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Client settings that change how fast or how hard the run pushes, not what a row's answer is:
# they are left out of the cache key, so tuning them never re-buys a stored answer.
CLIENT_FIELDS = frozenset({
    "max_concurrency", "adaptive_concurrency", "rpm", "tpm", "timeout", "max_retries", "retry_backoff", "price",
    "api_key_env",
})
SERVED_FIELDS = frozenset({"base_url", "api", "json_schema", "schema_retries", "extra_body", *CLIENT_FIELDS})
KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{20,}|gsk_[A-Za-z0-9]{20,})")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Price(BaseModel):
    """US dollars per million tokens, as providers publish them."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="USD per million prompt tokens")
    output: float = Field(ge=0, description="USD per million completion tokens")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


class ServedFields(BaseModel):
    """Fields of a model behind an OpenAI-compatible endpoint (vLLM, SGLang, TGI, Ollama, OpenAI, ...)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "openai"] = Field(
        "transformers", description="transformers: load the model in this process; openai: call an "
        "OpenAI-compatible endpoint at base_url")
    base_url: str | None = Field(None, description="the endpoint, e.g. http://localhost:8000/v1 (backend: openai)")
    api: Literal["chat", "completions"] = Field(
        "chat", description="chat: /chat/completions (the server applies the chat template); "
        "completions: the raw prompt")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key "
                             "(never the key itself); unset: no key (a local server)")
    max_concurrency: int = Field(8, ge=1, le=4096, description="requests in flight at once")
    adaptive_concurrency: bool = Field(True, description="halve the requests in flight on a burst of 429s, then "
                                       "creep back up to max_concurrency as answers come (false: always the max)")
    rpm: int | None = Field(None, ge=1, description="at most this many requests per minute")
    tpm: int | None = Field(None, ge=1, description="at most this many tokens (prompt + max_new_tokens) per minute")
    timeout: float = Field(120.0, gt=0, le=3600, description="seconds one request may take")
    max_retries: int = Field(8, ge=0, le=100, description="retries of a request on 429, 5xx, timeouts, "
                             "dropped connections and malformed answers")
    retry_backoff: float = Field(0.5, ge=0, le=60, description="seconds: the first retry's wait; doubles per "
                                 "retry (with jitter, at most 60 s); a Retry-After header takes precedence")
    json_schema: dict[str, Any] | None = Field(
        None, description="a JSON Schema the answer must follow: sent as response_format, each answer "
        "parsed and validated; the object is the `record` output")
    schema_retries: int = Field(2, ge=0, le=20, description="new requests for an answer that breaks json_schema")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="server-specific request fields "
                                       "(e.g. vLLM's top_k, Ollama's options)")
    price: Price | None = Field(None, description="{input: USD, output: USD} per million tokens: the cost ledger")

    @model_validator(mode="before")
    @classmethod
    def _no_literal_key(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("api_key", "key", "token", "openai_api_key"):
                if name in data:
                    raise ValueError(f"'{name}': a pipeline file must not hold an API key; put it in an "
                                     "environment variable and name that with api_key_env (default OPENAI_API_KEY)")
            if KEY_LIKE.search(repr(data)):
                raise ValueError("a value looks like an API key; a pipeline file must not hold one: put it in an "
                                 "environment variable and name that with api_key_env")
            url = data.get("base_url")
            if isinstance(url, str) and "@" in urlsplit(url).netloc:  # checked here: a field error shows the value
                raise ValueError("base_url must not hold credentials; put the key in an environment variable "
                                 "and name it with api_key_env")
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not ENV_NAME.fullmatch(name):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return name

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL such as http://localhost:8000/v1, got {url!r}")
        return url.rstrip("/")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON Schema: {exc.message}") from None
        return schema


def check_backend_fields(params: BaseModel, local_only: frozenset[str]) -> None:
    """Refuse fields that the chosen backend would silently ignore (ValueError, as validators do)."""
    given = params.model_fields_set
    backend = getattr(params, "backend", "transformers")
    if backend == "openai":
        if getattr(params, "base_url", None) is None:
            raise ValueError("backend: openai needs base_url (e.g. http://localhost:8000/v1)")
        wrong = sorted(given & local_only)
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only for backend: transformers (the server decides these; "
                             "server-specific options go in extra_body)")
    else:
        wrong = sorted(given & SERVED_FIELDS)
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only for backend: openai")


def cache_fields(params: BaseModel) -> dict[str, Any]:
    """The params as they enter the cache key: without the client settings (or, for a local
    model, without any served field, so its keys stay what they were before backends existed)."""
    data = params.model_dump(mode="json")
    dropped = CLIENT_FIELDS if data.get("backend") == "openai" else SERVED_FIELDS | {"backend"}
    return {name: value for name, value in data.items() if name not in dropped}


def endpoint_of(base_url: str) -> str:
    """scheme://host[:port]/path of the endpoint (no query string, no credentials)."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
