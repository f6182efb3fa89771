"""hookspecs.py is documentation: every hook in one place, bodies are docstrings, names `aigc_`."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import aigc_pipeline.hookspecs as hookspecs
from aigc_pipeline.plugin_manager import get_plugin_manager

SOURCE = Path(hookspecs.__file__).read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
FUNCTIONS = [node for node in TREE.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
FIRSTRESULT = {"aigc_place_stage", "aigc_process_batch"}


def decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target)


def test_every_module_level_function_is_a_hookspec() -> None:
    assert FUNCTIONS
    for function in FUNCTIONS:
        assert [decorator_name(d) for d in function.decorator_list] == ["hookspec"], function.name


def test_hook_names_start_with_aigc() -> None:
    for function in FUNCTIONS:
        assert function.name.startswith("aigc_"), function.name


def test_hookspec_bodies_are_a_single_docstring() -> None:
    for function in FUNCTIONS:
        assert len(function.body) == 1, f"{function.name} has code besides its docstring"
        (statement,) = function.body
        assert isinstance(statement, ast.Expr), function.name
        assert isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str), function.name
        assert len(statement.value.value.strip()) > 20, f"{function.name}: document the hook"


def test_the_module_defines_nothing_but_hookspecs() -> None:
    allowed = (ast.Import, ast.ImportFrom, ast.If, ast.FunctionDef, ast.Assign)
    for node in TREE.body[1:]:  # after the module docstring
        assert isinstance(node, allowed), ast.dump(node)[:80]
        if isinstance(node, ast.If):  # only `if TYPE_CHECKING:` imports
            assert ast.unparse(node.test) == "TYPE_CHECKING"
            assert all(isinstance(inner, (ast.Import, ast.ImportFrom)) for inner in node.body)
        if isinstance(node, ast.Assign):
            assert [ast.unparse(t) for t in node.targets] == ["hookspec"]


def test_plugin_manager_knows_every_hookspec_with_its_options() -> None:
    pm = get_plugin_manager()
    names = {function.name for function in FUNCTIONS}
    for name in names:
        caller = getattr(pm.hook, name)
        assert caller.spec is not None, name
        assert bool(caller.spec.opts.get("firstresult")) == (name in FIRSTRESULT), name
    spec_names = {name for name in dir(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).spec}
    assert spec_names == names


def test_hookspec_functions_are_documented_at_runtime() -> None:
    for function in FUNCTIONS:
        assert inspect.getdoc(getattr(hookspecs, function.name))
