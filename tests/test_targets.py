"""Targets p and graph operations against brute force and against umap-learn."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from icongraph import memory
from icongraph import targets as T
from icongraph.graph import as_csr_graph, row_normalize, symmetrize, transpose_csr
from icongraph.kernels import find_ab_params
from icongraph.knn import as_knn, exact_knn, knn_search, nndescent_knn


def test_exact_knn_matches_brute_force(blobs):
    X, _ = blobs
    knn = exact_knn(X, 7, block_size=13)  # several blocks
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(knn.indices, np.argsort(d, axis=1)[:, :7])
    np.testing.assert_allclose(knn.distances, np.sort(d, axis=1)[:, :7], rtol=1e-4, atol=1e-4)


def test_cosine_knn_matches_brute_force(blobs):
    X, _ = blobs
    knn = exact_knn(X, 5, "cosine")
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    d = 1 - Xn @ Xn.T
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(knn.indices, np.argsort(d, axis=1)[:, :5])


def test_nndescent_agrees_with_exact():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 10)).astype(np.float32)
    approx = nndescent_knn(X, 10, random_state=0)
    exact = exact_knn(X, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.indices, exact.indices)])
    assert recall > 0.95
    assert not (approx.indices == np.arange(2000)[:, None]).any()


def test_knn_search_auto_and_precomputed(blobs):
    X, _ = blobs
    knn = knn_search(X, 6)
    again = as_knn((knn.indices.astype(np.int64), knn.distances), len(X))
    np.testing.assert_array_equal(again.indices, knn.indices)
    with pytest.raises(ValueError, match="own neighbours"):
        as_knn((np.arange(len(X))[:, None], np.zeros((len(X), 1))), len(X))
    with pytest.raises(ValueError, match="rows"):
        as_knn((knn.indices, knn.distances), len(X) + 1)


@pytest.mark.parametrize("perplexity", [5.0, 20.0])
def test_perplexity_calibration_hits_target_entropy(blobs, perplexity):
    X, _ = blobs
    knn = exact_knn(X, int(3 * perplexity))
    p = T.perplexity_weights(knn.distances, perplexity).astype(np.float64)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(1)
    np.testing.assert_allclose(np.exp(entropy), perplexity, rtol=1e-3)


def test_fuzzy_set_matches_umap_learn():
    from umap.umap_ import fuzzy_simplicial_set

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    knn = exact_knn(X, 14)
    ours = T.FuzzyTarget(15).build(knn).graph
    idx = np.c_[np.arange(300), knn.indices]  # umap-learn lists each point first
    dist = np.c_[np.zeros(300, np.float32), knn.distances]
    ref, _, _ = fuzzy_simplicial_set(X, 15, 0, "euclidean", knn_indices=idx, knn_dists=dist)
    assert abs(ours - ref.tocsr()).max() < 1e-4


def test_fuzzy_weights_do_not_depend_on_the_order_of_a_row():
    """Rows sorted by distance (a kNN search's) take the fast path, others are sorted
    first: shuffling each row's neighbours shuffles its weights the same way; a row with
    zero distances (duplicates) and local_connectivity 2.5 included."""
    rng = np.random.default_rng(3)
    dist = np.sort(rng.gamma(2.0, 1.0, (50, 12)), axis=1)
    dist[0, :3] = 0.0
    for connectivity in (1.0, 2.5):
        expected = T.fuzzy_weights(dist, connectivity)
        shuffle = np.argsort(rng.random(dist.shape), axis=1)
        got = T.fuzzy_weights(np.take_along_axis(dist, shuffle, 1), connectivity)
        np.testing.assert_array_equal(got, np.take_along_axis(expected, shuffle, 1))


def test_ab_params_match_umap_learn():
    from umap.umap_ import find_ab_params as ref

    for spread, min_dist in [(1.0, 0.1), (1.0, 0.5), (2.0, 0.0)]:
        np.testing.assert_allclose(find_ab_params(spread, min_dist), ref(spread, min_dist),
                                   rtol=1e-3)


@pytest.mark.parametrize("parts", [1, 3, 64])
@pytest.mark.parametrize("shape", [(40, 40), (25, 60), (60, 7), (1, 1)])
def test_transpose_is_scipys_sorted_transpose(shape, parts, monkeypatch):
    """The parallel counting sort gives scipy's transpose with sorted indices, for square
    and rectangular graphs, empty rows and columns, and any number of parts (the same
    array, bit for bit)."""
    import icongraph.graph as G

    monkeypatch.setattr(G, "TRANSPOSE_PARTS", parts)
    monkeypatch.setattr(G.numba, "get_num_threads", lambda: 64)
    P = sp.random(*shape, density=0.15, random_state=2, format="csr", dtype=np.float32)
    if shape[0] > 5:
        P[3] = 0  # an empty row
        P.eliminate_zeros()
    got = transpose_csr(P)
    expected = P.T.tocsr()
    expected.sort_indices()
    assert got.shape == shape[::-1] and got.dtype == np.float32 and got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("mode", ["mean", "union", "max"])
@pytest.mark.parametrize("mix", [1.0, 0.3, 0.0])
def test_symmetrize_is_the_dense_formula(mode, mix):
    P = sp.random(30, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    P.setdiag(0)
    P.eliminate_zeros()
    P.indices = P.indices.copy()
    for i in range(0, 30, 3):  # some rows unsorted: the merge must not rely on the flag alone
        lo, hi = P.indptr[i], P.indptr[i + 1]
        P.indices[lo:hi], P.data[lo:hi] = P.indices[lo:hi][::-1], P.data[lo:hi][::-1]
    P.has_sorted_indices = False
    a = P.toarray().astype(np.float64)
    b = a.T
    expected = {"mean": (a + b) / 2, "max": np.maximum(a, b),
                "union": mix * (a + b - a * b) + (1 - mix) * a * b}[mode]
    out = symmetrize(P, mode, mix)
    assert out.dtype == np.float32 and out.has_sorted_indices
    assert all((np.diff(out.indices[out.indptr[i]:out.indptr[i + 1]]) > 0).all()
               for i in range(30))
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(out.toarray() != 0, expected != 0)  # no stored zeros
    assert (out.data != 0).all()
    with pytest.raises(ValueError, match="mode"):
        symmetrize(P, "min")


def test_row_normalize_rows_sum_to_one():
    P = sp.random(30, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    P = P + sp.eye(30, k=1, format="csr") * 0.5 + sp.eye(30, k=-29, format="csr")  # no empty rows
    np.testing.assert_allclose(np.asarray(row_normalize(P.tocsr()).sum(1)).ravel(), 1.0, rtol=1e-6)


def test_debiased_entropy_term_matches_dense(blobs):
    X, _ = blobs
    target = T.debias(T.PerplexityTarget(10, symmetric=False).build(exact_knn(X, 30)), 0.4)
    n = target.n_samples
    p = target.graph.toarray().astype(np.float64)
    dense = (1 - 0.4) * p + 0.4 * p.sum(1, keepdims=True) / (n - 1)
    np.fill_diagonal(dense, 0)
    assert target.entropy_term() == pytest.approx(float((dense[dense > 0] * np.log(dense[dense > 0])).sum()), rel=1e-6)
    np.testing.assert_allclose(dense.sum(1), p.sum(1), rtol=1e-6)  # debiasing keeps row mass


def _dense_propagation(graph, symmetric):
    """``propagate``'s definition for 2 steps on dense arrays (float64)."""
    g = graph.toarray().astype(np.float64)
    mass = g.sum(1)
    walk = g / mass[:, None]
    total = (walk + walk @ walk) / 2
    np.fill_diagonal(total, 0)
    out = mass[:, None] * total / total.sum(1, keepdims=True)
    return (out + out.T) / 2 if symmetric else out


@pytest.mark.parametrize("spec, symmetric", [
    (T.UniformKNNTarget(5), False), (T.PerplexityTarget(5, symmetric=False), False),
    (T.PerplexityTarget(5), True), (T.FuzzyTarget(8), True)])
def test_propagation_equals_the_dense_walk_sum(blobs, spec, symmetric):
    X, _ = blobs
    target = spec.build(exact_knn(X, spec.n_neighbors_for(len(X))))
    target = T.debias(target, 0.3)
    two = T.propagate(target, 2)
    dense = _dense_propagation(target.graph, symmetric)
    np.testing.assert_allclose(two.graph.toarray(), dense, atol=1e-6)
    assert two.alpha == 0.3 and two.graph.dtype == np.float32
    assert two.graph.diagonal().max() == 0 and two.graph.nnz > target.graph.nnz
    mass, new_mass = target.row_mass, two.row_mass
    if symmetric:  # symmetric again, total mass kept, rows about theirs
        assert abs(two.graph - two.graph.T).max() < 1e-6
        assert new_mass.sum() == pytest.approx(mass.sum(), rel=1e-5)
    else:  # rows sum exactly as before (to 1 for these)
        np.testing.assert_allclose(new_mass, mass, rtol=1e-5)
    assert T.propagate(target, 1) is target
    three = T.propagate(target, 3).graph
    assert three.nnz >= two.graph.nnz


def test_propagation_of_a_precomputed_graph_keeps_rows_stochastic():
    ring = nx.cycle_graph(10)
    target = T.PrecomputedTarget(ring).build(n_samples=10)
    out = T.propagate(target, 2).graph.toarray()
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-6)
    # one step: 1/2 to each neighbour; two steps: 1/4 two away (the walk back is dropped)
    np.testing.assert_allclose(out[0, [1, 2, 9, 8]], [1 / 3, 1 / 6, 1 / 3, 1 / 6], rtol=1e-6)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "2"])
