"""The plugin manager: load order, lazy entry points, explicit modules, safe observer hooks.

Installed plugins are simulated in-process by writing a module and a `*.dist-info` folder
(METADATA + entry_points.txt) into a folder put on sys.path: that is all importlib.metadata
reads, so to the engine they are installed distributions. (test_third_party_plugin.py builds and
installs real ones with pip.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from aigc_pipeline import Engine, PipelineFileError, PluginError, hookimpl
from aigc_pipeline.plugin_manager import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    get_plugin_manager,
    installed_plugins,
    load_entry_points,
    notify,
)
from aigc_pipeline.testing import FakeStages, RecordingPlugin, run_text

FAKE_PREFIX = "aigcfake_"

STAGE_MODULE = """
from aigc_pipeline import TEXT, Stage, hookimpl

class {cls}(Stage):
    type_name = "{type_name}"
    inputs = {{"text": TEXT}}
    outputs = {{"text": TEXT}}

    def process(self, batch):
        for item in batch:
            item.outputs["text"] = "{type_name}:" + item.inputs["text"]
        return batch

@hookimpl
def aigc_register_stages():
    return [{cls}]
"""


class FakeSite:
    """A folder on sys.path where tests 'install' distributions with aigc_pipeline entry points."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def module(self, name: str, source: str) -> None:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")

    def dist(self, dist: str, entry_points: dict[str, str], version: str = "1.0") -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")

    def stage_plugin(self, name: str, type_name: str) -> str:
        """Install distribution `aigcfake-NAME` with entry point NAME -> module aigcfake_NAME."""
        module = FAKE_PREFIX + name
        self.module(module, STAGE_MODULE.format(cls=name.title().replace("_", ""), type_name=type_name))
        self.dist(f"aigcfake-{name}", {name: module})
        return module


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield FakeSite(root)
    for name in [name for name in sys.modules if name.startswith(FAKE_PREFIX)]:
        del sys.modules[name]


# --- load order and lazy loading -------------------------------------------------------------


def test_entry_point_group_and_hook_marker_use_the_project_name() -> None:
    assert ENTRY_POINT_GROUP == "aigc_pipeline"
    assert hookimpl.project_name == "aigc_pipeline"


def test_builtin_plugins_register_first_in_their_fixed_order() -> None:
    pm = get_plugin_manager()
    names = [name for name, _ in pm.list_name_plugin()]
    assert names == list(BUILTIN_PLUGINS)
    assert "aigc_pipeline.stages.template" in BUILTIN_PLUGINS


def test_installed_plugins_are_listed_without_being_imported(site: FakeSite) -> None:
    module = site.stage_plugin("lister", "lister.stage")
    installed = installed_plugins()
    assert installed["lister"].value == module
    assert installed["lister"].dist is not None and installed["lister"].dist.name == "aigcfake-lister"
    assert module not in sys.modules


def test_default_manager_imports_no_entry_point(site: FakeSite) -> None:
    module = site.stage_plugin("idle", "idle.stage")
    pm = get_plugin_manager()
    assert module not in sys.modules
    assert not pm.has_plugin("idle")


def test_all_entry_points_load_when_asked(site: FakeSite) -> None:
    module = site.stage_plugin("eager", "eager.stage")
    pm = get_plugin_manager(None)
    assert pm.has_plugin("eager") and module in sys.modules
    assert [name for name, _ in pm.list_name_plugin()][: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)


def test_named_entry_points_load_only_those(site: FakeSite) -> None:
    wanted = site.stage_plugin("wanted", "wanted.stage")
    other = site.stage_plugin("other", "other.stage")
    pm = get_plugin_manager(["wanted"])
    assert pm.has_plugin("wanted") and wanted in sys.modules
    assert not pm.has_plugin("other") and other not in sys.modules


def test_loading_an_entry_point_twice_registers_it_once(site: FakeSite) -> None:
    site.stage_plugin("twice", "twice.stage")
    pm = get_plugin_manager(["twice"])
    load_entry_points(pm, ["twice"])
    load_entry_points(pm, None)
    assert [name for name, _ in pm.list_name_plugin()].count("twice") == 1


