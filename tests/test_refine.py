"""Hard refinement of partitions (icongraph.refine): the closed-form loss against its dense
definition, local moving to a local minimum, re-bisection, and the Clustering that uses it."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import digits_subset

from icongraph.clustering import Clustering
from icongraph.knn import knn_search
from icongraph.refine import HardLoss, refine, target_edges, walk_target


def random_graph(n: int, seed: int, groups: int = 3) -> sp.csr_matrix:
    """A weighted symmetric graph (n, n) of ``groups`` planted groups with some noise edges."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % groups
    dense = rng.random((n, n)) * (rng.random((n, n)) < np.where(
        group[:, None] == group[None, :], 0.35, 0.05))
    dense = np.triu(dense, 1)
    dense = dense + dense.T
    dense[np.arange(n), (np.arange(n) + groups) % n] += 1.0  # no isolated point
    dense[(np.arange(n) + groups) % n, np.arange(n)] += 1.0
    return sp.csr_matrix(dense)


def dense_hard_loss(graph, labels, steps, propagation, alpha, q_alpha):
    """``-1/N sum_ij p~(j|i) log q~(j|i)`` with every matrix dense."""
    g = graph.toarray()
    n = len(g)
    walk = g / g.sum(1, keepdims=True)
    powers = [np.linalg.matrix_power(walk, s) for s in range(1, steps + 1)]
    target = sum(powers) / steps
    if propagation == "reachable":
        reach = (target > 0) & ~np.eye(n, dtype=bool)
        target = reach / np.maximum(reach.sum(1, keepdims=True), 1)
    p = (1 - alpha) * target + alpha / n
    same = labels[:, None] == labels[None, :]
    sizes = np.bincount(labels)[labels]
    q = (1 - q_alpha) * same / sizes[:, None] + q_alpha / n + 1e-12
    return -(p * np.log(q)).sum() / n


@pytest.mark.parametrize("steps, propagation, alpha, q_alpha", [
    (1, "walk", 0.0, 0.0), (2, "walk", 0.2, 0.2), (2, "reachable", 0.1, 0.3),
    (3, "walk", 0.0, 0.5)])
def test_hard_loss_equals_its_dense_definition(steps, propagation, alpha, q_alpha):
    graph = random_graph(40, seed=steps)
    labels = np.random.default_rng(0).integers(0, 4, 40)
    loss = HardLoss(walk_target(graph, steps, propagation), alpha, q_alpha)
    assert loss(labels, 4) == pytest.approx(
        dense_hard_loss(graph, labels, steps, propagation, alpha, q_alpha), rel=1e-10)
    assert target_edges(graph, steps) >= loss.pairs.nnz


def neighbouring_moves(loss: HardLoss, labels: np.ndarray, n_clusters: int):
    """Every single-point move to a cluster of one of its neighbours that empties nothing."""
    sizes = np.bincount(labels, minlength=n_clusters)
    for i in range(len(labels)):
        if sizes[labels[i]] == 1:
            continue
        row = loss.pairs.indices[loss.pairs.indptr[i]:loss.pairs.indptr[i + 1]]
        for c in set(labels[row].tolist()) - {labels[i]}:
            moved = labels.copy()
            moved[i] = c
            yield moved


@pytest.mark.parametrize("seed", [0, 1])
def test_refine_lowers_the_loss_to_a_local_minimum(seed):
    graph = random_graph(90, seed)
    loss = HardLoss(walk_target(graph, 2), 0.2, 0.2)
    start = np.random.default_rng(seed).integers(0, 3, 90)
    labels, value = refine(loss, graph, start, 3, seed)
    assert value == pytest.approx(loss(labels, 3), rel=1e-12)
    assert value < loss(start, 3)
    assert np.bincount(labels, minlength=3).min() >= 1
    best_move = min(loss(moved, 3) for moved in neighbouring_moves(loss, labels, 3))
    assert best_move >= value - 1e-12 * abs(value)
    # the same seed gives the same partition
    assert (refine(loss, graph, start, 3, seed)[0] == labels).all()


def test_refine_rebisects_two_clusters_cut_across_two_groups():
    # two disconnected rings; each cluster holds half of each ring: no single move lowers
    # the loss much, re-splitting the pair's union by its components does
    n = 200
    ring = np.arange(n // 2)
    rows = np.concatenate([ring, ring + n // 2])
    cols = np.concatenate([(ring + 1) % (n // 2), (ring + 1) % (n // 2) + n // 2])
    graph = sp.csr_matrix((np.ones(n), (rows, cols)), shape=(n, n))
    graph = sp.csr_matrix(graph + graph.T)
    crossed = (np.arange(n) % (n // 2) >= n // 4).astype(np.int64)
    loss = HardLoss(walk_target(graph, 2), 0.2, 0.2)
    only_local = crossed.copy()
    sizes, within = loss.state(only_local, 2)
    loss.local_moves(only_local, sizes, within, np.arange(n))
    assert (only_local == crossed).all()  # a local minimum of single moves
    labels, value = refine(loss, graph, crossed, 2, 0)
    rings = (np.arange(n) >= n // 2).astype(np.int64)
    assert (labels == rings).all() or (labels == 1 - rings).all()
    assert value < loss(crossed, 2)


def test_clustering_reaches_a_lower_hard_loss_than_its_soft_fits_argmax():
    # the loss the fit kept (labels_) against the argmax of the soft fit, as kept before the
    # refinement, on the same exact target
    X, _ = digits_subset(600)
    knn = knn_search(X, 15, random_state=0)
    for seed in range(3):
        model = Clustering(n_clusters=10, precomputed_knn=knn, random_state=seed,
                           n_jobs=1).fit(X)
        preset = model._preset()
        exact = HardLoss(walk_target(model.graph_, preset["steps"]), preset["alpha"],
                         preset["q_alpha"])
        argmax = model.head_.weight.detach().argmax(1).numpy()
        assert model.refined_
        assert model.hard_loss_ < exact(argmax, 10)


def test_no_refinement_without_an_optimiser_or_with_degree_weights():
    X, _ = digits_subset(300)
    off = Clustering(n_clusters=5, learning_rate=0, random_state=0, n_jobs=1).fit(X)
    ncut = Clustering(n_clusters=5, method="ncut", random_state=0, n_jobs=1).fit(X)
    assert not off.refined_ and not ncut.refined_
    assert (off.labels_ == off.probabilities_.argmax(1)).all()