def test_bad_propagation_steps_are_refused(steps):
    target = T.Target(sp.identity(3, format="csr", dtype=np.float32))
    with pytest.raises(ValueError, match="propagation_steps must be an integer >= 1"):
        T.propagate(target, steps)


def test_propagation_checks_memory_before_the_power(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: (1000, "test limit"))
    monkeypatch.delenv(memory.OVERRIDE_ENV, raising=False)
    target = T.PrecomputedTarget(nx.cycle_graph(50)).build(n_samples=50)
    with pytest.raises(memory.InsufficientMemoryError, match="Lower propagation_steps"):
        T.propagate(target, 3)


def test_precomputed_graph_formats_agree():
    G = nx.cycle_graph(12)
    for u, v in G.edges:
        G.edges[u, v]["weight"] = 1.0 + u
    from_nx = as_csr_graph(G)
    edges = torch.tensor(list(G.edges)).T
    weights = torch.tensor([1.0 + u for u, _ in G.edges])
    from torch_geometric.utils import to_undirected

    ei, ew = to_undirected(edges, weights)
    from_pyg = as_csr_graph((ei, ew), 12)
    assert abs(from_nx - from_pyg).max() == 0
    assert abs(from_nx - as_csr_graph(from_nx.toarray())).max() == 0


def test_target_row_mass():
    g = sp.csr_matrix(np.array([[0, 1, 1], [2, 0, 0], [0, 3, 0]], np.float32))
    np.testing.assert_array_equal(T.Target(g).row_mass, [2, 2, 3])


