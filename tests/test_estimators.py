"""The estimators: presets against umap-learn on digits, the sklearn protocol, determinism."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import TorchOnlyCauchy

import icongraph
from icongraph import metrics


@pytest.fixture(scope="module")
def umap_learn_accuracy(digits):
    import umap

    X, y = digits
    Y = umap.UMAP(random_state=0).fit_transform(X)
    return metrics.knn_accuracy(Y, y, 10)


@pytest.mark.quality
@pytest.mark.parametrize("cls", [icongraph.UMAP, icongraph.TSNE])
def test_presets_on_digits_match_umap_learn(digits, umap_learn_accuracy, cls):
    # 10-NN accuracy with the optimiser off (the PCA start) 0.643; on: UMAP 0.987, TSNE 0.987
    # (umap-learn 0.987)
    X, y = digits
    model = cls(random_state=0)
    Y = model.fit_transform(X)
    acc = metrics.knn_accuracy(Y, y, 10)
    assert Y.shape == (len(X), 2) and Y.dtype == np.float32
    assert acc >= 0.95
    assert acc >= umap_learn_accuracy - 0.01
    assert model.graph_.shape == (len(X), len(X)) and sp.isspmatrix_csr(model.graph_)
    assert np.isfinite(model.kl_divergence_) and np.isfinite(model.loss_)


@pytest.mark.quality
def test_sne_preset_separates_digits(digits):
    # 10-NN accuracy: optimiser off 0.643, on 0.927
    X, y = digits
    Y = icongraph.SNE(random_state=0, n_epochs=200).fit_transform(X)
    assert metrics.knn_accuracy(Y, y, 10) > 0.85


def test_random_state_reproducible(blobs):
    X, _ = blobs
    a = icongraph.UMAP(n_neighbors=10, random_state=3, n_epochs=50).fit_transform(X)
    b = icongraph.UMAP(n_neighbors=10, random_state=3, n_epochs=50).fit_transform(X)
    c = icongraph.UMAP(n_neighbors=10, random_state=4, n_epochs=50).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seeds_of_any_size_are_distinct_and_reproducible(blobs):
    """Seeds at and past 2**31 and 2**32 neither alias small seeds (truncating to 31 bits made
    2**31 the seed 0) nor each other; a numpy integer is the same seed as the Python int."""
    from icongraph.validation import check_random_state

    X, _ = blobs
    seeds = [0, 2**31, 2**32, 2**63 + 5]
    states = [check_random_state(s) for s in seeds]
    assert len(set(states)) == len(seeds) and all(0 <= s < 2**32 for s in states)
    assert check_random_state(np.uint64(2**63 + 5)) == states[-1]
    assert check_random_state(10**40) != check_random_state(10**40 + 1)
    assert [check_random_state(s) for s in states] == states  # a state is its own seed
    fits = [icongraph.UMAP(n_neighbors=10, random_state=s, n_epochs=20).fit_transform(X)
            for s in seeds]
    for i in range(len(seeds)):
        for j in range(i):
            assert not np.array_equal(fits[i], fits[j]), (seeds[i], seeds[j])
    again = icongraph.UMAP(n_neighbors=10, random_state=np.uint64(2**63 + 5),
                           n_epochs=20).fit_transform(X)
    np.testing.assert_array_equal(again, fits[-1])
    # restarts seed from seed + r: past 2**32 - 1 that is re-hashed, not handed to k-means
    model = icongraph.Clustering(n_clusters=3, n_neighbors=10, random_state=2**32 - 1, n_init=2,
                                 n_epochs=5, n_jobs=1).fit(X)
    assert model.labels_.shape == (len(X),)
    with pytest.raises(ValueError, match="random_state"):
        check_random_state(-1)


@pytest.fixture(scope="module")
def slabs_4200():
    """Large enough that every parallel split is used more than once: 9 numba blocks of
    ``_cpu_engine.BLOCK`` = 512 anchors shared by the 2 threads, 2 blocks of the exact kNN
    search (16e6 / 4200 = 3809 queries each), torch ops of 4200 x 20 pairs (above torch's
    32,768-element grain, so split across threads)."""
    from conftest import make_slabs

    return make_slabs(per_class=1400)


@pytest.mark.parametrize("make", [
    lambda jobs: icongraph.UMAP(random_state=0, n_epochs=10, n_jobs=jobs),  # numba, NEG
    lambda jobs: icongraph.TSNE(random_state=0, n_epochs=10, n_jobs=jobs),  # numba, all pairs
    lambda jobs: icongraph.ICon(q=TorchOnlyCauchy(), estimator="per_anchor", n_negatives=20,
                                random_state=0, n_epochs=10, n_jobs=jobs),  # torch engine
    # the head's torch computations; the default seed is a UMAP fit (the first case) and
    # scikit-learn's k-means
    lambda jobs: icongraph.Clustering(n_clusters=3, init="random", random_state=0, n_epochs=10,
                                      n_jobs=jobs),
    # the debiasing of q: S_j lagged, each anchor's row written by its own thread
    lambda jobs: icongraph.SNE(q_alpha=0.3, alpha=0.1, random_state=0, n_epochs=10,
                               n_jobs=jobs),  # numba, per anchor
    lambda jobs: icongraph.ICon(p="perplexity", q="student", estimator="global", q_alpha=0.3,
                                random_state=0, n_epochs=10, n_jobs=jobs),  # numba, global
    lambda jobs: icongraph.ICon(q=TorchOnlyCauchy(), estimator="per_anchor", n_negatives=20,
                                q_alpha=0.3, random_state=0, n_epochs=10, n_jobs=jobs),
    lambda jobs: icongraph.TSNE(q_alpha=0.3, alpha=0.1, random_state=0, n_epochs=10,
                                n_jobs=jobs),  # numba edges, all pairs by the grid
], ids=["UMAP", "TSNE", "torch-engine", "Clustering", "SNE-q_alpha", "global-q_alpha",
        "torch-q_alpha", "TSNE-q_alpha"])
def test_same_result_with_one_or_two_threads(slabs_4200, make, monkeypatch):
    """The numba engine is bit-identical on any thread count (each anchor is owned by one
    thread); torch paths agree to summation order."""
    import numba

    import icongraph.optimize as optimize
    from icongraph import _cpu_engine
    from icongraph._torch_engine import torch_arrays

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    X, _ = slabs_4200
    assert len(X) > 8 * _cpu_engine.BLOCK  # and > 4000: blocks of 16e6 / N kNN queries
    chunks = []

    def small_chunks(objective, device, **kwargs):  # the torch engine's anchor chunks
        arrays = torch_arrays(objective, device, chunk_edges=1 << 15)
        chunks.append(len(arrays["chunks"]))
        return arrays

    monkeypatch.setattr(optimize, "torch_arrays", small_chunks)
    one, two = make(1).fit(X), make(2).fit(X)
    if isinstance(one, icongraph.Clustering):  # torch: the documented 1e-6 (seen: identical)
        np.testing.assert_array_equal(one.labels_, two.labels_)
        np.testing.assert_allclose(one.probabilities_, two.probabilities_, rtol=0, atol=1e-6)
        return
    if chunks:
        assert min(chunks) >= 2
        np.testing.assert_allclose(one.embedding_, two.embedding_, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(one.embedding_, two.embedding_)


def test_sklearn_protocol(blobs):
    from sklearn.base import clone

    X, _ = blobs
    model = icongraph.TSNE(perplexity=12, learning_rate=0.1)
    params = model.get_params()
    assert params["perplexity"] == 12 and params["learning_rate"] == 0.1
    copy = clone(model).set_params(n_epochs=20)
    assert copy.n_epochs == 20 and copy.perplexity == 12
    with pytest.raises(ValueError, match="invalid parameter"):
        model.set_params(min_dist=0.3)
    with pytest.raises(TypeError, match="unexpected"):
        icongraph.UMAP(perplexity=3)
    assert "perplexity=12" in repr(model)


@pytest.mark.quality
def test_general_icon_composition_and_callbacks(slabs):
    # the full fit's 10-NN accuracy: optimiser off 0.427 (PCA start), on 0.987
    X, y = slabs
    seen = []

    def stop_after_five(epoch, loss, embedding):
        seen.append((epoch, loss, tuple(embedding.shape)))
        return epoch == 4

    model = icongraph.ICon(
        p="knn", q="student", estimator="per_anchor", p_params={"n_neighbors": 8},
        q_params={"dof": 0.7}, n_epochs=100, random_state=0, callbacks=[stop_after_five],
        learning_rate=0.05)
    model.fit(X)
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert seen[0][2] == (len(X), 2) and np.isfinite(seen[0][1])
    full = icongraph.ICon(p="knn", q="student", estimator="per_anchor",
                          p_params={"n_neighbors": 8}, random_state=0, learning_rate=0.05)
    assert metrics.knn_accuracy(full.fit_transform(X), y, 10) > 0.9


@pytest.mark.quality
@pytest.mark.parametrize("kind", ["scipy", "networkx", "edge_index"])
def test_precomputed_graph_input(slabs, kind):
    # 10-NN accuracy: optimiser off 0.427 (PCA start), on 0.997
    X, y = slabs
    knn = icongraph.knn_search(X, 8)
    graph = sp.csr_matrix((np.ones(knn.indices.size), (np.repeat(np.arange(len(X)), 8),
                                                       knn.indices.ravel())), (len(X), len(X)))
    graph = graph.maximum(graph.T)
    if kind == "networkx":
        graph = nx.from_scipy_sparse_array(graph)
    elif kind == "edge_index":
        coo = graph.tocoo()
        graph = (torch.tensor(np.vstack([coo.row, coo.col])), torch.tensor(coo.data))
    Y = icongraph.ICon(p=graph, q="umap", estimator="neg", random_state=0).fit_transform(X)
    assert metrics.knn_accuracy(Y, y, 10) > 0.9


@pytest.mark.quality
def test_transform_places_new_points_among_their_class(slabs):
    """Held-out points, placed by ``transform``, are classified by their 10 nearest fitted
    points in the embedding as they are in the data."""
    # held-out accuracy (60 points): optimiser off 0.533, on 1.000 (seeds 0 and 1)
    from sklearn.neighbors import KNeighborsClassifier

    X, y = slabs
    test = np.arange(len(X)) % 5 == 0
    model = icongraph.UMAP(random_state=0).fit(X[~test])
    classifier = KNeighborsClassifier(10).fit(model.embedding_, y[~test])
    assert classifier.score(model.transform(X[test]), y[test]) >= 0.9


def test_debiasing_alpha_runs_and_changes_result(blobs):
    X, _ = blobs
    a = icongraph.TSNE(perplexity=10, random_state=0, n_epochs=60).fit_transform(X)
    b = icongraph.TSNE(perplexity=10, random_state=0, n_epochs=60, alpha=0.3).fit_transform(X)
    assert np.isfinite(b).all() and not np.allclose(a, b)


@pytest.mark.parametrize("cls", [icongraph.TSNE, icongraph.UMAP, icongraph.SNE, icongraph.ICon])
def test_propagation_steps_fit_the_propagated_target(blobs, cls):
    from icongraph.targets import propagate

    X, y = blobs
    params = {"n_neighbors": 10} if cls in (icongraph.UMAP, icongraph.ICon) else {
        "perplexity": 10}
    if cls is icongraph.ICon:
        params = {"p": "knn", "p_params": params, "q": "student", "estimator": "per_anchor"}
    one = cls(random_state=0, n_epochs=20, **params).fit(X)
    two = cls(random_state=0, n_epochs=20, propagation_steps=2, alpha=0.2, **params).fit(X, y)
    expected = propagate(one.target_, 2).graph
    assert abs(two.graph_ - expected).max() < 1e-6 and two.target_.alpha == 0.2
    assert two.target_.labels is not None  # labels mix into the propagated graph
    assert np.isfinite(two.embedding_).all() and np.isfinite(two.transform(X[:5])).all()


def test_cluster_kernel_takes_propagation_steps(blobs):
    X, _ = blobs
    model = icongraph.ICon(p="knn", q="cluster", n_components=3, propagation_steps=2,
                           n_epochs=20, random_state=0).fit(X)
    assert model.clustering_.propagation_steps == 2


def test_init_options(blobs):
    X, _ = blobs
    for init in ["pca", "spectral", "random", np.zeros((len(X), 2)) + np.arange(len(X))[:, None]]:
        Y = icongraph.UMAP(n_neighbors=10, init=init, n_epochs=20, random_state=0).fit_transform(X)
        assert np.isfinite(Y).all()
    with pytest.raises(ValueError, match="shape"):
        icongraph.UMAP(n_neighbors=10, init=np.zeros((3, 2))).fit(X)


def test_interpolate_from_sample_is_the_weighted_mean_of_placed_neighbours():
    from icongraph.init import interpolate_from_sample

    # path 0-1-2-3-4 (weights 1, 3 on edge 1-2) plus an isolated pair 5-6 with no sampled point
    edges = [(0, 1, 1.0), (1, 2, 3.0), (2, 3, 1.0), (3, 4, 1.0), (5, 6, 1.0)]
    rows, cols, vals = zip(*edges)
    graph = sp.csr_matrix((vals, (rows, cols)), shape=(7, 7))
    sample = np.array([[0.0, 0.0], [4.0, 8.0]], np.float32)
    y, placed = interpolate_from_sample(graph, np.array([0, 2]), sample, seed=0, jitter=0.0)
    np.testing.assert_array_equal(placed, [True] * 5 + [False] * 2)
    np.testing.assert_allclose(y[[0, 2]], sample)
    np.testing.assert_allclose(y[1], (1 * sample[0] + 3 * sample[1]) / 4)  # both neighbours
    np.testing.assert_allclose(y[3], sample[1])  # round 1: only point 2 is placed
    np.testing.assert_allclose(y[4], sample[1])  # round 2: from point 3
    np.testing.assert_allclose(y[5:], 0.0)
    jittered, _ = interpolate_from_sample(graph, np.array([0, 2]), sample, seed=0)
    np.testing.assert_allclose(jittered[[0, 2]], sample)  # sampled points are kept exactly
    assert 0 < np.abs(jittered[3] - y[3]).max() < 0.05 and len(np.unique(jittered[:5], axis=0)) == 5
    both = (graph + graph.T).tocsr()  # a symmetric graph read as such: the same means
    lean, _ = interpolate_from_sample(both, np.array([0, 2]), sample, seed=0, jitter=0.0,
                                      symmetric=True)
    np.testing.assert_allclose(lean, y, rtol=1e-6)


def test_interpolate_from_sample_equals_rounds_of_sparse_products():
    from icongraph.init import interpolate_from_sample

    # the reference: each round one product of the whole graph with the layout, Jacobi-style
    rng = np.random.default_rng(3)
    graph = sp.random(300, 300, density=0.01, random_state=4, format="csr", dtype=np.float32)
    graph.setdiag(0)
    graph.eliminate_zeros()
    rows = np.sort(rng.choice(300, 20, replace=False))
    sample = rng.normal(size=(20, 3)).astype(np.float32)
    sym = (graph + graph.T).tocsr()
    ref = np.zeros((300, 3))
    done = np.zeros(300, bool)
    ref[rows], done[rows] = sample, True
    while True:
        mass = sym @ done.astype(np.float64)
        new = np.flatnonzero(~done & (mass > 0))
        if new.size == 0:
            break
        ref[new] = (sym @ ref)[new] / mass[new, None]
        done[new] = True
    y, placed = interpolate_from_sample(graph, rows, sample, seed=0, jitter=0.0)
    assert 20 < placed.sum() < 300  # several rounds, and some points out of reach
    np.testing.assert_array_equal(placed, done)
    np.testing.assert_allclose(y, ref.astype(np.float32), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def manifolds_24k():
    from icongraph.datasets import make_manifolds

    return make_manifolds(24_000, n_classes=6, seed=0)


@pytest.mark.quality
def test_coarse_init_refines_a_sample_fit(manifolds_24k):
    X, y = manifolds_24k
    knn = icongraph.knn.exact_knn(X, 15)
    coarse = icongraph.UMAP(init="coarse", random_state=0, precomputed_knn=knn)
    Y = coarse.fit_transform(X)
    pca = icongraph.UMAP(random_state=0, precomputed_knn=knn, n_epochs=200).fit_transform(X)
    # a 1,200-point sample fit, spread through p, then 60 epochs: class structure and local
    # detail as good as 200 epochs from PCA (the default's 500 reach 0.762). kNN preservation with the refinement off (the
    # spread sample alone) 0.427, on 0.732 (PCA start: 0.243 off, 0.762 on); the classes are
    # separated either way (10-NN accuracy 1.000 off and on; PCA 0.958 off, 0.999 on)
    preservation = metrics.knn_preservation(X, Y)
    assert preservation >= 0.6
    assert metrics.knn_accuracy(Y, y, 10) >= metrics.knn_accuracy(pca, y, 10) - 0.01
    assert preservation >= 0.97 * metrics.knn_preservation(X, pca)
    np.testing.assert_array_equal(Y, icongraph.UMAP(init="coarse", random_state=0,
                                                    precomputed_knn=knn).fit_transform(X))
    assert len(coarse.loss_history_) == 13  # the short schedule: epochs 0, 10, ..., 119
    with pytest.raises(ValueError, match="at least 20000 points"):
        icongraph.UMAP(init="coarse").fit(X[:5000])
    with pytest.raises(ValueError, match="init must be"):
        icongraph.UMAP(init="laplacian").fit(X[:500])
    with pytest.raises(ValueError, match="needs the data"):
        icongraph.ICon(p=coarse.graph_, init="coarse").fit(None)


def test_umap_starts_coarse_by_default_from_its_threshold(manifolds_24k, monkeypatch):
    """init=None is the coarse start from UMAP.COARSE_DEFAULT_SAMPLES points (lowered here to
    fit 24k points), the same fit as init="coarse"; PCA below it, on a given graph, and for the
    other presets; a sample fit sees the labels of its rows."""
    X, y = manifolds_24k
    knn = icongraph.knn.exact_knn(X, 15)
    monkeypatch.setattr(icongraph.UMAP, "COARSE_DEFAULT_SAMPLES", 20_000)
    auto = icongraph.UMAP(random_state=0, precomputed_knn=knn).fit(X)
    assert len(auto.loss_history_) == 13  # the refinement's 120 epochs
    np.testing.assert_array_equal(auto.embedding_, icongraph.UMAP(
        init="coarse", random_state=0, precomputed_knn=knn).fit(X).embedding_)
    assert icongraph.UMAP()._resolve_init(19_999, True) == "pca"
    assert icongraph.UMAP()._resolve_init(20_000, True, own_graph=False) == "pca"
    assert icongraph.UMAP()._resolve_init(20_000, False) == "spectral"
    assert icongraph.TSNE()._resolve_init(10**8, True) == "pca"

    class Recorded(icongraph.UMAP):
        labels = []

        def fit(self, X, y=None):
            Recorded.labels.append(None if y is None else np.asarray(y))
            return super().fit(X, y)

    partial = np.where(np.arange(len(y)) % 2 == 0, y, -1)  # half of the points unlabelled
    Recorded(n_epochs=5, random_state=0, precomputed_knn=knn).fit(X, partial)
    sample_labels = Recorded.labels[1]  # [0] is the whole fit, [1] its sample's
    assert len(sample_labels) == len(X) // 20 and (sample_labels == -1).any()
    assert set(np.unique(sample_labels[sample_labels >= 0])) == set(np.unique(y))


def test_coarse_init_places_unsampled_components_by_pca(manifolds_24k):
    """A component of p that the random sample misses starts at PCA coordinates, scaled into
    the sample's layout, instead of staying at the origin."""
    import icongraph.embedding as embedding

    X, _ = manifolds_24k
    X = X.copy()
    n, seed = len(X), 0
    rows = np.sort(np.random.default_rng(seed).choice(n, n // embedding.COARSE_FACTOR,
                                                       replace=False))  # as _coarse_init
    island = np.setdiff1d(np.arange(n), rows)[:30]  # 30 unsampled points, moved far away
    X[island] = 1e3 + np.random.default_rng(1).normal(size=(30, X.shape[1]))
    knn = icongraph.knn.exact_knn(X, 15)
    model = icongraph.UMAP(random_state=seed, precomputed_knn=knn, n_epochs=1).fit(X)
    component = sp.csgraph.connected_components(model.graph_)[1]
    assert (component == component[island[0]]).sum() == 30  # the island is its own component
    y = model._coarse_init(X, icongraph.targets.Target(model.graph_, symmetric=True), seed)
    assert np.isfinite(y).all()
    sample_extent = np.abs(np.delete(y, island, 0)).max()
    assert np.abs(y[island]).max() <= sample_extent * 1.001  # rescaled into the layout
    assert np.ptp(y[island], axis=0).min() > 0  # spread by PCA, not stacked at one point


def test_pca_start_from_row_blocks_is_the_dense_projection(tmp_path, monkeypatch):
    """The PCA start summed over row blocks (a memory-mapped X read, not copied) equals the
    dense float64 projection on the top eigenvectors of the covariance, signs fixed, and a
    read-only memmap gives no warning."""
    import warnings

    import icongraph.init as init

    monkeypatch.setattr(init, "PCA_BLOCK_ROWS", 7)  # several blocks and a short last one
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(200, 6)) * [5, 3, 1, 1, 1, 1] + 10).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = init.pca_init(np.load(tmp_path / "X.npy", mmap_mode="r"), 2, 0)
    c = X.astype(np.float64) - X.astype(np.float64).mean(0)
    _, vecs = np.linalg.eigh(c.T @ c)
    axes = vecs[:, ::-1][:, :2]
    axes = axes * np.sign(axes[np.abs(axes).argmax(0), [0, 1]])
    np.testing.assert_allclose(y, c @ axes, rtol=1e-5, atol=1e-5)
