"""Placing new points: the targets' rows of new points (``Target.to_new``) and ``transform``."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import icongraph
from icongraph._transform_engine import (
    partial_arrays,
    partial_gradient,
    partial_gradient_torch,
    point_keys,
    torch_partial_arrays,
)
from icongraph.kernels import (
    CosineKernel,
    GaussianKernel,
    SphereStudentKernel,
    StudentKernel,
    UMAPKernel,
)
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


# -- the optimising transform ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_split():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    test = np.arange(len(X)) % 5 == 0
    return X[~test], y[~test], X[test], y[test]


@pytest.mark.parametrize("make", [
    lambda: icongraph.UMAP(n_neighbors=10, n_epochs=30, random_state=0),
    lambda: icongraph.TSNE(perplexity=10, n_epochs=60, random_state=0),
    lambda: icongraph.SNE(perplexity=10, n_epochs=30, random_state=0),
    lambda: icongraph.ICon(p="knn", q="student", estimator="global", alpha=0.2, n_epochs=30,
                           random_state=0),
], ids=["UMAP", "TSNE", "SNE", "ICon"])
def test_a_batch_and_its_points_one_by_one_agree(points, make):
    """The optimised placement of a point does not depend on the batch: alone, in a batch, in
    a shuffled batch or beside its own duplicate (1e-4 of the layout's extent); the fit's
    embedding is never modified, and the optimisation moves the points off the weighted mean."""
    X, new = points
    model = make().fit(X)
    before = model.embedding_.copy()
    batch = model.transform(new)
    np.testing.assert_array_equal(model.embedding_, before)
    scale = np.abs(batch).max()
    alone = np.vstack([model.transform(new[i:i + 1]) for i in range(len(new))])
    assert np.abs(alone - batch).max() <= 1e-4 * scale
    order = np.random.default_rng(1).permutation(len(new))
    assert np.abs(model.transform(new[order]) - batch[order]).max() <= 1e-4 * scale
    twice = model.transform(np.vstack([new[:3], new[:3]]))
    assert np.abs(twice - np.vstack([batch[:3], batch[:3]])).max() <= 1e-4 * scale
    mean = model.set_params(transform_epochs=0).transform(new)
    assert np.abs(mean - batch).max() > 1e-3 * scale


def small_problem(kernel, estimator, alpha, n_neg, seed=0, scale=1.5):
    """Partial arrays of 6 new points with 5 neighbours each among 40 fitted points."""
    rng = np.random.default_rng(seed)
    n, m, k = 40, 6, 5
    reference = rng.normal(scale=scale, size=(n, 2)).astype(np.float32)
    y = rng.normal(scale=scale, size=(m, 2)).astype(np.float32)
    idx = np.stack([rng.choice(n, k, replace=False) for _ in range(m)])
    w = rng.uniform(0.1, 1.0, size=(m, k))
    if estimator != "neg":
        w /= w.sum(1, keepdims=True)
    rows = sp.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, m * k + 1, k)), shape=(m, n))
    arrays = partial_arrays(rows, kernel, estimator, n_neg, 5.0, np.inf, alpha, w_max=1.0)
    return arrays, rows, reference, y


def dense_partial_loss(kernel, estimator, alpha, rows, reference, y, rate=5.0, w_max=1.0):
    """sum_a L_a on dense float64 matrices (the module formulas of _transform_engine)."""
    p = torch.as_tensor(rows.toarray(), dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    d2 = ((y[:, None, :] - ref[None]) ** 2).sum(-1)
    log_k = kernel.log_k_torch(d2)
    mass = p.sum(1)
    n = ref.shape[0]
    if estimator == "neg":
        rep = (rate * mass / (w_max * n))[:, None] * -torch.log(1 - torch.exp(log_k))
        return (-(p / w_max) * log_k).sum() + rep.sum()
    p_t = (1 - alpha) * p + (alpha * mass / n)[:, None]
    return (-(p_t * log_k)).sum() + (mass * torch.logsumexp(log_k, 1)).sum()


KERNELS = [GaussianKernel(1.0), StudentKernel(1.0), StudentKernel(0.6), UMAPKernel(1.2, 0.9),
           CosineKernel(0.5), SphereStudentKernel(1.0, 0.5)]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{k.params[0]:g}")
@pytest.mark.parametrize("estimator,alpha", [("per_anchor", 0.0), ("per_anchor", 0.3),
                                             ("neg", 0.0)])
def test_exact_partial_gradient_is_the_dense_objectives_gradient(kernel, estimator, alpha):
    """n_negatives=0 enumerates every fitted point: the engine's gradient and loss are autograd
    and the value of the dense conditional objective of the new points (the fitted points
    frozen; the loss without the constant sum p~ log p~). NEG's regularised repulsion (0.001
    added to d2 in UMAP's denominator) is checked on a wider layout (d2 >> 0.001), to 1e-3."""
    arrays, rows, reference, y = small_problem(kernel, estimator, alpha, 0,
                                               scale=6.0 if estimator == "neg" else 1.5)
    grad = np.zeros_like(y)
    loss_rows = np.zeros(len(y), np.float32)
    partial_gradient(y, reference, arrays, point_keys(y), 7, True, grad, loss_rows)
    y_t = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    loss = dense_partial_loss(kernel, estimator, alpha, rows, reference, y_t)
    (expected,) = torch.autograd.grad(loss, y_t)
    tol = 1e-3 if estimator == "neg" and kernel.code == 2 else 2e-4
    np.testing.assert_allclose(grad, expected.numpy(), rtol=tol, atol=tol * np.abs(grad).max())
    assert float(loss_rows.sum()) == pytest.approx(loss.item(), rel=tol)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{k.params[0]:g}")
@pytest.mark.parametrize("estimator,alpha", [("per_anchor", 0.2), ("neg", 0.0)])
def test_numba_and_torch_partial_gradients_agree(kernel, estimator, alpha):
    """The two engines draw the same negatives (keyed by the point's values) and compute the
    same sampled gradient and loss."""
    arrays, _, reference, y = small_problem(kernel, estimator, alpha, 7, seed=3)
    keys = point_keys(y)
    grad = np.zeros_like(y)
    loss_rows = np.zeros(len(y), np.float32)
    partial_gradient(y, reference, arrays, keys, 12345, True, grad, loss_rows)
    grad_t, loss_t = partial_gradient_torch(torch_partial_arrays(arrays, "cpu"), kernel,
                                            torch.from_numpy(y), torch.from_numpy(reference),
                                            torch.from_numpy(keys), 12345, True)
    np.testing.assert_allclose(grad_t.numpy(), grad, rtol=2e-4, atol=2e-4 * np.abs(grad).max())
    np.testing.assert_allclose(loss_t.numpy(), loss_rows, rtol=2e-4, atol=1e-4)


def test_transform_runs_on_the_torch_engine(points, monkeypatch):
    """A kernel without a numba form runs the torch twin: the same result as numba."""
    from icongraph import optimize as optimize_module

    X, new = points
    model = icongraph.UMAP(n_neighbors=10, n_epochs=20, random_state=0).fit(X)
    numba_result = model.transform(new)

    class NoNumba(UMAPKernel):
        code = -1

    kernel = model.kernel_
    model.kernel_ = NoNumba(kernel.a, kernel.b)
    monkeypatch.setattr(optimize_module, "partial_gradient", None)  # never called
    torch_result = model.transform(new)
    scale = np.abs(numba_result).max()
    assert np.abs(torch_result - numba_result).max() <= 1e-3 * scale


@pytest.mark.quality
@pytest.mark.parametrize("name", ["UMAP", "TSNE"])
def test_held_out_digits_keep_their_class(digits_split, name):
    """A 10-NN classifier trained on the fitted embedding labels the transformed held-out
    digits at least as well as it labels their weighted-mean placement, and >= 0.9."""
    # held-out accuracy (360 digits, seed 0), UMAP / TSNE: optimiser off (the PCA layout,
    # transform's step 0 too) 0.736 / 0.728; on: weighted mean 0.931 / 0.933, optimised
    # 0.972 / 0.978
    from sklearn.neighbors import KNeighborsClassifier

    X, y, X_test, y_test = digits_split
    model = getattr(icongraph, name)(random_state=0).fit(X)
    classifier = KNeighborsClassifier(10).fit(model.embedding_, y)
    placed = classifier.score(model.set_params(transform_epochs=0).transform(X_test), y_test)
    optimised = classifier.score(model.set_params(transform_epochs=None).transform(X_test),
                                 y_test)
    assert optimised >= placed
    assert optimised >= 0.9


@pytest.mark.parametrize("method", ["infonce", "kmeans"])
def test_a_free_heads_new_points_average_their_neighbours_by_p(points, method):
    """Clustering(head='free').predict_proba of new points is the p(.|a)-weighted mean of the
    training points' probabilities: uniform over the n_neighbors nearest (infonce), calibrated
    to the perplexity over 3 x perplexity (kmeans)."""
    from icongraph.targets import perplexity_weights

    X, new = points
    model = icongraph.Clustering(n_clusters=3, method=method, head="free", n_neighbors=7,
                                 perplexity=5.0, n_epochs=20, random_state=0).fit(X)
    if method == "infonce":
        idx, _ = brute_force(X, new, 7)
        w = np.full(idx.shape, 1 / 7)
    else:
        idx, dist = brute_force(X, new, 15)
        w = perplexity_weights(dist, 5.0)
    expected = np.einsum("nk,nkc->nc", w, model.probabilities_[idx])
    np.testing.assert_allclose(model.predict_proba(new), expected, rtol=1e-4, atol=1e-6)
