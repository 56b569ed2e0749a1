"""The clustering benchmark: its metrics against brute force, the configuration rows, the
suite end to end on tiny data, and the command line's routing to it."""

import argparse
import itertools
import json

import numpy as np
import pytest

from icongraph import metrics


def _random_labelings(n_cases: int, max_k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n = int(rng.integers(2, 13))
        true = rng.integers(0, int(rng.integers(1, max_k + 1)), n)
        pred = rng.integers(0, int(rng.integers(1, max_k + 1)), n) * 7 + 3  # arbitrary codes
        yield true, pred


def _brute_hungarian(true, pred) -> float:
    """Best one-to-one matching of predicted clusters to classes over every permutation."""
    classes, clusters = np.unique(true), np.unique(pred)
    m = max(len(classes), len(clusters))
    table = np.zeros((m, m), np.int64)
    for t, p in zip(true, pred):
        table[np.searchsorted(clusters, p), np.searchsorted(classes, t)] += 1
    best = max(sum(table[i, perm[i]] for i in range(m)) for perm in itertools.permutations(range(m)))
    return best / len(true)


def _pair_counts(true, pred):
    """(both same, same in true only, same in pred only, both different) over all pairs."""
    counts = [0, 0, 0, 0]
    for i, j in itertools.combinations(range(len(true)), 2):
        st, sp_ = true[i] == true[j], pred[i] == pred[j]
        counts[0 if st and sp_ else 1 if st else 2 if sp_ else 3] += 1
    return counts


def _brute_ari(true, pred) -> float:
    n11, n10, n01, n00 = _pair_counts(true, pred)
    denominator = (n00 + n01) * (n01 + n11) + (n00 + n10) * (n10 + n11)
    if denominator == 0:  # scikit-learn's convention for the degenerate cases
        return 1.0
    return 2.0 * (n00 * n11 - n01 * n10) / denominator


def _entropy(labels) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _brute_nmi(true, pred) -> float:
    n = len(true)
    mi = 0.0
    for t in np.unique(true):
        for p in np.unique(pred):
            joint = np.sum((true == t) & (pred == p)) / n
            if joint > 0:
                mi += joint * np.log(joint / (np.mean(true == t) * np.mean(pred == p)))
    h = (_entropy(true) + _entropy(pred)) / 2
    return mi / h


def test_hungarian_accuracy_is_the_best_matching_over_all_permutations():
    for true, pred in _random_labelings(300):
        assert metrics.hungarian_accuracy(true, pred) == pytest.approx(_brute_hungarian(true, pred))


def test_ari_matches_the_pair_counting_definition():
    for true, pred in _random_labelings(300, seed=1):
        assert metrics.adjusted_rand_index(true, pred) == pytest.approx(_brute_ari(true, pred),
                                                                        abs=1e-12)


def test_nmi_matches_the_entropy_definition():
    for true, pred in _random_labelings(300, seed=2):
        if len(np.unique(true)) < 2 or len(np.unique(pred)) < 2:
            continue  # one entropy is 0: a convention, not a definition
        assert metrics.normalized_mutual_info(true, pred) == pytest.approx(
            _brute_nmi(true, pred), abs=1e-12)


def test_metrics_ignore_the_names_of_the_clusters():
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([5, 5, 9, 9, 1, 1, 1])
    assert metrics.adjusted_rand_index(true, pred) == pytest.approx(1.0)
    assert metrics.normalized_mutual_info(true, pred) == pytest.approx(1.0)
    assert metrics.hungarian_accuracy(true, pred) == pytest.approx(1.0)


def test_configuration_rows_run_or_are_not_available():
    from icongraph.bench import ABLATION, clustering_refuses, resolve_config

    assert clustering_refuses({"method": "infonce", "alpha": 0.2}) is None
    assert "no_such_knob" in clustering_refuses({"no_such_knob": 1})
    assert clustering_refuses({"n_clusters": 0}) is not None  # a value its rule rejects
    params, note = resolve_config({"no_such_knob": 1})
    assert params is None and note.startswith("not available")
    for _, row in ABLATION:  # every ablation knob exists
        assert resolve_config(row) == (row, "")


def test_unweighted_knn_graph_is_symmetric_and_binary():
    from icongraph.communities import unweighted_knn_graph
    from icongraph.knn import knn_search

    X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    knn = knn_search(X, 5, random_state=0)
    graph = unweighted_knn_graph(knn)
    assert (graph != graph.T).nnz == 0
    assert set(np.unique(graph.data)) == {1.0}
    assert graph.diagonal().sum() == 0
    for i in range(60):
        assert set(knn.indices[i]) <= set(graph[i].indices)


def test_cluster_suite_smoke(tmp_path):
    from icongraph.bench import ABLATION, run_cluster_suite

    report = run_cluster_suite(["digits"], seeds=[0], out=str(tmp_path), n_samples=300,
                               ablation=[ABLATION[0], ABLATION[2]],
                               params={"n_jobs": 1, "n_epochs": 50}, verbose=False)
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved["datasets"].keys() == {"digits"}
    data = saved["datasets"]["digits"]
    assert data["n_samples"] == 300 and data["n_classes"] == 10 and data["knn_neighbors"] == 15
    for name in ("ours (K)", "KMeans (n_init=10)", "Leiden (resolution 1)",
                 "Leiden (resolution for K)"):
        summary = data["methods"][name]["summary"]
        assert 0.3 < summary["ari"]["mean"] <= 1 and 0.3 < summary["nmi"]["mean"] <= 1
        assert 0 < summary["acc"]["mean"] <= 1 and summary["seconds"]["mean"] > 0
    assert data["methods"]["ours (K)"]["summary"]["n_found"]["mean"] <= 10
    auto = data["methods"]["ours (n_clusters=None)"]
    assert "summary" in auto or auto["skipped"].startswith("not available")
    assert list(data["ablation"]) == [ABLATION[0][0], ABLATION[2][0]]
    markdown = (tmp_path / "suite.md").read_text()
    assert "## digits: 300 x 64" in markdown and "## Ablation" in markdown
    assert "ours (K) - best of Leiden at K, KMeans" in markdown
    assert report["seeds"] == [0]
    assert not list(tmp_path.glob(".suite*"))  # no temporary file left behind


def test_cli_routes_the_cluster_suite(monkeypatch, tmp_path):
    import icongraph.bench as bench

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return {"seeds": [0], "datasets": {}}

    monkeypatch.setattr(bench, "run_cluster_suite", fake)
    parser = argparse.ArgumentParser()
    bench.add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--task", "cluster", "--suite", "real", "--datasets",
                              "digits,tissue", "--seeds", "3,4", "--n-samples", "500",
                              "--out", str(tmp_path), "--no-leiden", "--no-ablation", "-q"])
    assert args.func(args) == 0
    (datasets, seeds, out, n_samples), kwargs = calls[0]
    assert datasets == ["digits", "tissue"] and seeds == [3, 4] and out == str(tmp_path)
    assert n_samples == 500
    assert kwargs == {"leiden": False, "ablation": False, "verbose": False}
