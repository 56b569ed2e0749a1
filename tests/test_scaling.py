"""Scale-free input: any magnitude from 1e-30 to 1e30 and a large offset give the result of
the same data at unit scale (a global affine map, computed in float64)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_blobs

import icongraph
from icongraph import metrics
from icongraph.scaling import DataScale


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(300, n_features=10, centers=3, random_state=0)
    return X.astype(np.float64), y


def test_data_scale_matches_float64_statistics(blobs):
    X, _ = blobs
    shifted = X * 1e25 + 3e27
    scale = DataScale.fit(shifted, centre=True)
    mean = shifted.mean(0)
    spread = np.sqrt(((shifted - mean) ** 2).sum(1).mean())
    np.testing.assert_allclose(scale.shift, mean, rtol=1e-12)
    assert scale.scale == pytest.approx(spread, rel=1e-10)
    out = scale.apply(shifted)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (shifted - mean) / spread, atol=1e-6)
    assert np.sqrt((out.astype(np.float64) ** 2).sum(1).mean()) == pytest.approx(1.0, rel=1e-5)


def test_float64_beyond_float32s_range_is_measured_without_overflow(blobs):
    X, _ = blobs
    huge = X * 1e200  # squares overflow float64: the statistics take a second, scaled pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scale = DataScale.fit(huge, centre=True)
    spread = 1e200 * np.sqrt(((X - X.mean(0)) ** 2).sum(1).mean())
    assert scale.scale == pytest.approx(spread, rel=1e-10)
    np.testing.assert_allclose(scale.shift, 1e200 * X.mean(0), rtol=1e-10)


def test_data_in_range_is_left_as_it_is(blobs):
    X, _ = blobs
    assert DataScale.fit(X, centre=True).identity
    X32 = X.astype(np.float32)
    assert DataScale.fit(X32, centre=True).apply(X32) is X32


def test_cosine_and_sparse_are_rescaled_not_centred(blobs):
    X, _ = blobs
    scale = DataScale.fit(X * 1e-20, centre=False)
    assert scale.shift is None and scale.scale == pytest.approx(
        np.sqrt((X**2 * 1e-40).sum(1).mean()), rel=1e-10)
    sparse = sp.csr_matrix(np.abs(X) * 1e25)
    rescaled = DataScale.fit(sparse, centre=True).apply(sparse)
    assert sp.issparse(rescaled)
    np.testing.assert_allclose(rescaled.toarray(), np.abs(X) / np.sqrt((X**2).sum(1).mean()),
                               rtol=1e-5)


def test_identical_rows_are_refused():
    with pytest.raises(ValueError, match="all 5 rows of the data are identical"):
        DataScale.fit(np.ones((5, 3)) * 1e12, centre=True)
    with pytest.raises(ValueError, match="identical"):
        icongraph.UMAP().fit(np.full((40, 4), 7.0))


SCALES = {"1e-30": lambda X: X * 1e-30, "1e-15": lambda X: X * 1e-15,
          "1e19": lambda X: X * 1e19, "1e30": lambda X: X * 1e30,
          "offset 1e5": lambda X: X + 1e5}
EMBEDDINGS = [lambda: icongraph.UMAP(random_state=0, n_epochs=100),
              lambda: icongraph.TSNE(random_state=0, n_epochs=150),
              lambda: icongraph.ICon(p="perplexity", q="student", estimator="global",
                                     random_state=0, n_epochs=100)]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("make", EMBEDDINGS, ids=["UMAP", "TSNE", "ICon"])
def test_embeddings_are_scale_free(blobs, make, scale):
    X, _ = blobs
    unit = metrics.knn_preservation(X, make().fit_transform(X), 15)
    model = make().fit(SCALES[scale](X))
    assert np.isfinite(model.embedding_).all()
    assert metrics.knn_preservation(X, model.embedding_, 15) >= unit - 0.05
    # new points go through the fitted map: a training row lands where a batch puts it
    np.testing.assert_allclose(model.transform(SCALES[scale](X[:5])),
                               model.transform(SCALES[scale](X[:20]))[:5], atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_clustering_is_scale_free(blobs, scale):
    X, y = blobs
    model = icongraph.Clustering(n_clusters=3, random_state=0, n_epochs=50, n_jobs=1)
    labels = model.fit_predict(SCALES[scale](X))
    assert metrics.adjusted_rand_index(y, labels) == 1.0
    np.testing.assert_array_equal(model.predict(SCALES[scale](X)), labels)
