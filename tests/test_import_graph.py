"""The package's import graph has no cycle.

Every module of ``cdrec`` is parsed with ``ast`` (nothing is imported, so a cycle cannot hide
behind import order). An edge is an explicit import of a module of the package, wherever it
sits: module level, functions, class bodies, ``try`` blocks. Only imports under
``if TYPE_CHECKING:`` are left out, since they never run. ``from X import name`` points at
``X.name`` when that is a module of the package, else at ``X``. A package stands for its
``__init__``.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import cdrec

# graph[module] = {imported module: line of the first import of it}
Graph = dict[str, dict[str, int]]


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> source file of every module under ``root`` (the package's folder);
    a package is named by its ``__init__.py``. Folders count as (namespace) packages too, so
    ``from pkg import sub`` resolves to ``pkg.sub`` whether or not ``sub`` has an ``__init__``."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root)
        if path.is_dir():
            modules.setdefault(".".join((package, *rel.parts)), path / "__init__.py")
        elif path.suffix == ".py":
            parts = rel.with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            modules[".".join((package, *parts))] = path
    modules.setdefault(package, root / "__init__.py")
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run: all but the body of an
    ``if TYPE_CHECKING:`` (its ``else`` runs, so it is kept)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = [node.test, *node.orelse]
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _runtime_imports(child)


def _base_of_relative(module: str, is_package: bool, level: int) -> str:
    """The package a ``from .{level} import`` in ``module`` is relative to."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[:len(parts) - (level - 1)])


def import_graph(root: Path, package: str) -> Graph:
    """Edges between the modules of ``package`` (rooted at folder ``root``), see the module
    docstring for the rules."""
    modules = package_modules(root, package)

    def inside(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    graph: Graph = {}
    for module, path in modules.items():
        if not path.is_file():
            continue  # a namespace folder: no code of its own
        is_package = path.name == "__init__.py"
        edges = graph.setdefault(module, {})

        def add(target: str, line: int, module: str = module, edges: dict = edges) -> None:
            if inside(target) and target != module:
                edges.setdefault(target, line)

        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
                continue
            source = node.module or ""
            if node.level:
                base = _base_of_relative(module, is_package, node.level)
                source = f"{base}.{source}" if source else base
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                add(candidate if candidate in modules else source, node.lineno)
    return graph


def strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, {})):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph.get(node, {})):
            if succ not in within:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is in a cycle but none was found")  # unreachable


def find_cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle through every module that is on a cycle (duplicates dropped), each as
    a path that starts and ends at its smallest name."""
    cycles: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        if len(component) == 1:
            (node,) = component
            if node not in graph.get(node, {}):
                continue
        for node in sorted(component):
            ring = _shortest_cycle(graph, node, component)[:-1]
            first = ring.index(min(ring))
            ring = ring[first:] + ring[:first]
            cycles.add((*ring, ring[0]))
    return [list(c) for c in sorted(cycles)]


def describe(graph: Graph, cycle: list[str], root: Path, package: str) -> str:
    """``a -> b -> a`` with the file and line of each import."""
    modules = package_modules(root, package)
    where = [f"{modules[a].relative_to(root.parent)}:{graph[a][b]}"
             for a, b in pairwise(cycle)]
    return f"{' -> '.join(cycle)}   ({', '.join(where)})"


def test_import_graph_has_no_cycle() -> None:
    root = Path(cdrec.__file__).resolve().parent
    graph = import_graph(root, "cdrec")
    assert any(graph.values()), f"no import between the modules under {root}: extraction broke"
    cycles = find_cycles(graph)
    assert not cycles, (f"{len(cycles)} import cycle(s) in cdrec:\n"
                        + "\n".join(describe(graph, c, root, "cdrec") for c in cycles))


def test_edge_extraction_on_a_tiny_package(tmp_path: Path) -> None:
    """The rules on a hand-written package, so the real test cannot pass vacuously."""
    files = {
        "__init__.py": "VERSION = 1\n",
        "a.py": "from fake import b  # b is a module: edge to fake.b\nVALUE = 1\n",
        "b.py": "def late():\n    from fake.a import VALUE  # inside a function: counts\n"
                "    return VALUE\n",
        "c.py": "import typing\nfrom typing import TYPE_CHECKING\nimport fake.sub.d\n"
                "if TYPE_CHECKING:\n    from fake import a\n"
                "if typing.TYPE_CHECKING:\n    import fake.b\n"
                "else:\n    from fake import VERSION  # a name, not a module: edge to fake\n",
        "sub/__init__.py": "from .d import helper\n",
        "sub/d.py": "from ..b import late\n\ndef helper():\n    return late\n",
        "loop.py": "import fake.loop\n",
    }
    root = tmp_path / "fake"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    graph = import_graph(root, "fake")
    edges = {(a, b) for a, targets in graph.items() for b in targets}
    assert edges == {
        ("fake.a", "fake.b"),
        ("fake.b", "fake.a"),                 # function-level import
        ("fake.c", "fake.sub.d"),             # no implicit edge to the parent fake.sub
        ("fake.c", "fake"),                   # from the else of an if TYPE_CHECKING
        ("fake.sub", "fake.sub.d"),           # relative, level 1, in a package
        ("fake.sub.d", "fake.b"),             # relative, level 2, in a module
    }, "fake.c's TYPE_CHECKING imports must be ignored; a self-import is no edge"
    assert find_cycles(graph) == [["fake.a", "fake.b", "fake.a"]]
    assert describe(graph, ["fake.a", "fake.b", "fake.a"], root, "fake") == (
        "fake.a -> fake.b -> fake.a   (fake/a.py:1, fake/b.py:2)")


def test_a_new_scenario_module_is_registered_by_its_presence(tmp_path, monkeypatch):
    """Adding a scenario is one module: the package imports every scenario module it holds."""
    import sys

    import cdrec.scenarios

    module = tmp_path / "toy_protocol.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n"
        "from cdrec.scenarios.registry import register_scenario\n\n"
        "@register_scenario\n@dataclass(frozen=True)\nclass Toy:\n"
        "    size: int = 3\n    name: ClassVar[str] = 'toy_protocol'\n")
    monkeypatch.setattr(cdrec.scenarios, "__path__", [*cdrec.scenarios.__path__, str(tmp_path)])
    from cdrec.scenarios import registry

    monkeypatch.setattr(registry, "_SCENARIOS", dict(registry._SCENARIOS))
    try:
        cdrec.scenarios.import_scenario_modules()
        assert "toy_protocol" in cdrec.scenarios.scenario_names()
        assert cdrec.scenarios.build_scenario("toy_protocol", {"size": 5}).size == 5
    finally:
        sys.modules.pop("cdrec.scenarios.toy_protocol", None)
