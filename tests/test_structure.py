"""The package's structure: layers import downwards only, no import circles, functions a screen long.

Imports are read from the source (``ast``), including imports inside functions; imports
under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_pix2pix"
PKG = "napari_pix2pix"
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports (resolved to modules, not names)."""
    name = _module_name(path)
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()

    def resolve(mod: str) -> str | None:
        while mod and mod not in modules:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == PKG:
                        r = resolve(alias.name)
                        if r:
                            found.add(r)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parent = base[: len(base) - (child.level - 1)]
                    mod = ".".join(parent + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != PKG:
                    continue
                for alias in child.names:  # `from . import x` may name a submodule
                    sub = f"{mod}.{alias.name}"
                    r = sub if sub in modules else resolve(mod)
                    if r:
                        found.add(r)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    graph = _graph()
    assert "napari_pix2pix.engine.model" in graph
    assert _cycles(graph) == []


def test_engine_and_nn_import_neither_the_package_root_nor_napari_or_qt():
    graph = _graph()
    for mod, deps in graph.items():
        if mod.startswith((f"{PKG}.engine", f"{PKG}.nn")):
            assert PKG not in deps, f"{mod} imports the package root"
            assert not any(d.startswith(f"{PKG}._napari") for d in deps), f"{mod} imports the napari side"
        if mod.startswith(f"{PKG}.nn"):
            assert not any(d.startswith(f"{PKG}.engine") for d in deps), f"{mod} (nn) imports the engine"
    for path in [*SRC.joinpath("engine").rglob("*.py"), *SRC.joinpath("nn").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert n.split(".")[0] not in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6",
                                               "magicgui", "superqt"), f"{path.name} imports {n}"


def test_the_structure_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_function_fits_on_a_screen():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
