"""The package's import rules, checked on its import graph (scripts/import_graph.py)."""

import pytest

from scripts.import_graph import imports, layer, layer_graph

GRAPH = imports()
# Helper modules that only one step uses; every other module of tasks/ but the contract is a step.
TASK_HELPERS = {"evaluate": ("report",)}
CONTRACT = "batchpredict.tasks.contract"
TASKS = sorted(
    m.rsplit(".", 1)[1]
    for m in GRAPH
    if m.startswith("batchpredict.tasks.")
    and m != CONTRACT
    and m.rsplit(".", 1)[1] not in {h for hs in TASK_HELPERS.values() for h in hs}
)
# io/ is the floor the engine and the tasks stand on.
ABOVE_IO = ("tasks", "engine", "backends", "models", "component_entry", "cli", "example")
# What a format module may import within io/: the base, the filesystem, the encoder and helpers.
IO_FLOOR = (
    "base",
    "fs",
    "encoding",
    "tfrecord",
    "arrow_rows",
    "numeric_lines",
    "parquet_footer",
    "publish",
)
# The io/ modules that combine formats: the registry of format classes, and the results reader
# (directories and BigQuery tables).
IO_COMBINERS = ("formats", "reader")


def _modules(prefix: str) -> list[str]:
    return sorted(m for m in GRAPH if m.startswith(prefix))


def test_the_graph_is_read_from_source():
    assert "batchpredict.io.fs" in GRAPH["batchpredict.io.sources"]
    assert CONTRACT in GRAPH["batchpredict.tasks.collect"]
    assert {"dataset", "train", "prepare", "collect", "evaluate"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_no_task_imports_another_tasks_internals(task):
    module = f"batchpredict.tasks.{task}"
    allowed = {CONTRACT, *(f"batchpredict.tasks.{h}" for h in TASK_HELPERS.get(task, ()))}
    reached = {d for d in GRAPH[module] if d.startswith("batchpredict.tasks")}
    assert reached <= allowed, f"{module} imports {sorted(reached - allowed)}"


def test_the_contract_and_task_helpers_import_no_task():
    for module in (
        CONTRACT,
        *(f"batchpredict.tasks.{h}" for hs in TASK_HELPERS.values() for h in hs),
    ):
        reached = {d for d in GRAPH[module] if d.startswith("batchpredict.tasks")}
        assert reached <= {CONTRACT}, f"{module} imports {sorted(reached)}"


@pytest.mark.parametrize("module", _modules("batchpredict.io"))
def test_io_never_imports_what_stands_on_it(module):
    above = sorted(d for d in GRAPH[module] if layer(d) in ABOVE_IO)
    assert not above, f"{module} imports {above}"


@pytest.mark.parametrize(
    "module",
    [
        m
        for m in _modules("batchpredict.io.")
        if m.rsplit(".", 1)[1] not in (*IO_FLOOR, *IO_COMBINERS)
    ],
)
def test_format_modules_stand_only_on_the_io_floor(module):
    floor = {f"batchpredict.io.{name}" for name in IO_FLOOR} | {"batchpredict.io"}
    within_io = {d for d in GRAPH[module] if d.startswith("batchpredict.io")}
    assert within_io <= floor, f"{module} imports {sorted(within_io - floor)}"


def test_nothing_imports_the_package_top_level():
    """``batchpredict/__init__`` re-exports for users; the package itself reads version.py."""
    users = sorted(m for m, deps in GRAPH.items() if "batchpredict" in deps)
    assert not users, f"{users} import batchpredict/__init__ (use batchpredict.version etc.)"


def test_the_layers_form_no_cycle():
    graph = layer_graph(GRAPH)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
