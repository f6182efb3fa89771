"""streaming.py: rows pass through a run in a bounded window, results come out in input order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigc_pipeline import executor as executor_module
from aigc_pipeline.content import TEXT
from aigc_pipeline.executor import execute
from aigc_pipeline.executors.local import LocalExecutor
from aigc_pipeline.planning import make_plan
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.sources import InputRow
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.streaming import ChunkFeed
from aigc_pipeline.testing import fake_engine

PIPELINE = """
name: window
inputs: {text: str}
stages:
  first: {uses: test.lag, inputs: {text: inputs.text}, batch_size: 4}
  second: {uses: test.echo, inputs: {text: first.text}, batch_size: 4}
outputs: {text: second.text}
"""


class Reader:
    """Input rows as a stream that counts how many were read."""

    def __init__(self, count: int) -> None:
        self.count, self.read = count, 0

    def __iter__(self) -> Iterator[InputRow]:
        for index in range(self.count):
            self.read += 1
            if index == 5:
                yield InputRow(index, index + 1, None, f"line {index + 1}: bad row")
            else:
                yield InputRow(index, index + 1, {"text": f"r{index}"})


class LagStage(Stage):
    """Records how far ahead of the row it processes the reader is."""

    type_name = "test.lag"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}
    reader: Reader | None = None
    lags: list[int] = []

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        assert LagStage.reader is not None
        for item in batch:
            LagStage.lags.append(LagStage.reader.read - item.id)
            item.outputs["text"] = item.inputs["text"].upper()
        return batch


class Plugin:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [LagStage]


def test_rows_stream_in_a_bounded_window_and_results_come_in_input_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "WINDOW_ROWS", 32)
    engine = fake_engine(Plugin())
    plan = make_plan(engine.load_text(PIPELINE), engine.pm)
    reader = LagStage.reader = Reader(2000)
    LagStage.lags = []
    written: list[tuple[int, str]] = []
    summary, kept, _ = execute(plan, reader, tmp_path, LocalExecutor(chunk_size=8),
                               sink=lambda result: written.append((result.row, result.status)), total=2000)
    assert summary.ok and kept == []
    assert [row for row, _ in written] == list(range(2000))
    assert written[5] == (5, "rejected") and summary.counts == {
        "done": 1999, "filtered": 0, "failed": 0, "rejected": 1, "not_run": 0}
    # the reader is never more than the window (32 rows, in chunks of 8) ahead of the first stage
    assert max(LagStage.lags) <= 32 + 8


def test_the_cli_run_keeps_no_result_in_memory_and_writes_them_all(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(300)), encoding="utf-8")
    engine = fake_engine(Plugin())
    LagStage.reader, LagStage.lags = Reader(0), []
    graph = engine.load_text(PIPELINE.replace("test.lag", "test.echo"))
    result = engine.run(graph, rows, tmp_path / "out", keep_results=False)
    assert result.results == [] and result.summary.counts["done"] == 300
    lines = (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["outputs"]["text"] for line in lines] == [f"r{i}" for i in range(300)]
    assert not list((tmp_path / "out").glob(".*.tmp"))


class Item(int):
    status = None


def items(count: int) -> Iterator[Item]:
    return map(Item, range(count))


def test_a_chunk_beyond_the_window_waits_until_the_oldest_is_released() -> None:
    feed = ChunkFeed(items(10), size=3, total=10, window=2)
    assert feed.get(0) == [0, 1, 2] and feed.get(1) == [3, 4, 5]
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(feed.get(2)))
    waiting.start()
    waiting.join(0.2)
    assert got == []  # still waiting: two chunks are held
    feed.release(0)
    waiting.join()
    assert got == [[6, 7, 8]]
    assert list(feed.rest()) == [3, 4, 5, 6, 7, 8, 9]


def test_a_cancelled_feed_still_serves_the_chunks_it_read() -> None:
    feed = ChunkFeed(items(5), size=2, total=5, window=1)
    assert feed.get(0) == [0, 1]
    feed.cancel()
    assert feed.get(0) == [0, 1] and feed.get(1) is None


class StopAt:
    """Ctrl-C while the run hands over finished rows: at the `count`-th `aigc_item_finished`."""

    def __init__(self, count: int) -> None:
        self.count, self.seen = count, 0

    @hookimpl
    def aigc_item_finished(self, result: object) -> None:
        self.seen += 1
        if self.seen == self.count:
            raise KeyboardInterrupt


def test_a_stop_half_way_through_a_chunks_hand_over_writes_every_row_once(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"r{i}"}) + "\n" for i in range(200)), encoding="utf-8")
    engine = fake_engine(Plugin(), StopAt(20))
    graph = engine.load_text(PIPELINE.replace("test.lag", "test.echo"))
    result = engine.run(graph, rows, tmp_path / "out", keep_results=False)
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(200))  # none twice (the stopped chunk was held)
    assert [line["status"] for line in lines[:20]] == ["done"] * 20 and lines[-1]["status"] == "not_run"
    assert result.summary.counts["done"] + result.summary.counts["not_run"] == 200
