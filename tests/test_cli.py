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


# -- files: readers, writers, options ----------------------------------------------------------

from icongraph.files import read_input, write_result  # noqa: E402

pd = pytest.importorskip("pandas")


@pytest.fixture
def table(blobs):
    """The blobs as a frame: five feature columns, a string label column, a value column."""
    X, y = blobs
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["cell_type"] = np.array(["alpha", "beta", "gamma"])[y]
    return frame, X, y


@pytest.fixture
def no_fit(monkeypatch):
    """Any fit fails the test: bad input must be refused before one starts."""
    import icongraph

    def fit(*args, **kwargs):
        raise AssertionError("a fit started on bad input")

    monkeypatch.setattr(icongraph.UMAP, "fit_transform", fit)
    monkeypatch.setattr(icongraph.Clustering, "fit_predict", fit)


def _write_table(frame, path):
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep={".csv": ",", ".tsv": "\t"}[path.suffix], index=False)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_are_read_with_their_label_column(tmp_path, table, suffix):
    frame, X, y = table
    path = tmp_path / f"t{suffix}"
    _write_table(frame, path)
    found = read_input(str(path), label_column="cell_type", color_column="f0")
    np.testing.assert_allclose(found.X, X[:, 1:], rtol=1e-6)  # both columns are not features
    assert list(found.labels) == list(frame["cell_type"]) and found.X.dtype == np.float32
    np.testing.assert_allclose(found.color, X[:, 0])


def test_a_table_without_header_names_its_columns_by_position(tmp_path, blobs):
    X, y = blobs
    np.savetxt(tmp_path / "h.csv", np.c_[X, y], delimiter=",")
    found = read_input(str(tmp_path / "h.csv"), label_column="5")
    assert found.X.shape == X.shape and list(found.labels) == list(y)
    np.savetxt(tmp_path / "s.txt", X)
    assert read_input(str(tmp_path / "s.txt")).X.shape == X.shape


def test_npz_key_and_labels(tmp_path, blobs):
    X, y = blobs
    np.savez(tmp_path / "d.npz", features=X, y=y, other=y * 2)
    found = read_input(str(tmp_path / "d.npz"), key="features")
    assert found.X.shape == X.shape and list(found.labels) == list(y)
    found = read_input(str(tmp_path / "d.npz"), key="features", label_column="other",
                       color_column="y")
    assert list(found.labels) == list(2 * y) and list(found.color) == list(y)
    np.savez(tmp_path / "one.npz", data=X)
    assert read_input(str(tmp_path / "one.npz")).X.shape == X.shape  # the only array


def test_h5ad_representation_layer_and_obs(tmp_path, blobs):
    anndata = pytest.importorskip("anndata")
    X, y = blobs
    adata = anndata.AnnData(X=-X,
                            obs=pd.DataFrame({"group": pd.Categorical(y.astype(str))},
                                             index=[f"c{i}" for i in range(len(X))]))
    adata.obsm["X_pca"] = X
    adata.layers["raw"] = X * 2
    adata.write_h5ad(tmp_path / "a.h5ad")
    found = read_input(str(tmp_path / "a.h5ad"), use_rep="X_pca", label_column="group")
    np.testing.assert_allclose(found.X, X)
    assert list(found.labels) == list(y.astype(str)) and found.h5ad == tmp_path / "a.h5ad"
    np.testing.assert_allclose(read_input(str(tmp_path / "a.h5ad"), layer="raw").X, 2 * X)
    np.testing.assert_allclose(read_input(str(tmp_path / "a.h5ad")).X, -X)


def test_large_inputs_are_memory_mapped_not_copied(tmp_path, blobs):
    """An .npy and an .h5ad's dense, uncompressed matrix (anndata's default) are read as
    memory maps of the file, so the fit does not hold the data twice; a compressed or sparse
    matrix is read into memory."""
    anndata = pytest.importorskip("anndata")
    import scipy.sparse as sp

    from icongraph.validation import _memmap_base

    def mapped(A):
        return _memmap_base(A) is not None

    X, y = blobs
    X = X.astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    found = read_input(str(tmp_path / "X.npy"))
    assert mapped(found.X)
    np.testing.assert_array_equal(found.X, X)
    adata = anndata.AnnData(X=X, obs=pd.DataFrame({"g": y.astype(str)},
                                                  index=[f"c{i}" for i in range(len(X))]))
    adata.obsm["X_pca"] = X[:, :3].copy()
    adata.layers["counts"] = sp.csr_matrix(X)
    adata.write_h5ad(tmp_path / "plain.h5ad")
    for rep, expected in ((None, X), ("X_pca", X[:, :3])):
        found = read_input(str(tmp_path / "plain.h5ad"), use_rep=rep, label_column="g")
        assert mapped(found.X), rep
        np.testing.assert_array_equal(found.X, expected)
        assert list(found.labels) == list(y.astype(str))
    sparse = read_input(str(tmp_path / "plain.h5ad"), layer="counts").X
    assert sp.issparse(sparse) and np.allclose(sparse.toarray(), X)
    adata.write_h5ad(tmp_path / "packed.h5ad", compression="gzip")
    found = read_input(str(tmp_path / "packed.h5ad"))
    assert not mapped(found.X)
    np.testing.assert_array_equal(found.X, X)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".tsv", ".txt", ".parquet", ".h5ad"])
