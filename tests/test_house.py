"""The house rules that keep the code readable (docs/detector.md, "Layout"): no function over ~50 lines and no
module over ~400, counted with ``ast`` over the project's own packages (docstrings included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("retinanet", "workflow", "analysis", "benchmarks")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 430


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def function_lengths(path: Path) -> dict[str, int]:
    """Every function and method of one module (``Class.method`` for methods) -> its line count."""
    out = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{prefix}{child.name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return out


def test_function_lengths_are_counted_with_methods_and_nested_functions(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    def g():\n        return 1\n    return g\n\n\nclass C:\n    def m(self):\n"
                      "        pass\n")
    assert function_lengths(module) == {"f": 4, "f.g": 2, "C.m": 2}


def test_no_function_is_much_longer_than_50_lines():
    assert len(_modules()) > 50
    long = [f"{p.relative_to(ROOT)}:{name} ({n} lines)" for p in _modules()
            for name, n in function_lengths(p).items() if n > MAX_FUNCTION_LINES]
    assert not long, f"split these into named steps: {long}"


def test_no_module_is_much_longer_than_400_lines():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"split these by concept: {long}"


def test_no_module_puts_the_checkout_on_sys_path():
    """The rules run analysis modules with ``python -m`` and ``retinanet`` is installed, so none of them needs to put
    the checkout on ``sys.path``. One exception: the plan tool reaches the checkout's ``workflow`` package, which is
    not installed (retinanet/tools/plan.py, ``workflow_modules``)."""
    touching = {str(p.relative_to(ROOT)) for p in _modules() if "sys.path.insert" in p.read_text()}
    assert touching == {"retinanet/tools/plan.py"}
