"""Size limits that keep each module and function readable in one sitting.

A module past 400 lines, or a function past 60, asks to be split by responsibility; benchmarks and
tests are outside the rule. The files are those of the package as the build maps it.
"""

from __future__ import annotations

import ast

import pytest

from ..typecheck import ROOT, modules

pytestmark = pytest.mark.unit

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _long_functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    return [
        (node.name, node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_module_is_past_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_past_the_limit() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for path in modules().values()
        for name, line, n in _long_functions(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert long == []


def test_the_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert [(name, n) for name, _, n in _long_functions(ast.parse(f"def f():\n{body}\n"))] == [("f", 61)]
