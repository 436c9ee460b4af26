"""Imports point down only: no cycle between mmsb's modules, and the kernels are the bottom layer.

Every module of the package is parsed (not imported) and every import between mmsb modules
counts, at module level and inside functions alike (a lazy import is still a dependency);
only imports under ``if TYPE_CHECKING:`` are left out. A package's ``__init__`` stands for
the package.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mmsb"

# what a kernel may import: the kernels themselves, the shared layout and numba's compat
# shim, numpy, numba, llvmlite and the standard library
KERNEL_OK_MMSB = ("mmsb.kernels", "mmsb._layout", "mmsb._compat")
KERNEL_OK_THIRD = ("numpy", "numba", "llvmlite")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:  # the else branch does run
                    walk_stmt(stmt)
            else:
                walk(child)

    def walk_stmt(stmt: ast.AST) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.append(stmt)
        else:
            walk(stmt)

    walk(tree)
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules (any package, absolute names) that an import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        # `from pkg import mod` loads pkg.mod when that is a module; otherwise it reads a name of pkg
        out.add(sub if sub in modules else base)
    return out


def _graph() -> dict[str, set[str]]:
    """mmsb module -> every module (mmsb or not) it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        deps: set[str] = set()
        for node in _imports(tree):
            deps |= _targets(name, path, node, modules)
        deps.discard(name)
        graph[name] = deps
    return graph


def _internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between mmsb modules only; an import of ``mmsb.a.b`` also loads ``mmsb.a``."""
    names = set(graph)
    out: dict[str, set[str]] = {}
    for name, deps in graph.items():
        edges = set()
        for dep in deps:
            if dep in names:
                edges.add(dep)
            elif dep.startswith("mmsb.") or dep == "mmsb":
                # an unknown submodule (a name read from a package): the package it names
                while dep and dep not in names:
                    dep = dep.rpartition(".")[0]
                if dep:
                    edges.add(dep)
        edges.discard(name)
        out[name] = edges
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)

    cycles = []
    for comp in comps:
        inside = set(comp)
        start = comp[0]
        # shortest way back to start, breadth first, staying in the component
        prev: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & inside):
                    if w == start:
                        found = v
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        back = []
        while v is not None and v != start:
            back.append(v)
            v = prev.get(v)
        path += reversed(back)
        path.append(start)
        cycles.append(path)
    return cycles


def test_parser_sees_lazy_and_relative_imports() -> None:
    src = (
        "from typing import TYPE_CHECKING\n"
        "from . import config\n"
        "from .log.memory import MemoryLog\n"
        "if TYPE_CHECKING:\n"
        "    from .state import State\n"
        "def f():\n"
        "    from .pool import start\n"
        "    import mmsb.gpu\n"
    )
    modules = {n: PKG / "x.py" for n in ("mmsb", "mmsb.config", "mmsb.log", "mmsb.log.memory", "mmsb.state",
                                         "mmsb.pool", "mmsb.gpu", "mmsb.durability")}
    deps: set[str] = set()
    for node in _imports(ast.parse(src)):
        deps |= _targets("mmsb.durability", PKG / "durability.py", node, modules)
    assert deps == {"typing", "mmsb.config", "mmsb.log.memory", "mmsb.pool", "mmsb.gpu"}
    # a package's __init__ resolves relative imports against the package itself
    node = ast.parse("from .arena import DeviceArena").body[0]
    assert _targets("mmsb.gpu", PKG / "gpu" / "__init__.py", node, {**modules, "mmsb.gpu.arena": PKG}) == {
        "mmsb.gpu.arena"}


def test_cycle_finder() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = _internal(_graph())
    cycles = _cycles(graph)
    lines = [" -> ".join(c) for c in cycles]
    for line in lines:
        print(line)
    assert not cycles, "import cycles between mmsb modules:\n" + "\n".join(lines)


def _below(graph: dict[str, set[str]], top: str) -> set[str]:
    """Every module ``top`` imports, directly or not."""
    seen: set[str] = set()
    todo = [top]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_nothing_below_imports_mmsb_itself() -> None:
    """``mmsb/__init__`` imports the package's API; a module it reaches imports the module it
    needs, never ``mmsb`` (the CLI and the profile sit above the package, and may)."""
    graph = _internal(_graph())
    bad = sorted(name for name in _below(graph, "mmsb") if "mmsb" in graph[name])
    assert not bad, f"modules below mmsb/__init__ importing the package mmsb (import the module itself): {bad}"


def _kernel_violations() -> list[str]:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for name, deps in sorted(_graph().items()):
        if not (name == "mmsb.kernels" or name.startswith("mmsb.kernels.")):
            continue
        for dep in sorted(deps):
            top = dep.partition(".")[0]
            if top == "mmsb":
                if any(dep == ok or dep.startswith(ok + ".") for ok in KERNEL_OK_MMSB):
                    continue
            elif top in KERNEL_OK_THIRD or top in stdlib or top == "__future__":
                continue
            bad.append(f"{name} imports {dep}")
    return bad


def test_kernels_are_the_bottom_layer() -> None:
    bad = _kernel_violations()
    for line in bad:
        print(line)
    assert not bad, "kernels import beyond mmsb.kernels, _layout, _compat, numpy, numba, llvmlite, stdlib:\n" + (
        "\n".join(bad))


if __name__ == "__main__":  # pragma: no cover - a quick look: python tests/test_imports.py
    for cycle in _cycles(_internal(_graph())):
        print(" -> ".join(cycle))
    for line in _kernel_violations():
        print(line)
