"""The Stage contract, pinned: what `__init_subclass__` accepts and rejects, items, seeds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import aigc_pipeline.stage as stage_module
from aigc_pipeline import ANY, CPU, RECORD, TEXT, DeviceNeeds, Engine, Stage, StageItem
from aigc_pipeline.plugin_manager import BUILTIN_PLUGINS
from aigc_pipeline.stage import NoParams, check_stage_class, item_seed


def process(self: Stage, batch: list[StageItem]) -> list[StageItem]:
    return batch


def define(**attributes: Any) -> type[Stage]:
    """Define a Stage subclass named `Probe` with a valid contract, changed by `attributes`."""
    body: dict[str, Any] = {"type_name": "test.probe", "inputs": {"text": TEXT}, "outputs": {"text": TEXT},
                            "process": process, "__module__": __name__}
    body.update(attributes)
    for name in [name for name, value in body.items() if value is MISSING]:
        del body[name]
    return type("Probe", (Stage,), body)


MISSING = object()


def contract_error(**attributes: Any) -> str:
    with pytest.raises(TypeError) as info:
        define(**attributes)
    message = str(info.value)
    assert message.startswith(f"stage class {__name__}.Probe")  # names the class
    return message


def test_a_valid_stage_class_is_accepted() -> None:
    cls = define(Params=NoParams, variadic_inputs=ANY, default_batch_size=8, description="ok")
    check_stage_class(cls)
    assert cls.type_name == "test.probe"


@pytest.mark.parametrize("missing", ["type_name", "inputs", "outputs"])
def test_required_attributes(missing: str) -> None:
    assert f"must define {missing}" in contract_error(**{missing: MISSING})


def test_params_default_to_no_params() -> None:
    cls = define()
    assert cls.Params is NoParams
    with pytest.raises(ValidationError):
        NoParams.model_validate({"unexpected": 1})


@pytest.mark.parametrize("name", ["llm.text", "tts", "filter.text", "brand_voice.v2", "a.b.c"])
def test_good_type_names(name: str) -> None:
    assert define(type_name=name).type_name == name


@pytest.mark.parametrize("name", ["LLM.text", "llm text", "2llm", "", "llm..text", "llm.", ".llm", "llm-text",
                                  "_llm", 42, None])
def test_bad_type_names(name: Any) -> None:
    assert "type_name" in contract_error(type_name=name)


class SomeParams(BaseModel):
    size: int = 1


@pytest.mark.parametrize("params", [dict, SomeParams(), "SomeParams", None])
def test_params_must_be_a_pydantic_model_class(params: Any) -> None:
    assert "Params must be a pydantic BaseModel subclass" in contract_error(Params=params)


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
@pytest.mark.parametrize("ports", [{"text": str}, {"text": "text"}, ["text"], {1: TEXT}, None])
def test_ports_must_map_names_to_content_types(kind: str, ports: Any) -> None:
    assert f"{kind} must map port names to ContentType values" in contract_error(**{kind: ports})


def test_ports_may_be_empty() -> None:
    assert define(inputs={}, outputs={"value": RECORD}).inputs == {}


def test_variadic_inputs_must_be_a_content_type() -> None:
    assert "variadic_inputs" in contract_error(variadic_inputs="text")


@pytest.mark.parametrize("size", [0, -1, "4", 2.0])
def test_default_batch_size_must_be_a_positive_int(size: Any) -> None:
    assert "default_batch_size" in contract_error(default_batch_size=size)


def test_process_must_be_implemented() -> None:
    assert "process(batch) must be implemented" in contract_error(process=MISSING)


def test_every_problem_is_reported_at_once() -> None:
    message = contract_error(type_name="Bad Name", Params=dict, outputs=["text"], process=MISSING)
    for part in ("type_name", "Params", "outputs", "process"):
        assert part in message


def test_abstract_classes_skip_the_check_and_their_subclasses_do_not() -> None:
    class Base(Stage, abstract=True):
        inputs = {"text": TEXT}
        outputs = {"text": TEXT}

        def process(self, batch: list[StageItem]) -> list[StageItem]:
            return batch

    class Concrete(Base):
        type_name = "test.concrete"

    check_stage_class(Concrete)
    with pytest.raises(TypeError, match="must define type_name"):
        class Forgot(Base):
            pass
    with pytest.raises(TypeError, match="must define type_name"):
        check_stage_class(Base)


def test_contract_members_in_the_docstring_exist_on_stage() -> None:
    """The contract is written once, in stage.py's docstring; this keeps it true to the code."""
    documented = set(re.findall(r"^- `(\w+)", stage_module.__doc__ or "", re.MULTILINE))
    assert documented == {"type_name", "Params", "inputs", "needs", "variables", "preflight", "__init__", "load",
                          "process", "reduces", "unload", "model_identity", "cacheable", "run_wide", "version"}
    for name in documented:
        assert hasattr(Stage, name) or name in Stage.__annotations__


