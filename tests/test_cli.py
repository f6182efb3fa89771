"""The `aigc` command on pipeline files: validate (broken fixtures, --set, warnings), graph, schema,
and that validating imports neither heavy libraries nor plugins the pipeline does not need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BROKEN_DIR, ROOT, SAMPLE, BrokenCase
from typer.testing import CliRunner, Result

from aigc_pipeline.cli import app

MAX_SCREEN_LINES = 25


def aigc(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_validate_rejects_broken_file(broken: BrokenCase) -> None:
    result = aigc("validate", broken.path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert 2 <= len(lines) <= MAX_SCREEN_LINES, result.stderr
    assert lines[0].startswith(f"error: {broken.path} is invalid")
    where = f"  {broken.path}:{broken.line}:"
    if "column" in broken.optional:
        where += f"{broken.optional['column']}:"
    hint = broken.optional.get("hint", "")
    assert any(line.startswith(where) and broken.expect in line and hint in line for line in lines), result.stderr


def test_validate_ok() -> None:
    result = aigc("validate", SAMPLE)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: {SAMPLE} — pipeline 'product_copy', 3 stages: brief → copy → tagline"
    assert result.stderr == ""


def test_validate_prints_warnings_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "unused.yaml"
    path.write_text(textwrap.dedent("""\
        name: unused
        inputs: {product: str, spare: int}
        stages:
          brief: {uses: template, with: {template: "{{ product }}"}}
          idle: {uses: template, with: {template: "{{ product }}!"}}
        outputs: {copy: brief.text}
        """))
    result = aigc("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok:")
    assert f"{path}:5:3: warning: stage 'idle': its outputs are not used" in result.stderr
    assert f"{path}:2:24: warning: column 'spare' is declared but never used" in result.stderr


def test_problems_fit_on_one_screen(tmp_path: Path) -> None:
    stages = "".join(f"  s{i}: {{uses: filter.text, inputs: {{text: inputs.nope}}}}\n" for i in range(40))
    path = tmp_path / "many.yaml"
    path.write_text(f"name: many\ninputs: {{text: str}}\nstages:\n{stages}")
    result = aigc("validate", path)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) <= MAX_SCREEN_LINES and lines[0].startswith(f"error: {path} is invalid (40 problems)")
    assert lines[-1] == "  ... and 20 more"


# ---------------------------------------------------------------- --set


def test_set_override_is_validated_like_the_file() -> None:
    result = aigc("validate", SAMPLE, "--set", "copy.max_words=lots")
    assert result.exit_code == 2
    assert "  --set copy.max_words=lots: stage 'copy': max_words: Input should be a valid integer" in result.stderr


def test_set_override_to_unknown_stage_suggests_one() -> None:
    result = aigc("validate", SAMPLE, "--set", "cpy.max_words=3")
    assert result.exit_code == 2
    assert "  --set cpy.max_words=3: no stage 'cpy'; did you mean 'copy'?" in result.stderr


def test_valid_set_override_passes() -> None:
    result = aigc("validate", SAMPLE, "--set", "copy.max_words=10", "--set", "copy.on_fail=flag")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- graph


def test_graph_prints_mermaid_by_default() -> None:
    result = aigc("graph", SAMPLE)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart LR\n")
    for stage_id in ("brief", "copy", "tagline"):
        assert f'st_{stage_id}["{stage_id}<br/>' in result.stdout
    assert "st_brief -->|text → text| st_copy" in result.stdout
    declared = re.findall(r"^\s+(\S+?)[\[(]", result.stdout, re.M)
    assert declared and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node) for node in declared)


def test_graph_prints_dot_with_f_dot() -> None:
    result = aigc("graph", SAMPLE, "-f", "dot")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('digraph "product_copy" {')
    for stage_id in ("brief", "copy", "tagline"):
        assert f'"{stage_id}" [shape=box' in result.stdout
    assert '"brief" -> "copy"' in result.stdout and '"copy" -> "tagline"' in result.stdout


def test_graph_rejects_unknown_format_and_broken_files() -> None:
    assert aigc("graph", SAMPLE, "-f", "png").exit_code == 2
    result = aigc("graph", BROKEN_DIR / "cycle_two_stages.yaml")
    assert result.exit_code == 2 and "cycle: a -> b -> a" in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = aigc("schema")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _schema_errors(schema: dict[str, Any], value: Any, node: dict[str, Any], at: str = "") -> list[str]:
    """A small JSON Schema checker for the keywords pydantic emits (jsonschema is not a dependency)."""
    if "$ref" in node:
        return _schema_errors(schema, value, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], at)
    if "anyOf" in node:
        results = [_schema_errors(schema, value, option, at) for option in node["anyOf"]]
        return [] if any(not r for r in results) else [f"{at}: matches no anyOf option: {min(results, key=len)}"]
    types: dict[str, Any] = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
             "boolean": bool, "null": type(None)}
    if "type" in node and (not isinstance(value, types[node["type"]]) or
                           (isinstance(value, bool) and node["type"] in ("integer", "number"))):
        return [f"{at}: not {node['type']}: {value!r}"]
    errors = [f"{at}: {value!r} is not {node['const']!r}" for _ in [0] if "const" in node and value != node["const"]]
    errors += [f"{at}: {value!r} not in enum" for _ in [0] if "enum" in node and value not in node["enum"]]
    if isinstance(value, str):
        errors += [f"{at}: does not match pattern" for _ in [0] if not re.search(node.get("pattern", ""), value)]
    if isinstance(value, (int, float)) and value < node.get("minimum", value):
        errors.append(f"{at}: below minimum")
    if isinstance(value, list):
        items = node.get("items", {})
        errors += [e for i, item in enumerate(value) for e in _schema_errors(schema, item, items, f"{at}.{i}")]
    if isinstance(value, dict):
        errors += _object_errors(schema, value, node, at)
    return errors


def _object_errors(schema: dict[str, Any], value: dict[str, Any], node: dict[str, Any], at: str) -> list[str]:
    errors = [f"{at}: missing '{key}'" for key in node.get("required", []) if key not in value]
    if len(value) < node.get("minProperties", 0):
        errors.append(f"{at}: fewer than {node['minProperties']} keys")
    for key, item in value.items():
        if key in node.get("properties", {}):
            errors += _schema_errors(schema, item, node["properties"][key], f"{at}.{key}")
            continue
        patterns = [sub for pattern, sub in node.get("patternProperties", {}).items() if re.search(pattern, key)]
        extra = node.get("additionalProperties", True)
        if patterns:
            errors += [e for sub in patterns for e in _schema_errors(schema, item, sub, f"{at}.{key}")]
        elif extra is False:
            errors.append(f"{at}: unexpected key '{key}'")
        elif isinstance(extra, dict):
            errors += _schema_errors(schema, item, extra, f"{at}.{key}")
    return errors


def test_schema_is_a_json_schema_with_every_stage_type(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "stages"}
    variants = schema["$defs"]["StageSpec"]["anyOf"]
    by_type = {v["properties"]["uses"]["const"]: v for v in variants}
    assert {"template", "filter.text"} <= set(by_type)
    assert set(by_type["filter.text"]["properties"]["with"]["properties"]) >= {"max_words", "blocklist", "rules"}
    assert by_type["template"]["properties"]["with"]["required"] == ["template"]
    assert all(v["additionalProperties"] is False and v["properties"]["with"]["additionalProperties"] is False
               for v in variants)


def test_schema_accepts_the_sample_pipeline(schema: dict[str, Any]) -> None:
    assert _schema_errors(schema, yaml.safe_load(SAMPLE.read_text()), schema) == []


@pytest.mark.parametrize(
    ("name", "error"),
    [("unknown_param", "unexpected key 'max_word'"), ("unknown_top_level_key", "unexpected key 'stagse'"),
     ("stage_id_uppercase", "unexpected key 'Brief'"), ("bad_on_fail", "not in enum"),
     ("batch_size_zero", "matches no anyOf")],
)
def test_schema_rejects_broken_pipelines(schema: dict[str, Any], name: str, error: str) -> None:
    errors = _schema_errors(schema, yaml.safe_load((BROKEN_DIR / f"{name}.yaml").read_text()), schema)
    assert any(error in e for e in errors), errors


def test_schema_with_jsonschema(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    assert list(validator.iter_errors(yaml.safe_load(SAMPLE.read_text()))) == []
    assert list(validator.iter_errors(yaml.safe_load((BROKEN_DIR / "unknown_param.yaml").read_text())))


# ---------------------------------------------------------------- in a fresh interpreter

PROBE = """\
import json, sys
from typer.testing import CliRunner
from aigc_pipeline.cli import app
result = CliRunner().invoke(app, ["validate", sys.argv[1]])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "diffusers"))
print(json.dumps({"exit": result.exit_code, "heavy": heavy, "plugin": "fake_aigc_plugin" in sys.modules}))
"""


@pytest.fixture
def fake_installed_plugin(tmp_path: Path) -> dict[str, str]:
    """An installed plugin (entry point `fake`) whose module must only be imported when a pipeline needs it."""
    (tmp_path / "fake_aigc_plugin.py").write_text("")
    dist = tmp_path / "fake_aigc_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-aigc-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aigc_pipeline]\nfake = fake_aigc_plugin\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def _probe(path: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_validate_imports_no_model_library_and_no_unneeded_plugin(fake_installed_plugin: dict[str, str]) -> None:
    assert _probe(SAMPLE, fake_installed_plugin) == {"exit": 0, "heavy": [], "plugin": False}


def test_validate_imports_a_plugin_the_pipeline_names(fake_installed_plugin: dict[str, str], tmp_path: Path) -> None:
    # The control for the test above: the probe does see a plugin import when one happens.
    path = tmp_path / "named.yaml"
    path.write_text(SAMPLE.read_text() + "plugins: [fake]\n")
    assert _probe(path, fake_installed_plugin) == {"exit": 0, "heavy": [], "plugin": True}


def test_console_script_exits_2_on_a_broken_file() -> None:
    command = [sys.executable, "-m", "aigc_pipeline.cli", "validate", str(BROKEN_DIR / "unknown_param.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "unknown_param.yaml:15:7: stage 'copy': max_word: unknown key 'max_word'; did you mean" in done.stderr
