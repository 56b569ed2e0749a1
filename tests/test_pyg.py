"""torch-geometric ``Data`` as every estimator's input (x as X, the graph as p, y as labels)
and fitted graphs as ``Data`` (``to_pyg``): two cliques joined by one edge, and a ``Data``
built from digits' kNN graph."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.utils import degree, to_undirected

import icongraph
from icongraph.graph import row_normalize
from icongraph.knn import exact_knn

EMBEDDINGS = {
    "UMAP": lambda **kw: icongraph.UMAP(**kw),
    "TSNE": lambda **kw: icongraph.TSNE(**kw),
    "SNE": lambda **kw: icongraph.SNE(**kw),
    "ICon": lambda **kw: icongraph.ICon(**kw),
}


#: the clique of each node of :func:`two_cliques`
CLIQUE = torch.arange(24) // 12


def two_cliques(dim: int = 5) -> Data:
    """Two cliques of 12 nodes joined by the edge (0, 12), undirected; random features (no
    structure: a start from them does not separate the cliques); no labels."""
    pairs = torch.combinations(torch.arange(12)).T
    edge_index = to_undirected(torch.cat([pairs, pairs + 12, torch.tensor([[0], [12]])], 1))
    x = torch.randn(24, dim, generator=torch.Generator().manual_seed(0))
    return Data(x=x, edge_index=edge_index)


def separation(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Distance between the two groups' means over the mean within-group spread."""
    a, b = embedding[labels == 0], embedding[labels == 1]
    spread = (np.linalg.norm(a - a.mean(0), axis=1).mean()
              + np.linalg.norm(b - b.mean(0), axis=1).mean()) / 2
    return float(np.linalg.norm(a.mean(0) - b.mean(0)) / spread)


@pytest.mark.quality
@pytest.mark.parametrize("name", sorted(EMBEDDINGS))
def test_every_embedding_takes_a_data_graph_as_p(name):
    # separation (distance of the means / spread) on: UMAP 8.7, ICon 9.5, TSNE 31, SNE 52;
    # off (the PCA start of random features): 0.5
    data = two_cliques()
    labels = CLIQUE.numpy()
    est = EMBEDDINGS[name](n_epochs=60, random_state=0).fit(data)
    off = EMBEDDINGS[name](n_epochs=60, random_state=0, learning_rate=0.0).fit(data)
    assert separation(off.embedding_, labels) < 1.0
    assert separation(est.embedding_, labels) > 3.0
    expected = row_normalize(sp.csr_matrix((np.ones(data.num_edges), data.edge_index.numpy()),
                                           shape=(24, 24)))
    assert abs(est.graph_ - expected).max() < 1e-6  # the Data's graph, rows normalised
    assert est.knn_ is None and est.n_features_in_ == 5 and est.target_.labels is None
    with pytest.raises(ValueError, match="no features to place new points"):
        est.transform(data.x[:2])
    with pytest.raises(ValueError, match="torch_geometric Data.*pass its features data.x"):
        est.transform(data)


def test_clustering_and_the_classifier_take_a_data():
    data = two_cliques()
    clustering = icongraph.Clustering(n_clusters=2, head="free", random_state=0, n_jobs=1,
                                      n_epochs=60).fit(data)
    labels = clustering.labels_
    assert len(set(labels[:12])) == 1 and len(set(labels[12:])) == 1 and labels[0] != labels[12]
    assert clustering.knn_ is None
    # supervised: data.y are the labels
    supervised = icongraph.Clustering(n_clusters=2, method="supervised", random_state=0,
                                      n_epochs=50).fit(Data(x=torch.randn(24, 30), y=CLIQUE))
    assert (supervised.labels_ == supervised.labels_[0]).sum() == 12
    with pytest.warns(UserWarning, match="Data's graph is not used"):
        classifier = icongraph.PrototypeClassifier(random_state=0, n_epochs=30).fit(
            Data(x=data.x @ torch.randn(5, 30), edge_index=data.edge_index, y=CLIQUE))
    assert list(classifier.classes_) == [0, 1]
    umap = icongraph.UMAP(n_epochs=5).fit(Data(x=data.x, edge_index=data.edge_index, y=CLIQUE))
    np.testing.assert_array_equal(umap.target_.labels, CLIQUE.numpy())


