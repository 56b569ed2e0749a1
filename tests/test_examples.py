"""Every script in ``examples/`` runs end to end, in this process, at a small size.

The size knob: each script reads ``ICONGRAPH_EXAMPLE_SIZE`` (unset: the full size, e.g. all
1,797 digits or a million generated points; ``300`` here, a seeded subsample or 300 generated
points). Each script prints its metrics as ``<metric> <value>`` and writes one PNG into the
working directory; the test checks that every printed metric is a finite number and that the
PNG is a non-empty image.

umap-learn (in ``digits_tsne_umap.py``) and scanpy's ``sc.pp.neighbors`` (in
``scanpy_pipeline.py``) compile umap-learn's numba functions on their first call in a process
(about 12 s; umap-learn does not cache them on disk). In a full run ``test_estimators.py``
has compiled them already; run alone, this file pays them once.
"""

import math
import re
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
SIZE = "300"
#: the metrics the scripts print, each followed by its value
METRIC = re.compile(r"(?:accuracy|preservation|ARI)\s+(\S+?)[,\s]")
#: the smallest number of metric values each script prints (one per model at least)
MIN_METRICS = {"compose.py": 3, "digits_tsne_umap.py": 6, "scanpy_pipeline.py": 3,
               "supervised.py": 4, "clustering_graph_tricks.py": 5, "million_points.py": 2}


def one_thread(monkeypatch):
    """Every estimator defaults to ``n_jobs=1``: on two busy cores a 300-point fit takes 0.1 s
    on one thread, up to 12 s on two."""
    import icongraph
    import icongraph.embedding

    monkeypatch.setitem(icongraph.embedding.COMMON_PARAMS, "n_jobs", 1)
    for cls in (icongraph.Clustering, icongraph.PrototypeClassifier, icongraph.PairedEmbedding):
        defaults = {**cls._param_defaults(), "n_jobs": 1}
        monkeypatch.setattr(cls, "_param_defaults", classmethod(lambda _, d=defaults: dict(d)))


def test_examples_are_found():
    assert {path.name for path in EXAMPLES} == set(MIN_METRICS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(path, monkeypatch, tmp_path, capsys):
    if path.name == "scanpy_pipeline.py":
        pytest.importorskip("scanpy")
    monkeypatch.setenv("ICONGRAPH_EXAMPLE_SIZE", SIZE)
    one_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)  # figures are written to the working directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    values = METRIC.findall(out + "\n")
    assert len(values) >= MIN_METRICS[path.name], out
    assert all(math.isfinite(float(value)) for value in values), out
    figures = list(tmp_path.glob("*.png"))
    assert [figure.name for figure in figures] == [path.stem + ".png"]
    assert figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figures[0].stat().st_size > 10_000
    assert f"wrote {figures[0].name}" in out
