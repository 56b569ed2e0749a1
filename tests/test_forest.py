"""NN-descent's start from the random-projection forest (icongraph.forest): the leaf join
against brute force, the random completion, the thread count, and the start in the search."""

import numba
import numpy as np
import pytest

from icongraph import forest
from icongraph import knn as knn_module
from icongraph.knn import exact_knn


def leaf_array(rng, n: int, n_trees: int, max_leaf: int) -> np.ndarray:
    """Random trees as pynndescent lays out their leaves: tree by tree, each a random
    partition of the points into leaves of 2..max_leaf, -1 padded."""
    leaves = []
    for _ in range(n_trees):
        perm = rng.permutation(n)
        start = 0
        while start < n:
            size = min(int(rng.integers(2, max_leaf + 1)), n - start)
            leaves.append(np.r_[perm[start:start + size], -np.ones(max_leaf - size, int)])
            start += size
    return np.array(leaves, np.int32)


def joined(X: np.ndarray, leaves: np.ndarray, m: int, n_trees: int):
    n = len(X)
    indices = np.full((n, m), -1, np.int32)
    distances = np.full((n, m), np.inf, np.float32)
    sq = np.einsum("ij,ij->i", X, X)
    start = 0
    for end in forest.tree_ends(leaves, n, n_trees):
        forest.join_leaves(X, sq, leaves, start, end, indices, distances)
        start = end
    return indices, distances


def test_the_join_keeps_each_points_nearest_leaf_mates():
    """Per point the m nearest of the points sharing one of its leaves in any tree, sorted,
    at their squared distances (brute force over the same leaves)."""
    rng = np.random.default_rng(0)
    n, m, n_trees = 300, 6, 3
    X = rng.normal(size=(n, 5)).astype(np.float32) + 10.0  # far from 0: |x|^2 >> d2
    leaves = leaf_array(rng, n, n_trees, 12)
    indices, distances = joined(X, leaves, m, n_trees)
    mates = [set() for _ in range(n)]
    for row in leaves:
        members = row[row >= 0]
        for p in members:
            mates[p].update(int(j) for j in members if j != p)
    for p in range(n):
        others = np.array(sorted(mates[p]))
        d2 = ((X[others] - X[p]) ** 2).sum(1)
        best = np.argsort(d2, kind="stable")[:m]
        filled = min(m, len(others))
        np.testing.assert_array_equal(np.sort(indices[p, :filled]), np.sort(others[best]))
        np.testing.assert_allclose(distances[p, :filled], d2[best], rtol=1e-5)
        assert (indices[p, filled:] == -1).all()


def test_tree_ends_needs_every_tree_to_hold_every_point_once():
    rng = np.random.default_rng(1)
    leaves = leaf_array(rng, 50, 3, 8)
    ends = forest.tree_ends(leaves, 50, 3)
    assert ends[-1] == len(leaves) and len(ends) == 3
    assert forest.tree_ends(leaves[rng.permutation(len(leaves))], 50, 3) is None
    doubled = leaves.copy()
    doubled[0, 0] = doubled[0, 1]  # a point twice in the first tree
    assert forest.tree_ends(doubled, 50, 3) is None


def test_short_lists_are_completed_at_random_without_self_or_repeats():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    indices = np.full((40, 5), -1, np.int32)
    distances = np.full((40, 5), np.inf, np.float32)
    indices[:20, 0] = (np.arange(20) + 1) % 40  # half the rows hold one neighbour
    distances[:20, 0] = ((X[:20] - X[indices[:20, 0]]) ** 2).sum(1)
    again = (indices.copy(), distances.copy())
    forest._fill_random(X, indices, distances, np.int64(7))
    forest._fill_random(X, *again, np.int64(7))
    np.testing.assert_array_equal(indices, again[0])
    assert (indices >= 0).all()
    assert (indices != np.arange(40)[:, None]).all()
    assert all(len(set(row)) == 5 for row in indices)
    np.testing.assert_allclose(distances, ((X[:, None] - X[indices]) ** 2).sum(2), rtol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()
    assert all(((np.arange(20) + 1) % 40)[p] in indices[p] for p in range(20))  # kept


def test_the_start_does_not_depend_on_the_thread_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread")
    X = np.random.default_rng(3).normal(size=(3000, 8)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = forest.forest_graph(X, 11, 4, seed=5)
        numba.set_num_threads(2)
        two = forest.forest_graph(X, 11, 4, seed=5)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_nndescent_improves_on_the_start_in_the_squared_distance(monkeypatch):
    """On a spatially ordered search pynndescent starts from forest_graph, whose distances are
    the squared ones its heaps compare: on data with distances far above 1 (where a distance
    and its square disagree most) NN-descent still replaces the start's wrong neighbours, and
    the graph matches pynndescent's own start."""
    starts = []
    original = forest.forest_graph

    def recorded(*args, **kwargs):
        starts.append(original(*args, **kwargs))
        return starts[-1]

    monkeypatch.setattr(knn_module, "forest_graph", recorded)
    monkeypatch.setattr(knn_module, "SPATIAL_MIN_SAMPLES", 100)
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(4000, 12)) * 30.0).astype(np.float32)
    truth = exact_knn(X, 10).indices
    found = knn_module.nndescent_knn(X, 10, random_state=0)
    assert len(starts) == 1

    def recall(indices):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, truth)])

    order = knn_module.spatial_order(X, seed=0)
    start = knn_module._others_in_data_order(starts[0][0], starts[0][1], order, 10,
                                             "euclidean")
    assert recall(start.indices) < 0.9  # the start alone misses neighbours
    monkeypatch.setattr(knn_module, "SPATIAL_MIN_SAMPLES", 10**9)
    own = knn_module.nndescent_knn(X, 10, random_state=0)  # pynndescent's own start
    assert recall(found.indices) > 0.97
    assert recall(found.indices) > recall(own.indices) - 0.01