@pytest.mark.parametrize("values", [np.arange(12.0).reshape(6, 2).astype(np.float32),
                                    np.array([0, 2, 1, 1, 0, 2])], ids=["embedding", "clusters"])
def test_results_round_trip(tmp_path, suffix, values):
    path = write_result(tmp_path / f"r{suffix}", values)
    if suffix in (".csv", ".tsv", ".parquet"):
        back = read_input(str(path)).X  # the header icon1, icon2 / icon_cluster is detected
    elif suffix == ".h5ad":
        import anndata

        adata = anndata.read_h5ad(path)
        if values.ndim == 1:
            column = adata.obs["icon_cluster"]
            assert isinstance(column.dtype, pd.CategoricalDtype)
            back = column.astype(int).to_numpy()
        else:
            back = adata.obsm["X_icon"]
    else:
        back = np.load(path) if suffix == ".npy" else np.loadtxt(path)
    np.testing.assert_array_equal(np.asarray(back).reshape(values.shape), values)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_an_h5ad_input_is_written_back_with_its_content(tmp_path, blobs, capsys):
    anndata = pytest.importorskip("anndata")
    X, y = blobs
    adata = anndata.AnnData(X=X, obs=pd.DataFrame({"kind": y.astype(str)},
                                                  index=[f"c{i}" for i in range(len(X))]))
    adata.obsm["X_pca"] = X[:, :4]
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    assert main(["embed", str(path), "-o", str(path), "--use-rep", "X_pca", "--force",
                 "--plot", str(tmp_path / "a.png"), "--color-by", "kind", *FIT]) == 0
    assert f"-> {path} (" in capsys.readouterr().out
    assert main(["cluster", str(path), "-o", str(path), "--force", "--n-clusters", "3",
                 "--init", "kmeans", *FIT]) == 0
    back = anndata.read_h5ad(path)
    assert back.obsm["X_icon"].shape == (len(X), 2) and "X_pca" in back.obsm
    assert list(back.obs_names) == list(adata.obs_names) and "kind" in back.obs
    assert back.obs["icon_cluster"].dtype == "category"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad", "a.png"]


def test_csv_label_column_colours_the_plot(tmp_path, table, capsys, monkeypatch):
    import icongraph.plot

    frame, X, y = table
    _write_table(frame, tmp_path / "t.csv")
    seen = {}
    draw = icongraph.plot.plot_embedding

    def spy(Y, color=None, **kwargs):
        seen.update(color=color, **kwargs)
        return draw(Y, color, **kwargs)

    monkeypatch.setattr(icongraph.plot, "plot_embedding", spy)
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tmp_path / "t.csv"), "-o", str(out), "--label-column",
                 "cell_type", "--plot", str(tmp_path / "e.png"), *FIT]) == 0
    assert list(seen["color"]) == list(frame["cell_type"]) and seen["color_label"] == "label"
    assert seen["kind"] == "categorical"  # labels are categories, even when they are floats
    assert list(pd.read_parquet(out).columns) == ["icon1", "icon2"]
    assert (tmp_path / "e.png").stat().st_size > 1000


def test_a_failing_plot_writes_no_output(tmp_path, data, monkeypatch, capsys):
    import icongraph.plot

    def broken(*args, **kwargs):
        raise ValueError("no plot today")

    monkeypatch.setattr(icongraph.plot, "plot_embedding", broken)
    path, _ = data
    assert main(["embed", path, "-o", str(tmp_path / "e.npy"), "--plot",
                 str(tmp_path / "e.png"), *FIT]) == 2
    assert "no plot today" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy"]


