"""The architecture, checked as CI checks it: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml),
ruff, no import cycle between two modules of ``rewarm/`` (over grimp's graph, which counts every import statement:
inside functions and under ``TYPE_CHECKING`` too), no function over 60 lines, and a root that holds only what every
capability shares."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rewarm"
BIN = Path(sys.executable).parent
MAX_FUNCTION_LINES = 60
ROOT_MODULES = {"__init__", "__main__", "cli", "config", "errors", "resources", "config_doc", "logs"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """``cmd`` in the checkout's root, with the checkout first on the path (not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- import-linter and ruff


def test_import_contracts_are_kept() -> None:
    lint_imports = BIN / "lint-imports"
    assert lint_imports.is_file(), f"{lint_imports} is missing: install the dev extra (pip install -e '.[dev]')"
    proc = _run([str(lint_imports)])
    assert proc.returncode == 0, f"lint-imports found a broken contract:\n{proc.stdout}\n{proc.stderr}"
    assert "0 broken" in proc.stdout


def test_ruff_passes() -> None:
    proc = _run([sys.executable, "-m", "ruff", "check", "rewarm", "tests", "benchmarks"])
    assert proc.returncode == 0, f"ruff check failed:\n{proc.stdout}\n{proc.stderr}"


# ---------------------------------------------------------------- import cycles


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The graph's strongly connected components (Tarjan), each sorted; singletons included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            components.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return components


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One cycle ``[m0, m1, ..., m0]`` for each group of modules that import each other (a module importing
    itself included); empty when the graph has no cycle."""
    cycles = []
    for component in strongly_connected(graph):
        first = component[0]
        following = [m for m in sorted(graph.find_modules_directly_imported_by(first)) if m in component]
        if not following:
            continue  # a singleton that does not import itself
        if following[0] == first:
            cycles.append([first, first])
            continue
        back = graph.find_shortest_chain(importer=following[0], imported=first)
        assert back is not None
        cycles.append([first, *back])
    return cycles


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """``a (l.12: from ... import ...) -> b (l.3: ...) -> a``: each import with its line."""
    parts = []
    for importer, imported in zip(cycle, cycle[1:], strict=False):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = "; ".join(f"l.{d['line_number']}: {d['line_contents']}" for d in details)
        parts.append(f"{importer} ({where})" if where else importer)
    return " -> ".join([*parts, cycle[-1]])


def _graph(edges: list[tuple[str, str]]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for importer, imported in edges:
        graph.add_import(importer=importer, imported=imported)
    return graph


def test_cycle_finder_finds_a_planted_circle_and_nothing_else() -> None:
    circle = [("pkg.a", "pkg.b"), ("pkg.b", "pkg.c"), ("pkg.c", "pkg.a")]
    tree = [("pkg.c", "pkg.d"), ("pkg.e", "pkg.d"), ("pkg.a", "pkg.e")]
    assert import_cycles(_graph(tree)) == []
    assert import_cycles(_graph(circle + tree)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    two = import_cycles(_graph([("pkg.x", "pkg.y"), ("pkg.y", "pkg.x"), ("pkg.p", "pkg.q"), ("pkg.q", "pkg.p")]))
    assert two == [["pkg.p", "pkg.q", "pkg.p"], ["pkg.x", "pkg.y", "pkg.x"]]
    assert import_cycles(_graph([("pkg.s", "pkg.s")])) == [["pkg.s", "pkg.s"]]


def test_cycle_finder_counts_imports_in_functions_and_under_type_checking(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cycle_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "lazy.py").write_text("def f():\n    from cycle_probe_pkg import typed\n\n    return typed\n")
    (pkg / "typed.py").write_text(textwrap.dedent("""\
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from cycle_probe_pkg.lazy import f
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cycle_probe_pkg", include_external_packages=False, cache_dir=None)
    assert import_cycles(graph) == [["cycle_probe_pkg.lazy", "cycle_probe_pkg.typed", "cycle_probe_pkg.lazy"]]


def test_no_import_cycle_between_two_modules_of_rewarm() -> None:
    import rewarm

    assert Path(rewarm.__file__).resolve().parent == PACKAGE, f"rewarm is imported from {rewarm.__file__}, " \
        f"not this checkout: run with PYTHONPATH={ROOT}"
    graph = grimp.build_graph("rewarm", include_external_packages=False, cache_dir=None)
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in PACKAGE.rglob("*.py")}
    assert graph.modules == files  # every file of rewarm/ is in the graph
    cycles = import_cycles(graph)
    assert not cycles, "import cycles in rewarm/ (move the shared piece into its own module):\n" + "\n".join(
        describe(graph, c) for c in cycles)


# ---------------------------------------------------------------- small functions, a small root


def function_lengths(source: str, filename: str) -> list[tuple[int, str]]:
    """(lines, ``file:line name``) of every function and method in ``source``: from its ``def`` line to its last
    line, docstring and nested functions included, decorators not counted."""
    return [(node.end_lineno - node.lineno + 1, f"{filename}:{node.lineno} {node.name}")
            for node in ast.walk(ast.parse(source, filename=filename))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None]


def test_function_length_counts_from_def_to_last_line() -> None:
    source = '@staticmethod\ndef f():\n    """Doc."""\n\n    def g():\n        return 2\n\n    return g()\n'
    assert function_lengths(source, "probe.py") == [(7, "probe.py:2 f"), (2, "probe.py:5 g")]


def test_no_function_in_rewarm_is_over_60_lines() -> None:
    lengths = [entry for path in sorted(PACKAGE.rglob("*.py"))
               for entry in function_lengths(path.read_text(), str(path.relative_to(ROOT)))]
    assert len(lengths) > 500  # the whole package was read
    long = sorted(((n, name) for n, name in lengths if n > MAX_FUNCTION_LINES), reverse=True)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(f"{n:4d} {name}" for n, name in long)


def test_root_of_rewarm_holds_only_what_every_capability_shares() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= ROOT_MODULES, f"modules at the root of rewarm/ that belong in a capability folder: " \
        f"{sorted(modules - ROOT_MODULES)}"
    assert {"__init__", "cli", "config", "errors"} <= modules


def test_every_folder_of_rewarm_is_a_package_the_contracts_see() -> None:
    """A folder of modules without ``__init__.py`` is a namespace package: grimp and import-linter skip it."""
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders without __init__.py (invisible to the import contracts): {missing}"
