"""json_text.compact_encoder: the standard encoder's text, with the C encoder built once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigc_pipeline.json_text import compact_encoder

VALUES: list[Any] = [
    {"product": "Lampe é", "price": 12.5, "n": 3, "ok": True, "tags": ["a", "b"], "x": None},
    {"b": {"z": [1.5, {"y": 2, "x": float("nan")}], "a": -0.0}, "a": 10**30, "c": float("inf")},
    {"text": 'quote " backslash \\ newline \n tab \t \u2028 emoji \U0001f600'},
    {},
    "a bare string",
    [1, {"b": 2, "a": 1}],
]


@pytest.mark.parametrize("options", [
    {}, {"sort_keys": True, "separators": (",", ":")}, {"ensure_ascii": True}, {"default": str},
])
def test_the_text_is_the_standard_encoders(options: dict[str, Any]) -> None:
    standard = json.JSONEncoder(**{"ensure_ascii": False, **options}).encode
    fast = compact_encoder(**options)
    for value in VALUES:
        assert fast(value) == standard(value)


def test_what_the_standard_encoder_refuses_is_refused_the_same_way() -> None:
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    with pytest.raises(ValueError, match="Circular reference"):
        compact_encoder()(looped)
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_encoder()({"x": object()})
    assert compact_encoder(default=lambda value: "made")({"x": object()}) == '{"x": "made"}'


@pytest.mark.parametrize("line", [
    '{"a": 1}\n', '{"a": [1, 2.5, "x"], "b": {"c": null}}', '  {"a": 1}\n', '{"a": 1} \t\r\n', '[1, 2]\n', '"text"\n',
    '{"a": 1} {"b": 2}\n', '{"a": 1,}\n', "{broken\n", "\n", "", '{"a": NaN}', '{"a": "\\ud800"}',
])
def test_a_jsonl_line_reads_as_json_loads_reads_it(line: str) -> None:
    from aigc_pipeline.json_text import loads_line

    try:
        expected: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as raised:
            loads_line(line)
        assert (raised.value.msg, raised.value.colno) == (exc.msg, exc.colno)
    else:
        assert loads_line(line) == expected  # (json's NaN is one object: equal to itself in a dict)
