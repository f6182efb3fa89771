"""Review status in `results.jsonl`: `review: approved | rejected | pending` on every row (and
`take: N` on a row past its first take), once the run has any decision or take.

The file is rewritten line by line (streamed, never held whole) through a temporary file and a
rename, like every results file, so a reader never sees half of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..gallery import row_id
from ..report_scan import read_records
from ..sinks import RESULTS_FILE, write_atomic
from .decisions import PENDING, ReviewStore, RowReview


def annotate_results(out_dir: Path, store: ReviewStore | None = None) -> bool:
    """Add the review fields to `out_dir`'s results.jsonl; False (file untouched) when nothing was reviewed."""
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        return False
    own = store is None
    store = ReviewStore.open(out_dir) if store is None else store
    try:
        if not store.any():
            return False
        reviews = store.reviews()
    finally:
        if own:
            store.close()
    write_atomic(path, _annotated(path, reviews))
    return True


def _annotated(path: Path, reviews: dict[str, RowReview]) -> Iterator[str]:
    for record in read_records(path):
        yield json.dumps(with_review(record, reviews.get(row_id(record))), ensure_ascii=False) + "\n"


def with_review(record: dict[str, Any], review: RowReview | None) -> dict[str, Any]:
    record["review"] = review.status if review is not None else PENDING
    if review is not None and review.current_take:
        record["take"] = review.current_take
    else:
        record.pop("take", None)
    return record
