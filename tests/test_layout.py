"""The package's layout as rules a test can hold: no import cycle, light contracts,
and code that runs in the worker never reaching for the parent's side."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpubench"

# Run in the worker process (or by the engines it starts): must not import the parent's side.
CHILD_SIDE = (
    "gpubench.capacity",
    "gpubench.data",
    "gpubench.engines",
    "gpubench.models",
    "gpubench.tether",
    "gpubench.trackers",
    "gpubench.worker",
)
PARENT_SIDE = (
    "gpubench.baseline",
    "gpubench.cli",
    "gpubench.collection_checks",
    "gpubench.plugin",
    "gpubench.progress",
    "gpubench.pytest_benchmark_export",
    "gpubench.report",
    "gpubench.runner",
    "gpubench.session",
    "gpubench.storage",
    "gpubench.summary",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (a lazy import inside a function counts: it
    runs), except under ``if TYPE_CHECKING:`` (it never runs)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            pending.append(child)


def imported_modules(name: str, path: Path) -> set[str]:
    """The gpubench modules ``name`` imports: ``from a.b import c`` is the module a.b.c
    when there is one, else a.b."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_the_package() -> None:
    assert {"gpubench.case", "gpubench.result", "gpubench.engines.loop"} <= set(GRAPH)
    assert "gpubench.models.spec" in GRAPH["gpubench.case"]
    assert "gpubench.models.external" in GRAPH["gpubench.models"]  # a lazy import counts


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_gpubench_modules() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def test_worker_side_code_does_not_import_the_parents_side() -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if within(name, CHILD_SIDE)
        for target in targets
        if within(target, PARENT_SIDE)
    )
    assert not wrong, wrong


@pytest.mark.parametrize("module", ["gpubench.case", "gpubench.result", "gpubench.profiles"])
def test_contracts_import_without_torch_or_pytest(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'pytest', '_pytest') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing {module} loaded {done.stdout.strip()}"
