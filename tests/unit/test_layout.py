"""The house as `ls` shows it: two flows in their own packages, no import circles, small modules.

(The one-way arrows between the packages are import-linter contracts in pyproject.toml, checked by
`make lint`.)
"""

from __future__ import annotations

from pathlib import Path

import grimp

import clearance

PACKAGE = Path(clearance.__file__).parent
MAX_MODULE_LINES = 400


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_two_flows_are_packages_of_their_own() -> None:
    listing = {p.name for p in PACKAGE.iterdir()}
    assert {
        "scheduled",
        "triggered",
        "outbound",
        "channels",
        "store",
        "api",
        "runtime.py",
    } <= listing
    # the modules that used to sit flat beside them
    assert not listing & {"engine.py", "scheduler.py", "triggers.py", "gate.py", "gate_http.py"}


def test_no_import_circles() -> None:
    # function-level imports count too: a circle hidden in a function is still a circle
    graph = grimp.build_graph("clearance")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert _cycles(graph) == [["a.x", "a.y"]]


def test_no_module_is_long() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_every_package_says_what_lives_there() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = init.read_text().lstrip()
        assert doc.startswith('"""'), f"{init.relative_to(PACKAGE)} has no docstring"
