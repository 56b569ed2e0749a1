"""Precision far from the origin: the exact kNN search, the metrics and transform against
float64 brute force, with feature offsets up to 1e6 (issue 11, item 4)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import icongraph
from icongraph import metrics
from icongraph.knn import exact_knn

OFFSETS = [0.0, 1e3, 1e4, 1e6]


def brute_force(X, Q, metric):
    """float64 distances from the rows of Q to the rows of X, by direct differences (cosine:
    ``1 - cos = |u - v|^2 / 2`` on the float64 unit rows, exact even when the angles are tiny)."""
    X, Q = np.asarray(X, np.float64), np.asarray(Q, np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        return cdist(Q, X, "sqeuclidean") / 2
    return cdist(Q, X)


def recall(found, true):
    return np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(found, true)])


def check_against_brute_force(knn, d, k):
    """Recall of the true k nearest and each returned distance against float64 brute force."""
    true = np.argsort(d, axis=1, kind="stable")[:, :k]
    assert recall(knn.indices, true) >= 0.999
    np.testing.assert_allclose(knn.distances, np.take_along_axis(d, true, 1), rtol=1e-4)
    np.testing.assert_allclose(knn.distances, np.take_along_axis(d, knn.indices, 1), rtol=1e-4)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_exact_knn_far_from_origin(metric, offset):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20)) + offset  # float64 in: the offset is the data's own
    d = brute_force(X, X, metric)
    np.fill_diagonal(d, np.inf)
    check_against_brute_force(exact_knn(X, 10, metric), d, 10)
    Q = rng.normal(size=(50, 20)) + offset  # new points against the reference
    check_against_brute_force(exact_knn(X, 10, metric, queries=Q), brute_force(X, Q, metric), 10)


def test_exact_knn_widely_spread_clusters():
    """Tight clusters far apart (spread 300x the cluster width): after centring the norms are
    still large, so candidates from the expanded distances must be re-ranked exactly."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 20)) * 300.0
    X = centres[rng.integers(0, 40, 1500)] + rng.normal(size=(1500, 20))
    d = brute_force(X, X, "euclidean")
    np.fill_diagonal(d, np.inf)
    check_against_brute_force(exact_knn(X, 15), d, 15)


def test_exact_ties_on_integer_data(digits):
    """Integer pixels (digits, 0..16), also moved to 1e3: distances exact, ties exactly equal
    and given to the lower index, as a stable sort of float64 brute force does."""
    X, _ = digits
    d = brute_force(X, X, "euclidean")
    np.fill_diagonal(d, np.inf)
    true = np.argsort(d, axis=1, kind="stable")[:, :10]
    for offset in [0.0, 1e3]:
        knn = exact_knn(X + np.float32(offset), 10)  # still integers: exact in float32
        np.testing.assert_array_equal(knn.indices, true)
        np.testing.assert_allclose(knn.distances, np.take_along_axis(d, true, 1), rtol=3e-7)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_knn_independent_of_blocks(metric):
    """A query's neighbours and distances do not depend on the other queries in its block;
    a reference row as a query is at distance exactly 0 from itself."""
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(400, 12)) + 1e3).astype(np.float32)
    Q = np.vstack([X[:20], (rng.normal(size=(20, 12)) + 1e3).astype(np.float32)])
    batch = exact_knn(X, 8, metric, queries=Q)
    blocked = exact_knn(X, 8, metric, queries=Q, block_size=7)
    alone = [exact_knn(X, 8, metric, queries=Q[i:i + 1]) for i in range(len(Q))]
    for indices, distances in [(blocked.indices, blocked.distances),
                               (np.vstack([a.indices for a in alone]),
                                np.vstack([a.distances for a in alone]))]:
        np.testing.assert_array_equal(indices, batch.indices)
        np.testing.assert_array_equal(distances, batch.distances)
    np.testing.assert_array_equal(batch.indices[:20, 0], np.arange(20))
    np.testing.assert_array_equal(batch.distances[:20, 0], 0.0)


def test_cosine_zero_rows_keep_distance_one():
    """``1 - u.v`` with a zero row is 1 against every row (as before centring)."""
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    knn = exact_knn(X, 4, "cosine")
    np.testing.assert_allclose(knn.distances[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(knn.distances[1], [1 - np.sqrt(0.5), 1, 1, 1], atol=1e-6)


def test_trustworthiness_unchanged_by_an_offset():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 10))
    Y = X[:, :2] + rng.normal(scale=0.5, size=(200, 2))
    for offset in [1e3, 1e4, 1e6]:
        shifted = (X + offset).astype(np.float32)  # what a user passes: float32 far from 0
        same = shifted.astype(np.float64) - offset  # the same float32 points at the origin
        expected = metrics.trustworthiness(same, Y, 10, n_samples=None)
        assert expected < 0.99  # the embedding loses something: a value that can move
        assert metrics.trustworthiness(shifted, Y, 10, n_samples=None) == pytest.approx(
            expected, abs=1e-6)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 10)) + 100.0).astype(np.float32)
    return icongraph.UMAP(n_epochs=20, random_state=0).fit(X), X, rng


def test_transform_alone_equals_batch(fitted):
    """A point transformed alone equals the same point transformed in a batch, for training
    rows (at distance 0 from themselves: the self-distance used to come out as 1e-3 alone)
    and for new points."""
    model, X, rng = fitted
    new = (rng.normal(size=(40, 10)) + 100.0).astype(np.float32)
    for points in (X, new):
        batch = model.transform(points)
        rows = range(0, len(points), 15 if points is X else 4)
        alone = np.vstack([model.transform(points[i:i + 1]) for i in rows])
        np.testing.assert_allclose(alone, batch[list(rows)], rtol=0, atol=1e-5)