def test_unknown_plugin_name_lists_the_installed_ones(site: FakeSite) -> None:
    site.stage_plugin("alpha", "alpha.stage")
    site.stage_plugin("beta", "beta.stage")
    with pytest.raises(PluginError) as info:
        get_plugin_manager(["gamma"])
    assert info.value.plugin == "gamma"
    message = str(info.value)
    assert "plugin 'gamma'" in message and "not installed" in message
    assert "alpha" in message and "beta" in message and "aigc plugins" in message


# --- plugins that break are named ------------------------------------------------------------


def test_plugin_that_raises_on_import_is_named_with_its_distribution(site: FakeSite) -> None:
    site.module(FAKE_PREFIX + "broken", "raise RuntimeError('kaboom at import')\n")
    site.dist("aigcfake-broken-dist", {"broken": FAKE_PREFIX + "broken"})
    with pytest.raises(PluginError) as info:
        get_plugin_manager(["broken"])
    message = str(info.value)
    assert info.value.plugin == "broken"
    assert "plugin 'broken'" in message and "aigcfake-broken-dist" in message
    assert FAKE_PREFIX + "broken" in message and "RuntimeError: kaboom at import" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_plugin_with_an_unknown_aigc_hook_is_named(site: FakeSite) -> None:
    site.module(FAKE_PREFIX + "typo", """
        from aigc_pipeline import hookimpl

        @hookimpl
        def aigc_run_strat(run):
            pass
    """)
    site.dist("aigcfake-typo", {"typo": FAKE_PREFIX + "typo"})
    with pytest.raises(PluginError) as info:
        get_plugin_manager(["typo"])
    assert info.value.plugin == "typo"
    assert "aigc_run_strat" in str(info.value)


def test_explicit_module_is_registered_under_its_module_path(site: FakeSite) -> None:
    site.module(FAKE_PREFIX + "explicit", STAGE_MODULE.format(cls="Explicit", type_name="explicit.stage"))
    pm = get_plugin_manager(explicit=[FAKE_PREFIX + "explicit"])
    assert pm.has_plugin(FAKE_PREFIX + "explicit")
    assert "explicit.stage" in Engine(plugins=[FAKE_PREFIX + "explicit"]).registry


def test_explicit_module_that_fails_to_import_is_named(site: FakeSite) -> None:
    with pytest.raises(PluginError) as info:
        get_plugin_manager(explicit=[FAKE_PREFIX + "missing.module"])
    assert info.value.plugin == FAKE_PREFIX + "missing.module"
    assert "failed to import" in str(info.value) and "ModuleNotFoundError" in str(info.value)


def test_explicit_module_that_is_also_an_entry_point_registers_once(site: FakeSite) -> None:
    module = site.stage_plugin("both", "both.stage")
    pm = get_plugin_manager(None, explicit=[module])
    plugins = [plugin for _, plugin in pm.list_name_plugin()]
    assert plugins.count(sys.modules[module]) == 1
    # and the other way round: first explicit, then every entry point
    engine = Engine(plugins=[module])
    load_entry_points(engine.pm, None)
    assert "both.stage" in engine.registry


# --- pipeline files name plugins, never modules ----------------------------------------------

BUILTIN_PIPELINE = """\
name: p
inputs: {product: str}
stages:
  brief: {uses: template, with: {template: "{{ product }}"}}
"""


def test_pipeline_with_builtin_stages_imports_no_entry_point(site: FakeSite) -> None:
    module = site.stage_plugin("unused", "unused.stage")
    engine = Engine()
    engine.load_text(BUILTIN_PIPELINE)
    assert module not in sys.modules and not engine.pm.has_plugin("unused")


def test_pipeline_plugins_list_loads_only_the_named_plugins(site: FakeSite) -> None:
    site.stage_plugin("named", "named.stage")
    other = site.stage_plugin("unnamed", "unnamed.stage")
    engine = Engine()
    engine.load_text(BUILTIN_PIPELINE + "plugins: [named]\n")
    assert engine.pm.has_plugin("named")
    assert other not in sys.modules


def test_pipeline_using_an_unknown_stage_type_looks_through_installed_plugins(site: FakeSite) -> None:
    site.stage_plugin("found", "found.stage")
    graph = Engine().load_text(BUILTIN_PIPELINE + "  more: {uses: found.stage, inputs: {text: brief.text}}\n")
    assert graph.order == ["brief", "more"]


