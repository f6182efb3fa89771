"""report_scan: which rows a large run's report shows, read in one streaming pass."""

from __future__ import annotations

import json
from pathlib import Path

from aigc_pipeline.report_scan import SHOW_ALL_UP_TO, scan_results


def _write(path: Path, rows: int, failed_every: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in range(rows):
            status = "failed" if row % failed_every == 0 else "done"
            flags = [{"stage": "gate", "reason": "long"}] if row % 97 == 1 else []
            record = {"row": row, "line": row + 1, "status": status, "outputs": {"text": f"t{row}"}, "flags": flags}
            handle.write(json.dumps(record) + "\n")


def test_a_small_run_shows_every_row(tmp_path: Path) -> None:
    _write(tmp_path / "r.jsonl", 50, 10)
    scan = scan_results(tmp_path / "r.jsonl", rows=5)
    assert scan.total == 50 and len(scan.shown) == 50 and scan.complete and scan.limit is None
    assert scan.counts["failed"] == 5 and scan.counts["done"] == 45 and scan.flagged == 1


def test_a_large_run_shows_trouble_and_a_sample_and_counts_the_rest(tmp_path: Path) -> None:
    rows = SHOW_ALL_UP_TO + 2000
    _write(tmp_path / "r.jsonl", rows, 100)
    scan = scan_results(tmp_path / "r.jsonl", rows=40)
    failed = (rows + 99) // 100
    flagged_done = sum(1 for r in range(rows) if r % 97 == 1 and r % 100 != 0)
    assert scan.total == rows and scan.counts["failed"] == failed
    shown_failed = [r for r in scan.shown if r["status"] == "failed"]
    shown_done = [r for r in scan.shown if r["status"] == "done"]
    assert len(shown_failed) + sum(1 for r in shown_done if r["flags"]) == 40  # trouble first, up to the limit
    assert len([r for r in shown_done if not r["flags"]]) == 40  # a sample of plain done rows
    assert [r["row"] for r in scan.shown] == sorted(r["row"] for r in scan.shown)
    assert scan.left_out == {"failed": failed - len(shown_failed), "done": rows - failed - len(shown_done)}
    assert flagged_done > 0
    again = scan_results(tmp_path / "r.jsonl", rows=40)
    assert [r["row"] for r in again.shown] == [r["row"] for r in scan.shown]  # the same sample every time
    everything = scan_results(tmp_path / "r.jsonl", rows=None)
    assert len(everything.shown) == rows and everything.complete


def test_the_stage_table_shows_every_counter_a_stage_reports(tmp_path: Path) -> None:
    from aigc_pipeline.report import write_report

    _write(tmp_path / "results.jsonl", 3, 10)
    stats = {"type_name": "llm.text", "device": "cpu", "done": 3, "seconds": 1.5, "oom_retries": 0,
             "retries": 2, "counters": {"prompt_tokens": 120, "cost_usd": 0.0042}}
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {"copy": stats}}), encoding="utf-8")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    for column in ("retries", "prompt_tokens", "cost_usd"):
        assert f"<th>{column}</th>" in page
    assert "<td>0.0042</td>" in page and "<td>120</td>" in page and "<th>oom_retries</th>" not in page


def test_a_runs_report_scanned_as_it_wrote_equals_one_read_from_its_results(tmp_path: Path) -> None:
    """The run feeds its report's scan as it writes results.jsonl; a report rebuilt from the file
    (`aigc report OUT`) is the same page: the same counts and the same rows, sampled alike."""
    import re

    from aigc_pipeline.engine import Engine
    from aigc_pipeline.report import write_report

    rows = SHOW_ALL_UP_TO + 500  # past the show-everything size: trouble rows and a sample
    with (tmp_path / "rows.jsonl").open("w", encoding="utf-8") as handle:
        for number in range(rows):
            words = "a miracle" if number % 7 == 0 else "plain"  # every 7th row is filtered
            handle.write(json.dumps({"product": f"P{number} {words}", "audience": "x", "features": ["f"],
                                     "price": number / 10}) + "\n")
    engine = Engine()
    pipeline = Path(__file__).resolve().parent.parent / "pipelines" / "product_copy.yaml"
    engine.run(engine.load(pipeline), tmp_path / "rows.jsonl", tmp_path / "out")
    made = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    rebuilt = write_report(tmp_path / "out").read_text(encoding="utf-8")
    nonce = re.compile(r'nonce="[0-9a-f]+"|nonce-[0-9a-f]+')
    assert nonce.sub("N", made) == nonce.sub("N", rebuilt)
    assert scan_results(tmp_path / "out" / "results.jsonl").left_out  # a sample, not every row


def test_the_done_rows_sample_is_uniform_over_the_run() -> None:
    """Every done row has the same chance to be shown, early or late in the run (reservoir sampling)."""
    import random
    from collections import Counter

    from aigc_pipeline.report_scan import _Reservoir

    shown: Counter[int] = Counter()
    for seed in range(2000):
        sample = _Reservoir(10, random.Random(seed))
        for row in range(100):
            sample.offer(row)
        assert len(sample.items) == 10 == len(set(sample.items))
        shown.update(sample.items)
    # 200 expected per row; 5 standard deviations (~13 each) either side
    assert min(shown.values()) > 135 and max(shown.values()) < 265 and len(shown) == 100
    first, last = sum(shown[r] for r in range(50)), sum(shown[r] for r in range(50, 100))
    assert abs(first - last) < 1000  # no drift towards either end of the run
