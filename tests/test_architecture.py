"""The import floors of docs/architecture.md, checked from the source.

Every ``import``/``from ... import`` of a ``neuralign`` module anywhere in a file (also
inside functions: a deferred import is still a dependency) is an edge of the import graph;
only imports under ``if TYPE_CHECKING:`` are left out (they never run). A module may import
only modules of its own floor or of lower floors, and the graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "neuralign"

#: Floor of each top-level module or subpackage of ``neuralign`` (docs/architecture.md).
#: A dotted key overrides its package's floor for that module (longest prefix wins).
FLOORS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "device": 0,
    "ranges": 0,
    "distributed": 0,
    "io": 0,
    "io.checkpoint": 1,  # builds models through the registry
    "checks": 1,  # checks models against datasets
    "data": 1,
    "models": 1,
    "optim": 1,
    "perm": 2,
    "training": 2,
    "attacks": 2,
    "alignment": 3,
    "curves": 3,
    "paths": 4,
    "pamopt": 5,
    "merge": 5,
    "experiment": 6,
    "cli": 7,
    "__main__": 7,
    "": 8,  # the package root: the public API re-exports every floor
}

#: Package ``__init__`` files whose floor differs from their modules' (they re-export a
#: module of a higher floor): ``neuralign.io`` re-exports ``io.checkpoint``.
PACKAGE_FLOORS: dict[str, int] = {"io": 1}


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: dict[str, Path], here: str) -> set[str]:
    """The ``neuralign`` modules imported anywhere in ``tree`` (names relative to the root)."""
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        if name == "neuralign":
            return ""
        if not name.startswith("neuralign."):
            return None
        name = name[len("neuralign.") :]
        while name and name not in modules:  # `from neuralign.x import y` with y a name
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (m := resolve(alias.name)) is not None:
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            # neuralign uses absolute imports only (a relative one is reported as a floor
            # violation of its own by test_no_relative_imports)
            base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = resolve(
                    full if full.startswith("neuralign.") and full[10:] in modules else base
                )
                if node.level == 0 and target is not None:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(here)
    return found


def floor_of(module: str) -> int:
    """The floor of ``module`` (``""`` is the package root), by the longest FLOORS prefix."""
    if module in PACKAGE_FLOORS:
        return PACKAGE_FLOORS[module]
    if module == "":
        return FLOORS[""]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return FLOORS[key]
    raise KeyError(module)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imports(ast.parse(path.read_text(), str(path)), modules, name)
        for name, path in modules.items()
    }


GRAPH = _graph()


def test_every_module_has_a_floor() -> None:
    """A new subpackage must be placed on a floor (here and in docs/architecture.md)."""
    missing = []
    for m in GRAPH:
        try:
            floor_of(m)
        except KeyError:
            missing.append(m)
    assert missing == [], f"modules without a floor in FLOORS: {missing}"


def _upward() -> set[tuple[str, str]]:
    return {(m, d) for m, deps in GRAPH.items() for d in deps if floor_of(d) > floor_of(m)}


def test_no_upward_import() -> None:
    upward = [
        f"neuralign.{m} (floor {floor_of(m)}) imports neuralign.{d} (floor {floor_of(d)})"
        for m, d in sorted(_upward())
    ]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (c := dfs(d)) is not None:
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := dfs(n)) is not None:
            return c
    return None


def test_no_import_cycle() -> None:
    """Package ``__init__`` files re-export their modules, so an edge ``pkg.a -> pkg``
    (importing one's own package root) counts: it is a cycle through the ``__init__``."""
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(f"neuralign.{m}" for m in cycle or [])


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a.x"}, "a.x": {"a"}}, True),
    ],
)
def test_cycle_finder_finds_cycles(graph: dict[str, set[str]], has_cycle: bool) -> None:
    """The checker itself can fail: it reports a cycle exactly when there is one."""
    assert (find_cycle(graph) is not None) == has_cycle


def test_import_parser_sees_deferred_and_skips_type_checking_imports() -> None:
    modules = {"data": SRC, "paths": SRC, "paths.bn": SRC, "curves": SRC}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from neuralign.curves import Curve\n"
        "def f():\n    from neuralign.paths.bn import recompute_bn\n"
        "import neuralign.data\n"
    )
    assert _imports(tree, modules, "x") == {"paths.bn", "data"}


def test_no_relative_imports() -> None:
    """Absolute imports only, so that the graph above is complete."""
    relative = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert relative == []
