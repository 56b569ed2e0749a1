"""Every script in ``examples/`` runs end to end, in this process on 300 of the digits (the
scripts load the data with ``icongraph.datasets.load_digits``, replaced here by a subset)."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_examples_are_found():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(path, monkeypatch, tmp_path, capsys):
    from conftest import digits_subset

    import icongraph.datasets
    import icongraph.embedding

    X, y = digits_subset(300)
    monkeypatch.setattr(icongraph.datasets, "load_digits", lambda: (X.copy(), y.copy()))
    # one thread: on two busy cores a 300-point fit takes 0.1 s on one thread, up to 12 s on two
    monkeypatch.setitem(icongraph.embedding.COMMON_PARAMS, "n_jobs", 1)
    monkeypatch.chdir(tmp_path)  # figures are written to the working directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("10-NN accuracy") >= 2 and "nan" not in out  # one line per model
    for figure in tmp_path.iterdir():
        assert figure.stat().st_size > 0