def test_pipeline_file_cannot_import_a_module_path(site: FakeSite, tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    site.module(FAKE_PREFIX + "sneaky", f"open({str(marker)!r}, 'w').write('ran')\n")
    # PluginError today; a located PipelineFileError once the engine checks names first: both refuse.
    with pytest.raises((PluginError, PipelineFileError)) as info:
        Engine().load_text(BUILTIN_PIPELINE + f"plugins: [{FAKE_PREFIX}sneaky]\n")
    assert f"plugin '{FAKE_PREFIX}sneaky'" in str(info.value) and "not installed" in str(info.value)
    assert not marker.exists() and FAKE_PREFIX + "sneaky" not in sys.modules


def test_cli_plugin_option_imports_a_module_file(tmp_path: Path) -> None:
    """`--plugin module.path` loads a module the user points at; without it the stage is unknown."""
    package = tmp_path / "mods" / "aigcfake_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text(STAGE_MODULE.format(cls="CliStage", type_name="cli.stage"))
    (tmp_path / "p.yaml").write_text(BUILTIN_PIPELINE + "  more: {uses: cli.stage, inputs: {text: brief.text}}\n")
    (tmp_path / "rows.jsonl").write_text('{"product": "kettle"}\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "mods"), "NO_COLOR": "1", "COLUMNS": "250"}
    aigc = [sys.executable, "-m", "aigc_pipeline.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*aigc, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    refused = run("validate", "p.yaml")
    assert refused.returncode == 2 and "cli.stage" in refused.stderr
    ran = run("run", "p.yaml", "-i", "rows.jsonl", "-o", "out", "-q", "--plugin", "aigcfake_pkg.stage")
    assert ran.returncode == 0, ran.stderr
    assert '"more.text": "cli.stage:kettle"' in (tmp_path / "out" / "results.jsonl").read_text()
    listed = run("plugins", "--plugin", "aigcfake_pkg.stage")
    assert any("aigcfake_pkg.stage" in line and "explicit (--plugin)" in line for line in listed.stdout.splitlines())


# --- observer hooks never fail a run; wrapper hooks wrap every batch ---------------------------

ECHO_PIPELINE = """\
name: echoes
inputs: {text: str}
stages:
  echo: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: ">"}, batch_size: 2}
outputs: {text: echo.text}
"""
ROWS = [{"text": f"row{i}"} for i in range(5)]


def fake_engine(*plugins: tuple[object, str]) -> Engine:
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    for plugin, name in plugins:
        engine.register(plugin, name=name)
    return engine


class Grumpy:
    """Implements one observer hook (taking none of its arguments) that always raises."""

    def __init__(self, hook: str) -> None:
        def grumble() -> None:
            raise RuntimeError(f"grumpy in {hook}")

        setattr(self, hook, hookimpl(grumble))


@pytest.mark.parametrize("hook", ["aigc_run_start", "aigc_stage_progress", "aigc_item_finished", "aigc_run_finish"])
def test_observer_that_raises_does_not_fail_the_run(hook: str, tmp_path: Path) -> None:
    recorder = RecordingPlugin()
    engine = fake_engine((Grumpy(hook), "grumpy"), (recorder, "recorder"))
    result = run_text(ECHO_PIPELINE, ROWS, tmp_path / "out", engine=engine)
    assert result.summary.ok
    assert result.summary.counts["done"] == len(ROWS)
    assert [r.outputs for r in result.results] == [{"text": f">row{i}"} for i in range(5)]
    warnings = [w for w in result.summary.warnings if f"plugin 'grumpy' raised in {hook}" in w]
    assert warnings and f"RuntimeError: grumpy in {hook}" in warnings[0]
    assert recorder.summary is not None and len(recorder.finished) == len(ROWS)  # others still called


def test_notify_reports_to_stderr_without_a_callback(capsys: pytest.CaptureFixture[str]) -> None:
    pm = get_plugin_manager()
    pm.register(Grumpy("aigc_stage_progress"), name="grumpy")
    notify(pm, "aigc_stage_progress", stage_id="s", done=1, total=2)
    assert "plugin 'grumpy' raised in aigc_stage_progress" in capsys.readouterr().err


def test_notify_calls_each_observer_with_the_arguments_it_names() -> None:
    calls: list[Any] = []

    class Partial:
        @hookimpl
        def aigc_stage_progress(self, done: int) -> None:  # a subset of the arguments
            calls.append(done)

    pm = get_plugin_manager()
    pm.register(Partial(), name="partial")
    notify(pm, "aigc_stage_progress", stage_id="s", done=3, total=4)
    assert calls == [3]


def test_wrapper_hook_runs_around_every_stage_batch(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    class Marker:
        @hookimpl(wrapper=True)
        def aigc_process_batch(self, stage_id: str, batch: list[Any]) -> Any:
            items = yield
            calls.append((stage_id, len(batch)))
            for item in items:
                item.outputs["text"] += "?"
            return items

    result = run_text(ECHO_PIPELINE, ROWS, tmp_path / "out", engine=fake_engine((Marker(), "marker")))
    assert sorted(calls) == [("echo", 1), ("echo", 2), ("echo", 2)]
    assert [r.outputs["text"] for r in result.results] == [f">row{i}?" for i in range(5)]


def test_wrapper_hook_sees_a_stage_error_and_the_item_fails(tmp_path: Path) -> None:
    seen: list[str] = []

    class Watcher:
        @hookimpl(wrapper=True)
        def aigc_process_batch(self, stage_id: str) -> Any:
            try:
                return (yield)
            except ValueError as exc:
                seen.append(str(exc))
                raise

    pipeline = ECHO_PIPELINE.replace("test.echo", "test.raise_on").replace('prefix: ">"', "needle: row3")
    result = run_text(pipeline, ROWS, tmp_path / "out", engine=fake_engine((Watcher(), "watcher")))
    assert [r.status for r in result.results] == ["done", "done", "done", "failed", "done"]
    assert any("row 3" in message for message in seen)


def test_plugin_manager_is_a_pluggy_manager_with_every_spec() -> None:
    pm = get_plugin_manager()
    assert isinstance(pm, pluggy.PluginManager)
    assert pm.project_name == "aigc_pipeline"
    assert pm.hook.aigc_register_stages.spec is not None


class _WrappingObserver:
    """A new-style wrapper and an old-style hookwrapper around an observer hook, plus a plain one."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl(wrapper=True)
    def aigc_run_start(self, run: object) -> Any:
        self.events.append("wrapper before")
        results = yield
        self.events.append(f"wrapper after {results}")
        return results


class _OldWrapper:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    @hookimpl(hookwrapper=True)
    def aigc_run_start(self, run: object) -> Any:
        self.events.append("hookwrapper before")
        yield
        self.events.append("hookwrapper after")


class _Plain:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    @hookimpl
    def aigc_run_start(self, run: object) -> str:
        self.events.append("plain")
        return "seen"


def test_notify_runs_wrapper_implementations_around_the_others() -> None:
    from aigc_pipeline.plugin_manager import notify

    wrapper = _WrappingObserver()
    pm = get_plugin_manager()
    for name, plugin in (("w", wrapper), ("old", _OldWrapper(wrapper.events)), ("plain", _Plain(wrapper.events))):
        pm.register(plugin, name=name)
    warnings: list[str] = []
    notify(pm, "aigc_run_start", warnings.append, run=None)
    assert warnings == []
    assert sorted(wrapper.events[:2]) == ["hookwrapper before", "wrapper before"]
    assert wrapper.events[2] == "plain"
    assert sorted(wrapper.events[3:]) == ["hookwrapper after", "wrapper after ['seen']"]


def test_executor_backends_register_through_a_hook_and_a_typo_lists_them() -> None:
    from aigc_pipeline.executors import executor_backends, make_backend
    from aigc_pipeline.executors.local import LocalExecutor

    pm = get_plugin_manager()
    assert {"local", "ray"} <= set(executor_backends(pm))
    assert isinstance(make_backend(pm, "local"), LocalExecutor)

    class Inline:
        description = "inline"

        def execute(self, *args: Any) -> None: ...

    class Provider:
        @hookimpl
        def aigc_register_executors(self) -> dict[str, Any]:
            return {"inline": lambda address=None: Inline()}

    pm.register(Provider(), name="inline-provider")
    assert make_backend(pm, "inline").description == "inline"
    with pytest.raises(ValueError, match=r"unknown executor 'inlne': choose inline, local or ray.*'inline'"):
        make_backend(pm, "inlne")
