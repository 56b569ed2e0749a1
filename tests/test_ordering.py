"""The cache-friendly paths of large fits: the locality order (the relabelled graph against
scipy, the reordered objective's gradient against the original's and its restoration, a fit
run in that order), the pooled negatives' fit, and the kNN search's spatial order."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import make_blobs

import icongraph
from icongraph import _cpu_engine as cpu
from icongraph import metrics, ordering
from icongraph.kernels import StudentKernel, UMAPKernel
from icongraph.knn import exact_knn
from icongraph.objective import Objective
from icongraph.targets import FuzzyTarget, PerplexityTarget, debias

NO_DOF = np.zeros(0, np.float32)


def _graph(n=300, seed=0):
    X, _ = make_blobs(4, n // 4, 5, 1.0)
    return FuzzyTarget(10).build(exact_knn(X, 10)), X


def test_csr_permutation_is_the_relabelled_matrix():
    target, _ = _graph()
    g = target.graph.tocsr()
    g.sort_indices()
    order = np.random.default_rng(0).permutation(g.shape[0])
    moved = ordering.CSRPermutation(g.indptr.astype(np.int64), order)
    got = sp.csr_matrix((moved.values(g.data), moved.indices(g.indices.astype(np.int32)),
                         moved.indptr), shape=g.shape)
    expected = g[order][:, order]
    assert abs(got - expected).max() == 0
    assert got.nnz == expected.nnz
    assert np.array_equal(moved.rank[order], np.arange(g.shape[0]))


def test_locality_order_is_a_permutation_that_narrows_the_graph():
    """Reverse Cuthill-McKee on the kNN graph of shuffled points along a curve: every edge's
    two rows end up much closer than in the shuffled order."""
    rng = np.random.default_rng(1)
    t = rng.permutation(np.linspace(0, 6, 600))
    X = np.c_[np.cos(t), np.sin(t), t] + rng.normal(0, 0.01, (600, 3))
    g = FuzzyTarget(10).build(exact_knn(X, 10)).graph.tocsr()
    order = ordering.locality_order(g.indptr, g.indices)
    assert np.array_equal(np.sort(order), np.arange(g.shape[0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rows = np.repeat(np.arange(g.shape[0]), np.diff(g.indptr))
    before = np.abs(rows - g.indices).mean()
    after = np.abs(rank[rows] - rank[g.indices]).mean()
    assert after < 0.05 * before


@pytest.mark.parametrize("estimator, q_alpha", [("neg", 0.0), ("per_anchor", 0.0),
                                                ("global", 0.0), ("per_anchor", 0.3)])
@pytest.mark.parametrize("edge_sampling", [False, True])
def test_reordered_objective_gives_the_permuted_gradient(estimator, q_alpha, edge_sampling):
    """Exact negatives (every other point) make the gradient independent of the draws: the
    reordered objective's gradient at y[order] is the original's, row for row, with the
    edges' weights, schedule, shares and the row masses carried along."""
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(10)
    X, _ = make_blobs(3, 40, 4, 1.0)
    target = debias(spec.build(exact_knn(X, spec.n_neighbors_for(len(X)))), 0.2)
    kernel = UMAPKernel(1.0, 1.2) if estimator == "neg" else StudentKernel(1.0)
    obj = Objective(target, kernel, estimator, n_negatives=0, edge_sampling=edge_sampling,
                    q_alpha=q_alpha)
    order = np.random.default_rng(2).permutation(obj.n)
    moved = copy.deepcopy(obj)
    moved.reorder_(order)
    y = np.random.default_rng(3).normal(size=(obj.n, 2)).astype(np.float32)
    z_prev = np.random.default_rng(4).uniform(5, 10, obj.n).astype(np.float32)

    def gradient(o, y, z):
        n = len(y)
        grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
        if q_alpha:
            s_rows = np.zeros(n, np.float32)
            cpu.sampled_gradient_q(y, o.engine, 3, 1.0, 7, z, o.row_mass, 0.0, 0.0, True, grad,
                                   zsum, s_rows, rows, NO_DOF)
        else:
            cpu.sampled_gradient(y, o.engine, 3, 1.0, 7, z, 0.37, True, grad, zsum, rows, NO_DOF)
        return grad, zsum, rows

    expected = gradient(obj, y, z_prev)
    got = gradient(moved, y[order], z_prev[order])
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e[order], rtol=1e-4, atol=1e-6 * np.abs(e).max())
    assert not np.allclose(got[0], expected[0], atol=1e-3 * np.abs(expected[0]).max())
    rank = np.empty_like(order)
    rank[order] = np.arange(obj.n)
    moved.reorder_(rank)  # back to the first order: the same arrays
    for name in ("indptr", "indices", "weights", "edge_rate", "edge_phase", "edge_share",
                 "row_mass", "neg_scale"):
        assert np.array_equal(getattr(moved, name), getattr(obj, name)), name


