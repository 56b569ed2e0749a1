"""The command line refuses bad paths and bad files with one line and exit code 2, before any
work: output directories, suffixes, existing outputs (unless --force), corrupt inputs; outputs
are written atomically in the format their suffix names, and the printed path is the file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import icongraph.cli as cli
from icongraph.cli import main

FIT = ["--n-neighbors", "10", "--n-epochs", "5", "-q"]


@pytest.fixture
def data(tmp_path, blobs):
    X, _ = blobs
    path = tmp_path / "data.npy"
    np.save(path, X)
    return str(path), X


@pytest.fixture
def no_work(monkeypatch):
    """Reading the input (the first work after the path checks) fails the test."""
    def no_read(path):
        raise AssertionError("the input was read before the output paths were checked")

    monkeypatch.setattr(cli, "read_input", no_read)


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/missing/out.npy"], r"the directory '.*missing' does not exist"),
    (["-o", "{tmp}/out.npy", "--plot", "{tmp}/nodir/p.png"], r"--plot .*'.*nodir' does not exist"),
    (["-o", "{tmp}/out"], r"the suffix '\(none\)' names no format written here; use one of "
                          r"\.npy, \.csv, \.tsv, \.txt, \.parquet, \.h5ad"),
    (["-o", "{tmp}/out.xlsx"], r"the suffix '\.xlsx' names no format"),
    (["-o", "{tmp}/out.npy", "--plot", "{tmp}/p.nope"], r"--plot .*'\.nope' names no format"),
    (["-o", "{tmp}/out.npy", "--plot", "{tmp}/p.png", "--n-components", "1"],
     "--plot needs at least 2 embedding dimensions"),
    (["-o", "{tmp}"], "names no format"),
    (["-o", "{tmp}/existing.npy"], r"'.*existing.npy' already exists; pass --force"),
])
def test_embed_refuses_bad_outputs_before_any_work(tmp_path, args, message, no_work, capsys):
    (tmp_path / "existing.npy").write_bytes(b"keep me")
    argv = ["embed", "digits", *[a.format(tmp=tmp_path) for a in args], "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("icongraph: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert (tmp_path / "existing.npy").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.npy"]  # nothing left


def test_cluster_refuses_an_existing_output_and_plot(tmp_path, no_work, capsys):
    (tmp_path / "labels.npy").write_bytes(b"keep me")
    assert main(["cluster", "digits", "-o", str(tmp_path / "labels.npy"), "--n-clusters",
                 "3"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    (tmp_path / "plot.png").write_bytes(b"keep me")
    assert main(["cluster", "digits", "-o", str(tmp_path / "new.npy"), "--n-clusters", "3",
                 "--plot", str(tmp_path / "plot.png")]) == 2
    assert "--plot" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".txt", ".h5ad"])
def test_embed_writes_what_the_suffix_says(tmp_path, data, suffix, capsys):
    path, X = data
    out = tmp_path / f"emb{suffix}"
    assert main(["embed", path, "-o", str(out), *FIT]) == 0
    assert f"-> {out} (" in capsys.readouterr().out  # the printed path is the real file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", out.name]  # no temp left
    if suffix == ".npy":
        Y = np.load(out)
    elif suffix == ".h5ad":
        import anndata

        Y = anndata.read_h5ad(out).obsm["X_icon"]
    elif suffix == ".csv":
        Y = np.loadtxt(out, delimiter=",", skiprows=1)  # the header icon1,icon2
    else:
        Y = np.loadtxt(out)
    assert Y.shape == (len(X), 2) and np.isfinite(Y).all()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_parquet_is_written_or_refused_clearly(tmp_path, data, capsys):
    path, X = data
    out = tmp_path / "emb.parquet"
    code = main(["embed", path, "-o", str(out), *FIT])
    import importlib.util

    if importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet"):
        import pandas as pd

        assert code == 0 and pd.read_parquet(out).shape == (len(X), 2)
    else:
        assert code == 2 and not out.exists()
        assert "writing .parquet needs pyarrow or fastparquet" in capsys.readouterr().err


def test_force_overwrites_atomically(tmp_path, data, capsys, monkeypatch):
    path, X = data
    out = tmp_path / "labels.csv"
    out.write_text("old\n")
    assert main(["cluster", path, "-o", str(out), "--n-clusters", "3", "--n-neighbors", "10",
                 "--force", "-q"]) == 0
    labels = np.loadtxt(out, dtype=int, skiprows=1)  # the header icon_cluster
    assert labels.shape == (len(X),)
    # a write that fails leaves the old file whole and no temporary behind
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    before = out.read_bytes()
    target = tmp_path / "emb.npy"
    target.write_bytes(b"previous")
    assert main(["embed", path, "-o", str(target), "--overwrite", *FIT]) == 2
    assert "disk full" in capsys.readouterr().err
    assert target.read_bytes() == b"previous" and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "emb.npy", "labels.csv"]


@pytest.mark.parametrize("name, content, message", [
    ("bad.npy", os.urandom(300), r"cannot read .*bad.npy as \.npy"),
    ("trunc.npy", b"\x93NUMPY\x01\x00", r"cannot read .*trunc.npy as \.npy: EOF"),
    ("bad.npz", b"PK\x03\x04garbage", r"cannot read .*bad.npz as \.npz"),
    ("bad.h5ad", os.urandom(300), r"cannot read .*bad.h5ad as \.h5ad"),
    ("binary.csv", bytes(range(128, 256)), r"cannot read .*binary.csv as \.csv"),
    ("text.csv", b"1,2\n3,x\n", r"cannot read .*text.csv as \.csv: non-numeric feature "
                                 r"column\(s\) '1' \(e.g. 'x' in data row 2\)"),
    ("empty.csv", b"", r"the data in .*empty.csv is empty"),
    ("vector.npy", None, r"the data in .*vector.npy must be 2-D"),
])
def test_corrupt_input_is_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        np.save(path, np.arange(10.0))
    else:
        path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "icongraph.cli", "embed", str(path), "-o",
                             str(tmp_path / "out.npy"), "-q"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_bench_with_an_unknown_dataset_creates_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "icongraph.cli", "bench", "--dataset",
                             "nonsense", "--out", str(tmp_path / "bench_out")],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])})
    assert result.returncode == 2 and "invalid choice: 'nonsense'" in result.stderr
    assert list(tmp_path.iterdir()) == []
    from icongraph.bench import run_bench

    with pytest.raises(ValueError, match="unknown dataset"):
        run_bench("nonsense", out=str(tmp_path / "bench_out"))
    assert list(tmp_path.iterdir()) == []
