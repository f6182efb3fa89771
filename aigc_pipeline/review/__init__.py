"""Reviewing a run: decisions per row or output (`decisions.py`), the local review app (`app.py`),
another take of what was rejected (`takes.py`), and exporting what was approved (`export.py`).

Decisions and takes live in the run store's SQLite file (tables `reviews` and `takes`, created on
first use, so stores written before them stay readable), and show in `results.jsonl` as
`review: approved | rejected | pending` once a run has any decision.
"""