@pytest.mark.quality
def test_a_data_from_digits_knn_embeds_as_well_as_the_features(digits):
    # 5-fold 10-NN accuracy of the digits: on 0.966 (0.969 fitted on the features); off 0.613
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    X, y = digits
    knn = exact_knn(X, 14)
    rows = np.repeat(np.arange(len(X)), 14)
    edge_index = torch.as_tensor(np.stack([rows, knn.indices.ravel()]), dtype=torch.long)
    data = Data(x=torch.as_tensor(X), edge_index=edge_index,
                edge_attr=torch.as_tensor(np.exp(-knn.distances.ravel() / knn.distances.mean())))
    est = icongraph.UMAP(n_epochs=50, random_state=0).fit(data)
    features = icongraph.UMAP(n_epochs=50, random_state=0).fit(X)

    def accuracy(e):
        return cross_val_score(KNeighborsClassifier(10), e, y, cv=5).mean()

    assert accuracy(est.embedding_) > max(0.9, accuracy(features.embedding_) - 0.02)
    assert est.graph_.nnz == len(X) * 14  # directed kNN edges stay directed (1-D edge_attr)


def test_to_pyg_round_trips_the_fitted_graph():
    data = two_cliques()
    est = icongraph.UMAP(n_neighbors=5, n_epochs=10, random_state=0).fit(data.x)
    out = est.to_pyg()
    assert out.num_nodes == 24 and out.edge_index.shape == (2, est.graph_.nnz)
    assert torch.equal(out.x, torch.as_tensor(est.embedding_))
    back = sp.csr_matrix((out.edge_weight.numpy(), out.edge_index.numpy()), shape=(24, 24))
    assert abs(back - est.graph_).max() == 0
    np.testing.assert_allclose(degree(out.edge_index[0], 24).numpy(),
                               np.diff(est.graph_.indptr))
    # the exported Data fits again, with the same graph p (rows normalised)
    again = icongraph.ICon(n_epochs=5, random_state=0).fit(out)
    assert abs(again.graph_ - row_normalize(est.graph_)).max() < 1e-6
    clustering = icongraph.Clustering(n_clusters=2, head="free", random_state=0, n_jobs=1,
                                      n_epochs=20).fit(data)
    exported = clustering.to_pyg()
    assert exported.x.shape == (24, 2) and torch.equal(exported.cluster,
                                                       torch.as_tensor(clustering.labels_))
    labels_only = icongraph.Clustering(n_clusters=2, method="supervised", n_epochs=5,
                                       random_state=0).fit(data.x, CLIQUE)
    with pytest.raises(ValueError, match="no graph to export"):
        labels_only.to_pyg()


def test_icon_takes_a_data_as_p_and_edge_attr_as_weights():
    data = two_cliques()
    weights = torch.where(data.edge_index[0] < 12, 2.0, 1.0) * (1 + data.edge_index[1])
    data.edge_attr = weights[:, None]  # (E, 1)

    def normalised(w):
        return row_normalize(sp.csr_matrix((w.numpy(), data.edge_index.numpy()), shape=(24, 24)))

    est = icongraph.ICon(p=data, n_epochs=5, random_state=0).fit(data.x)
    assert abs(est.graph_ - normalised(weights)).max() < 1e-6
    data.edge_weight = torch.ones(data.num_edges)  # edge_weight wins over edge_attr
    graph = icongraph.UMAP(n_epochs=5).fit(data).graph_
    assert abs(graph - normalised(data.edge_weight)).max() < 1e-6


def test_a_data_without_edges_is_x_and_y():
    data = two_cliques()
    est = icongraph.UMAP(n_neighbors=5, n_epochs=5, random_state=0).fit(Data(x=data.x, y=CLIQUE))
    assert est.knn_.n_neighbors == 4 and est.target_.labels is not None
    with pytest.raises(ValueError, match="has no edge_index"):
        icongraph.ICon(p=Data(x=data.x)).fit(data.x)


@pytest.mark.parametrize("make, match", [
    (lambda d: (icongraph.UMAP(), Data(x=d.x, edge_index=d.edge_index,
                                       edge_attr=torch.ones(d.num_edges, 3))),
     r"edge_attr has shape \(\d+, 3\)"),
    (lambda d: (icongraph.TSNE(), Data(x=torch.randn(25, 5), edge_index=d.edge_index)),
     "1 isolated node"),
    (lambda d: (icongraph.UMAP(), Data(x=d.x, edge_index=d.edge_index,
                                       edge_weight=-torch.ones(d.num_edges))),
     "negative weight"),
    (lambda d: (icongraph.Clustering(precomputed_knn=exact_knn(d.x.numpy(), 3)), d),
     "pass one graph"),
    (lambda d: (icongraph.ICon(p=sp.eye(24, format="csr")), d), "pass one graph"),
])
def test_bad_data_is_refused_before_any_work(make, match):
    est, data = make(two_cliques())
    with pytest.raises(ValueError, match=match):
        est.fit(data)
    assert not hasattr(est, "embedding_") and not hasattr(est, "labels_")


def test_labels_given_twice_are_refused():
    data = two_cliques()
    data.y = CLIQUE
    with pytest.raises(ValueError, match="labels given twice"):
        icongraph.UMAP().fit(data, CLIQUE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert icongraph.pyg.split_data(data.x, CLIQUE) == (data.x, CLIQUE, None)
