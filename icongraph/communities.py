"""Communities of a kNN graph, the criterion that sets the number of clusters when
``Clustering(n_clusters=None)``: modularity (Leiden), then merging of communities that no
sparse boundary separates.

The graph is the one Leiden users build: the unweighted symmetric kNN graph (an edge where
either point lists the other). Modularity at resolution ``gamma`` (RB configuration model)::

    Q = 1 / (2m) sum_ij [A_ij - gamma d_i d_j / (2m)] [c_i = c_j]

with ``A`` the adjacency, ``d`` the degrees and ``m`` the number of edges; its maximiser is found
by leidenalg (Traag et al. 2019), the implementation scanpy runs. On kNN graphs that maximiser
also cuts large homogeneous groups in two (a 300-point Gaussian blob among smaller ones, a
sheet of the manifolds generator): the halves are joined by nearly as many edges as the
configuration model expects between them, where different classes are joined by far fewer.
:func:`merge_connected` merges such pairs by that ratio (PAGA's connectivity, Wolf et al.
2019)::

    r_cd = E_cd / (D_c D_d / 2m)

with ``E_cd`` the edges between communities ``c`` and ``d`` and ``D_c`` their degree sums.
Measured at resolution 1 on 15-NN graphs (3 seeds): halves of one class 0.89-0.97 (blobs of
88-300 points, the manifolds' sheets); different classes at most 0.76 (digits 0.68, tissue 0.71,
pbmc68k 0.76). Merging above 0.8 recovers the blobs' number in every seed (modularity alone: 4
of 9) and 20-22 of the manifolds' 20 classes (modularity alone: 26-28), and leaves digits,
tissue and pbmc68k as Leiden finds them. The expectation is relative to the whole graph, as
modularity's is: a lone 300-point Gaussian blob in 8-D is cut into 7 communities, and its
pieces are joined at less than 0.8 of the expectation, so only one pair merges (6 remain).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .knn import KNN

__all__ = ["unweighted_knn_graph", "leiden_labels", "leiden_with_k", "merge_connected",
           "MERGE_CONNECTIVITY"]

#: communities joined by at least this fraction of the configuration model's edges are merged
MERGE_CONNECTIVITY = 0.8


def unweighted_knn_graph(knn: KNN) -> sp.csr_matrix:
    """The unweighted symmetric kNN graph of ``knn`` (N, k lists): CSR (N, N), an edge of
    weight 1 where either point lists the other."""
    n, k = knn.indices.shape
    graph = sp.csr_matrix((np.ones(n * k, np.float32), knn.indices.ravel().astype(np.int64),
                           np.arange(0, n * k + 1, k)), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()
    graph.sort_indices()
    return graph


def leiden_labels(graph: sp.spmatrix, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Community labels (N,) int of a symmetric weighted graph (N, N) that maximise modularity
    at ``resolution`` (leidenalg's RB configuration partition at its defaults; the same
    ``seed`` gives the same labels)."""
    import igraph as ig
    import leidenalg

    coo = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([coo.row, coo.col]).tolist())
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition,
                                    weights=coo.data.tolist(), resolution_parameter=resolution,
                                    seed=seed)
    return np.asarray(part.membership)


def leiden_with_k(graph: sp.spmatrix, n_clusters: int, seed: int = 0, max_iter: int = 30):
    """Leiden at the resolution giving ``n_clusters`` communities (bisection on the log of the
    resolution in [1e-3, 1e2]); returns ``(labels, resolution)`` of the closest count found."""
    lo, hi = 1e-3, 1e2
    best = None
    for _ in range(max_iter):
        res = float(np.sqrt(lo * hi))
        labels = leiden_labels(graph, res, seed)
        k = len(np.unique(labels))
        if best is None or abs(k - n_clusters) < abs(best[2] - n_clusters):
            best = (labels, res, k)
        if k == n_clusters:
            break
        if k < n_clusters:
            lo = res
        else:
            hi = res
    return best[0], best[1]


def merge_connected(graph: sp.spmatrix, labels: np.ndarray,
                    threshold: float = MERGE_CONNECTIVITY) -> np.ndarray:
    """Merge the communities ``labels`` (N,) of a symmetric graph (N, N) while two of them are
    joined by at least ``threshold`` of the edges the configuration model expects
    (``E_cd / (D_c D_d / 2m)``, module docstring), the best-connected pair first; each merge
    sums the pair's rows of the (K, K) community graph. Returns labels in ``0 .. K'-1``."""
    codes = np.unique(labels, return_inverse=True)[1]
    n_comm = int(codes.max()) + 1
    member = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)),
                           shape=(len(codes), n_comm))
    edges = np.asarray((member.T @ graph @ member).todense(), dtype=np.float64)
    parent = np.arange(n_comm)
    alive = np.ones(n_comm, bool)
    while alive.sum() > 1:
        degree = edges.sum(1)
        ratio = edges * degree.sum() / np.maximum(np.outer(degree, degree), 1e-300)
        np.fill_diagonal(ratio, -np.inf)
        ratio[~alive] = -np.inf
        ratio[:, ~alive] = -np.inf
        c, d = np.unravel_index(np.argmax(ratio), ratio.shape)
        if ratio[c, d] < threshold:
            break
        edges[c] += edges[d]
        edges[:, c] += edges[:, d]
        edges[d] = edges[:, d] = 0
        alive[d] = False
        parent[parent == d] = c
    return np.unique(parent[codes], return_inverse=True)[1]
