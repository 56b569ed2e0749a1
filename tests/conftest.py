"""Shared fixtures, and the ``--optimiser-off`` check of the quality tests.

A *quality* test (marked ``@pytest.mark.quality``) asserts that an embedding or a clustering is
good. It must use data the initialisation does not already solve, so that it fails when the
optimiser does nothing: ``pytest -m quality --optimiser-off`` fits every estimator a test
constructs with ``learning_rate=0`` and expects each quality test to fail on an assertion
(strict xfail; a pass, or any other exception, is an error of the run). Each quality test says
in a comment what it scores with the optimiser off and on.
"""

import numpy as np
import pytest

import icongraph.kernels

#: the learning rate of ``--optimiser-off`` (0 is accepted: it switches the optimiser off)
OFF_RATE = 0.0


def pytest_addoption(parser):
    parser.addoption("--optimiser-off", action="store_true",
                     help="fit with learning_rate=0 and expect every quality test to fail "
                          "(the others are skipped)")


def pytest_configure(config):
    config.addinivalue_line("markers", "quality: asserts that an embedding or a clustering is "
                                       "good; fails with --optimiser-off")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--optimiser-off"):
        return
    for item in items:
        if item.get_closest_marker("quality"):
            item.add_marker(pytest.mark.xfail(raises=AssertionError, strict=True,
                                              reason="the optimiser is off"))
        else:
            item.add_marker(pytest.mark.skip(reason="--optimiser-off runs the quality tests"))


@pytest.fixture(autouse=True)
def _optimiser_off(request, monkeypatch):
    """With ``--optimiser-off``: the estimator a test fits runs at ``OFF_RATE``. Fits nested in
    a fit (the coarse init's sample fit, the clustering's embedding seed) are part of the
    initialisation and keep their settings."""
    if not request.config.getoption("--optimiser-off"):
        return
    from icongraph.clustering import Clustering
    from icongraph.compose import ICon
    from icongraph.embedding import _Embedding
    from icongraph.pairs import PairedEmbedding
    from icongraph.prototypes import PrototypeClassifier

    depth = [0]

    def switched_off(fit):
        def fit_off(self, *args, **kwargs):
            depth[0] += 1
            saved = self.learning_rate
            if depth[0] == 1:
                self.learning_rate = OFF_RATE
            try:
                return fit(self, *args, **kwargs)
            finally:
                self.learning_rate = saved
                depth[0] -= 1
        return fit_off

    for cls in (_Embedding, ICon, Clustering, PrototypeClassifier, PairedEmbedding):
        monkeypatch.setattr(cls, "fit", switched_off(cls.fit))


@pytest.fixture(scope="session")
def digits():
    from icongraph.datasets import load_digits

    return load_digits()


def digits_subset(n: int, seed: int = 0):
    """``n`` rows of scikit-learn's digits drawn without replacement (seeded)."""
    from icongraph.datasets import load_digits

    X, y = load_digits()
    rows = np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))
    return X[rows], y[rows]


def make_blobs(n_clusters: int, per_cluster: int, dim: int, spread: float):
    """Gaussian clusters of unit width around centres drawn with std ``spread`` (seeded)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, spread, (n_clusters, dim))
    y = np.repeat(np.arange(n_clusters), per_cluster)
    return (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def make_slabs(per_class: int = 100, dim: int = 6, gap: float = 10.0, seed: int = 0):
    """Three classes that overlap in the top two principal components but not in their
    neighbourhoods: parallel slabs, each a wide disc (sd 10) in two shared directions, stacked
    ``gap`` apart along a third (sd 0.5 within a slab), plus unit noise in the other
    dimensions; randomly rotated. The stacking direction has variance ``2 gap^2 / 3`` (67 at the
    default) < 100, so a PCA start shows three superposed discs (10-NN accuracy ~0.43), while
    the kNN graph hardly crosses between slabs."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    X = rng.normal(0, 1, (len(y), dim))
    X[:, :2] *= 10.0
    X[:, 2] = (y - 1) * gap + rng.normal(0, 0.5, len(y))
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (X @ rotation).astype(np.float32), y


@pytest.fixture
def blobs():
    """Small data with structure: 3 separated clusters in 5-D (solved by a PCA start: for
    tests of behaviour, not of quality)."""
    return make_blobs(3, 30, 5, 8.0)


@pytest.fixture
def slabs():
    """300 points in 3 classes that a PCA start does not separate (:func:`make_slabs`)."""
    return make_slabs()


@pytest.fixture
def no_work(monkeypatch):
    """The kNN search (the first work of every fit) fails the test if it runs."""
    import icongraph.clustering as clustering
    import icongraph.embedding as embedding
    import icongraph.pairs as pairs
    import icongraph.prototypes as prototypes

    def no_search(*args, **kwargs):
        raise AssertionError("the kNN search ran before the parameters were checked")

    monkeypatch.setattr(embedding, "knn_search", no_search)
    monkeypatch.setattr(clustering, "knn_search", no_search)
    monkeypatch.setattr(prototypes, "make_head", no_search)  # the classifier has no kNN
    monkeypatch.setattr(pairs.PairedEmbedding, "_train", no_search)  # nor the pairs


class TorchOnlyCauchy(icongraph.kernels.Kernel):
    """A kernel without a numba form (``code = -1``), ``k = 1 / (1 + d2 / 2)``: a fit runs the
    torch engine on the CPU (the slope written out, as the grid-interpolated sums need it)."""

    name = "cauchy2"

    @property
    def params(self):
        return (2.0, 0.0)

    def log_k_torch(self, d2):
        import torch

        return -torch.log1p(d2 / 2.0)

    def slope_torch(self, d2):
        return -1.0 / (2.0 + d2)


def fft_gradient(obj, y, seed: int = 0, engine: str = "numba", with_loss: bool = True):
    """The 'fft' estimator's gradient and loss at ``y`` (N, d) float32: the edge (and
    same-class) attraction of ``engine`` ("numba" or "torch") at the shift it is given, plus
    the sums over all pairs (:func:`icongraph.objective.all_pairs_gradient`)."""
    import torch

    from icongraph import _cpu_engine as cpu
    from icongraph._torch_engine import edge_forces_torch, label_forces_torch, torch_arrays
    from icongraph.objective import all_pairs_gradient

    y = np.asarray(y, np.float32)
    n = len(y)

    def attract(shift):
        debiased = obj.q_alpha > 0
        if engine == "numba":
            grad, rows, s_rows = (np.zeros_like(y), np.zeros(n, np.float32),
                                  np.zeros(n, np.float32))
            cpu.edge_gradient(y, obj.engine, 1.0, seed, with_loss, grad, rows, float(shift),
                              s_rows)
            return torch.from_numpy(grad), torch.from_numpy(rows), torch.from_numpy(s_rows)
        arrays = torch_arrays(obj, "cpu", chunk_edges=97)  # several chunks
        yt = torch.from_numpy(y)
        grad, rows = torch.zeros_like(yt), torch.zeros(n)
        s_rows = torch.zeros(n) if debiased else None
        extra = {"shift": shift, "s_rows": s_rows} if debiased else {}
        for start, stop, e0, e1 in arrays["chunks"]:
            edge_forces_torch(obj, arrays, yt, e0, e1, 0, 1.0, with_loss, grad, rows, **extra)
            label_forces_torch(obj, arrays, yt, start, stop, seed, 1.0, with_loss, grad, rows,
                               **extra)
        return grad, rows, s_rows

    grad, loss = all_pairs_gradient(obj, torch.from_numpy(y), 1.0, attract, with_loss)
    return grad.numpy(), loss
