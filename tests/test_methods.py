"""The methods table: every row builds and runs on small data, names are forgiving, and the
table is printed by the CLI."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_digits

import icongraph
from icongraph.knn import knn_search
from icongraph.methods import methods, methods_markdown
from icongraph.metrics import knn_accuracy, retrieval_accuracy


@pytest.fixture(scope="module")
def digits_small():
    from icongraph.datasets import load_digits

    X, y = load_digits()
    return X[:300], y[:300]


@pytest.mark.parametrize("row", methods(), ids=lambda row: row.name)
def test_every_row_builds_and_runs(row, digits_small):
    X, y = digits_small
    params = {"random_state": 0, "n_epochs": 20}
    fit_args = {"X, y": (X, y), "X, X_pair": (X[:, :32], X[:, 32:])}.get(row.needs, (X,))
    if row.needs == "graph":
        knn = knn_search(X, 10, random_state=0)
        graph = sp.csr_matrix((np.ones(knn.indices.size), knn.indices.ravel(),
                               np.arange(0, knn.indices.size + 1, 10)), shape=(300, 300))
        params["graph"] = graph
        fit_args = (X,)
    if "phi" in row.learned:
        params["n_clusters"] = 10
    model = icongraph.method(row.name, **params)
    model.fit(*fit_args)
    if "phi" in row.learned:
        assert len(np.unique(model.labels_)) > 1
    elif "prototypes" in row.learned:
        assert model.score(X, y) > 0.9  # training accuracy after 20 epochs: 0.997, 0.987
    elif row.needs == "X, X_pair":  # the top and bottom halves of the digits
        recall = retrieval_accuracy(model.embedding_, model.pair_embedding_, k=10)
        assert recall > 0.2  # training recall@10 after 20 epochs: 0.37, 0.33; 10 / 300 by chance
    else:
        assert model.embedding_.shape == (300, model.n_components)
        assert np.isfinite(model.embedding_).all()
        # 20 epochs from the start (learning_rate=0: 10-NN accuracy 0.72-0.74) to 0.82-1.00
        assert knn_accuracy(model.embedding_, y) > 0.8


def test_names_are_case_and_separator_insensitive():
    a = icongraph.method("Debiased_InfoNCE clustering", n_clusters=4)
    assert isinstance(a, icongraph.Clustering) and a.method == "debiased"
    assert icongraph.method(" T-SupCon ").target_weight == 1.0
    assert icongraph.method("tsne", perplexity=50).perplexity == 50  # the caller's params pass


def test_unknown_names_and_missing_graphs_are_refused():
    with pytest.raises(ValueError, match="unknown method 'tnse'.*tsne"):
        icongraph.method("tnse")
    with pytest.raises(ValueError, match="graph=G"):
        icongraph.method("graph-tsne")
    with pytest.raises(TypeError):
        icongraph.method(3)


def test_rows_are_distinct_and_documented():
    rows = icongraph.methods()
    assert len({row.name for row in rows}) == len(rows) >= 10
    assert all(row.p and row.q and row.learned and row.reference for row in rows)


def test_cli_table_lists_every_method():
    out = subprocess.run([sys.executable, "-m", "icongraph.cli", "table", "--markdown"],
                         capture_output=True, text=True, check=True).stdout
    for row in icongraph.methods():
        assert f"`{row.name}`" in out


def test_markdown_rows_keep_their_six_cells():
    """A ``|`` inside a cell (the cluster kernel's phi(c|i)) is escaped, not a new column."""
    import re

    for line in methods_markdown().splitlines():
        assert len(re.findall(r"(?<!\\)\|", line)) == 7, line


def test_encoder_works_for_the_clustering_and_classifier_rows():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    clusters = icongraph.method("kmeans", n_clusters=10, encoder=(32,), random_state=0,
                                n_epochs=20, n_jobs=1, perplexity=10).fit(X)
    assert isinstance(clusters.head_, torch.nn.Sequential) and clusters.head == (32,)
    assert clusters.predict(X[:5]).shape == (5,)
    classifier = icongraph.method("cross-entropy", encoder=module, n_components=10,
                                  random_state=0, n_epochs=30, n_jobs=1).fit(X, y)
    assert classifier.head is module and classifier.head_ is not module  # copied, not trained
    assert classifier.score(X, y) > 0.5
    with pytest.raises(ValueError, match="encoder= or head=, not both"):
        icongraph.method("ncut", n_clusters=3, encoder="mlp", head="linear")
