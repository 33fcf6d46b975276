"""The package's layout as rules a test can hold.

Three sides, one per folder (docs/architecture.md):

- ``gpubench.contracts``: what both sides of the process boundary agree on; imports
  only itself, never torch or pytest;
- ``gpubench.worker``: what runs in a case's own process; imports itself and the
  contracts, never the parent's side;
- everything else: the parent's side (pytest, the session, the runner, the gate, the
  report), which may import anything.

Each rule is checked twice: on the import statements (any depth, ``TYPE_CHECKING``
included, so the error names the offending line's module) and the way it fails in
practice, by importing every module of a side in a fresh interpreter and reading
``sys.modules``, package ``__init__``s included. Plus: no import cycle, counting
``TYPE_CHECKING`` imports, and no function over :data:`MAX_FUNCTION_LINES` lines.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gpubench"
PACKAGE_ROOT = ("gpubench", "gpubench.version")  # loaded by every import of the package
CONTRACTS = "gpubench.contracts"
WORKER = "gpubench.worker"
MAX_FUNCTION_LINES = 70


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def side(name: str) -> str:
    """``root``, ``contracts``, ``worker`` or ``parent``."""
    if name in PACKAGE_ROOT:
        return "root"
    for folder, label in ((CONTRACTS, "contracts"), (WORKER, "worker")):
        if name == folder or name.startswith(folder + "."):
            return label
    return "parent"


ALLOWED = {  # side -> the sides it may import
    "contracts": {"contracts", "root"},
    "worker": {"worker", "contracts", "root"},
}


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth: a lazy import inside a function runs when
    the function does, and an ``if TYPE_CHECKING:`` one still ties the modules together."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


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
    assert {"gpubench.contracts.case", "gpubench.worker.engines.loop"} <= set(GRAPH)
    assert "gpubench.contracts.catalog.spec" in GRAPH["gpubench.contracts.case"]
    # a lazy import counts
    assert "gpubench.worker.models.external" in GRAPH["gpubench.worker.models"]
    # so does a TYPE_CHECKING one
    assert "gpubench.declaration" in GRAPH["gpubench"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_gpubench_modules() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("importer", sorted(ALLOWED))
def test_each_side_imports_only_what_it_may(importer: str) -> None:
    wrong = sorted(
        f"{name} ({importer}) imports {target} ({side(target)})"
        for name, targets in GRAPH.items()
        if side(name) == importer
        for target in targets
        if side(target) not in ALLOWED[importer]
    )
    assert not wrong, wrong


# Imports each module in a child forked from an interpreter that has loaded no gpubench
# module (torch is imported first, once, so that a hundred children cost seconds), and
# prints, per module, the gpubench modules and heavy packages the child then holds.
_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys
    import torch  # noqa: F401  (shared by the children; checked apart for the contracts)
    for name in sys.argv[1:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            before = set(sys.modules)
            importlib.import_module(name)
            loaded = sorted(m for m in sys.modules if m == "gpubench" or m.startswith("gpubench."))
            heavy = sorted(m for m in ("torch", "pytest", "_pytest") if m in sys.modules
                           and (m != "torch" or m not in before))
            os.write(write, json.dumps([name, loaded, heavy]).encode())
            os._exit(0)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 1 << 16):
            chunks.append(chunk)
        os.close(read)
        os.waitpid(pid, 0)
        print(b"".join(chunks).decode())
    """
)


@pytest.fixture(scope="module")
def loaded_by() -> dict[str, list[str]]:
    """Module -> the gpubench modules importing it alone loads, for the contracts' and the
    worker's modules (``__main__`` modules run their command: left out)."""
    names = [n for n in MODULES if side(n) in ALLOWED and not n.endswith("__main__")]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [row[0] for row in rows] == names
    return {name: loaded for name, loaded, _ in rows}