def test_knn_cache_reuses_and_invalidates(tmp_path, blobs, monkeypatch):
    import icongraph.knn as knn_module

    X, _ = blobs
    calls = []
    real = knn_module.exact_knn
    monkeypatch.setattr(knn_module, "exact_knn", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = knn_module.knn_search(X, 10, cache_dir=tmp_path)
    again = knn_module.knn_search(X, 10, cache_dir=tmp_path)
    smaller = knn_module.knn_search(X, 6, cache_dir=tmp_path)
    assert len(calls) == 1  # one search served all three
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(smaller.indices, first.indices[:, :6])
    changed = X.copy()
    changed[0, 0] += 1.0
    knn_module.knn_search(changed, 10, cache_dir=tmp_path)  # new data: new search
    knn_module.knn_search(X, 10, "cosine", cache_dir=tmp_path)  # new metric: new search
    knn_module.knn_search(X, 12, cache_dir=tmp_path)  # more neighbours than stored
    assert len(calls) == 4


def test_knn_cache_key_includes_the_nndescent_schedule(tmp_path, blobs, monkeypatch):
    import icongraph.knn as knn_module

    X, _ = blobs
    calls = []
    monkeypatch.setattr(knn_module, "nndescent_knn",  # the exact graph stands in (no JIT)
                        lambda X, k, *a, **kw: calls.append(1) or knn_module.exact_knn(X, k))
    knn_module.knn_search(X, 10, method="nndescent", random_state=0, cache_dir=tmp_path)
    knn_module.knn_search(X, 10, method="nndescent", random_state=0, cache_dir=tmp_path)
    assert len(calls) == 1
    knn_module.knn_search(X, 10, method="nndescent", random_state=1, cache_dir=tmp_path)
    assert len(calls) == 2  # another seed: another graph
    monkeypatch.setattr(knn_module, "MAX_TREES", 2)  # fewer trees: the stored graph is stale
    knn_module.knn_search(X, 10, method="nndescent", random_state=0, cache_dir=tmp_path)
    assert len(calls) == 3
    monkeypatch.setattr(knn_module, "NNDESCENT_CANDIDATE_BYTES", 0)  # fewer candidates: stale
    knn_module.knn_search(X, 10, method="nndescent", random_state=0, cache_dir=tmp_path)
    assert len(calls) == 4


def test_nndescent_candidates_fit_their_memory_budget():
    from icongraph.knn import MIN_CANDIDATES, NNDESCENT_CANDIDATE_BYTES, nndescent_schedule

    assert nndescent_schedule(1_000_000)[2] == 60  # umap-learn's count while it fits
    for n in (5_000_000, 10_000_000):
        candidates = nndescent_schedule(n)[2]
        assert MIN_CANDIDATES <= candidates < 60
        assert 16 * n * candidates <= NNDESCENT_CANDIDATE_BYTES
    assert nndescent_schedule(10**9)[2] == MIN_CANDIDATES


def test_a_joined_start_takes_fewer_trees():
    """NN-descent from our leaf join is seeded by MAX_JOINED_TREES trees, pynndescent's own
    start by MAX_TREES; small inputs take fewer than either, and the rest is the same."""
    from icongraph.knn import MAX_JOINED_TREES, MAX_TREES, nndescent_schedule

    assert MAX_JOINED_TREES < MAX_TREES
    own, joined = nndescent_schedule(10_000_000), nndescent_schedule(10_000_000, joined=True)
    assert (own[0], joined[0]) == (MAX_TREES, MAX_JOINED_TREES) and own[1:] == joined[1:]
    assert nndescent_schedule(2_000, joined=True) == nndescent_schedule(2_000)


def test_estimators_share_a_knn_graph(tmp_path, blobs):
    import icongraph

    X, _ = blobs
    a = icongraph.UMAP(n_neighbors=10, n_epochs=10, random_state=0, knn_cache=str(tmp_path)).fit(X)
    b = icongraph.UMAP(n_neighbors=10, n_epochs=10, random_state=0, precomputed_knn=a.knn_).fit(X)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert len(list(tmp_path.glob("knn-*.npz"))) == 1


def test_auto_knn_method_is_the_same_with_and_without_the_cache():
    """'auto' resolves in one place: exact for small data and on CUDA (the cache key too),
    for sparse data only while its dense copy is small."""
    import scipy.sparse as sp

    from icongraph.knn import EXACT_MAX_SAMPLES, EXACT_SPARSE_MAX_ENTRIES, _resolve_method

    small, large = np.empty((100, 3)), np.empty((EXACT_MAX_SAMPLES + 1, 3))
    assert _resolve_method("auto", small, None) == "exact"
    assert _resolve_method("auto", large, "cpu") == "nndescent"
    assert _resolve_method("auto", large, "cuda") == "exact"
    # sparse data is densified for the exact search only while the dense copy is small
    assert _resolve_method("auto", sp.random(100, 3, format="csr"), "cuda") == "exact"
    wide = sp.random(100, EXACT_SPARSE_MAX_ENTRIES // 100 + 1, density=1e-6, format="csr")
    assert _resolve_method("auto", wide, None) == "nndescent"
    assert _resolve_method("auto", wide, "cuda") == "nndescent"
    assert _resolve_method("nndescent", small, None) == "nndescent"
