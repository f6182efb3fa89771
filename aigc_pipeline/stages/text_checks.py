"""The checks behind `filter.text` that need more than a line: PII, JSON, duplicates, a classifier.

- PII: emails, phone numbers and payment card numbers, found by patterns written to keep false
  alarms low on ordinary copy (years, prices, dates, decimals and random digit runs are not PII);
  see `find_pii`. Only counts ever leave this module in a reason, never a found value.
- JSON: a text that must be a JSON document, optionally wrapped in one ``` fence, optionally
  checked against a JSON Schema (`jsonschema`, imported only when a schema is given).
- Duplicates: `DuplicateIndex` remembers the texts of one run: exact (normalised text) or near
  (Jaccard similarity of word 3-gram or character 5-gram shingles; MinHash with LSH banding picks
  the candidates, so a text is compared with the few earlier texts that may be close, not all).
- Classifier: `TextClassifier` runs a transformers sequence-classification model over a batch.

No torch or transformers import at module level: `filter.text` without a classifier never needs them.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Seconds per regex search on one text, for the filter's rules and a JSON Schema's patterns alike:
# generous for any sane pattern on generated text, and a bound on one that backtracks catastrophically.
PATTERN_TIMEOUT_S = 1.0

# ------------------------------------------------------------------ PII

PII_KINDS = ("email", "phone", "card")
_BOUNDARY = r"(?<![\w+.,/(-])"  # not glued to a word, a sign, a decimal point or another number
_END = r"(?!\w|[.,/-]?\d)"  # not followed by a word, nor by more digits after a separator
EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[^\W_][\w-]*(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
CARD = re.compile(_BOUNDARY + r"\d(?:[ -]?\d){12,18}" + _END)
# Digit groups separated by one space, dot or dash, or by parentheses around a group; validated by _is_phone.
PHONE = re.compile(_BOUNDARY + r"(?:\+ ?)?\(?\d+(?:(?:[ .-]|\)[ .-]?|[ .-]?\()\d+)*\)?" + _END)
CARD_FIRST_DIGITS = "23456"  # Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay/Maestro 6


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies (and 9 in 10 random numbers fail)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and digits[0] in CARD_FIRST_DIGITS and luhn_valid(digits)


def _is_phone(candidate: str) -> bool:
    """Whether a run of digit groups is written the way phone numbers are (see `find_pii`)."""
    groups = re.findall(r"\d+", candidate)
    digits = "".join(groups)
    count = len(digits)
    if candidate.startswith("+"):
        return 8 <= count <= 15 and digits[0] != "0"
    if "(" in candidate or ")" in candidate:
        return 10 <= count <= 15
    if digits.startswith("00"):
        return 10 <= count <= 17
    if digits.startswith("0"):
        return 9 <= count <= 13 and len(groups[0]) >= 2  # "0.123456789" is a decimal, not a number to call
    sizes = [len(group) for group in groups]
    separators = set(re.findall(r"\D", candidate))
    if len(separators) > 1:
        return False
    return (sizes == [3, 3, 4] and digits[0] != "1") or (sizes == [1, 3, 3, 4] and digits[0] == "1")


_FINDERS: dict[str, tuple[re.Pattern[str], Any]] = {
    "card": (CARD, _is_card),
    "email": (EMAIL, None),
    "phone": (PHONE, _is_phone),
}


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS, placeholder: str = "[{kind}]") -> tuple[str, dict[str, int]]:
    """`text` with each PII value of `kinds` replaced by `placeholder`, and how many of each kind.

    - email: name@domain.tld (letters of any script);
    - card: 13 to 19 digits, optionally grouped by spaces or dashes, starting with 2-6 (the card
      networks) and passing the Luhn checksum;
    - phone: written like a phone number: with a leading `+` (8 to 15 digits) or `00`, with an
      area code in parentheses, starting with a trunk `0` (9 to 13 digits, as in most of Europe),
      or in the US pattern 3-3-4 digits (optionally after a `1`). Years, year ranges, prices,
      dates, decimals, IP addresses and bare digit runs are not phone numbers; neither are
      7-digit local numbers without an area code.

    Cards are looked for first, then emails, then phones, each in what the previous left.
    """
    wanted = set(kinds)
    counts: dict[str, int] = {}
    for kind in ("card", "email", "phone"):
        if kind not in wanted:
            continue
        pattern, valid = _FINDERS[kind]
        found = 0

        def replace(match: re.Match[str], kind: str = kind, valid: Any = valid) -> str:
            nonlocal found
            if valid is not None and not valid(match.group(0)):
                return match.group(0)
            found += 1
            return placeholder.replace("{kind}", kind)

        text = pattern.sub(replace, text)
        if found:
            counts[kind] = found
    return text, counts


def describe_counts(counts: dict[str, int]) -> str:
    """`{"email": 1, "phone": 2}` -> "1 email, 2 phones" (counts only: never the values)."""
    return ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items())


def scrub(text: str) -> str:
    """`text` with every PII value replaced: for messages built from a text, e.g. a schema error."""
    return find_pii(text)[0]


# ------------------------------------------------------------------ JSON

FENCE = re.compile(r"\A\s*```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)\n?[ \t]*```\s*\Z", re.S)
MAX_MESSAGE = 200


def unfence(text: str) -> str:
    """The body of a text that is one ``` fenced block (```json ... ```), else the text itself."""
    match = FENCE.match(text)
    return match.group(1).strip() if match else text


def check_schema(schema: Any) -> None:
    """Raise ValueError saying what is wrong when `schema` is not a valid JSON Schema."""
    try:
        from jsonschema import exceptions, validators
    except ImportError:
        raise ValueError("a JSON Schema check needs the package 'jsonschema'; run: pip install jsonschema") from None
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = json_path(exc.path)
        raise ValueError(f"invalid JSON Schema at {where}: {_short(exc.message)}") from None


def schema_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for `schema` (already checked), with format checks on, whose `pattern`
    and `patternProperties` searches run under PATTERN_TIMEOUT_S like the filter's regex rules: a
    pattern such as `^(a|aa)+$` backtracks exponentially in the text's length (121 s on 45 characters)."""
    from jsonschema import validators

    cls = validators.validator_for(schema)
    timed = validators.extend(cls, {"pattern": _timed_pattern, "patternProperties": _timed_pattern_properties})
    return timed(schema, format_checker=cls.FORMAT_CHECKER)


def _search(pattern: str, text: str) -> bool:
    """`regex.search` with the time limit; TimeoutError when the pattern gives up."""
    import regex

    return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None


def _gave_up(pattern: str) -> str:
    return (f"pattern /{_short(pattern)}/ gave up after {PATTERN_TIMEOUT_S:g} s on this text "
            "(the pattern backtracks too much: simplify it)")


def _timed_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterable[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        if not _search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
    except TimeoutError:
        yield ValidationError(_gave_up(pattern))


def _timed_pattern_properties(validator: Any, properties: dict[str, Any], instance: Any, schema: Any) -> Iterable[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            try:
                matched = _search(pattern, key)
            except TimeoutError:
                yield ValidationError(_gave_up(pattern))
                continue
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def json_problem(text: str, validator: Any | None) -> str | None:
    """Why `text` is not a JSON document (matching the schema, if given), or None when it is."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON: {type(exc).__name__}"
    if validator is None:
        return None
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(document))
    if error is None:
        return None
    return f"JSON does not match the schema at {json_path(error.absolute_path)}: {scrub(_short(error.message))}"


def json_path(parts: Iterable[Any]) -> str:
    """A JSONPath-like location: $, $.items[0].price."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


# ------------------------------------------------------------------ duplicates

BINS = 128  # MinHash values per text (one-permutation hashing: one hash per shingle, 128 bins)
MIN_RECALL = 0.999  # LSH bands are chosen so a pair at the threshold is compared with this chance
MAX_COMPARE = 32  # earlier texts compared exactly with each text: those sharing the most LSH bands
_SHIFT = BINS.bit_length() - 1  # the bits of a shingle hash above those that pick its bin
_EMPTY = -1
_PROBES = [random.Random(index).sample(range(BINS), BINS) for index in range(BINS)]  # fixed: same in every run


def normalise(text: str) -> str:
    """Case-folded, whitespace collapsed: the text that exact duplicates share."""
    return " ".join(text.casefold().split())


def shingles(text: str, unit: str) -> frozenset[int]:
    """Hashed shingles: word 3-grams (`words`) or character 5-grams (`chars`) of the case-folded
    words, punctuation dropped. A text shorter than one shingle is one shingle."""
    words = re.findall(r"\w+", text.casefold())
    if unit == "words":
        parts = [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]
    else:
        joined = " ".join(words)
        parts = [joined[i : i + 5] for i in range(max(1, len(joined) - 4))]
    return frozenset(zlib.crc32(part.encode("utf-8")) for part in parts)


def signature(values: frozenset[int]) -> list[int]:
    """A MinHash signature by one-permutation hashing: each shingle hash falls in one of BINS bins
    (its low bits), each bin keeps its smallest value, and an empty bin borrows the value of the
    first non-empty bin on its own fixed probe sequence ("optimal densification")."""
    mins = [_EMPTY] * BINS
    mask = BINS - 1
    for value in values:
        slot, rank = value & mask, value >> _SHIFT
        if mins[slot] == _EMPTY or rank < mins[slot]:
            mins[slot] = rank
    if _EMPTY not in mins or not values:
        return mins
    return [rank if rank != _EMPTY else next(mins[j] for j in _PROBES[i] if mins[j] != _EMPTY)
            for i, rank in enumerate(mins)]


def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most selective banding that still compares a pair of texts at
    `threshold` similarity with probability MIN_RECALL."""
    for rows in range(8, 0, -1):
        bands = BINS // rows
        if 1 - (1 - threshold**rows) ** bands >= MIN_RECALL:
            return bands, rows
    return BINS, 1


class DuplicateIndex:
    """The texts of one run seen so far. `check(row, text)` says which earlier row `text` repeats,
    or remembers it and returns None. A row checked again (a retried batch) is not its own duplicate.

    Near mode: LSH over MinHash signatures finds the earlier texts that share a band with this one;
    the MAX_COMPARE of them sharing the most bands are compared exactly (Jaccard similarity of the
    shingle sets), so the cost per text stays bounded however many rows the run has.
    """

    def __init__(self, mode: str, threshold: float = 0.8, unit: str = "words") -> None:
        self.mode, self.threshold, self.unit = mode, threshold, unit
        self.exact: dict[bytes, int] = {}
        self.entries: list[tuple[int, frozenset[int]]] = []
        self.bands, self.rows = lsh_bands(threshold)
        self.buckets: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(self.bands)]

    def check(self, row: int, text: str) -> str | None:
        if self.mode == "exact":
            key = hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).digest()
            first = self.exact.setdefault(key, row)
            return None if first == row else f"duplicate of row {first}"
        return self._check_near(row, shingles(text, self.unit))

    def _check_near(self, row: int, values: frozenset[int]) -> str | None:
        mins, rows = signature(values), self.rows
        keys = [tuple(mins[band * rows : (band + 1) * rows]) for band in range(self.bands)]
        shared: Counter[int] = Counter()
        for bucket, key in zip(self.buckets, keys, strict=True):
            shared.update(bucket.get(key, ()))
        best: tuple[float, int] | None = None
        for index in heapq.nsmallest(MAX_COMPARE, shared, key=lambda i: (-shared[i], i)):
            earlier, other = self.entries[index]
            if earlier == row:
                return None  # this row again (a retried batch): already remembered
            similarity = len(values & other) / len(values | other)
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, earlier)
        if best is not None:
            return f"near-duplicate of row {best[1]} (similarity {best[0]:.2f} >= {self.threshold:g})"
        index = len(self.entries)
        self.entries.append((row, values))
        for bucket, key in zip(self.buckets, keys, strict=True):
            bucket.setdefault(key, []).append(index)
        return None
