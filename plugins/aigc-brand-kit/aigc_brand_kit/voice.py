"""`brand.voice`: a gate that checks text against a brand file.

A brand file is YAML::

    name: Acme Home                       # optional, for people reading the file
    required: [Acme]                      # every one of these must appear
    forbidden: [cheap, guaranteed, "best in the world"]   # none of these may appear
    tone: [warm, simple, honest, bright]  # words that carry the brand's tone
    min_tone_words: 1                     # how many different tone words the text needs
                                          # (default: 1 when `tone` is given, else 0)

Terms match whole words, case-insensitively; the words of a phrase may be separated by any
whitespace. Text that fails is dropped (`on_fail: drop`, the default) or passed on with each
reason as a flag (`on_fail: flag`).
"""

from __future__ import annotations

import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aigc_pipeline import TEXT, Device, Stage, StageItem

from .files import BrandKitError, existing_file

MAX_LISTED = 8  # tone words listed in a reason; longer lists end with "..."


class BrandFile(BaseModel):
    """The contents of a brand file (unknown keys are errors, so a typo is never ignored)."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    required: list[str] = Field(default_factory=list, description="terms that must all appear")
    forbidden: list[str] = Field(default_factory=list, description="terms that must not appear")
    tone: list[str] = Field(default_factory=list, description="words that carry the brand's tone")
    min_tone_words: int | None = Field(None, ge=0, description="different tone words needed (default 1 if tone)")

    @field_validator("required", "forbidden", "tone")
    @classmethod
    def _no_empty_terms(cls, terms: list[str]) -> list[str]:
        if any(not term.strip() for term in terms):
            raise ValueError("terms must not be empty")
        return terms

    @property
    def tone_needed(self) -> int:
        if self.min_tone_words is not None:
            return self.min_tone_words
        return 1 if self.tone else 0


def load_brand_file(path: str) -> BrandFile:
    """Read and check a brand file; every error names the file and what is wrong in it."""
    file = existing_file(path, "brand file", "brand_file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BrandKitError(f"brand file '{path}' cannot be read as YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BrandKitError(f"brand file '{path}' must be a mapping with keys {', '.join(BrandFile.model_fields)}")
    try:
        brand = BrandFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise BrandKitError(f"brand file '{path}' is invalid: {problems}") from None
    if brand.tone_needed > len(set(map(str.lower, brand.tone))):
        raise BrandKitError(f"brand file '{path}': min_tone_words ({brand.tone_needed}) is more than the "
                            f"{len(brand.tone)} tone word(s) listed")
    return brand


def term_pattern(term: str) -> str:
    """A term as a regex: literal, whole words at word-character ends, any whitespace inside."""
    term = term.strip()
    body = r"\s+".join(map(re.escape, term.split()))
    start = r"(?<!\w)" if re.match(r"\w", term) else ""
    end = r"(?!\w)" if re.search(r"\w$", term) else ""
    return start + body + end


def _matcher(terms: list[str]) -> re.Pattern[str] | None:
    ordered = sorted(set(terms), key=len, reverse=True)  # the longest phrase wins an overlap
    return re.compile("|".join(map(term_pattern, ordered)), re.IGNORECASE) if ordered else None


def _found(pattern: re.Pattern[str] | None, text: str) -> set[str]:
    """The matched terms, lower-cased with single spaces."""
    if pattern is None:
        return set()
    return {" ".join(match.group(0).lower().split()) for match in pattern.finditer(text)}


def _normal(term: str) -> str:
    return " ".join(term.lower().split())


class VoiceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand_file: str = Field(description="YAML brand file: required, forbidden and tone terms")
    on_fail: Literal["drop", "flag"] = "drop"


class VoiceStage(Stage[VoiceParams]):
    type_name = "brand.voice"
    description = "Check text against a brand file (required, forbidden, tone words); drop or flag."
    Params = VoiceParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 256

    def __init__(self, params: VoiceParams) -> None:
        super().__init__(params)
        self.brand: BrandFile | None = None

    @classmethod
    def preflight(cls, params: VoiceParams) -> None:
        load_brand_file(params.brand_file)

    def load(self, device: Device) -> None:
        self.brand = brand = load_brand_file(self.params.brand_file)
        self.required = {_normal(term): term for term in brand.required}
        self.required_re = _matcher(brand.required)
        self.forbidden_re = _matcher(brand.forbidden)
        self.tone_re = _matcher(brand.tone)

    def reasons(self, text: str) -> list[str]:
        """Every way `text` departs from the brand (empty when it fits)."""
        assert self.brand is not None, "load() was not called"
        found: list[str] = []
        present = _found(self.required_re, text)
        missing = [term for key, term in self.required.items() if key not in present]
        if missing:
            found.append("missing required term(s): " + ", ".join(missing))
        forbidden = _found(self.forbidden_re, text)
        if forbidden:
            found.append("forbidden term(s): " + ", ".join(sorted(forbidden)))
        needed = self.brand.tone_needed
        tone = _found(self.tone_re, text)
        if len(tone) < needed:
            listed = ", ".join(self.brand.tone[:MAX_LISTED]) + (", ..." if len(self.brand.tone) > MAX_LISTED else "")
            found.append(f"off-tone: {len(tone)} tone word(s), needs {needed} of: {listed}")
        return found

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            text = item.inputs["text"]
            reasons = self.reasons(text)
            if reasons and self.params.on_fail == "drop":
                item.drop("; ".join(reasons))
                continue
            for reason in reasons:
                item.flag(reason)
            item.outputs["text"] = text
        return batch
