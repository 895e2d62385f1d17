"""The import structure follows the pipeline (docs: the layers), so a stage's DVC deps are only
the code it runs and an edit to a chart never retrains.

Checked over every import of the project's own modules, those inside functions included:
no import cycle between rooms (packages, and top-level modules), no project import hidden
inside a function (except the CLI's, which keeps `stdformer --help` fast), and the rules the
cache depends on: training imports no evaluation, inference, registry or serving code;
evaluation imports no training code; scoring, which both share, imports neither.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Modules whose function-level project imports are deliberate: the CLI imports a subcommand's
# (torch-heavy) code only when that subcommand runs.
LAZY_IMPORTERS = {"stdformer.cli"}


def module_name(path: Path) -> str:
    name = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
    return name.removesuffix(".__init__")


def room(module: str) -> str:
    """stdformer.train.loop -> stdformer.train; stdformer.io -> stdformer.io."""
    parts = module.split(".")
    if parts[0] != "stdformer" or len(parts) == 1:
        return module
    package = REPO.joinpath(*parts[:2])
    return ".".join(parts[:2]) if package.is_dir() else module


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if n is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(t, id(node) in inside) for t in targets if t.split(".")[0] == "stdformer"]
    return found


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    return {module_name(p): project_imports(p)
            for p in sorted((REPO / "stdformer").rglob("*.py"))}


def room_graph(graph) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, imports in graph.items():
        edges = rooms.setdefault(room(module), set())
        edges |= {room(t) for t, _ in imports if room(t) not in (room(module), "stdformer")}
    return rooms


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_rooms():
    assert find_cycle(room_graph(import_graph())) is None, find_cycle(room_graph(import_graph()))


def test_the_cycle_check_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_project_import_hides_inside_a_function():
    hidden = sorted(f"{module} -> {target}" for module, imports in import_graph().items()
                    if module not in LAZY_IMPORTERS for target, inside in imports if inside)
    assert not hidden, hidden


@pytest.mark.parametrize("lower, forbidden", [
    ("stdformer.train", {"stdformer.evaluation", "stdformer.inference", "stdformer.registry",
                         "stdformer.serving"}),
    ("stdformer.evaluation", {"stdformer.train", "stdformer.inference", "stdformer.registry"}),
    ("stdformer.scoring", {"stdformer.train", "stdformer.evaluation", "stdformer.inference"}),
    ("stdformer.model", {"stdformer.train", "stdformer.scoring", "stdformer.evaluation"}),
    ("stdformer.body", {"stdformer.model", "stdformer.train", "stdformer.data"}),
])
def test_rooms_import_only_what_lies_below_them(lower, forbidden):
    rooms = room_graph(import_graph())
    reach, todo = set(), [lower]
    while todo:                                   # everything `lower` imports, transitively
        for nxt in rooms.get(todo.pop(), ()):
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert not reach & forbidden, f"{lower} reaches {sorted(reach & forbidden)}"
