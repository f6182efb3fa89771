"""The takes of a row in the review app: a picker, and each earlier take's media and texts (hidden
until picked), so a reviewer can compare takes and approve the one they like."""

from __future__ import annotations

from typing import Any

from ..gallery import Linker, e, split_outputs
from .decisions import RowReview


def takes_html(takes: list[tuple[int, list[str], dict[str, Any]]], review: RowReview | None, link: Linker) -> str:
    """'' for a row with one take; else a <select> of its takes and a hidden block per other take."""
    if review is None or len(takes) < 2:
        return ""
    current = review.current_take
    approved = review.approved_take
    options = "".join(f'<option value="{take}"{" selected" if take == current else ""}>take {take}'
                      f'{" (latest)" if take == current else ""}{" ✓" if take == approved else ""}</option>'
                      for take, _, _ in takes)
    blocks = []
    for take, stages, outputs in takes:
        if take == current:
            continue
        media, texts, _, _ = split_outputs(outputs if isinstance(outputs, dict) else {}, link, True)
        blocks.append(f'<div class="take" data-take="{take}" hidden><p class="note">take {take} '
                      f'(re-ran: {e(", ".join(stages) or "none")})</p>'
                      f'{"<div class=media>" + "".join(media) + "</div>" if media else ""}{"".join(texts)}</div>')
    return (f'<div class="takes" data-current="{current}"><label>take <select class="take-select">{options}'
            f'</select></label>{"".join(blocks)}</div>')
