"""`filter.text`: a quality gate on generated text.

Checks length (words, characters), a blocklist (whole words or phrases, case-insensitive) and
regex rules. A failing item is dropped (filtered, with every reason recorded) or, with
`on_fail: flag`, passed on with the reasons attached as flags.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..content import TEXT
from ..plugin_manager import hookimpl
from ..stage import Stage, StageItem


class RegexRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(description="a Python regular expression, searched anywhere in the text")
    must_match: bool = Field(False, description="true: the text must match; false: it must not")
    reason: str | None = Field(None, description="the reason recorded when the rule fails")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern


class TextFilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    blocklist: list[str] = Field(default_factory=list, description="words or phrases that must not appear")
    rules: list[RegexRule] = Field(default_factory=list)
    on_fail: Literal["drop", "flag"] = "drop"

    @model_validator(mode="after")
    def _ranges(self) -> TextFilterParams:
        for low, high in (("min_words", "max_words"), ("min_chars", "max_chars")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is greater than {high} ({b})")
        if any(not word.strip() for word in self.blocklist):
            raise ValueError("blocklist entries must not be empty")
        return self


def _term_pattern(term: str) -> str:
    """A blocklist entry as a regex: literal, whole words, any whitespace between a phrase's words.

    A word boundary is asked for only at an end that is a word character: "cure" is not found in
    "secure", and "100%" is still found in "100%off".
    """
    body = r"\s+".join(map(re.escape, term.split()))
    start = r"(?<!\w)" if re.match(r"\w", term.strip()) else ""
    end = r"(?!\w)" if re.search(r"\w$", term.strip()) else ""
    return start + body + end


class TextFilterStage(Stage):
    type_name = "filter.text"
    description = "Quality gate on text: length, blocklist, regex rules; drop or flag."
    Params = TextFilterParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 256

    def __init__(self, params: TextFilterParams) -> None:
        super().__init__(params)
        self.p = params
        terms = sorted(params.blocklist, key=len, reverse=True)
        self.blocked = re.compile("|".join(map(_term_pattern, terms)), re.I) if terms else None
        self.rules = [(re.compile(rule.pattern), rule) for rule in params.rules]

    def reasons(self, text: str) -> list[str]:
        """Every reason `text` fails this gate (empty when it passes)."""
        p, found = self.p, []
        words, chars = len(text.split()), len(text)
        for value, limit, name in ((words, p.min_words, "words"), (chars, p.min_chars, "characters")):
            if limit is not None and value < limit:
                found.append(f"too few {name}: {value} < {limit}")
        for value, limit, name in ((words, p.max_words, "words"), (chars, p.max_chars, "characters")):
            if limit is not None and value > limit:
                found.append(f"too many {name}: {value} > {limit}")
        if self.blocked is not None:
            hits = sorted({" ".join(match.group(0).lower().split()) for match in self.blocked.finditer(text)})
            if hits:
                found.append("blocked term(s): " + ", ".join(hits))
        for pattern, rule in self.rules:
            if bool(pattern.search(text)) != rule.must_match:
                verb = "does not match" if rule.must_match else "matches"
                found.append(rule.reason or f"{verb} /{rule.pattern}/")
        return found

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            text = item.inputs["text"]
            reasons = self.reasons(text)
            if reasons and self.p.on_fail == "drop":
                item.drop("; ".join(reasons))
                continue
            for reason in reasons:
                item.flag(reason)
            item.outputs["text"] = text
        return batch


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [TextFilterStage]