def test_optimize_restores_the_objective_unless_told_not_to(monkeypatch):
    """A run in the locality order relabels the caller's objective back afterwards; with
    ``restore_objective=False`` (the fit, which reads only its scalars) it is left relabelled
    and the embedding is the same."""
    from icongraph.optimize import optimize

    monkeypatch.setattr(ordering, "LOCALITY_MIN_SAMPLES", 0)
    target, _ = _graph()
    y0 = np.random.default_rng(0).normal(size=(target.n_samples, 2)).astype(np.float32)
    runs = []
    for restore in (True, False):
        obj = Objective(target, UMAPKernel(1.6, 0.9), "neg", n_negatives=5)
        indices = obj.indices.copy()
        y, _ = optimize(obj, y0, n_epochs=5, seed=1, restore_objective=restore)
        assert np.array_equal(obj.indices, indices) == restore
        runs.append(y)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.quality
def test_a_fit_in_the_locality_order(digits, monkeypatch):
    """UMAP run in the locality order (threshold lowered to digits' size): the embedding
    comes back in the data's order, as good as the unordered fit, and the callbacks see the
    data's order. 10-NN accuracy 0.987 both, kNN preservation 0.535 / 0.534; with the
    optimiser off 0.64 and 0.15."""
    X, y = digits
    plain = icongraph.UMAP(random_state=0).fit_transform(X)
    monkeypatch.setattr(ordering, "LOCALITY_MIN_SAMPLES", 0)
    seen = []
    model = icongraph.UMAP(random_state=0, callbacks=[
        lambda epoch, loss, emb: seen.append(emb.numpy().copy())])
    ordered = model.fit_transform(X)
    assert not np.allclose(ordered, plain)  # another order, other negatives
    np.testing.assert_array_equal(seen[-1], ordered)
    for embedding in (plain, ordered):
        assert metrics.knn_accuracy(embedding, y, 10) > 0.95
    assert abs(metrics.knn_preservation(X, ordered, 15)
               - metrics.knn_preservation(X, plain, 15)) < 0.03


@pytest.mark.quality
def test_a_fit_with_pooled_negatives(digits, monkeypatch):
    """UMAP with each epoch's negatives drawn from a pool (threshold lowered to digits' size,
    a pool of 256 of the 1797 points) is as good as with negatives uniform over all points:
    10-NN accuracy 0.987 both, kNN preservation 0.535 / 0.528; with the optimiser off 0.643
    and 0.151 either way."""
    X, y = digits
    plain = icongraph.UMAP(random_state=0).fit_transform(X)
    monkeypatch.setattr(cpu, "POOL_MIN_SAMPLES", 0)
    monkeypatch.setattr(cpu, "POOL_SIZE", 256)
    pooled = icongraph.UMAP(random_state=0).fit_transform(X)
    assert not np.allclose(pooled, plain)  # other negatives
    for embedding in (plain, pooled):
        assert metrics.knn_accuracy(embedding, y, 10) > 0.95
    assert abs(metrics.knn_preservation(X, pooled, 15)
               - metrics.knn_preservation(X, plain, 15)) < 0.03


