"""Metrics against references; the command line end to end; the benchmark on a tiny dataset."""

import json

import numpy as np
import pytest

from icongraph import metrics
from icongraph.cli import main


def test_trustworthiness_matches_sklearn(blobs):
    from sklearn.manifold import trustworthiness

    X, _ = blobs
    Y = X[:, :2] + np.random.default_rng(0).normal(0, 0.5, (len(X), 2))
    assert metrics.trustworthiness(X, Y, 5, n_samples=None) == pytest.approx(
        trustworthiness(X, Y, n_neighbors=5), abs=1e-6)
    sampled = metrics.trustworthiness(X, Y, 5, n_samples=60)
    assert sampled == pytest.approx(trustworthiness(X, Y, n_neighbors=5), abs=0.03)


def test_knn_preservation_and_accuracy(blobs):
    X, y = blobs
    assert metrics.knn_preservation(X, X, 10) == 1.0
    noise = np.random.default_rng(0).normal(size=X.shape)
    assert metrics.knn_preservation(X, noise, 10) < 0.3
    assert metrics.knn_accuracy(X, y, 5) == 1.0


def test_cluster_metrics():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.hungarian_accuracy(truth, [5, 5, 3, 3, 9, 9]) == 1.0
    assert metrics.hungarian_accuracy(truth, [0, 0, 0, 1, 1, 1]) == pytest.approx(4 / 6)
    assert metrics.adjusted_rand_index(truth, [1, 1, 0, 0, 2, 2]) == 1.0
    assert metrics.normalized_mutual_info(truth, [1, 1, 0, 0, 2, 2]) == pytest.approx(1.0)


def test_cli_embed_npz_and_plot(tmp_path, blobs):
    X, y = blobs
    np.savez(tmp_path / "data.npz", X=X, y=y)
    out, png = tmp_path / "emb.npy", tmp_path / "emb.png"
    assert main(["embed", str(tmp_path / "data.npz"), "-o", str(out), "--plot", str(png),
                 "--n-neighbors", "10", "--n-epochs", "30", "-q"]) == 0
    assert np.load(out).shape == (len(X), 2)
    assert png.stat().st_size > 1000


def test_cli_csv_with_header_and_tsne(tmp_path, blobs):
    X, _ = blobs
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", header="a,b,c,d,e", comments="")
    out = tmp_path / "t.npy"
    assert main(["embed", str(tmp_path / "d.csv"), "-o", str(out), "--method", "tsne",
                 "--perplexity", "10", "--n-epochs", "30", "-q"]) == 0
    assert np.load(out).shape == (len(X), 2)


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan]] * 30))
    assert main(["embed", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "o.npy"), "-q"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "missing.npy"), "-o", "x.npy", "-q"]) == 2


def test_cli_table(capsys):
    assert main(["table"]) == 0
    text = capsys.readouterr().out
    assert "TSNE" in text and "student" in text and "neg" in text


