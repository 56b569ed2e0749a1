"""Quality metrics for embeddings and clusterings.

The embedding metrics take ``n_samples`` query points (all points when N is small), so they
scale to millions of points: neighbours in the high-dimensional space are found exactly for the
sampled queries by blocked torch matrix products; in the low-dimensional embedding with a
k-d tree (scikit-learn).
"""

from __future__ import annotations

import numpy as np
import torch

from .knn import PairDistances, exact_knn
from .validation import check_data, check_labels

__all__ = ["knn_preservation", "knn_preservation_within_sample", "trustworthiness",
           "trustworthiness_within_sample", "knn_accuracy", "knn_accuracy_cv",
           "adjusted_rand_index", "normalized_mutual_info", "hungarian_accuracy",
           "retrieval_accuracy"]

#: query rows per block of :func:`retrieval_accuracy` (a block holds rows x N distances)
RETRIEVAL_ROWS = 1024


def _queries(n: int, n_samples: int | None, seed: int) -> np.ndarray:
    if n_samples is None or n_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, n_samples, replace=False))


def _neighbours_excluding_self(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(len(queries), k) nearest points of ``data`` to the rows ``queries`` of it, self removed."""
    if data.shape[1] <= 3:  # low-dimensional: k-d tree
        from sklearn.neighbors import NearestNeighbors

        idx = NearestNeighbors(n_neighbors=k + 1).fit(data).kneighbors(
            data[queries], return_distance=False)
    else:
        idx = exact_knn(data, k + 1, queries=data[queries]).indices
    is_self = idx == queries[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, axis=1)


def _pair(X, Y):
    X = check_data(X, name="X", allow_sparse=False)
    Y = check_data(Y, name="Y", allow_sparse=False)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}.")
    return X, Y


def knn_preservation(X, Y, k: int = 15, n_samples: int | None = 10_000, seed: int = 0) -> float:
    """Mean fraction of each point's k nearest neighbours in ``X`` that are also among its k
    nearest in ``Y`` (recall@k), over ``n_samples`` random query points.

    Parameters
    ----------
    X : array-like of shape (N, D)
        High-dimensional data.
    Y : array-like of shape (N, d)
        Embedding of ``X``.
    k : int, default=15
        Neighbours compared.
    n_samples : int or None, default=10000
        Query points, drawn at random; their neighbours are looked up among all N points
        (None: every point).
    seed : int, default=0
        Seed of the queries.

    Returns
    -------
    float
        In [0, 1]; 1 when every query keeps its k nearest neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph import metrics
    >>> X = np.random.default_rng(0).normal(size=(500, 10))
    >>> metrics.knn_preservation(X, X[:, :5] * 2, k=15) < metrics.knn_preservation(X, X * 2, k=15)
    True
    """
    X, Y = _pair(X, Y)
    q = _queries(X.shape[0], n_samples, seed)
    high = _neighbours_excluding_self(X, q, k)
    low = _neighbours_excluding_self(Y, q, k)
    hits = (high[:, :, None] == low[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def _within_sample(X, Y, n_samples: int | None, seed: int):
    """``X`` and ``Y`` restricted to the same ``n_samples`` random rows (all rows if None or
    at least N); the rows are ``np.sort(default_rng(seed).choice(N, n_samples, replace=False))``."""
    X, Y = _pair(X, Y)
    rows = _queries(X.shape[0], n_samples, seed)
    return X[rows], Y[rows]


def knn_preservation_within_sample(X, Y, k: int = 15, n_samples: int | None = 5_000,
                                   seed: int = 0) -> float:
    """kNN preservation (recall@k) within a random sample: both spaces restricted to the
    sample, neighbours looked up among the sampled points only.

    Unlike :func:`knn_preservation` (sampled queries against all N points), the neighbourhoods
    here are those of a dataset of ``n_samples`` points, so the value does not fall with N the
    way the all-points reading does.

    Parameters
    ----------
    X : array-like, shape (N, D)
        High-dimensional data.
    Y : array-like, shape (N, d)
        Embedding of ``X``.
    k : int
        Neighbours compared.
    n_samples : int, optional
        Size of the sample (all N if None or at least N: then equal to
        ``knn_preservation(X, Y, k, None)``).
    seed : int
        Seed of the sample: rows ``np.sort(default_rng(seed).choice(N, n_samples,
        replace=False))``.

    Returns
    -------
    float
        Mean over the sampled points of the fraction of their k nearest sampled neighbours in
        ``X`` that are among their k nearest sampled neighbours in ``Y``.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load
    >>> X, y = load("manifolds", n_samples=20_000)
    >>> Y = icongraph.UMAP(random_state=0).fit_transform(X)
    >>> icongraph.metrics.knn_preservation_within_sample(X, Y, k=15, n_samples=5000)  # doctest: +SKIP
    0.72
    """
    return knn_preservation(*_within_sample(X, Y, n_samples, seed), k, n_samples=None)


def trustworthiness(X, Y, k: int = 15, n_samples: int | None = 2_000, seed: int = 0) -> float:
    """Venna & Kaski's trustworthiness of the embedding's neighbourhoods.

    ``1 - 2/(n k (2N - 3k - 1)) sum_i sum_{j in U_i} (r(i, j) - k)`` with ``U_i`` the embedding
    neighbours of ``i`` that are not among its k nearest in ``X`` and ``r`` their rank in ``X``;
    ``n`` sampled queries (all: exact value).

    Parameters
    ----------
    X, Y : array-like, shapes (N, D) and (N, d)
        Data and its embedding.
    k : int, default=15
        Neighbourhood size.
    n_samples : int or None, default=2000
        Query points (None: all, the exact value).
    seed : int, default=0
        Seed of the queries.

    Returns
    -------
    float
        In [0, 1]; 1 when no embedding neighbour is a stranger in ``X``.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> Y = icongraph.TSNE(random_state=0).fit_transform(X)
    >>> icongraph.metrics.trustworthiness(X, Y, k=15) > 0.9
    True
    """
    X, Y = _pair(X, Y)
    N = X.shape[0]
    if k >= N / 2:
        raise ValueError(f"trustworthiness needs k < N/2; got k={k}, N={N}.")
    q = _queries(N, n_samples, seed)
    low = _neighbours_excluding_self(Y, q, k)
    pairs = PairDistances(X, "euclidean", queries=X[q])  # centred: precise at any offset
    penalty = 0.0
    block = max(1, 8_000_000 // N)
    for s in range(0, len(q), block):
        rows = torch.as_tensor(q[s:s + block])
        d = pairs.block(s, s + len(rows))  # squared distances shifted per row: same ranks
        d[torch.arange(len(rows)), rows] = -torch.inf  # self ranks first, excluded below
        d_low = torch.gather(d, 1, torch.as_tensor(low[s:s + block], dtype=torch.long))
        # rank r(i, j) = 1 + number of other points strictly closer (self, at -inf, is the 1)
        ranks = torch.stack([(d < d_low[:, c:c + 1]).sum(1) for c in range(k)], 1).double()
        penalty += float(torch.clamp(ranks - k, min=0).sum())
    n = len(q)
    return float(1.0 - 2.0 / (n * k * (2.0 * N - 3.0 * k - 1.0)) * penalty)


def trustworthiness_within_sample(X, Y, k: int = 15, n_samples: int | None = 5_000,
                                  seed: int = 0) -> float:
    """Exact trustworthiness of the embedding restricted to a random sample of points.

    What scikit-learn's ``trustworthiness`` gives on the sampled rows of ``X`` and ``Y``: its
    memory and time are O(n_samples^2) whatever N. (:func:`trustworthiness` with sampled
    queries instead estimates the all-points value, at O(n_samples N) cost.)

    Parameters
    ----------
    X, Y : array-like, shapes (N, D) and (N, d)
        Data and its embedding.
    k : int
        Neighbourhood size, below half the sample size.
    n_samples, seed : int
        Size (all N if None or at least N) and seed of the sample: the same rows as
        :func:`knn_preservation_within_sample`.

    Returns
    -------
    float
        Trustworthiness in [0, 1] of the sampled points among themselves.

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph.metrics import trustworthiness_within_sample
    >>> X = np.random.default_rng(0).normal(size=(300, 8))
    >>> trustworthiness_within_sample(X, X[:, ::-1], k=10)  # the same distances
    1.0
    """
    return trustworthiness(*_within_sample(X, Y, n_samples, seed), k, n_samples=None)


def knn_accuracy(Y, labels, k: int = 10, n_samples: int | None = 10_000, seed: int = 0) -> float:
    """Leave-one-out k-NN classification accuracy of ``labels`` in the embedding ``Y``
    (majority vote of the k nearest other points; ties to the smallest label).

    Parameters
    ----------
    Y : array-like of shape (N, d)
        Embedding.
    labels : array-like of shape (N,)
        Class labels (numbers or strings).
    k : int, default=10
        Neighbours that vote.
    n_samples : int or None, default=10000
        Points classified, drawn at random (None: all); their neighbours are all N points.
    seed : int, default=0
        Seed of the sample.

    Returns
    -------
    float
        The fraction classified correctly.

    Examples
    --------
    >>> from icongraph import UMAP, metrics
    >>> from icongraph.datasets import load
    >>> X, y = load("pbmc68k")
    >>> metrics.knn_accuracy(UMAP(random_state=0).fit_transform(X), y, k=10)  # doctest: +SKIP
    0.82
    """
    Y = check_data(Y, name="Y", allow_sparse=False)
    labels = check_labels(labels, Y.shape[0])
    _, codes = np.unique(labels, return_inverse=True)
    q = _queries(Y.shape[0], n_samples, seed)
    nbr = _neighbours_excluding_self(Y, q, k)
    votes = np.zeros((len(q), codes.max() + 1), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(q)), k), codes[nbr].ravel()), 1)
    return float((votes.argmax(1) == codes[q]).mean())


def knn_accuracy_cv(Y, labels, k: int = 10, n_folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a k-NN classifier on the embedding.

    scikit-learn's ``cross_val_score(KNeighborsClassifier(k), Y, labels, cv=folds)`` averaged
    over the folds, with ``folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)``
    so that the value is reproducible. Each test point is classified by the majority vote of
    its k nearest training points (ties to the smallest label).

    Parameters
    ----------
    Y : array-like, shape (N, d)
        Embedding.
    labels : array-like, shape (N,)
        Class labels.
    k : int
        Neighbours that vote.
    n_folds : int
        Folds of the stratified split.
    seed : int
        Seed of the shuffled split.

    Returns
    -------
    float
        Mean test accuracy over the folds.

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph.metrics import knn_accuracy_cv
    >>> Y = np.repeat([[0.0, 0.0], [9.0, 9.0]], 50, axis=0)  # two separated groups
    >>> knn_accuracy_cv(Y, np.repeat([0, 1], 50), k=10, n_folds=5)
    1.0
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    Y = check_data(Y, name="Y", allow_sparse=False)
    labels = check_labels(labels, Y.shape[0])
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), Y, labels, cv=folds).mean())


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index (scikit-learn's ``adjusted_rand_score``).

    Parameters
    ----------
    labels_true : array-like of shape (N,)
        The reference classes.
    labels_pred : array-like of shape (N,)
        The clusters found (any labels; the numbering does not matter).

    Returns
    -------
    float
        1 for identical partitions, about 0 for random ones.

    Examples
    --------
    >>> from icongraph import metrics
    >>> metrics.adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(labels_true, labels_pred))


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """Normalised mutual information, arithmetic mean normalisation (scikit-learn's
    ``normalized_mutual_info_score``).

    Parameters
    ----------
    labels_true, labels_pred : array-like of shape (N,)
        The reference classes and the clusters found (the numbering does not matter).

    Returns
    -------
    float
        In [0, 1]; 1 for identical partitions.

    Examples
    --------
    >>> from icongraph import metrics
    >>> metrics.normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 0])  # one cluster: no information
    0.0
    """
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels_true, labels_pred))


def hungarian_accuracy(labels_true, labels_pred) -> float:
    """Unsupervised accuracy: the best one-to-one matching of predicted clusters to classes
    (Hungarian algorithm on the contingency table, scipy).

    Parameters
    ----------
    labels_true : array-like of shape (N,)
        The classes (numbers or strings).
    labels_pred : array-like of shape (N,)
        The clusters, matched one to one to the classes (unmatched ones count as wrong).

    Returns
    -------
    float
        The fraction of points in a matched cluster, in [0, 1].

    Examples
    --------
    >>> from icongraph.metrics import hungarian_accuracy
    >>> hungarian_accuracy(["a", "a", "b", "b"], [5, 5, 5, 7])  # 5 -> "a", 7 -> "b"
    0.75
    """
    from scipy.optimize import linear_sum_assignment

    labels_true = np.asarray(labels_true)
    labels_pred = check_labels(labels_pred, labels_true.shape[0], "labels_pred")
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(t))


def retrieval_accuracy(E_X, E_pair, k: int = 1) -> float:
    """Recall@k of the true partner: the fraction of items ``i`` whose partner ``E_pair[i]``
    is among the ``k`` rows of ``E_pair`` nearest to ``E_X[i]`` (Euclidean distance; on the
    unit sphere the same order as cosine similarity).

    A tie with the partner counts against it (rank = the number of other rows at a distance
    no greater than the partner's), so collapsed embeddings score 0, not 1. Blocks of
    ``RETRIEVAL_ROWS`` queries keep memory at ``RETRIEVAL_ROWS x N`` distances.

    Parameters
    ----------
    E_X, E_pair : array-like of shape (N, d)
        The two modalities' embeddings of N items, row ``i`` of each the same item
        (:class:`~icongraph.pairs.PairedEmbedding`'s ``transform``); swap them for the other
        direction.
    k : int
        The neighbours looked at, ``1 <= k <= N``.

    Returns
    -------
    float
        In [0, 1]; ``k / N`` for random embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph import metrics
    >>> E = np.eye(4)
    >>> metrics.retrieval_accuracy(E, E, k=1)
    1.0
    """
    E_X, E_pair = _pair(E_X, E_pair)
    n = E_X.shape[0]
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
        raise ValueError(f"k must be an integer in [1, {n}]; got {k!r}.")
    if E_X.shape[1] != E_pair.shape[1]:
        raise ValueError(f"E_X has {E_X.shape[1]} columns but E_pair has {E_pair.shape[1]}: "
                         "they must lie in one space.")
    a = torch.as_tensor(E_X, dtype=torch.float64)
    b = torch.as_tensor(E_pair, dtype=torch.float64)
    hits = 0
    for lo in range(0, n, RETRIEVAL_ROWS):
        rows = torch.arange(lo, min(lo + RETRIEVAL_ROWS, n))
        dist = torch.cdist(a[rows], b)
        own = dist[torch.arange(len(rows)), rows]
        dist[torch.arange(len(rows)), rows] = torch.inf
        rank = (dist <= own[:, None]).sum(1)
        hits += int((rank < k).sum())
    return hits / n
