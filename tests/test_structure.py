"""The package's structure: layers import downwards only, no import circles, functions a screen long.

Imports are read from the source (``ast``), including imports inside functions; imports
under ``if TYPE_CHECKING:`` are left out where they never run, and counted where they still
tie modules together (annotations): no circle even through them. The engine's rooms import
only the rooms below them, and none of them the front door (``engine.model``).
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


def _imports(path: Path, modules: set[str], annotations: bool = False) -> set[str]:
    """Modules of the package that `path` imports (resolved to modules, not names); with `annotations`,
    those under ``if TYPE_CHECKING:`` too."""
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
            if isinstance(child, ast.If) and _is_type_checking(child) and not annotations:
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


def _graph(annotations: bool = False) -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules, annotations) for p in files}


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


ROOMS = ("core", "images", "predict", "formats", "training")  # bottom to top


def test_no_import_circles_even_through_annotations():
    assert _cycles(_graph(annotations=True)) == []


def test_the_engine_is_in_rooms_that_import_downwards_and_never_the_front_door():
    graph = _graph(annotations=True)
    top = sorted(p.stem for p in SRC.joinpath("engine").glob("*.py") if p.name != "__init__.py")
    assert top == ["api", "model", "registry"]  # the front door; everything else lives in a room
    for mod, deps in graph.items():
        parts = mod.split(".")
        if len(parts) < 4 or parts[1] != "engine":
            continue
        room = ROOMS.index(parts[2])
        for dep in deps:
            d = dep.split(".")
            assert not (len(d) == 3 and d[1] == "engine" and d[2] in ("model", "registry", "api")), \
                f"{mod} imports the front door {dep}"
            if len(d) >= 3 and d[1] == "engine" and d[2] in ROOMS:
                assert ROOMS.index(d[2]) <= room, f"{mod} (room {parts[2]}) imports {dep}, a room above it"


def test_the_room_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    fake = {"napari_pix2pix.engine.core.x": {"napari_pix2pix.engine.training.loop"}}
    parts = next(iter(fake)).split(".")
    dep = next(iter(fake.values())).pop().split(".")
    assert ROOMS.index(dep[2]) > ROOMS.index(parts[2])  # what the test above refuses
