"""The shape of the package: modules and functions small enough to read, and no import cycle
(the layering itself is import-linter's contract in pyproject.toml, run by scripts/test)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "zstream"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # decorators included


def test_no_module_is_over_500_lines_and_no_function_over_60() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(PACKAGE.parent)
        if (lines := len(source.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (length := (node.end_lineno or first) - first + 1) > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "\n".join(too_long)


def test_no_import_cycle_not_even_through_imports_inside_functions() -> None:
    graph = grimp.build_graph("zstream")  # every import statement, wherever it is
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "\n".join(cycles)
