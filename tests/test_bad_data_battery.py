"""Bad-data battery: every estimator and the CLI, against every kind of awkward data.

Each case ends in EITHER a clear error (a ``ValueError``/``TypeError`` whose message names the
problem; for the CLI exit code 2 and one line on stderr, no traceback) OR a correct result (a
finite embedding of shape (N, 2); valid labels, with more than one cluster on data with
structure). In every case the caller's input is unchanged afterwards.

``EXPECTED[case][runner]`` is the regex of the error, or ``FINITE`` for a result; a runner
missing from a case's entry does not apply (no parameter for it, e.g. the CLI and a graph).
"""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import icongraph
from icongraph.cli import main

FINITE = None
N_EPOCHS = 20


def _blobs(n: int = 60, d: int = 5, seed: int = 0) -> np.ndarray:
    """Three well-separated Gaussian blobs (structure a clustering must find)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(3, d))
    return centres[np.arange(n) % 3] + rng.normal(size=(n, d))


def _graph(n: int = 60, k: int = 5, seed: int = 0) -> sp.csr_matrix:
    """A symmetric kNN-like graph on ``n`` nodes (a ring with chords)."""
    rows = np.repeat(np.arange(n), k)
    cols = (rows + np.tile(np.arange(1, k + 1), n)) % n
    g = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    return sp.csr_matrix(g + g.T)


def _isolated() -> sp.csr_matrix:
    g = _graph().tolil()
    g[3, :] = 0
    g[:, 3] = 0
    return sp.csr_matrix(g)


def _negative() -> sp.csr_matrix:
    g = _graph()
    g.data[::7] = -1.0
    return g


def _nan_graph() -> sp.csr_matrix:
    g = _graph()
    g.data[5] = np.nan
    return g


def _bad_knn():
    X = _blobs()
    n, k = len(X), 10
    idx = (np.arange(n)[:, None] + np.arange(1, k + 1)[None, :]) % n
    idx[4, 2] = n + 7  # out of range
    dist = np.sort(np.random.default_rng(0).uniform(0.1, 1.0, (n, k)), axis=1)
    return X, {"precomputed_knn": (idx, dist)}


def _ninety_identical():
    X = np.zeros((100, 5))
    X[90:] = _blobs(10, 5, seed=1)
    return X


def _mixed_frame():
    X = _blobs()
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    df["name"] = [f"row{i}" for i in range(len(df))]
    return df


def _nan_inf():
    X = _blobs()
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    return X


#: case -> () -> (data, extra estimator kwargs); graph cases fit ICon(p=graph) without X
CASES = {
    "3d": lambda: (_blobs().reshape(60, 5, 1), {}),
    "complex": lambda: (_blobs() + 1j * _blobs(seed=1), {}),
    "frame_mixed": lambda: (_mixed_frame(), {}),
    "frame_numeric": lambda: (pd.DataFrame(_blobs(), columns=list("abcde")), {}),
    "sparse_csr": lambda: (sp.csr_matrix(np.where(_blobs() > 0, _blobs(), 0.0)), {}),
    "float16": lambda: (_blobs().astype(np.float16), {}),
    "int": lambda: (np.round(_blobs()).astype(np.int64), {}),
    "bool": lambda: (_blobs() > 0, {}),
    "repeat_5x": lambda: (np.repeat(_blobs(), 5, axis=0), {}),
    "90pct_identical": lambda: (_ninety_identical(), {}),
    "single_point": lambda: (_blobs()[:1], {}),
    "two_points": lambda: (_blobs()[:2], {}),
    "nan_inf": lambda: (_nan_inf(), {}),
    "all_identical": lambda: (np.ones((60, 5)), {}),
    "p_isolated": lambda: (None, {"p": _isolated()}),
    "p_negative": lambda: (None, {"p": _negative()}),
    "p_nan": lambda: (None, {"p": _nan_graph()}),
    "knn_out_of_range": _bad_knn,
}

ESTIMATORS = ("UMAP", "TSNE", "SNE", "ICon", "Clustering")
RUNNERS = ESTIMATORS + ("cli_embed", "cli_cluster")
ALL = dict.fromkeys(RUNNERS, FINITE)
FEW = r"(at least 2 needed|Too few points)"


def _every(pattern, runners=RUNNERS):
    return dict.fromkeys(runners, pattern)


EXPECTED = {
    "3d": _every(r"must be 2-D"),
    "complex": _every(r"[Cc]omplex"),
    "frame_mixed": {**_every(r"must be numeric"), "cli_embed": r"non-numeric feature column",
                    "cli_cluster": r"non-numeric feature column"},
    "frame_numeric": ALL,
    "sparse_csr": {**ALL, "Clustering": r"sparse", "cli_cluster": r"sparse"},
    "float16": ALL,
    "int": ALL,
    "bool": ALL,
    "repeat_5x": ALL,
    "90pct_identical": ALL,
    "single_point": _every(FEW),
    "two_points": {**_every(FEW), "Clustering": r"n_clusters=3 exceeds the 2 points",
                   "cli_cluster": r"n_clusters=3 exceeds the 2 points"},
    "nan_inf": _every(r"NaN or infinite"),
    "all_identical": _every(r"identical"),
    "p_isolated": {"ICon": r"isolated node"},
    "p_negative": {"ICon": r"negative weight"},
    "p_nan": {"ICon": r"NaN or infinite"},
    "knn_out_of_range": {**_every(r"kNN indices must lie in \[0, 60\)", ESTIMATORS)},
}
assert set(EXPECTED) == set(CASES)


def _estimator(name: str, kwargs: dict):
    common = {"random_state": 0, "n_jobs": 1}
    if name == "Clustering":
        return icongraph.Clustering(n_clusters=3, n_neighbors=10, n_epochs=5, **common,
                                    **kwargs)
    extra = {"UMAP": {"n_neighbors": 10}, "TSNE": {"perplexity": 5.0},
             "SNE": {"perplexity": 5.0}, "ICon": {"p_params": {"n_neighbors": 10}}}[name]
    if "p" in kwargs:
        extra = {}
    return getattr(icongraph, name)(n_epochs=N_EPOCHS, **common, **extra, **kwargs)


def _write(data, path_stem):
    """The data as an input file of the CLI: .csv for a DataFrame, .npz for sparse (the
    format scipy.sparse.save_npz writes), .npy else."""
    if isinstance(data, pd.DataFrame):
        path = path_stem.with_suffix(".csv")
        data.to_csv(path, index=False)
    elif sp.issparse(data):
        path = path_stem.with_suffix(".npz")
        sp.save_npz(path, data)
    else:
        path = path_stem.with_suffix(".npy")
        np.save(path, data)
    return path


def _same(a, b) -> bool:
    """Whether the caller's object ``a`` equals its deep copy ``b`` (values and type)."""
    if type(a) is not type(b):
        return False
    if a is None:
        return True
    if isinstance(a, pd.DataFrame):
        return a.equals(b) and list(a.dtypes) == list(b.dtypes)
    if sp.issparse(a):
        return (a.dtype == b.dtype and a.shape == b.shape
                and all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
                        for f in ("data", "indices", "indptr")))
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def run(runner: str, case: str, tmp_path, capsys=None):
    """Run one cell: ``("error", message)`` or ``("finite", result)``; asserts that the
    input is unchanged and, for the CLI, that an error is one line without a traceback."""
    data, kwargs = CASES[case]()
    if runner.startswith("cli_"):
        path = _write(data, tmp_path / case)
        before = path.read_bytes()
        out = tmp_path / f"{runner}_out.npy"
        cmd = (["embed", str(path), "-o", str(out), "--n-neighbors", "10", "--n-epochs",
                str(N_EPOCHS), "-q"] if runner == "cli_embed" else
               ["cluster", str(path), "-o", str(out), "--n-clusters", "3", "--n-neighbors",
                "10", "--n-epochs", "5", "-q"])
        if capsys is not None:
            capsys.readouterr()
        code = main(cmd)
        err = capsys.readouterr().err if capsys is not None else ""
        assert path.read_bytes() == before, "the CLI changed its input file"
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            assert capsys is None or (len(lines) == 1 and "Traceback" not in err), err
            return "error", (lines[-1] if lines else f"exit {code}")
        return "finite", np.load(out)
    saved = copy.deepcopy((data, kwargs))
    model = _estimator(runner, kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if runner == "Clustering":
                result = model.fit_predict(data)
            else:
                result = model.fit_transform(data)
    except (ValueError, TypeError) as err:
        assert _same((data, kwargs), saved), "the estimator changed the caller's input"
        return "error", str(err)
    assert _same((data, kwargs), saved), "the estimator changed the caller's input"
    return "finite", result


def _n_rows(case: str) -> int:
    data, kwargs = CASES[case]()
    return (data if data is not None else kwargs["p"]).shape[0]


CELLS = [(case, runner) for case in CASES for runner in RUNNERS if runner in EXPECTED[case]]


@pytest.mark.parametrize("case, runner", CELLS, ids=[f"{c}-{r}" for c, r in CELLS])
def test_bad_data(case, runner, tmp_path, capsys):
    kind, result = run(runner, case, tmp_path, capsys)
    expected = EXPECTED[case][runner]
    if expected is not FINITE:
        assert kind == "error", f"expected an error matching {expected!r}; got a result"
        assert re.search(expected, result), result
        return
    assert kind == "finite", f"expected a result; got the error {result!r}"
    n = _n_rows(case)
    result = np.asarray(result)
    if runner in ("Clustering", "cli_cluster"):
        assert result.shape == (n,)
        assert np.issubdtype(result.dtype, np.integer)
        assert result.min() >= 0 and result.max() < 3
        assert np.unique(result).size > 1, "one cluster on data with structure"
    else:
        assert result.shape == (n, 2)
        assert np.isfinite(result).all()
        assert np.ptp(result, axis=0).min() > 1e-3, "a collapsed layout"