@pytest.mark.parametrize("make, argv, message", [
    (None, ["embed", "{tmp}/missing.csv"], r"input file '.*missing.csv' does not exist"),
    ("x.xlsx", ["embed", "{tmp}/x.xlsx"], r"input '.*x.xlsx': the suffix '\.xlsx' names no "
                                          r"format read here"),
    ("d.npz", ["embed", "{tmp}/d.npz", "--key", "data"],
     r"cannot read .*d.npz as \.npz: it has no array 'data' \(--key\); its arrays are "
     r"'features', 'y'"),
    ("d.npz", ["embed", "{tmp}/d.npz"], r"d.npz .*no array 'X' \(--key\); its arrays are"),
    ("t.csv", ["embed", "{tmp}/t.csv"], r"cannot read .*t.csv as \.csv: non-numeric feature "
                                        r"column\(s\) 'cell_type' \(e.g. 'alpha' in data row"),
    ("t.csv", ["embed", "{tmp}/t.csv", "--label-column", "kind"],
     r"t.csv .*no column 'kind' \(--label-column\); its columns are 'f0', 'f1'"),
    ("t.csv", ["embed", "{tmp}/t.csv", "--key", "X"], r"--key applies to \.npz inputs"),
    ("t.csv", ["embed", "{tmp}/t.csv", "--label-column", "cell_type", "--color-by",
               "clusters", "--plot", "{tmp}/p.png"], r"--color-by clusters applies to"),
    ("d.npy", ["embed", "{tmp}/d.npy", "--plot", "{tmp}/p.png", "--color-by", "labels"],
     r"--color-by labels: .*d.npy has no labels"),
    ("a.h5ad", ["embed", "{tmp}/a.h5ad", "--use-rep", "X_umap"],
     r"a.h5ad .*no obsm\['X_umap'\] \(--use-rep\); its obsm keys are 'X_pca'"),
    ("a.h5ad", ["cluster", "{tmp}/a.h5ad", "--layer", "counts"],
     r"no layers\['counts'\] \(--layer\); its layers are none"),
    ("a.h5ad", ["cluster", "{tmp}/a.h5ad", "--use-rep", "X_pca", "--layer", "x"],
     r"give --use-rep or --layer, not both"),
    (None, ["cluster", "digits", "--label-column", "y"], r"digits is a bundled dataset"),
])
def test_bad_input_is_refused_before_any_fit(tmp_path, table, make, argv, message, no_fit,
                                             capsys):
    frame, X, y = table
    if make == "x.xlsx":
        (tmp_path / make).write_bytes(b"PK")
    elif make == "d.npz":
        np.savez(tmp_path / make, features=X, y=y)
    elif make == "t.csv":
        _write_table(frame, tmp_path / make)
    elif make == "d.npy":
        np.save(tmp_path / make, X)
    elif make == "a.h5ad":
        anndata = pytest.importorskip("anndata")
        adata = anndata.AnnData(X=X)
        adata.obsm["X_pca"] = X
        adata.write_h5ad(tmp_path / make)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([a.format(tmp=tmp_path) for a in argv] + ["-o", str(tmp_path / "out.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icongraph: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_an_unwritable_output_directory_is_refused(tmp_path, data, no_fit, capsys):
    path, _ = data
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["embed", path, "-o", str(locked / "o.npy"), "-q"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_every_option_has_help_and_shows_its_default(capsys):
    import argparse

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"embed", "cluster", "table", "bench"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        text = sub.format_help()
        assert "%(default)" not in text
        for action in sub._actions:
            if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"{name} {action.option_strings[0]}"
    description = parser.format_help()
    assert "``" not in description and "icongraph cluster" in description
    with pytest.raises(SystemExit):
        main(["--version"])
    from icongraph import __version__

    assert capsys.readouterr().out.strip() == f"icongraph {__version__}"


def test_cluster_defaults_come_from_the_estimator(monkeypatch):
    from icongraph.clustering import Clustering

    defaults = Clustering._param_defaults()
    args = cli.build_parser().parse_args(["cluster", "digits", "-o", "x.npy"])
    assert (args.n_clusters, args.head, args.init, args.method) == (
        defaults["n_clusters"], defaults["head"], defaults["init"], defaults["method"])
    monkeypatch.setattr(Clustering, "_param_defaults",
                        classmethod(lambda cls: {**defaults, "n_clusters": None,
                                                 "head": "mlp", "init": "kmeans"}))
    args = cli.build_parser().parse_args(["cluster", "digits", "-o", "x.npy"])
    assert (args.n_clusters, args.head, args.init) == (None, "mlp", "kmeans")



def test_n_clusters_auto_reaches_the_estimator_and_bad_values_are_refused(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["cluster", "digits", "-o", "x.npy", "--n-clusters", "auto"]
                             ).n_clusters is None
    assert parser.parse_args(["cluster", "digits", "-o", "x.npy", "--n-clusters", "7"]
                             ).n_clusters == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["cluster", "digits", "-o", "x.npy", "--n-clusters", "many"])
    assert "positive integer or 'auto'" in capsys.readouterr().err


def test_labels_of_the_wrong_length_are_refused_before_the_fit(tmp_path, no_fit, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(30))
    out = tmp_path / "labels.npy"
    assert main(["cluster", str(path), "-o", str(out), "--n-clusters", "3"]) != 0
    assert "has length 30 but the data has 40 rows" in capsys.readouterr().err
    assert not out.exists()
