"""The package's import graph has no cycle.

Every ``import`` / ``from ... import`` statement in ``mmft/`` counts, wherever it stands: at module level, inside a
function (the lazy imports that keep start-up fast), or under ``if TYPE_CHECKING:``. A function-level import hides a
circle from Python at import time, not from the reader: two modules that reach into each other are one module split
in the wrong place, and the shared piece belongs in a third module both can import. Nodes are mmft's modules and its
packages' ``__init__`` (``mmft.families``, ``mmft.testing``, ...); ``from package import name`` is an edge to the
submodule when ``name`` is one, otherwise to the package. Imports by string (``importlib.import_module``, used by the
family and fixture discovery) are not statements and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmft

PACKAGE = Path(mmft.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports, over every import statement of every ``.py`` under
    ``root`` (a package directory)."""
    files = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in files}

    def resolve(importer: str, node: ast.ImportFrom) -> str | None:
        if node.level == 0:
            return node.module
        is_package = files[importer].name == "__init__.py"
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        if node.level > 1:
            base = base[: -(node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    for importer, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = resolve(importer, node)
                if module is None:
                    continue
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    targets.append(submodule if submodule in files else module)
            for target in targets:
                if target.split(".")[0] != top:
                    continue
                # `import mmft.a.b` names mmft.a.b; a dotted name that is not a module is an attribute path.
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != importer:
                    graph[importer].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a closed path
    ``[a, b, ..., a]`` so the message shows which imports to cut."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Shortest way back to the start inside the component (breadth-first), a concrete circle of imports.
        parents: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            next_frontier = []
            for node in frontier:
                for succ in sorted(graph[node] & members):
                    if succ == start:
                        found = node
                        break
                    if succ not in parents:
                        parents[succ] = node
                        next_frontier.append(succ)
                if found is not None:
                    break
            frontier = next_frontier
        path = [start]
        node = found
        while node != start:
            path.append(node)
            node = parents[node]
        cycles.append([start] + path[1:][::-1] + [start])
    return cycles


def test_mmft_import_graph_has_no_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and "mmft.families" in graph and "mmft.testing.llava" in graph  # it read the package
    cycles = find_cycles(graph)
    shown = "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles in mmft (move the shared piece to a module both sides can import):\n{shown}"


def test_a_function_level_import_cycle_is_found(tmp_path):
    # The check above must fail when a circle is added back, including one made only of imports inside functions,
    # relative imports and a package's __init__.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (package / "b.py").write_text("def g():\n    from pkg.sub import h\n    return h\n")
    (package / "sub" / "__init__.py").write_text("from .. import a\n\nh = 1\n")
    (package / "c.py").write_text("import os\nfrom . import a\n")  # imports into the circle, is not part of it
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub"} and graph["pkg.sub"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.a"]]
    (package / "sub" / "__init__.py").write_text("h = 1\n")
    assert find_cycles(import_graph(package)) == []
