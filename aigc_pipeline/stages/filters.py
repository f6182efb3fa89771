"""`filter.text`: a quality gate on generated text.

Checks, each optional: length (words, characters), a blocklist (whole words or phrases,
case-insensitive), regex rules, personal data (`pii`: emails, phone numbers, payment cards),
JSON (`json`: the text must be a JSON document, optionally matching a JSON Schema), a
text-classification model's score (`classifier`, e.g. toxicity), and duplicates across the run
(`dedupe`: exact or near). The checks look at the text the stage passes on: after PII redaction
and with a ``` fence around JSON taken off.

What happens to a failing text is `on_fail`: `drop` (filtered, every reason recorded), `flag`
(passed on with the reasons as flags), or `redact`, which fixes what can be fixed: PII is replaced
by placeholders and the text goes on, flagged with what was redacted (counts only), while any
other failed check drops the text. `pii.action` and `dedupe.action` override `on_fail` for
their own check. A reason or flag never contains a PII value.

Duplicates: the stage remembers every text it passed on in this run (state on the stage instance,
one per run). "Earlier" means processed earlier: rows in input order within the local executor's
chunks; the first occurrence passes and later ones name its row. A text dropped for another reason
is not remembered. The classifier model loads in `load`; torch and transformers are imported there.

Regex rules run on the `regex` package (the `re` syntax) with a time limit per search
(RULE_TIMEOUT_S): a pattern that backtracks catastrophically on some text, such as `(a|aa)+$`,
would otherwise hang the run. A rule that runs out of time fails the text, with a reason saying
so: a gate does not pass a text it could not check.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..content import TEXT
from ..devices import Device
from ..errors import AigcError, MissingDependencyError
from ..models import check_no_remote_code, memory_estimate, resolve_model
from ..plugin_manager import hookimpl
from ..stage import DeviceNeeds, Stage, StageItem
from . import text_checks as checks
from . import text_classifier

PiiKind = Literal["email", "phone", "card"]
RULE_TIMEOUT_S = checks.PATTERN_TIMEOUT_S  # per regex rule and text (and per JSON Schema pattern)


def _all_kinds() -> list[PiiKind]:
    return ["email", "phone", "card"]


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
            regex.compile(pattern)  # what runs it; accepts what `re` accepts, nearly always
        except (re.error, regex.error) as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern


class TextPiiCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detect: list[PiiKind] = Field(
        default_factory=lambda: _all_kinds(), min_length=1,
        description="what counts as PII: email (name@domain.tld), phone (written as phone numbers are: "
                    "+ or 00 prefix, (area code), trunk 0, or US 3-3-4 digits; years, prices, dates are not), "
                    "card (13-19 digit payment card numbers passing the Luhn check)",
    )
    action: Literal["redact", "drop", "flag"] | None = Field(
        None, description="redact: replace each value with the placeholder and pass the text on, flagged with "
                          "how many of each kind were redacted; drop: filter the text out; flag: pass it on "
                          "unchanged with a flag. Default: as on_fail. Reasons and flags give counts, never values",
    )
    placeholder: str = Field("[{kind}]", min_length=1,
                             description="what a redacted value becomes; {kind} is email, phone or card")


class TextDedupeCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["exact", "near"] = Field(
        "exact", description="exact: the same text (ignoring case and whitespace) was seen earlier in this run; "
                             "near: an earlier text is at least `threshold` similar")
    threshold: float = Field(0.8, gt=0, le=1, description="near: Jaccard similarity of the texts' shingles, 0-1")
    shingles: Literal["words", "chars"] = Field(
        "words", description="near: compare word 3-grams (robust for longer texts) or character 5-grams "
                             "(catches small edits in short texts); case and punctuation are ignored")
    action: Literal["drop", "flag"] | None = Field(
        None, description="what happens to a later duplicate: drop or flag (the reason names the earlier row). "
                          "Default: flag when on_fail is flag, else drop")

    @model_validator(mode="after")
    def _near_only(self) -> TextDedupeCheck:
        if self.mode == "exact":
            for name in ("threshold", "shingles"):
                if name in self.model_fields_set:
                    raise ValueError(f"'{name}' is used by mode 'near' only; add 'mode: near'")
        return self


class TextClassifierCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a local text-classification model folder or a Hugging Face id, "
                                                 "e.g. unitary/toxic-bert")
    label: str = Field(min_length=1, description="the label whose score fails a text, e.g. 'toxic'")
    threshold: float = Field(0.5, ge=0, description="a text fails when the label's score (0-1) is at least this; "
                                                     "above 1 never fails")
    revision: str | None = Field(None, description="a branch, tag or commit of a Hugging Face model")
    trust_remote_code: bool = Field(False, description="allow the model folder's own Python code to run")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin): they can run code")
    batch_size: int = Field(32, ge=1, description="texts per model call")
    max_length: int = Field(512, ge=1, description="tokens per text the model reads; longer texts are truncated")


class TextJsonCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="a JSON Schema the document must match (checked when the pipeline loads)")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            checks.check_schema(schema)
        return schema


def _true_means_defaults(schema: dict[str, Any]) -> None:
    """JSON Schema of the params: `pii`, `dedupe` and `json` also take `true` (the check with its defaults)."""
    for name in ("pii", "dedupe", "json"):
        prop = schema["properties"][name]
        prop["anyOf"] = [*prop.get("anyOf", []), {"type": "boolean"}]


class TextFilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_true_means_defaults)

    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    blocklist: list[str] = Field(default_factory=list, description="words or phrases that must not appear")
    rules: list[RegexRule] = Field(default_factory=list)
    pii: TextPiiCheck | None = Field(
        None, description="find personal data (emails, phone numbers, card numbers); true: all kinds, action as "
                          "on_fail. Checks run on the redacted text")
    json_check: TextJsonCheck | None = Field(
        None, alias="json", description="the text must be one JSON document (a ``` fence around it is taken off, "
                                        "and the text passed on is the document); true: any JSON; "
                                        "{schema: ...}: matching a JSON Schema")
    classifier: TextClassifierCheck | None = Field(None, description="a text-classification model score check, "
                                                                     "e.g. toxicity")
    dedupe: TextDedupeCheck | None = Field(
        None, description="duplicates of a text passed on earlier in this run (earlier: processed first); "
                          "true: exact duplicates")
    on_fail: Literal["drop", "flag", "redact"] = Field(
        "drop", description="drop: filter out a failing text; flag: pass it on with the reasons as flags; "
                            "redact: redact PII (needs pii) and drop a text that fails any other check")

    @field_validator("pii", "dedupe", "json_check", mode="before")
    @classmethod
    def _booleans(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _consistent(self) -> TextFilterParams:
        for low, high in (("min_words", "max_words"), ("min_chars", "max_chars")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is greater than {high} ({b})")
        if any(not word.strip() for word in self.blocklist):
            raise ValueError("blocklist entries must not be empty")
        if self.on_fail == "redact" and self.pii is None:
            raise ValueError("on_fail 'redact' redacts PII: add 'pii: true' (emails, phones, cards) "
                             "or 'pii: {detect: [email, phone]}'")
        return self


def _blocklist_pattern(terms: list[str]) -> str:
    r"""Blocklist entries as one regex: literal, whole words, any whitespace between a phrase's words.

    A word boundary is asked for only at an end that is a word character: "cure" is not found in
    "secure", and "100%" is still found in "100%off". Neighbouring terms with the same boundaries
    share them (`(?<!\w)(?:cure|miracle)(?!\w)`): the same matches, in the same order of
    preference, at half the cost of a lookaround per term.
    """
    parts = []
    for (start, end), group in groupby(terms, key=_term_ends):
        bodies = "|".join(r"\s+".join(map(re.escape, term.split())) for term in group)
        parts.append(f"{start}(?:{bodies}){end}")
    return "|".join(parts)


def _term_ends(term: str) -> tuple[str, str]:
    start = r"(?<!\w)" if re.match(r"\w", term.strip()) else ""
    end = r"(?!\w)" if re.search(r"\w$", term.strip()) else ""
    return start, end


@dataclass
class _Draft:
    """One text on its way through the checks: the text to pass on, and what was found."""

    text: str
    reasons: list[str]  # failed checks, handled by on_fail
    pii: dict[str, int] = field(default_factory=dict)  # PII found: kind -> count


class TextFilterStage(Stage[TextFilterParams]):
    type_name = "filter.text"
    description = ("Quality gate on text: length, blocklist, regex rules, PII, JSON, a classifier score, "
                   "duplicates; drop, flag or redact.")
    Params = TextFilterParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    default_batch_size = 256

    def __init__(self, params: TextFilterParams) -> None:
        super().__init__(params)
        terms = sorted(params.blocklist, key=len, reverse=True)
        self.blocked = re.compile(_blocklist_pattern(terms), re.I) if terms else None
        self.rules = [(regex.compile(rule.pattern), rule) for rule in params.rules]
        self.pii_action = (params.pii.action or params.on_fail) if params.pii else None
        dedupe = params.dedupe
        self.duplicates = checks.DuplicateIndex(dedupe.mode, dedupe.threshold, dedupe.shingles) if dedupe else None
        self.dedupe_action = (dedupe.action or ("flag" if params.on_fail == "flag" else "drop")) if dedupe else None
        schema = params.json_check.json_schema if params.json_check else None
        self.json_validator = checks.schema_validator(schema) if schema is not None else None
        # The length limits the params set, in the order their reasons are given: (measure, limit, too many?)
        self.bounds = [(name, limit, above) for name, limit, above in (
            ("words", params.min_words, False), ("characters", params.min_chars, False),
            ("words", params.max_words, True), ("characters", params.max_chars, True)) if limit is not None]
        self.counts_words = any(name == "words" for name, _, _ in self.bounds)
        self.classifier: text_classifier.TextClassifier | None = None

    @classmethod
    def needs(cls, params: TextFilterParams) -> DeviceNeeds:
        """CPU; with a classifier, any device, memory from the model's safetensors headers (0 if not local)."""
        check = params.classifier
        if check is None:
            return DeviceNeeds()
        memory = memory_estimate(check.model, check.revision, headroom=text_classifier.CLASSIFIER_HEADROOM,
                                 extra_bytes=text_classifier.CLASSIFIER_HEADROOM_BYTES)
        return DeviceNeeds(kind="any", memory_bytes=memory)

    @classmethod
    def cacheable(cls, params: TextFilterParams) -> bool:
        """Only with a classifier (model work worth storing), and never with `dedupe`: whether a text
        is a duplicate depends on the rows before it in this run. The other checks are regexes,
        cheaper to redo than to look up."""
        return params.classifier is not None and params.dedupe is None

    @classmethod
    def cpu_parallel(cls, params: TextFilterParams) -> bool:
        """Regex checks in worker processes; not with a classifier (a model) or `dedupe` (run-wide)."""
        return params.classifier is None and params.dedupe is None

    @classmethod
    def run_wide(cls, params: TextFilterParams) -> bool:
        """With `dedupe`: a text is a duplicate of an earlier row's, so rows must pass in order."""
        return params.dedupe is not None

    @classmethod
    def preflight(cls, params: TextFilterParams) -> None:
        """With a classifier: the packages are installed, the model resolves to safetensors, the label exists."""
        check = params.classifier
        if check is None:
            return
        for package in ("torch", "transformers"):
            if importlib.util.find_spec(package) is None:
                raise MissingDependencyError(package, "the filter.text classifier check", extra="models")
        folder = resolve_model(check.model, check.revision, allow_pickle=check.allow_pickle)
        if not check.trust_remote_code:
            check_no_remote_code(folder, check.model)
        labels = text_classifier.model_labels(folder)
        if labels and check.label not in labels:
            raise AigcError(text_classifier.unknown_label(check.label, check.model, labels))

    def load(self, device: Device) -> bool | None:
        check = self.params.classifier
        if check is None:
            return False  # no model: the run counts no load
        folder = resolve_model(check.model, check.revision, allow_pickle=check.allow_pickle)
        self.classifier = text_classifier.TextClassifier(folder, check, device)
        return None

    def unload(self) -> None:
        if self.classifier is not None:
            self.classifier.close()
            self.classifier = None

    def reasons(self, text: str) -> list[str]:
        """Every reason `text` fails the length, blocklist and rule checks (empty when it passes)."""
        found: list[str] = []
        words = len(text.split()) if self.counts_words else 0
        for name, limit, above in self.bounds:
            value = words if name == "words" else len(text)
            if above and value > limit:
                found.append(f"too many {name}: {value} > {limit}")
            elif not above and value < limit:
                found.append(f"too few {name}: {value} < {limit}")
        if self.blocked is not None:
            hits = sorted({" ".join(match.group(0).lower().split()) for match in self.blocked.finditer(text)})
            if hits:
                found.append("blocked term(s): " + ", ".join(hits))
        for pattern, rule in self.rules:
            try:
                matched = bool(pattern.search(text, timeout=RULE_TIMEOUT_S))
            except TimeoutError:
                found.append(f"rule /{rule.pattern}/ gave up after {RULE_TIMEOUT_S:g} s on this text "
                             "(the pattern backtracks too much: simplify it)")
                continue
            if matched != rule.must_match:
                verb = "does not match" if rule.must_match else "matches"
                found.append(rule.reason or f"{verb} /{rule.pattern}/")
        return found

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        # Everything that can raise (the classifier) runs before _judge changes the duplicate index,
        # so a batch the executor retries item by item is not seen twice.
        drafts = [self._draft(item.inputs["text"]) for item in batch]
        self._classify(drafts)
        for item, draft in zip(batch, drafts, strict=True):
            self._judge(item, draft)
        return batch

    def _draft(self, text: str) -> _Draft:
        p = self.params
        if p.json_check is not None:
            text = checks.unfence(text)
        counts: dict[str, int] = {}
        if p.pii is not None:
            redacted, counts = checks.find_pii(text, p.pii.detect, p.pii.placeholder)
            if self.pii_action == "redact":
                text = redacted
        reasons = self.reasons(text)
        if p.json_check is not None:
            problem = checks.json_problem(text, self.json_validator)
            if problem is not None:
                reasons.append(problem)
        return _Draft(text, reasons, counts)

    def _drops(self, draft: _Draft) -> bool:
        """Whether the checks so far already filter this text out (then the classifier skips it)."""
        return bool(draft.reasons and self.params.on_fail != "flag") or bool(draft.pii and self.pii_action == "drop")

    def _classify(self, drafts: list[_Draft]) -> None:
        check = self.params.classifier
        if check is None:
            return
        if self.classifier is None:  # a safety gate must not pass texts unchecked
            raise AigcError("the classifier is not loaded (load(device) was not called)")
        pending = [draft for draft in drafts if not self._drops(draft)]
        if not pending:
            return
        for draft, score in zip(pending, self.classifier.scores([d.text for d in pending]), strict=True):
            if score >= check.threshold:
                draft.reasons.append(f"classifier: '{check.label}' score {score:.3f} >= threshold {check.threshold:g}")

    def _judge(self, item: StageItem, draft: _Draft) -> None:
        drop: list[str] = []
        flags: list[str] = []
        (flags if self.params.on_fail == "flag" else drop).extend(draft.reasons)
        found = checks.describe_counts(draft.pii)
        if draft.pii and self.pii_action in ("drop", "flag"):
            (drop if self.pii_action == "drop" else flags).append(f"contains PII: {found}")
        if not drop and self.duplicates is not None:
            duplicate = self.duplicates.check(item.id, draft.text)
            if duplicate is not None:
                (drop if self.dedupe_action == "drop" else flags).append(duplicate)
        if draft.pii and self.pii_action == "redact" and not drop:
            item.flag(f"redacted PII: {found}")
        for reason in flags:
            item.flag(reason)
        if drop:
            item.drop("; ".join(drop))
            return
        item.outputs["text"] = draft.text


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    return [TextFilterStage]
