"""The size rules of the project (small focused modules, short functions), checked on the source.

No module in memjax/ over 500 lines, no function (its whole ``def``, decorators and docstring
included) over 80 lines.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "memjax"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

SOURCES = sorted(PACKAGE.rglob("*.py"))


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield node.name, node.lineno, node.end_lineno - start + 1


def test_the_package_is_found():
    assert len(SOURCES) > 50 and (PACKAGE / "__init__.py") in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    rel = str(path.relative_to(PACKAGE))
    assert len(text.splitlines()) <= MAX_MODULE_LINES, \
        f"memjax/{rel}: {len(text.splitlines())} lines; split it (at most {MAX_MODULE_LINES})"
    long = [f"{name} (line {line}): {n} lines" for name, line, n in _functions(ast.parse(text))
            if n > MAX_FUNCTION_LINES]
    assert not long, f"memjax/{rel}: functions over {MAX_FUNCTION_LINES} lines: {long}"
