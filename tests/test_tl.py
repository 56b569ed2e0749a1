"""icongraph.tl on an AnnData (scanpy's bundled pbmc68k_reduced, 700 cells): scanpy's
conventions in and out, scanpy's neighbour graph as p, our graph read back by scanpy, and the
errors, raised before any work. Also the sparse kNN-distance matrices that
``precomputed_knn`` reads (:func:`icongraph.knn.sparse_knn_lists`)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import icongraph
from icongraph.knn import as_knn, exact_knn, sparse_knn_lists

sc = pytest.importorskip("scanpy")


@pytest.fixture(scope="module")
def pbmc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.datasets.pbmc68k_reduced()


def knn_accuracy(embedding, labels) -> float:
    """5-fold 10-NN accuracy of ``labels`` in ``embedding``."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(10), embedding, labels, cv=5).mean()


def test_import_icongraph_leaves_scanpy_and_pyg_alone():
    import subprocess
    import sys

    code = ("import sys, icongraph; icongraph.tl.embed; icongraph.pyg.to_data; print(*(m in "
            "sys.modules for m in ('anndata', 'scanpy', 'torch_geometric')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.quality
@pytest.mark.parametrize("neighbors_key", [None, "neighbors"])
def test_embed_writes_scanpy_layout_and_beats_the_start(pbmc, neighbors_key):
    # 10-NN accuracy of bulk_labels: on 0.816 (own kNN) / 0.809 (scanpy's); off (PCA start) 0.764
    adata = pbmc.copy()
    assert icongraph.tl.embed(adata, neighbors_key=neighbors_key, n_epochs=100) is None
    off = icongraph.tl.embed(adata, neighbors_key=neighbors_key, n_epochs=100,
                             learning_rate=0.0, key_added="X_off", copy=True)
    labels = adata.obs["bulk_labels"].to_numpy()
    assert adata.obsm["X_icon"].shape == (700, 2)
    assert "X_off" not in adata.obsm  # copy=True left adata alone
    assert knn_accuracy(adata.obsm["X_icon"], labels) > knn_accuracy(off.obsm["X_off"],
                                                                      labels) + 0.02
    params = adata.uns["X_icon"]["params"]
    assert params["method"] == "umap" and params["use_rep"] == "X_pca"
    assert params["random_state"] == 0 and params["n_epochs"] == 100
    graph = adata.uns["icon"]
    conn = adata.obsp[graph["connectivities_key"]]
    dist = adata.obsp[graph["distances_key"]]
    assert conn.shape == dist.shape == (700, 700)
    assert abs(conn - conn.T).max() < 1e-6  # symmetric, as scanpy's connectivities
    per_row = np.diff(sp.csr_matrix(dist).indptr)
    if neighbors_key is None:
        assert graph["params"]["n_neighbors"] == 15 and (per_row == 14).all()
    else:  # scanpy's own 9 neighbours per row (n_neighbors=10 with the point itself)
        assert params["neighbors_key"] == "neighbors"
        assert (per_row == 9).all() and graph["params"]["n_neighbors"] == 10
        scanpy_dist = pbmc.obsp["distances"]
        assert abs(dist - scanpy_dist).max() < 1e-5
    sc.tl.leiden(adata, neighbors_key="icon", key_added="leiden_icon", flavor="igraph",
                 n_iterations=2, directed=False)
    assert adata.obs["leiden_icon"].nunique() > 3


def test_scanpy_distances_are_the_knn_of_every_estimator(pbmc):
    """scanpy's distances read as the fit's kNN lists (n_neighbors and perplexity follow the
    graph), by the presets and by a clustering."""
    adata = pbmc.copy()
    scanpy_knn = as_knn(pbmc.obsp["distances"], 700)
    for method in ("tsne", "sne"):
        icongraph.tl.embed(adata, method=method, neighbors_key="neighbors", n_epochs=20,
                           key_added=f"X_{method}")
        assert adata.obsm[f"X_{method}"].shape == (700, 2)
    out = icongraph.tl.cluster(adata, n_clusters=6, neighbors_key="neighbors", n_epochs=20,
                               init="kmeans", copy=True)
    assert out.uns["icon_cluster"]["params"]["n_clusters"] == 6
    dist = sp.csr_matrix(out.obsp[out.uns["icon_cluster"]["distances_key"]])
    lists = as_knn(dist, 700)
    np.testing.assert_array_equal(lists.indices, scanpy_knn.indices)


def test_cluster_writes_a_categorical_of_strings_and_a_graph_for_leiden(pbmc, tmp_path):
    adata = pbmc.copy()
    icongraph.tl.cluster(adata, n_clusters=5, method="infonce", n_epochs=30, init="kmeans")
    column = adata.obs["icon_cluster"]
    assert column.dtype == "category"
    assert list(column.cat.categories) == [str(c) for c in range(len(column.cat.categories))]
    assert set(column.cat.categories) <= {"0", "1", "2", "3", "4"}
    entry = adata.uns["icon_cluster"]
    assert entry["params"]["method"] == "infonce" and entry["params"]["n_clusters"] == 5
    sc.tl.leiden(adata, neighbors_key="icon_cluster", key_added="leiden_icon",
                 flavor="igraph", n_iterations=2, directed=False)
    assert adata.obs["leiden_icon"].nunique() > 1
    icongraph.tl.embed(adata, n_epochs=20)
    sc.pl.embedding(adata, basis="X_icon", color="icon_cluster", show=False)
    adata.write_h5ad(tmp_path / "pbmc.h5ad")  # every uns entry is storable
    import anndata

    back = anndata.read_h5ad(tmp_path / "pbmc.h5ad")
    assert back.uns["icon_cluster"]["params"]["n_clusters"] == 5
    np.testing.assert_array_equal(back.obsm["X_icon"], adata.obsm["X_icon"])


def test_graph_rows_take_scanpys_connectivities_as_p(pbmc):
    adata = icongraph.tl.embed(pbmc, method="Graph_TSNE", neighbors_key="neighbors",
                               n_epochs=30, copy=True)
    assert adata.obsm["X_icon"].shape == (700, 2)
    # no kNN of its own: the written graph points to the distances it came from
    assert adata.uns["icon"]["distances_key"] == "distances"
    with pytest.raises(ValueError, match="embeds a given graph: pass neighbors_key"):
        icongraph.tl.embed(pbmc, method="graph-tsne", copy=True)


@pytest.mark.parametrize("call, match", [
    (lambda a: icongraph.tl.embed(a, use_rep="X_scvi"),
     r"use_rep='X_scvi' is not in adata.obsm \(keys: 'X_pca', 'X_umap'\)"),
    (lambda a: icongraph.tl.cluster(a, use_rep="X_scvi"), "keys: 'X_pca', 'X_umap'"),
    (lambda a: icongraph.tl.embed(a, neighbors_key="nn"),
     r"neighbors_key='nn' is not in adata.uns \(neighbour graphs there: 'neighbors'\)"),
    (lambda a: icongraph.tl.embed(a, method="cross-entropy"), "not one of the embedding"),
    (lambda a: icongraph.tl.cluster(a, method="umap"), "not one of the clustering"),
    (lambda a: icongraph.tl.embed(a, min_dist=-1.0), "min_dist"),
    (lambda a: icongraph.UMAP().fit(a), r"AnnData object.*icongraph.tl.embed"),
    (lambda a: icongraph.Clustering().fit(a), "AnnData object"),
    (lambda a: icongraph.tl.embed(a.obsm["X_pca"]), "adata must be an AnnData"),
])
def test_bad_input_is_refused_before_any_work(pbmc, call, match):
    adata = pbmc.copy()
    with pytest.raises(ValueError, match=match):
        call(adata)
    assert set(adata.obsm) == {"X_pca", "X_umap"} and set(adata.obsp) == set(pbmc.obsp)
    assert set(adata.uns) == set(pbmc.uns)


def test_missing_distances_are_named(pbmc):
    adata = pbmc.copy()
    del adata.obsp["distances"]
    with pytest.raises(ValueError, match=r"adata.obsp\['distances'\], which is missing"):
        icongraph.tl.embed(adata, neighbors_key="neighbors")


# -- sparse kNN-distance matrices as precomputed_knn ------------------------------------------

def test_sparse_knn_lists_match_the_search():
    from sklearn.neighbors import kneighbors_graph

    X = np.random.default_rng(0).normal(size=(120, 5))
    knn = exact_knn(X, 7)
    idx, dist = sparse_knn_lists(kneighbors_graph(X, 7, mode="distance"))
    np.testing.assert_array_equal(idx, knn.indices)
    np.testing.assert_allclose(dist, knn.distances, rtol=1e-5)
    fit = icongraph.UMAP(n_neighbors=8, n_epochs=5, random_state=0,  # 8 with the point
                         precomputed_knn=kneighbors_graph(X, 7, mode="distance")).fit(X)
    np.testing.assert_array_equal(fit.knn_.indices, knn.indices)


def test_sparse_knn_lists_cut_uneven_rows_and_refuse_graphs():
    rows = np.repeat(np.arange(4), [3, 3, 3, 2])
    cols = np.array([1, 2, 3, 0, 2, 3, 0, 1, 3, 0, 1])
    dist = np.array([3, 1, 2, 1, 2, 3, 1, 2, 3, 1, 2], float)
    with pytest.warns(UserWarning, match="2 to 3 neighbours per row: every row is cut to its 2"):
        idx, d = sparse_knn_lists(sp.csr_matrix((dist, (rows, cols)), shape=(4, 4)))
    np.testing.assert_array_equal(idx[0], [2, 3])  # the two nearest, by distance
    np.testing.assert_array_equal(d[0], [1, 2])
    star = sp.csr_matrix(([1.0] * 6, ([0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0])), shape=(4, 4))
    with pytest.raises(ValueError, match="not a kNN graph: its rows hold 1 to 3"):
        sparse_knn_lists(star)
    empty = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(3, 3))
    with pytest.raises(ValueError, match="not a kNN graph"):
        sparse_knn_lists(empty)
    with pytest.raises(ValueError, match=r"\(N, N\) with N = 5"):
        sparse_knn_lists(star, 5)
