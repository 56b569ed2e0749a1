"""I-Con clustering: the cluster kernel, the sampled loss against brute force, recovery of
separated clusters, predict, determinism, bad input."""

import numpy as np
import pytest
import torch
from conftest import make_blobs

import icongraph
from icongraph import metrics
from icongraph.clustering import Clustering, PositiveSampler, cluster_kernel


@pytest.fixture
def separated():
    return make_blobs(4, 60, 6, 10.0)


def test_cluster_kernel_rows_sum_to_one():
    phi = torch.softmax(torch.randn(30, 5, dtype=torch.float64), 1)
    np.testing.assert_allclose(cluster_kernel(phi).sum(1).numpy(), 1.0, rtol=1e-12)
    w = torch.rand(30, dtype=torch.float64) + 0.5
    np.testing.assert_allclose(cluster_kernel(phi, w).sum(1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("degree_weights", [False, True])
def test_sampled_loss_equals_dense_cross_entropy(degree_weights):
    """Enumerating every (i, j) with weight p(j|i), the sampled loss is the dense one."""
    rng = np.random.default_rng(0)
    n, alpha = 25, 0.3
    phi = torch.softmax(torch.tensor(rng.normal(size=(n, 4))), 1)
    p = rng.random((n, n)) * (rng.random((n, n)) < 0.3)
    np.fill_diagonal(p, 0)
    p[np.arange(n), (np.arange(n) + 1) % n] += 0.1
    p /= p.sum(1, keepdims=True)
    w = torch.tensor(rng.random(n) + 0.5) if degree_weights else None
    q = (1 - alpha) * cluster_kernel(phi, w) + alpha / n
    dense = -(torch.tensor(p) * torch.log(q)).sum() / n
    anchors, positives = np.nonzero(p)
    pair_losses = torch.stack([
        Clustering._loss(phi, torch.tensor([a]), torch.tensor([b]), w, alpha, n)
        for a, b in zip(anchors, positives)])
    sparse = (torch.tensor(p[anchors, positives]) * pair_losses).sum() / n
    assert float(sparse) == pytest.approx(float(dense), rel=1e-10)


def test_positive_sampler_follows_p_and_walks():
    import scipy.sparse as sp

    # a path 0-1-2-3 with p(1|0)=1, p(0|1)=p(2|1)=1/2, ...
    g = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], float))
    gen = torch.Generator().manual_seed(0)
    anchors = torch.zeros(20000, dtype=torch.long)
    one = PositiveSampler(g, 4, "cpu", steps=1).sample(anchors, gen)
    assert (one == 1).all()
    two = PositiveSampler(g, 4, "cpu", steps=2).sample(anchors, gen)
    # (P + P^2)/2 from node 0: 1 w.p. 1/2, then 0 or 2 w.p. 1/4 each
    freq = torch.bincount(two, minlength=4).double() / len(two)
    np.testing.assert_allclose(freq.numpy(), [0.25, 0.5, 0.25, 0.0], atol=0.02)
    smooth = PositiveSampler(g, 4, "cpu", steps=1, alpha=0.4).sample(anchors, gen)
    freq = torch.bincount(smooth, minlength=4).double() / len(smooth)
    np.testing.assert_allclose(freq.numpy(), [0.1, 0.7, 0.1, 0.1], atol=0.02)


@pytest.mark.parametrize("method", ["debiased", "infonce", "kmeans", "ncut"])
def test_recovers_separated_clusters(separated, method):
    X, y = separated
    model = Clustering(n_clusters=4, method=method, n_neighbors=10, perplexity=10,
                       random_state=0)
    labels = model.fit_predict(X)
    assert metrics.adjusted_rand_index(y, labels) >= 0.95
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    np.testing.assert_allclose(model.probabilities_.sum(1), 1.0, rtol=1e-5)


def test_supervised_and_free_head(separated):
    X, y = separated
    model = Clustering(n_clusters=4, method="supervised", random_state=0, n_epochs=100)
    assert metrics.hungarian_accuracy(y, model.fit_predict(X, y)) > 0.99
    free = Clustering(n_clusters=4, head="free", n_neighbors=10, random_state=0,
                      learning_rate=0.2)
    assert metrics.adjusted_rand_index(y, free.fit_predict(X)) >= 0.95
    assert metrics.adjusted_rand_index(y, free.predict(X + 0.01)) >= 0.95


def test_deterministic_with_random_state(separated):
    X, _ = separated
    a = Clustering(n_clusters=4, random_state=1, n_epochs=30).fit(X).probabilities_
    b = Clustering(n_clusters=4, random_state=1, n_epochs=30).fit(X).probabilities_
    np.testing.assert_array_equal(a, b)


def test_bad_input(separated):
    X, y = separated
    for k in (1, 0, len(X) + 1, 2.5):
        with pytest.raises(ValueError, match="n_clusters"):
            Clustering(n_clusters=k).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        Clustering(n_clusters=3).fit(np.where(X > 5, np.nan, X))
    with pytest.raises(ValueError, match="Too few points"):
        Clustering(n_clusters=2, n_neighbors=15).fit(X[:10])
    with pytest.raises(ValueError, match="labels"):
        Clustering(n_clusters=4, method="supervised").fit(X)
    with pytest.raises(ValueError, match="length"):
        Clustering(n_clusters=4, method="supervised").fit(X, y[:-1])
    with pytest.raises(ValueError, match="method"):
        Clustering(method="dbscan").fit(X)


def test_empty_clusters_are_reported_not_fatal(separated):
    X, _ = separated
    with pytest.warns(UserWarning, match="empty"):
        model = Clustering(n_clusters=40, n_neighbors=10, random_state=0, n_epochs=60).fit(X)
    assert len(model.empty_clusters_) == (model.cluster_sizes_ == 0).sum() > 0


def test_exported():
    assert icongraph.Clustering is Clustering


def test_sampler_never_leaves_the_anchor_row():
    """Row sums near float boundaries: the drawn edge always belongs to the anchor's row."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    g = sp.random(200, 200, density=0.05, random_state=1, format="csr") + sp.eye(200, k=1)
    g = sp.csr_matrix(g)
    g.data = (g.data * 1e3 + rng.random(g.nnz)).astype(np.float32)
    sampler = PositiveSampler(g, 200, "cpu")
    anchors = torch.arange(200).repeat(200)
    drawn = sampler.sample(anchors, torch.Generator().manual_seed(0)).numpy()
    assert (np.asarray(g[anchors.numpy().copy(), drawn.copy()]).ravel() > 0).all()


def test_clustering_parameter_validation(separated):
    X, _ = separated
    for bad in ({"positives_per_anchor": 0}, {"n_init": 0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            Clustering(n_clusters=3, **bad).fit(X)
