"""Defect 9: a stage's `timeout:` and its output ports' types.

A plugin-style stage that hangs forever on one row of 40: the run ends, that row fails "timed out
after N s", the others are done. A stage that writes an int to a text port fails the row, naming
the stage and the port.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import HANG_PLUGIN

from aigc_pipeline import hookimpl
from aigc_pipeline.content import AUDIO, TEXT
from aigc_pipeline.stage import Stage, StageItem
from aigc_pipeline.testing import SlowStage, fake_engine, run_text
from aigc_pipeline.time_limits import PLUGIN_TIMEOUT_S, stage_timeout

HANGING = """
name: hang
inputs: {text: str}
stages:
  prompt: {uses: template, with: {template: "say {{ text }}"}}
  slow: {uses: test.hang_on, inputs: {text: prompt.text}, with: {seconds_per_item: 0}, batch_size: 4, timeout: 1}
  after: {uses: test.echo, inputs: {text: slow.text}}
outputs: {text: after.text}
"""


@pytest.fixture
def hang_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    (tmp_path / "hang_plugin_limits.py").write_text(HANG_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import hang_plugin_limits

    yield hang_plugin_limits
    sys.modules.pop("hang_plugin_limits", None)


def test_a_row_that_hangs_forever_fails_and_the_run_goes_on(tmp_path: Path, hang_plugin: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGC_TEST_HANG", "r17")  # unset after the test: the abandoned call then returns
    engine = fake_engine(hang_plugin)
    result = run_text(HANGING, [{"text": f"r{i}"} for i in range(40)], tmp_path / "out", engine)
    assert result.summary.ok
    statuses = [r.status for r in result.results]
    assert statuses[17] == "failed" and statuses.count("done") == 39
    assert result.results[17].error == {"stage": "slow", "reason": "timed out after 1 s"}
    assert result.summary.stages["after"].done == 39


def test_plugin_stages_get_a_default_limit_and_built_in_ones_none(hang_plugin: Any) -> None:
    assert stage_timeout(hang_plugin.HangOn, None) == PLUGIN_TIMEOUT_S
    assert stage_timeout(hang_plugin.HangOn, 5) == 5
    assert stage_timeout(SlowStage, None) is None


class IntOnText(Stage):
    type_name = "test.int_on_text"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["text"] = 7 if item.inputs["text"] == "bad" else item.inputs["text"]
        return batch


class PathOnAudio(Stage):
    type_name = "test.path_on_audio"
    inputs = {"text": TEXT}
    outputs = {"audio": AUDIO}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            item.outputs["audio"] = "/etc/passwd"
        return batch


class Wrong:
    @hookimpl
    def aigc_register_stages(self) -> list[type[Stage]]:
        return [IntOnText, PathOnAudio]


def test_a_value_of_the_wrong_type_fails_the_row_naming_stage_and_port(tmp_path: Path) -> None:
    pipeline = ("name: t\ninputs: {text: str}\nstages:\n  w: {uses: test.int_on_text, inputs: {text: inputs.text}}\n"
                "  next: {uses: test.echo, inputs: {text: w.text}}\noutputs: {text: next.text}\n")
    result = run_text(pipeline, [{"text": "ok"}, {"text": "bad"}], tmp_path / "out", fake_engine(Wrong()))
    assert [r.status for r in result.results] == ["done", "failed"]
    reason = (result.results[1].error or {})["reason"]
    assert "stage 'w' set output port 'text' (text) to int 7" in reason


def test_a_path_on_a_file_port_fails_the_row(tmp_path: Path) -> None:
    pipeline = ("name: t\ninputs: {text: str}\nstages:\n  w: {uses: test.path_on_audio, inputs: {text: inputs.text}}\n"
                "outputs: {audio: w.audio}\n")
    result = run_text(pipeline, [{"text": "a"}], tmp_path / "out", fake_engine(Wrong()))
    error = result.results[0].error or {}
    assert result.results[0].status == "failed" and "port 'audio' (audio) to str" in error["reason"]