def test_defaults_of_the_base_class() -> None:
    cls = define()
    params = NoParams()
    stage = cls(params)
    assert stage.params is params
    assert cls.version == "1"
    assert cls.needs(params) == DeviceNeeds(kind="cpu", memory_bytes=0, dtype=None)
    assert cls.variables(params) == set()
    assert cls.variadic_inputs is None and cls.default_batch_size == 1
    stage.load(CPU)  # default: nothing to load or release
    stage.unload()


def test_device_needs_is_a_frozen_value() -> None:
    needs = DeviceNeeds(kind="gpu", memory_bytes=2**30, dtype="float16")
    with pytest.raises(AttributeError):
        needs.kind = "cpu"  # type: ignore[misc]
    assert needs == DeviceNeeds("gpu", 2**30, "float16")


def test_every_builtin_stage_class_passes_the_contract() -> None:
    registry = Engine().registry
    assert registry.names(), "no built-in stage registered"
    for name, entry in registry.items():
        assert entry.plugin in BUILTIN_PLUGINS
        check_stage_class(entry.cls)
        assert entry.cls.type_name == name
        assert entry.cls.__module__.startswith("aigc_pipeline.stages.")


# --- StageItem --------------------------------------------------------------------------------


def item(item_id: int = 0, **inputs: Any) -> StageItem:
    return StageItem(item_id, inputs, (1234, "copy"))


def test_a_new_item_is_ok_and_empty() -> None:
    fresh = item(3, text="hi")
    assert (fresh.id, fresh.inputs, fresh.outputs) == (3, {"text": "hi"}, {})
    assert fresh.verdict is None and fresh.reason is None and fresh.flags == []


def test_fail_drop_and_flag() -> None:
    failed, dropped, flagged = item(0), item(1), item(2)
    failed.fail("bad json from model")
    dropped.drop("blocked word")
    flagged.flag("long")
    flagged.flag("shouty")
    assert (failed.verdict, failed.reason) == ("failed", "bad json from model")
    assert (dropped.verdict, dropped.reason) == ("filtered", "blocked word")
    assert (flagged.verdict, flagged.reason, flagged.flags) == (None, None, ["long", "shouty"])


def test_flags_of_one_item_never_leak_into_another() -> None:
    first, second = item(0), item(1)
    first.flag("only mine")
    assert second.flags == [] and item(2).flags == []


def test_items_take_no_new_attributes() -> None:
    with pytest.raises(AttributeError):
        item().extra = 1  # type: ignore[attr-defined]


# --- seeds ------------------------------------------------------------------------------------


def test_item_seed_is_pinned() -> None:
    # Resumed runs and other executors must derive the same seeds: never change these values.
    assert item_seed(1234, 0, "copy") == 1183438297716095044
    assert item_seed(0, 0, "") == 5032951268506741409


def test_item_seed_differs_per_item_stage_and_run() -> None:
    seeds = {item_seed(run, item_id, stage) for run in (0, 1) for item_id in range(500) for stage in ("a", "b", "ab")}
    assert len(seeds) == 2 * 500 * 3
    assert item_seed(1, 12, "3") != item_seed(1, 1, "23")  # fields are separated, not concatenated


def test_item_seed_fits_63_bits() -> None:
    for item_id in range(200):
        assert 0 <= item_seed(99, item_id, "stage") < 2**63


def test_item_seed_property_uses_run_seed_item_id_and_stage() -> None:
    assert item(7).seed == item_seed(1234, 7, "copy")
    assert item(7).seed == item(7).seed != item(8).seed
