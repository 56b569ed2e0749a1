"""Placing new points: the targets' rows of new points (``Target.to_new``) and ``transform``."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

import icongraph
from icongraph.knn import KNNIndex, exact_knn
from icongraph.targets import FuzzyTarget, PerplexityTarget, UniformKNNTarget, new_lists


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    new = rng.normal(size=(12, 6)).astype(np.float32)
    return X, new


def fitted_target(spec, X):
    """A target built as the estimators build it: with its spec and the index of its rows."""
    knn = exact_knn(X, spec.n_neighbors_for(len(X)))
    return replace(spec.build(knn), spec=spec, index=KNNIndex(X))


def brute_force(X, new, k):
    """(indices, distances) of the k nearest rows of X, from a dense float64 matrix."""
    d = np.sqrt(((new[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("perplexity", [None, 4.0])
def test_perplexity_rows_of_new_points(points, perplexity):
    """Row a is a Gaussian in the squared distance to the 3 x perplexity nearest fitted rows,
    sums to 1 and has the asked perplexity (the fit's, or openTSNE's override)."""
    X, new = points
    target = fitted_target(PerplexityTarget(6.0), X)
    rows = target.to_new(new) if perplexity is None else target.to_new(new, perplexity=perplexity)
    assert rows.shape == (len(new), len(X)) and sp.isspmatrix_csr(rows)
    chosen = 6.0 if perplexity is None else perplexity
    idx, dist = brute_force(X, new, int(3 * chosen))
    neighbours, w = new_lists(rows)
    np.testing.assert_array_equal(neighbours, idx)
    w = w.astype(np.float64)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    entropy = -(w * np.log(w)).sum(1)
    np.testing.assert_allclose(np.exp(entropy), chosen, rtol=1e-3)
    log_w = np.log(w)  # = -beta_a d^2 + c_a: linear in d^2 along each row
    for row in range(len(new)):
        slope, intercept = np.polyfit(dist[row] ** 2, log_w[row], 1)
        np.testing.assert_allclose(log_w[row], slope * dist[row] ** 2 + intercept, atol=1e-4)
        assert slope < 0


def test_uniform_rows_of_new_points(points):
    X, new = points
    rows = fitted_target(UniformKNNTarget(7), X).to_new(new)
    idx, _ = brute_force(X, new, 7)
    neighbours, w = new_lists(rows)
    np.testing.assert_array_equal(neighbours, idx)
    np.testing.assert_allclose(w, 1.0 / 7)


def test_fuzzy_rows_of_new_points_follow_umap_learn_transform(points):
    """umap-learn's transform: n_neighbors nearest fitted rows, local_connectivity - 1 = 0 (no
    membership pinned at 1: w = exp(-d / sigma_a)) and memberships summing to
    log2(n_neighbors)."""
    X, new = points
    rows = fitted_target(FuzzyTarget(10), X).to_new(new)
    idx, dist = brute_force(X, new, 10)
    neighbours, w = new_lists(rows)
    np.testing.assert_array_equal(neighbours, idx)
    np.testing.assert_allclose(w.sum(1), np.log2(10), rtol=1e-4)
    sigma = -dist / np.log(w.astype(np.float64))
    np.testing.assert_allclose(sigma, np.broadcast_to(sigma[:, :1], sigma.shape), rtol=1e-4)
    assert (w < 1).all()


def test_a_training_row_finds_itself(points):
    X, _ = points
    for spec in (PerplexityTarget(6.0), UniformKNNTarget(7), FuzzyTarget(10)):
        neighbours, w = new_lists(fitted_target(spec, X).to_new(X[:9]))
        np.testing.assert_array_equal(neighbours[:, 0], np.arange(9))
        assert (w[:, 0] == w.max(1)).all()


def test_a_precomputed_target_cannot_place_new_points(points):
    X, new = points
    graph = exact_knn(X, 5)
    csr = sp.csr_matrix((np.ones(graph.indices.size), graph.indices.ravel(),
                         np.arange(0, graph.indices.size + 1, 5)), shape=(len(X), len(X)))
    model = icongraph.ICon(p=csr, q="umap", estimator="neg", n_epochs=5, random_state=0).fit(X)
    with pytest.raises(ValueError, match="precomputed p has no features"):
        model.transform(new)
    with pytest.raises(ValueError, match="keeps no kNN index"):
        PerplexityTarget(6.0).build(exact_knn(X, 18)).to_new(new)
