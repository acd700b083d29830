"""The code's shape (issue 14): no import cycle among auditor's modules, no module over about 400
lines. Imports are read with ast, not by importing: a module's top-level imports (module body, class
bodies, ``try``/``if`` at top level; not ``if TYPE_CHECKING:``) run when it is imported and can form a
cycle; imports inside functions run later and cannot, so they are kept apart and allowed."""
from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
TOO_LONG_FOR_NOW: set[str] = set()  # none: every module holds to the bound


def module_names(root: Path, package: str = "auditor") -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(tree: ast.Module) -> tuple[list[ast.AST], list[ast.AST]]:
    """(imports run at import time, imports inside functions)."""
    top: list[ast.AST] = []
    inner: list[ast.AST] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if deferred else top).append(child)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            elif not _is_type_checking(child):
                visit(child, deferred)
    visit(tree, False)
    return top, inner


def _targets(node: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The auditor modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[:len(here) - node.level + 1]
        base = ".".join(here + ([base] if base else []))
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.add(sub if sub in known else base)  # a submodule, or a name from the module (package) itself
    return out & known


def import_graph(root: Path, package: str = "auditor") -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> modules its top-level imports load, module -> those its functions' imports load)."""
    files = module_names(root, package)
    known = set(files)
    top: dict[str, set[str]] = {}
    inner: dict[str, set[str]] = {}
    for name, path in files.items():
        now, later = _import_nodes(ast.parse(path.read_text(), str(path)))
        package_init = path.name == "__init__.py"
        top[name] = set().union(*(_targets(n, name, package_init, known) for n in now)) - {name}
        inner[name] = set().union(*(_targets(n, name, package_init, known) for n in later)) - {name}
    return top, inner


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def test_no_import_cycle_among_auditor_modules():
    top, inner = import_graph(ROOT)
    assert len(top) > 90 and top["auditor.rules.verdicts"] >= {"auditor.estimate", "auditor.rules.rule_file"}
    assert "auditor.tracking" in inner["auditor"]      # auditor/__init__.py loads the tracker on first use
    assert cycles(top) == []


def test_the_cycle_check_finds_cycles_and_tells_deferred_imports_apart(tmp_path):
    """The check itself: a cycle through a package's __init__, a relative import and a plain import
    is found; the same imports inside a function or under TYPE_CHECKING are not a cycle."""
    pkg = tmp_path / "auditor"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from auditor.sub.a import thing\n")
    (pkg / "sub" / "a.py").write_text("from . import b\nthing = 1\n")
    (pkg / "sub" / "b.py").write_text("try:\n    from auditor.sub import thing\nexcept ImportError:\n    pass\n")
    (pkg / "c.py").write_text("import auditor.d\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import auditor.c\n"
                              "def later():\n    import auditor.c\n")
    top, inner = import_graph(tmp_path)
    assert top == {"auditor": set(), "auditor.sub": {"auditor.sub.a"}, "auditor.sub.a": {"auditor.sub.b"},
                   "auditor.sub.b": {"auditor.sub"}, "auditor.c": {"auditor.d"}, "auditor.d": set()}
    assert inner["auditor.d"] == {"auditor.c"}
    assert cycles(top) == [["auditor.sub", "auditor.sub.a", "auditor.sub.b"]]
    top["auditor.d"] |= inner["auditor.d"]
    assert cycles(top) == [["auditor.c", "auditor.d"], ["auditor.sub", "auditor.sub.a", "auditor.sub.b"]]


def test_no_module_over_about_400_lines():
    lines = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in (ROOT / "auditor").rglob("*.py")}
    assert len(lines) > 90
    assert {path: n for path, n in lines.items() if n > MAX_LINES and path not in TOO_LONG_FOR_NOW} == {}
