"""The package's import graph flows one way: each module imports only modules of its own row or
of earlier rows of :data:`LAYERS`, lazy imports inside functions included. Read from the
source with ``ast`` (nothing is imported), so a new module must be placed here to pass."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "icongraph"

#: bottom floor first: data -> graph -> objective -> optimiser -> estimators -> CLI (the files
#: and datasets modules import no estimator: the estimators write model files atomically with
#: files.write_atomic, through persistence)
LAYERS = [
    ("validation", "scaling", "params", "progress", "memory", "datasets", "files"),
    ("runtime",),
    ("distributed",),
    ("ordering",),
    ("graph",),
    ("pyg",),
    ("kernels",),
    ("forest",),
    ("knn",),
    ("targets",),
    ("persistence",),
    ("communities",),
    ("refine",),
    ("positives",),
    ("init",),
    ("heads",),
    ("_cpu_engine",),
    ("_torch_engine",),
    ("_transform_engine",),
    ("interpolation",),
    ("objective",),
    ("loop",),
    ("sphere",),
    ("optimize",),
    ("embedding",),
    ("seeding",),
    ("clustering",),
    ("compose",),
    ("prototypes",),
    ("pairs",),
    ("methods",),
    ("tl",),
    ("metrics", "plot"),
    ("bench_ranks",),
    ("bench",),
    ("cli",),
    ("__init__",),
    ("__main__",),
]
ROW = {name: row for row, names in enumerate(LAYERS) for name in names}


def relative_imports(path: Path) -> set[str]:
    """The package modules that ``path`` imports with ``from .x import ...`` or
    ``from . import x``, wherever the statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
    return found


MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert set(MODULES) == set(ROW), "place new modules in LAYERS (and drop deleted ones)"


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down_only(module):
    upward = {name: LAYERS[ROW[name]] for name in relative_imports(PACKAGE / f"{module}.py")
              if ROW.get(name, -1) > ROW[module]}
    assert not upward, f"{module} (row {LAYERS[ROW[module]]}) imports higher rows: {upward}"


def test_the_import_graph_has_no_cycle():
    """Modules of one row may import each other, but never in a circle."""
    graph = {module: relative_imports(PACKAGE / f"{module}.py") & set(MODULES)
             for module in MODULES}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError(f"import cycle: {' -> '.join(path + [module])}")
        if module in done:
            return
        path.append(module)
        for name in sorted(graph[module]):
            visit(name)
        path.pop()
        done.add(module)

    for module in MODULES:
        visit(module)


def test_submodules_are_attributes_imported_on_first_use():
    code = ("import sys, icongraph; lazy = 'matplotlib' in sys.modules; "
            "print(lazy, callable(icongraph.metrics.adjusted_rand_index), "
            "callable(icongraph.plot.plot_embedding), callable(icongraph.datasets.load))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"]
    import icongraph

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        icongraph.nothing  # noqa: B018
