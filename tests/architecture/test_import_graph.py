"""The import graph of the project's packages: no cycle between files, imports inside functions included."""

import grimp
import pytest

PACKAGES = ("portal", "workers", "distribution", "verification", "access", "audit", "hub", "mail", "tracing", "machine")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, include_external_packages=True)


def cycles(graph) -> list[list[str]]:
    """The groups of project modules that import each other in a ring (Tarjan's strongly connected components)."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            ring = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                ring.append(member)
                if member == module:
                    break
            if len(ring) > 1:
                found.append(sorted(ring))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_the_graph_counts_imports_placed_inside_functions(graph):
    # S3Storage imports boto3 in its constructor: a graph without such imports would miss hidden cycles.
    assert "boto3" in graph.find_modules_directly_imported_by("distribution.storage")


def test_no_two_files_import_each_other_even_through_others(graph):
    assert cycles(graph) == []


def test_a_ring_of_imports_is_found():
    ring = grimp.ImportGraph()
    for module in ("portal", "portal.a", "portal.b", "portal.c"):
        ring.add_module(module)
    ring.add_import(importer="portal.a", imported="portal.b")
    ring.add_import(importer="portal.b", imported="portal.c")
    ring.add_import(importer="portal.c", imported="portal.a")
    assert cycles(ring) == [["portal.a", "portal.b", "portal.c"]]
