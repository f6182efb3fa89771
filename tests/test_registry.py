"""The stage registry: built from `aigc_register_stages`, every plugin's mistakes named."""

from __future__ import annotations

from typing import Any

import pytest

from aigc_pipeline import TEXT, Engine, PluginError, Stage, StageItem, hookimpl
from aigc_pipeline.plugin_manager import BUILTIN_PLUGINS, get_plugin_manager
from aigc_pipeline.registry import StageRegistry
from aigc_pipeline.stage import check_stage_class
from aigc_pipeline.testing import EchoStage, FakeStages


class Registers:
    """A plugin whose aigc_register_stages returns (or raises) what it is given."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @hookimpl
    def aigc_register_stages(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def registry_with(*plugins: tuple[object, str]) -> StageRegistry:
    pm = get_plugin_manager()
    for plugin, name in plugins:
        pm.register(plugin, name=name)
    return StageRegistry(pm)


class Other(Stage):
    type_name = "test.other"
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        return batch


def test_builtin_stages_come_from_builtin_plugins() -> None:
    registry = registry_with()
    assert {"template", "filter.text"} <= set(registry.names())
    for _, entry in registry.items():
        assert entry.plugin in BUILTIN_PLUGINS
    template = registry.get("template")
    assert template is not None and template.plugin == "aigc_pipeline.stages.template"


def test_every_registered_stage_class_passes_the_contract() -> None:
    registry = registry_with((FakeStages(), "fakes"))
    assert registry.names() == sorted(registry.names())
    for name, entry in registry.items():
        check_stage_class(entry.cls)
        assert entry.cls.type_name == name
        assert issubclass(entry.cls, Stage)


def test_lookup() -> None:
    registry = registry_with((FakeStages(), "fakes"))
    assert "test.echo" in registry and "test.missing" not in registry and 42 not in registry
    entry = registry.get("test.echo")
    assert entry is not None and entry.cls is EchoStage and entry.plugin == "fakes"
    assert registry.get("test.missing") is None


def test_engine_register_rebuilds_the_registry() -> None:
    engine = Engine()
    assert "test.echo" not in engine.registry
    engine.register(FakeStages(), name="fakes")
    assert "test.echo" in engine.registry


def test_empty_list_is_fine() -> None:
    assert registry_with((Registers([]), "empty")).names() == registry_with().names()


def test_register_hook_that_raises_is_named() -> None:
    with pytest.raises(PluginError) as info:
        registry_with((Registers(KeyError("no config")), "explodes"))
    assert info.value.plugin == "explodes"
    assert "raised in aigc_register_stages" in str(info.value) and "KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("junk", [None, "shout", Other, {"x": Other}])
def test_register_hook_returning_something_other_than_a_list_is_named(junk: Any) -> None:
    with pytest.raises(PluginError, match="plugin 'junky': aigc_register_stages must return a list"):
        registry_with((Registers(junk), "junky"))


@pytest.mark.parametrize("junk", [object(), "shout", Other(Other.Params()), int])
def test_register_hook_returning_a_non_stage_is_named(junk: Any) -> None:
    with pytest.raises(PluginError) as info:
        registry_with((Registers([junk]), "junky"))
    assert info.value.plugin == "junky" and "is not a Stage subclass" in str(info.value)


def test_stage_class_skipped_as_abstract_is_checked_at_registration() -> None:
    class Half(Stage, abstract=True):
        type_name = "test.half"

    with pytest.raises(PluginError) as info:
        registry_with((Registers([Half]), "halfway"))
    assert info.value.plugin == "halfway"
    assert "Half" in str(info.value) and "inputs" in str(info.value)


def test_two_plugins_registering_one_type_name_are_both_named() -> None:
    class Impostor(Other):
        type_name = "test.other"

    with pytest.raises(PluginError) as info:
        registry_with((Registers([Other]), "first"), (Registers([Impostor]), "second"))
    message = str(info.value)
    assert "'test.other'" in message and "'first'" in message and "'second'" in message


def test_a_plugin_cannot_replace_a_builtin_stage_type() -> None:
    class MyTemplate(Other):
        type_name = "template"

    with pytest.raises(PluginError) as info:
        registry_with((Registers([MyTemplate]), "mine"))
    assert info.value.plugin == "mine"
    assert "'template'" in str(info.value) and "aigc_pipeline.stages.template" in str(info.value)


def test_registration_order_is_plugin_registration_order() -> None:
    # Hooks are called last-registered-first, but the registry reads plugins in registration
    # order: the earlier plugin keeps the name and the later one is blamed for the duplicate.
    class Twin(Other):
        type_name = "test.twin"

    class TwinToo(Other):
        type_name = "test.twin"

    with pytest.raises(PluginError) as info:
        registry_with((Registers([Twin]), "early"), (Registers([TwinToo]), "late"))
    assert info.value.plugin == "late" and "already registered by plugin 'early'" in str(info.value)


def test_stage_listing_spells_param_types_in_full() -> None:
    from aigc_pipeline.listing import stage_rows

    rows = {row["type"]: row for row in stage_rows(registry_with((FakeStages(), "fakes")))}
    assert rows["test.echo"]["plugin"] == "fakes"
    assert rows["test.echo"]["params"] == "prefix: str = ''"
    assert "on_fail: Literal['drop', 'flag', 'redact'] = 'drop'" in rows["filter.text"]["params"]
    assert "blocklist: list[str] = []" in rows["filter.text"]["params"]
    assert "min_words: int | None = None" in rows["filter.text"]["params"]
