"""Seed centres of a clustering, as the logits of a Gaussian mixture: k-means on the
features, the clusters of a 2-D UMAP-preset embedding of the kNN graph, or spectral
clustering of the graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .communities import unweighted_knn_graph
from .embedding import UMAP
from .knn import KNN, exact_knn

__all__ = ["INITS", "SEED_SAMPLE", "embedding_partition", "spectral_partition", "seed_logits"]

#: ``'auto'``: ``'communities'`` when the number of clusters is chosen (``n_clusters=None``),
#: else ``'embedding'`` (resolved by the estimator, :func:`seed_logits` takes the others)
INITS = ("auto", "embedding", "communities", "spectral", "kmeans", "kmeans++", "random")
#: rows and k-means restarts of the seeding (:func:`seed_logits`)
SEED_SAMPLE = 20000
SEED_RESTARTS = 10
#: epochs of the seed's embedding (UMAP's own default is 500 up to 10,000 points): with 200 the
#: clustering suite at K (3 seeds) scored the same ARI on digits (0.883) and tissue (0.810),
#: pbmc68k 0.376 vs 0.377, manifolds 0.985 vs 0.980, at 2/5 of the seed's time
SEED_EPOCHS = 200


def embedding_partition(data: np.ndarray, n_clusters: int, seed: int, knn: KNN | None = None,
                        metric: str = "euclidean", n_jobs: int = -1,
                        graph: sp.csr_matrix | None = None) -> np.ndarray:
    """Cluster labels (n,) of the rows ``data`` (n, D) from k-means (best of ``SEED_RESTARTS``)
    on a 2-D UMAP-preset embedding of their kNN graph (``knn``, else an exact search among the
    rows), or of a given ``graph`` (n, n) (the UMAP preset with the graph as its ``p``, as a
    ``Data``'s graph replaces it): the embedding's attraction and
    repulsion pull the graph's groups apart, where k-means on the features cuts across them.
    The embedding runs on the CPU, where the engine is deterministic, so ``seed`` fixes the
    labels on any device."""
    from sklearn.cluster import KMeans

    if graph is not None:
        embedder = UMAP(metric=metric, n_epochs=SEED_EPOCHS, random_state=seed, device="cpu",
                        n_jobs=n_jobs)
        layout = embedder._fit_graph(data, graph).embedding_
    else:  # UMAP's n_neighbors counts the point itself
        n_neighbors = min(15, len(data)) if knn is None else min(15, knn.n_neighbors + 1)
        embedder = UMAP(n_neighbors=n_neighbors, precomputed_knn=knn, metric=metric,
                        n_epochs=SEED_EPOCHS, random_state=seed, device="cpu", n_jobs=n_jobs)
        layout = embedder.fit_transform(data)
    return KMeans(n_clusters, n_init=SEED_RESTARTS, random_state=seed).fit_predict(layout)


def spectral_partition(graph: sp.csr_matrix, n_clusters: int, seed: int) -> np.ndarray:
    """Spectral clustering's labels (n,) of a graph (n, n): k-means (best of
    ``SEED_RESTARTS``) on the rows of the ``n_clusters`` smoothest eigenvectors of the
    normalised Laplacian of ``(W + W^T) / 2`` (scikit-learn's ``spectral_embedding``),
    normalised to unit length (Ng, Jordan & Weiss 2002)."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding

    sym = ((graph + graph.T) * 0.5).tocsr()
    vectors = spectral_embedding(sym, n_components=n_clusters, random_state=seed,
                                 drop_first=False)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    return KMeans(n_clusters, n_init=SEED_RESTARTS, random_state=seed).fit_predict(vectors)


def seed_logits(features: torch.Tensor, n_clusters: int, seed: int, init: str = "kmeans",
                sample: int = SEED_SAMPLE, knn: KNN | None = None, metric: str = "euclidean",
                n_jobs: int = -1, data: np.ndarray | None = None,
                graph: sp.csr_matrix | None = None,
                partition: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed centres as a linear map: centres ``mu`` (C, D) from up to ``sample`` rows, and
    ``(W, b)`` with ``x W^T + b = (2 x.mu_c - |mu_c|^2) / s = (|x|^2 - |x - mu_c|^2) / s``:
    the softmax is the posterior of an isotropic Gaussian mixture, ``s`` the mean squared
    distance of a point to its nearest centre. The centres:

    * ``init='kmeans'``: Lloyd's k-means (scikit-learn), best of ``SEED_RESTARTS`` k-means++
      starts; ``'kmeans++'``: the k-means++ draw alone;
    * ``'spectral'``: the feature means of the clusters of :func:`spectral_partition` of the
      fit's ``graph`` (of the unweighted symmetric ``knn`` graph without one) when every row
      is used, else of the sample's own 15-NN graph;
    * ``'communities'``: the feature means of a given ``partition`` (N,) of every row, labels
      in ``[0, n_clusters)`` (the communities that ``n_clusters=None`` counted);
    * ``'embedding'``: the feature means of the clusters of :func:`embedding_partition` on
      ``data`` (the raw rows behind ``features``, so that the sample's graph uses the fit's
      metric on the fit's data; default ``features``), on the fit's kNN graph ``knn`` (or
      its given ``graph`` (N, N), when it has no kNN graph) when every row is used, else on
      the sample's own kNN graph.

    Every cluster starts populated, where a random head starts near-uniform and loses
    clusters early; Lloyd's restarts keep the start out of the local minima where one class
    holds two centres, which gradient steps on the head rarely leave."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    n = features.shape[0]
    gen = torch.Generator().manual_seed(seed)
    if init in ("embedding", "spectral") and n <= sample:  # every row, in the graph's order
        rows = torch.arange(n)
    else:
        rows = torch.randperm(n, generator=gen)[:sample]
    subset = features[rows.to(features.device)]
    if init == "communities":  # the means over every row: a sample could miss a small one
        if partition is None or len(partition) != n:
            raise ValueError("init='communities' seeds from a partition of every row.")
        mu = _means(features, torch.as_tensor(partition, device=features.device), n_clusters)
    elif init in ("embedding", "spectral"):
        whole = len(rows) == n
        if init == "spectral":
            if whole:
                edges = graph if graph is not None else unweighted_knn_graph(knn)
            else:  # a sample's own graph: the fit's, restricted to it, would be nearly empty
                sample = (features.cpu().numpy() if data is None else data)[rows.numpy()]
                edges = unweighted_knn_graph(exact_knn(sample, min(15, len(sample) - 1),
                                                       metric))
            labels = spectral_partition(edges, n_clusters, seed)
        else:
            data = features.cpu().numpy() if data is None else data
            labels = embedding_partition(data[rows.numpy()], n_clusters, seed,
                                         knn if whole else None, metric, n_jobs,
                                         graph if whole and knn is None else None)
        mu = _means(subset, torch.as_tensor(labels, device=features.device), n_clusters)
    else:
        if init == "kmeans":
            centres = KMeans(n_clusters, n_init=SEED_RESTARTS, random_state=seed).fit(
                subset.cpu().numpy()).cluster_centers_
        else:
            centres, _ = kmeans_plusplus(subset.cpu().numpy(), n_clusters, random_state=seed)
        mu = torch.as_tensor(centres, dtype=features.dtype, device=features.device)
    scale = torch.cdist(subset, mu).pow(2).min(1).values.mean().clamp_min(1e-12)
    return 2 * mu / scale, -(mu * mu).sum(1) / scale


def _means(rows: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """The mean (C, D) of the ``rows`` (n, D) of each label in ``[0, n_clusters)`` (n,); an
    empty label's mean is the origin."""
    sums = torch.zeros((n_clusters, rows.shape[1]), dtype=rows.dtype,
                       device=rows.device).index_add_(0, labels, rows)
    counts = torch.bincount(labels, minlength=n_clusters).clamp_min(1)
    return sums / counts[:, None].to(rows.dtype)