def test_spatial_order_puts_near_rows_near_each_other():
    """On a shuffled curve in 10-D the spatial order is a permutation in which nearly every
    point's nearest neighbour sits within a leaf's width of rows (in the shuffled order, a
    random place), for the euclidean and the cosine reading."""
    rng = np.random.default_rng(0)
    t = rng.permutation(np.linspace(0, 6 * np.pi, 6000))
    X = np.stack([np.cos(t), np.sin(t), t / 3] + [0.01 * rng.normal(size=t.size)] * 7, 1) + 5.0
    X = X.astype(np.float32)
    nearest = exact_knn(X, 1).indices[:, 0]
    for normalise in (False, True):
        order = ordering.spatial_order(X, normalise=normalise, seed=0)
        np.testing.assert_array_equal(np.sort(order), np.arange(len(X)))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(X))
        near = np.abs(rank - rank[nearest]) <= ordering.SPATIAL_LEAF_SIZE
        assert near.mean() > 0.9
        assert (np.abs(np.arange(len(X)) - nearest) <= ordering.SPATIAL_LEAF_SIZE).mean() < 0.2
    np.testing.assert_array_equal(order, ordering.spatial_order(X, normalise=True, seed=0))


def test_permuted_rows_and_back(tmp_path, monkeypatch):
    """permuted_rows gathers X[order] from a memmap in blocks; the kNN search's lists found
    in that order (the point itself listed first) come back in the data's order, renamed,
    without the point."""
    from icongraph.knn import _others_in_data_order

    monkeypatch.setattr(ordering, "SPATIAL_BLOCK_ROWS", 7)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    np.save(tmp_path / "X.npy", X)
    order = rng.permutation(len(X))
    got = ordering.permuted_rows(np.load(tmp_path / "X.npy", mmap_mode="r"), order)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, X[order].astype(np.float32))
    knn = exact_knn(X, 4)
    moved = exact_knn(got, 4)  # the same search on the permuted rows, the point itself first
    rows = np.arange(len(X))[:, None]
    with_self = (np.hstack([rows, moved.indices]), np.hstack([0 * rows, moved.distances]))
    got_knn = _others_in_data_order(*with_self, order, 4, "euclidean")
    np.testing.assert_array_equal(got_knn.indices, knn.indices)
    np.testing.assert_allclose(got_knn.distances, knn.distances, rtol=1e-5)
    # no self entry: the farthest is dropped
    got_knn = _others_in_data_order(moved.indices, moved.distances, order, 3, "euclidean")
    np.testing.assert_array_equal(got_knn.indices, knn.indices[:, :3])


def test_nndescent_in_the_spatial_order_returns_the_data_order(monkeypatch, tmp_path):
    """From SPATIAL_MIN_SAMPLES rows the search runs on a spatially ordered copy of a memmap
    (an exact search stands in for pynndescent and records what it was given): the graph
    comes back in the data's order, equal to the exact graph, and the copy is a float32
    array in memory, not the map."""
    import pynndescent

    import icongraph.knn as knn_module

    given = []

    class ExactStandIn:
        def __init__(self, X, n_neighbors, **kwargs):
            given.append(X)
            found = exact_knn(X, n_neighbors - 1)
            self.neighbor_graph = (np.hstack([np.arange(len(X))[:, None], found.indices]),
                                   np.hstack([np.zeros((len(X), 1)), found.distances]))

    monkeypatch.setattr(pynndescent, "NNDescent", ExactStandIn)
    monkeypatch.setattr(knn_module, "SPATIAL_MIN_SAMPLES", 100)
    X, _ = make_blobs(6, 100, 8, 5.0)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    got = knn_module.nndescent_knn(mapped, 7)
    assert type(given[0]) is np.ndarray and given[0].dtype == np.float32
    assert not np.array_equal(given[0], X)  # searched in another order
    expected = exact_knn(X, 7)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_allclose(got.distances, expected.distances, rtol=1e-5)