def test_a_fresh_import_of_each_side_loads_nothing_it_may_not(
    loaded_by: dict[str, list[str]],
) -> None:
    wrong = sorted(
        f"import {name} ({side(name)}) loads {m} ({side(m)})"
        for name, loaded in loaded_by.items()
        for m in loaded
        if side(m) not in ALLOWED[side(name)]
    )
    assert not wrong, "\n".join(wrong)


def test_the_worker_entry_loads_the_engines_it_runs(loaded_by: dict[str, list[str]]) -> None:
    # the check above only means something if the entry really pulls in the worker's code
    assert "gpubench.worker.engines.base" in loaded_by["gpubench.worker.main"]


def test_the_contracts_import_without_torch_or_pytest() -> None:
    names = [n for n in MODULES if side(n) == "contracts"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in ('torch', 'pytest', '_pytest') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing the contracts loaded {done.stdout.strip()}"


def long_functions(paths: list[Path], limit: int) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    paths = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    found = long_functions(paths, MAX_FUNCTION_LINES)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: {found}"


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def documented_files() -> set[str]:
    """The files docs/architecture.md's layout lists, as paths under gpubench/ (a line's
    indentation says its folder; a name ending in / is a folder)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("## Layout (one job per file)", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        if not (name.endswith("/") or name.endswith(".py")):
            continue  # a description's continuation line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([*(folder for _, folder in stack), name]).replace("//", "/")
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
        else:
            listed.add(path)
    return {p.removeprefix("gpubench/") for p in listed}


def only_reexports(path: Path) -> bool:
    """A module of a docstring, imports and ``__all__`` only."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        targets = getattr(node, "targets", [])
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in targets] == ["__all__"]:
            continue
        return False
    return True


def test_the_architecture_lists_every_file_and_no_other() -> None:
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    # a package's __init__ that only re-exports is its folder's line
    quiet = {f for f in actual if f.endswith("__init__.py") and only_reexports(PACKAGE / f)}
    listed = documented_files()
    assert not (actual - quiet) - listed, (
        f"not in docs/architecture.md: {sorted(actual - quiet - listed)}"
    )
    assert not listed - actual, (
        f"in docs/architecture.md, not in gpubench/: {sorted(listed - actual)}"
    )


# the containment rule (docs/architecture.md): every process that runs user code is started
# by runner/contained.py; the others start processes that run none (the guardian, git and
# nvidia-smi for the fingerprint, the validation kit's own pytest runs and its bare loop)
STARTS_PROCESSES = {
    "gpubench.runner.contained": "the contained launcher: workers, ranks, the estimate's child",
    "gpubench.runner.guardian": "the guardian (stdlib only, no user code)",
    "gpubench.worker.tether": "execs torchrun in the process the contained launcher started",
    "gpubench.worker.trackers.fingerprint": "git and nvidia-smi for the environment",
    "gpubench.validation.kit": "pytest on the shipped suites, whose cases are contained",
    "gpubench.validation.harness": "the bare training loop the harness is measured against",
}
PROCESS_CALLS = {
    "Popen",
    "run",
    "call",
    "check_call",
    "check_output",
    "fork",
    "system",
    "spawnv",
    "spawnl",
    "execv",
    "execvp",
    "posix_spawn",
}


def process_starts(path: Path) -> list[int]:
    """Lines of ``path`` that call subprocess.X or os.X for an X that starts a process."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                isinstance(owner, ast.Name)
                and owner.id in ("subprocess", "os")
                and node.func.attr in PROCESS_CALLS
            ):
                lines.append(node.lineno)
    return lines


def test_only_the_contained_launcher_starts_processes_that_run_user_code() -> None:
    found = {name: process_starts(path) for name, path in MODULES.items()}
    starting = {name for name, lines in found.items() if lines}
    assert starting - set(STARTS_PROCESSES) == set(), {
        name: found[name] for name in starting - set(STARTS_PROCESSES)
    }
    assert "gpubench.runner.contained" in starting  # the check sees what it looks for