def test_bench_end_to_end_on_tiny_data(tmp_path):
    from icongraph.bench import run_bench

    report = run_bench("digits", 300, ["umap", "tsne"], repeats=1, threads=1,
                       out=str(tmp_path), cold_start=False, verbose=False)
    for method in ("umap", "tsne"):
        r = report["methods"][method]
        assert set(r["phases"]) >= {"knn", "graph", "init", "optimize"}
        assert r["total"] > 0 and r["peak_rss_mb"] > 10
        assert 0 <= r["knn_preservation"] <= 1 and 0 <= r["trustworthiness"] <= 1
        assert r["knn_accuracy"] > 0.5
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["n_samples"] == 300
    assert "| umap |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_cluster_bench_end_to_end_on_tiny_data(tmp_path, capsys):
    assert main(["bench", "--task", "cluster", "--dataset", "manifolds", "--n-samples", "600",
                 "--n-classes", "4", "--no-ablation", "--no-leiden", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cluster_manifolds.json").read_text())
    assert report["n_samples"] == 600 and report["n_clusters"] == 4
    assert set(report["rows"]) == {"icongraph (default: debiased)", "KMeans (sklearn, n_init=10)"}
    for row in report["rows"].values():
        assert 0.0 <= row["acc"] <= 1.0 and row["n_found"] >= 1
    assert report["rss_after_fit_mb"] >= report["rss_after_knn_mb"] > 0
    assert "icongraph (default: debiased)" in capsys.readouterr().out


def test_cli_cluster_writes_labels_and_plot(tmp_path, blobs, capsys):
    X, y = blobs
    np.savez(tmp_path / "data.npz", X=X, y=y)
    out, png = tmp_path / "labels.npy", tmp_path / "clusters.png"
    k = len(np.unique(y))
    assert main(["cluster", str(tmp_path / "data.npz"), "-o", str(out), "--n-clusters", str(k),
                 "--n-neighbors", "10", "--plot", str(png), "-q"]) == 0
    labels = np.load(out)
    assert labels.shape == (len(X),) and metrics.adjusted_rand_index(y, labels) >= 0.95
    assert png.stat().st_size > 1000
    assert "ARI" in capsys.readouterr().out  # scored against the labels in the file
    assert main(["cluster", str(tmp_path / "data.npz"), "-o", str(out), "--n-clusters", "0",
                 "--force", "-q"]) == 2
    assert "n_clusters" in capsys.readouterr().err
    assert main(["cluster", str(tmp_path / "data.npz"), "-o", str(out), "--n-clusters", str(k),
                 "--n-neighbors", "10", "--init", "kmeans", "--head", "free", "--force",
                 "-q"]) == 0
    assert metrics.adjusted_rand_index(y, np.load(out)) >= 0.95


def _brute_neighbours(Z, k):
    """k nearest other rows of each row of Z, by a float64 full distance matrix."""
    d = ((Z[:, None, :].astype(np.float64) - Z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k]


def _brute_vote(nbr_labels):
    return np.array([np.bincount(row).argmax() for row in nbr_labels])


def test_within_sample_readings_match_brute_force():
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 6))
    Y = X[:, :2] + rng.normal(0, 0.7, (120, 2))
    rows = np.sort(np.random.default_rng(3).choice(120, 50, replace=False))  # the documented sample
    high, low = _brute_neighbours(X[rows], 5), _brute_neighbours(Y[rows], 5)
    expected = np.mean([len(set(h) & set(lo)) / 5 for h, lo in zip(high, low)])
    within = metrics.knn_preservation_within_sample(X, Y, 5, n_samples=50, seed=3)
    assert within == pytest.approx(expected, abs=1e-12)
    # a different reading from 50 queries against all 120 points
    assert within != pytest.approx(metrics.knn_preservation(X, Y, 5, n_samples=50, seed=3), abs=1e-3)
    assert metrics.trustworthiness_within_sample(X, Y, 5, n_samples=50, seed=3) == pytest.approx(
        trustworthiness(X[rows], Y[rows], n_neighbors=5), abs=1e-6)
    assert metrics.knn_preservation_within_sample(X, Y, 5, n_samples=None) == pytest.approx(
        metrics.knn_preservation(X, Y, 5, n_samples=None))


def test_knn_accuracies_match_brute_force():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 40)
    Y = rng.normal(size=(120, 2)) + y[:, None] * 0.8  # overlapping classes: accuracy well below 1
    loo = (_brute_vote(y[_brute_neighbours(Y, 10)]) == y).mean()
    assert 0.4 < loo < 0.95
    assert metrics.knn_accuracy(Y, y, 10, n_samples=None) == pytest.approx(loo)
    fold_acc = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=7).split(Y, y):
        d = ((Y[test, None, :] - Y[None, train, :]) ** 2).sum(-1)
        votes = _brute_vote(y[train][np.argsort(d, axis=1)[:, :10]])
        fold_acc.append((votes == y[test]).mean())
    assert metrics.knn_accuracy_cv(Y, y, 10, n_folds=5, seed=7) == pytest.approx(np.mean(fold_acc))


def test_suite_serves_peer_fits_from_the_cache(tmp_path, monkeypatch):
    from pathlib import Path

    from icongraph import bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    X, y = bench._suite_data("digits", 400)
    planted = {0: X[:, :2].copy(), 1: X[:, 2:4].copy()}  # stand-ins for two peer fits
    for seed, Y in planted.items():
        stem = bench._peer_cache_stem("umap-learn", "digits", X, seed, 1)
        np.save(stem + ".npy", Y)
        phases = {"knn": 1.0, "graph": 2.0, "init": 0.5, "optimize": 4.0 + 2 * seed, "jit_warmup": 9.0}
        Path(stem + ".json").write_text(json.dumps({"phases": phases, "peak_rss": 2**30}))
    report = bench.run_suite(["digits"], ["umap-learn"], seeds=[0, 1], threads=1,
                             out=str(tmp_path / "out"), n_samples=400, verbose=False)
    result = report["datasets"]["digits"]["methods"]["umap-learn"]
    assert [run["cached"] for run in result["runs"]] == [True, True]  # no child process ran
    assert result["summary"]["total"]["mean"] == pytest.approx(8.5)  # JIT warm-up excluded
    assert result["summary"]["total"]["sd"] == pytest.approx(np.sqrt(2))
    assert result["summary"]["peak_rss_mb"]["mean"] == pytest.approx(1024)
    accuracies = [metrics.knn_accuracy_cv(planted[s], y, 10, 5, s) for s in (0, 1)]
    assert result["summary"]["acc_cv5"]["mean"] == pytest.approx(np.mean(accuracies))
    table = (tmp_path / "out" / "suite.md").read_text()
    assert "| umap-learn (cached) |" in table and "8.50 ± 1.41" in table
