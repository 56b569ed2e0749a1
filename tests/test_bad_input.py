"""Bad input: a clear ValueError naming the problem, and the caller's data untouched."""

import os
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import icongraph
from icongraph import metrics


@pytest.mark.parametrize("X, message", [
    (np.array([[1.0, np.nan], [0.0, 1.0]] * 10), "NaN or infinite"),
    (np.array([[1.0, np.inf], [0.0, 1.0]] * 10), "NaN or infinite"),
    (np.empty((0, 3)), "empty"),
    (np.empty((5, 0)), "empty"),
    (np.arange(30.0), "2-D"),
    (np.array([["a", "b"]] * 20), "numeric"),
    (np.array([[object(), 1]] * 20, dtype=object), "numeric"),
    (np.arange(15.0).reshape(5, 3), "Too few points"),
    (np.ones((30, 3)), "all 30 rows of the data are identical"),
])
def test_bad_data_raises(X, message):
    with pytest.raises(ValueError, match=message):
        icongraph.UMAP(n_neighbors=15).fit(X)


def test_too_few_points_for_perplexity():
    with pytest.raises(ValueError, match="perplexity"):
        icongraph.TSNE(perplexity=30).fit(np.random.default_rng(0).normal(size=(20, 3)))


def test_identical_points_are_refused_before_any_work():
    # all-identical rows have no structure: any layout would be noise (the issue allows a refusal)
    for model in (icongraph.UMAP(n_neighbors=5), icongraph.TSNE(perplexity=5),
                  icongraph.Clustering(n_clusters=2)):
        with pytest.raises(ValueError, match="all 40 rows of the data are identical"):
            model.fit(np.ones((40, 3)))


def test_duplicates_are_fine(blobs):
    X, _ = blobs
    Y = icongraph.UMAP(n_neighbors=10, n_epochs=30, random_state=0).fit_transform(np.vstack([X, X]))
    assert np.isfinite(Y).all()


def test_caller_arrays_not_modified(blobs):
    X, _ = blobs
    X = X.astype(np.float32)
    before = X.copy()
    knn = icongraph.knn_search(X, 10)
    idx_before = knn.indices.copy()
    init = np.random.default_rng(0).normal(size=(len(X), 2)).astype(np.float32)
    init_before = init.copy()
    icongraph.UMAP(n_neighbors=11, n_epochs=20, init=init, precomputed_knn=knn).fit(X)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(init, init_before)
    np.testing.assert_array_equal(knn.indices, idx_before)
    clustering = icongraph.Clustering(n_clusters=3, n_neighbors=10, n_epochs=5).fit(X)
    np.testing.assert_array_equal(X, before)
    # float32 C-contiguous data is used in place (no 200 MB copy at 1M x 50), the rest converted
    from icongraph.validation import check_data

    assert check_data(X) is X and clustering._fit_X is X
    assert check_data(X.astype(np.float64)).dtype == np.float32
    assert check_data(np.asfortranarray(X)).flags.c_contiguous


def test_bad_precomputed_graphs(blobs):
    X, _ = blobs
    n = len(X)
    with pytest.raises(ValueError, match="square"):
        icongraph.ICon(p=sp.random(n, n + 1, density=0.1, format="csr")).fit(X)
    with pytest.raises(ValueError, match="nodes but the data"):
        icongraph.ICon(p=sp.random(n + 2, n + 2, density=0.2, format="csr")).fit(X)
    negative = sp.random(n, n, density=0.3, format="csr", random_state=0)
    negative.data[0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        icongraph.ICon(p=negative).fit(X)
    isolated = sp.lil_matrix((n, n))
    isolated[0, 1] = isolated[1, 0] = 1.0
    with pytest.raises(ValueError, match="isolated"):
        icongraph.ICon(p=isolated.tocsr()).fit(X)


def test_bad_parameters(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="metric"):
        icongraph.UMAP(metric="manhattan").fit(X)
    with pytest.raises(ValueError, match="estimator"):
        icongraph.ICon(estimator="nope").fit(X)
    with pytest.raises(ValueError, match="unknown kernel"):
        icongraph.ICon(q="laplace").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        icongraph.UMAP(n_components=0).fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            icongraph.UMAP(device="cuda").fit(X)


def test_label_length_mismatch(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="length"):
        metrics.knn_accuracy(X[:, :2], y[:-1])


def test_precomputed_knn_too_small_for_perplexity(blobs):
    X, _ = blobs
    knn = icongraph.knn_search(X, 10)
    with pytest.raises(ValueError, match="fewer than perplexity"):
        icongraph.TSNE(perplexity=30, precomputed_knn=knn).fit(X)


def test_more_bad_parameters(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="n_negatives"):
        icongraph.TSNE(perplexity=10, n_negatives=0.5).fit(X)
    with pytest.raises(ValueError, match="invalid device"):
        icongraph.UMAP(n_neighbors=10, device="not-a-device").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        icongraph.UMAP(n_neighbors=10, n_components=True).fit(X)
    Y = icongraph.UMAP(n_neighbors=10, n_components=np.int64(3), n_epochs=5).fit_transform(X)
    assert Y.shape == (len(X), 3)


@pytest.mark.quality
def test_sparse_input_embeds():
    # 10-NN accuracy: optimiser off 0.400 (the truncated-SVD start), on 0.936
    from conftest import digits_subset

    X, y = digits_subset(500)  # 8x8 images: half the pixels are 0
    Y = icongraph.UMAP(n_neighbors=10, random_state=0, n_epochs=50).fit_transform(
        sp.csr_matrix(X))
    assert metrics.knn_accuracy(Y, y, 10) > 0.85


def test_umap_takes_alpha(blobs):
    """alpha debiases UMAP's p too (the 'neg' estimator's uniform attraction): the fit runs,
    is finite and differs from alpha=0."""
    X, _ = blobs
    plain = icongraph.UMAP(n_neighbors=10, n_epochs=30, random_state=0).fit_transform(X)
    debiased = icongraph.UMAP(n_neighbors=10, n_epochs=30, alpha=0.2,
                              random_state=0).fit_transform(X)
    assert np.isfinite(debiased).all()
    assert np.abs(debiased - plain).max() > 1e-3


def test_a_memory_mapped_input_that_changes_during_the_fit_is_an_error(blobs, tmp_path):
    """The file behind an np.load(..., mmap_mode="r") input is written while the fit runs
    (from a callback, mid-optimisation): the fit ends with DataChangedError naming the file;
    the same fit of an unchanged file, and of an array in memory, succeeds."""
    from icongraph.validation import DataChangedError

    X, _ = blobs
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    assert icongraph.UMAP(n_epochs=20, random_state=0).fit(mapped).embedding_.shape == (90, 2)

    def rewrite(epoch, loss, embedding):
        if epoch == 5:
            with open(path, "r+b") as fh:  # same size, other bytes: a new version in place
                fh.seek(-4, 2)
                fh.write(np.float32(123.0).tobytes())
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))

    for model in (icongraph.UMAP(n_epochs=20, random_state=0, callbacks=[rewrite]),
                  icongraph.Clustering(n_clusters=3, n_epochs=20, random_state=0,
                                       callbacks=[rewrite])):
        with pytest.raises(DataChangedError, match=r"X\.npy' was modified during the fit"):
            model.fit(np.load(path, mmap_mode="r"))
        assert not hasattr(model, "embedding_") and not hasattr(model, "labels_")
    icongraph.UMAP(n_epochs=20, random_state=0, callbacks=[rewrite]).fit(np.array(mapped))
