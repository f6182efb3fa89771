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
