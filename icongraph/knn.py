"""k-nearest-neighbour search backends: exact blocked torch, pynndescent, or user-supplied.

Every backend returns a :class:`KNN`: ``indices`` (N, k) int32 and ``distances`` (N, k) float32,
sorted by distance, self excluded (duplicates of a point are kept as neighbours).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit, prange

from . import distributed
from .forest import forest_graph
from .ordering import float64_rows, permuted_rows, spatial_order
from .progress import detail, level, progress
from .validation import check_n_neighbors, choice, path_or_none, release_mapped_pages

__all__ = ["KNN", "KNNIndex", "PairDistances", "exact_knn", "nndescent_knn", "knn_search", "as_knn",
           "precomputed_knn", "sparse_knn_lists", "EXACT_MAX_SAMPLES", "data_fingerprint", "KNN_RULES",
           "sharded_knn", "shard_candidates", "merge_candidates"]

METRICS = ("euclidean", "cosine")
KNN_METHODS = ("auto", "exact", "nndescent")
#: Below this many points the exact blocked search is faster than pynndescent here (2 cores).
EXACT_MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class KNN:
    """A kNN graph: row ``i`` lists the ``k`` nearest neighbours of point ``i`` (self excluded).

    Parameters
    ----------
    indices : ndarray of int32, shape (N, k)
        The neighbours of each point, nearest first.
    distances : ndarray of float32, shape (N, k)
        Their distances, ascending along each row.
    metric : str, default="euclidean"
        The metric the distances are in.

    Attributes
    ----------
    indices, distances, metric
        As given.
    n_samples : int
        N.
    n_neighbors : int
        k.

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph import KNN, UMAP
    >>> X = np.random.default_rng(0).normal(size=(100, 5))
    >>> d = np.linalg.norm(X[:, None] - X[None], axis=2)
    >>> order = np.argsort(d, axis=1)[:, 1:15]  # the point itself left out
    >>> knn = KNN(order.astype(np.int32), np.take_along_axis(d, order, 1).astype(np.float32))
    >>> knn.n_samples, knn.n_neighbors
    (100, 14)
    >>> Y = UMAP(precomputed_knn=knn, random_state=0).fit_transform(X)  # UMAP's 15 with itself
    """

    indices: np.ndarray  # (N, k) int32
    distances: np.ndarray  # (N, k) float32, ascending along each row
    metric: str = "euclidean"

    @property
    def n_samples(self) -> int:
        return self.indices.shape[0]

    @property
    def n_neighbors(self) -> int:
        return self.indices.shape[1]

    def truncate(self, k: int) -> KNN:
        """The ``k`` nearest of the stored neighbours (a kNN graph computed once serves smaller k)."""
        if k > self.n_neighbors:
            raise ValueError(f"kNN graph has {self.n_neighbors} neighbours; {k} requested.")
        return KNN(self.indices[:, :k], self.distances[:, :k], self.metric)


@dataclass(frozen=True)
class KNNIndex:
    """What a fit keeps to find the neighbours of new points among its rows.

    Attributes
    ----------
    data : np.ndarray
        (N, D) float32, the fit's scaled rows (the same array as the estimator's ``_fit_X``).
    metric : str
        ``"euclidean"`` or ``"cosine"``.
    """

    data: np.ndarray = field(repr=False)
    metric: str = "euclidean"

    @property
    def n_samples(self) -> int:
        return self.data.shape[0]

    def query(self, X_new, k: int, device=None) -> KNN:
        """The ``k`` nearest rows of :attr:`data` to each row of ``X_new`` (M, D).

        Exact (:func:`exact_knn` with ``queries``): a query's neighbours and distances do not
        depend on the other queries of its batch, and a row of ``data`` finds itself at
        distance 0.

        Returns
        -------
        KNN
            (M, k) indices into :attr:`data` and their distances, ascending.
        """
        return exact_knn(self.data, k, self.metric, queries=X_new, device=device)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
    return metric


#: Candidates per query beyond ``k`` that :func:`exact_knn` keeps from the expanded distances
#: and re-ranks by the directly computed ones (see :class:`PairDistances`).
RERANK_MARGIN = 16
#: values per chunk when preparing data in float64 (no float64 copy of a whole large matrix)
_PREPARE_CHUNK = 1 << 22


def _centred_float32(A, mean: np.ndarray | None, normalise: bool):
    """(rows of ``A`` minus ``mean`` as float32, the float64 mean, the zero rows): the rows
    are normalised (if asked) and centred in float64, chunk by chunk, before the cast.

    ``mean=None`` centres on the mean of these rows, rounded per feature to a multiple of a
    power of two ``2^-12`` of the feature's range: for data on a coarser grid (integer pixels;
    float32 values far from 0) ``x - mean`` is then exact in float32, so equal distances stay
    exactly equal (:func:`exact_knn` gives such ties to the lower index), at a cost of at most
    ``2^-13`` of the range in the centred norms."""
    n = A.shape[0]
    step = max(1, _PREPARE_CHUNK // max(A.shape[1], 1))
    if mean is None:
        total = np.zeros(A.shape[1], np.float64)
        low, high = np.full(A.shape[1], np.inf), np.full(A.shape[1], -np.inf)
        for s in range(0, n, step):
            a = float64_rows(A, s, s + step, normalise)
            total += a.sum(0)
            low, high = np.minimum(low, a.min(0)), np.maximum(high, a.max(0))
        mean = total / max(n, 1)
        spread = high - low
        grid = np.exp2(np.floor(np.log2(np.where(spread > 0, spread, 1.0))) - 12)
        mean = np.where(spread > 0, np.round(mean / grid) * grid, mean)
    out = np.empty(A.shape, np.float32)
    zero = np.empty(n, bool)
    for s in range(0, n, step):
        a = float64_rows(A, s, s + step, normalise)
        zero[s:s + len(a)] = ~a.any(axis=1)
        out[s:s + len(a)] = a - mean
    return out, mean, zero


class PairDistances:
    """Euclidean or cosine distances from query rows to reference rows, float32 on any torch
    device yet precise far from the origin: the one routine behind :func:`exact_knn` and the
    metrics.

    Both sets are centred on the reference mean in float64 before the float32 cast (cosine:
    rows unit-normalised first and ``1 - cos = |u - v|^2 / 2``, so centring applies too), so
    the expansion ``|x|^2 - 2 x.y + |y|^2`` behind :meth:`block` loses ``eps |x - mean|^2``
    rather than ``eps |x|^2`` (uncentred, a feature offset of 1e4 left recall at 0.01).
    :meth:`exact` computes chosen pairs directly from ``x - y``: its error is linear in the
    spread, not quadratic, and it does not depend on how the queries are blocked (a point
    alone gets the same distances as in a batch; a point's distance to itself is exactly 0).
    """

    def __init__(self, X, metric: str = "euclidean", queries=None, device=None):
        _check_metric(metric)
        self.metric = metric
        device = torch.device(device or "cpu")
        cosine = metric == "cosine"
        data, mean, zero = _centred_float32(X, None, cosine)
        self.data = torch.as_tensor(data, device=device)
        if queries is None:
            self.query, zero_query = self.data, zero
        else:
            query, _, zero_query = _centred_float32(queries, mean, cosine)
            self.query = torch.as_tensor(query, device=device)
        sq = (self.data * self.data).sum(1)
        if cosine:
            # 1 - u.v = |u - v|^2/2 + (1 - |u|^2)/2 + (1 - |v|^2)/2: the last two are 1/2 for
            # a zero row (distance 1 to every row, as 1 - u.v gives) and 0 for unit rows
            self._extra = torch.as_tensor(0.5 * zero, dtype=torch.float32, device=device)
            self._extra_query = torch.as_tensor(0.5 * zero_query, dtype=torch.float32,
                                                device=device)
            # score: (|v|^2/2 + extra_v) - u.v, the distance minus a constant per query
            self._bias, self._alpha = 0.5 * sq + self._extra, -1.0
        else:  # score: |y|^2 - 2 x.y, the squared distance minus |x|^2
            self._bias, self._alpha = sq, -2.0

    @property
    def n_queries(self) -> int:
        return self.query.shape[0]

    @property
    def n_reference(self) -> int:
        return self.data.shape[0]

    def block(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, n_reference) scores of queries ``start:stop`` against every reference
        row, in the order of their distances: the squared euclidean distance (cosine: the
        cosine distance) minus a constant per query, by one matrix product and no other pass
        over the block. For ranking within a row only; near-ties are resolved to about
        ``eps |x - mean|^2``."""
        return torch.addmm(self._bias, self.query[start:stop], self.data.T, alpha=self._alpha)

    def exact(self, start: int, stop: int, idx: torch.Tensor) -> torch.Tensor:
        """Distances (euclidean; cosine ``1 - cos``) of queries ``start:stop`` to the reference
        rows ``idx`` (stop - start, m), computed directly from the differences."""
        diff = self.data[idx]  # (b, m, D)
        diff.sub_(self.query[start:stop, None, :])
        sq = diff.square_().sum(-1)
        if self.metric == "cosine":
            return sq.mul_(0.5).add_(self._extra[idx]).add_(self._extra_query[start:stop, None])
        return sq.sqrt_()


def exact_knn(X, k: int, metric: str = "euclidean", *, queries=None, device=None,
              block_size: int | None = None, verbose: bool | int = False) -> KNN:
    """Exact kNN by blocked distance matrices: memory ``block_size x N``, never ``N x N``.

    Without ``queries`` each point's neighbours among the others (self excluded); with
    ``queries`` (M, D) their k nearest points of ``X`` (rows of the result follow ``queries``).

    Distances come from :class:`PairDistances`: the data are centred (cosine: normalised) in
    float64, the ``k +`` :data:`RERANK_MARGIN` best candidates of each query are found from the
    expanded ``|x|^2 - 2 x.y + |y|^2`` and re-ranked by the distance computed directly, which is
    the one returned. Exact ties go to the lower index, so a query's result does not depend on
    the other queries in its block.
    """
    _check_metric(metric)
    if sp.issparse(X):
        X = X.toarray()
    if queries is not None and sp.issparse(queries):
        queries = queries.toarray()
    n = X.shape[0]
    if queries is None:
        check_n_neighbors(k, n)
    elif k > n:
        raise ValueError(f"k={k} exceeds the {n} reference points.")
    device = torch.device(device or "cpu")
    pairs = PairDistances(X, metric, queries, device)
    n_query = pairs.n_queries
    n_cand = min(k + RERANK_MARGIN, n)
    if block_size is None:  # keep a block's distance matrix (and its candidates) around 64 MB
        per_row = max(n, n_cand * X.shape[1], 1)
        block_size = int(max(64, min(n_query, 16_000_000 // per_row)))
    indices = torch.empty((n_query, k), dtype=torch.int32, device=device)
    distances = torch.empty((n_query, k), dtype=torch.float32, device=device)
    for start in progress(range(0, n_query, block_size), "kNN (exact)", verbose,
                          total=(n_query + block_size - 1) // block_size, unit="block"):
        stop = min(start + block_size, n_query)
        dist = pairs.block(start, stop)
        if queries is None:
            rows = torch.arange(start, stop, device=device)
            dist[rows - start, rows] = float("inf")  # exclude self, keep duplicates
        cand = torch.topk(dist, n_cand, dim=1, largest=False, sorted=False).indices
        del dist
        cand = cand.sort(dim=1).values  # index order, so the stable sort below breaks ties by it
        exact = pairs.exact(start, stop, cand)
        if queries is None:  # self is a candidate only when n_cand = n
            exact.masked_fill_(cand == rows[:, None], float("inf"))
        best, order = torch.sort(exact, dim=1, stable=True)
        indices[start:stop] = cand.gather(1, order[:, :k]).to(torch.int32)
        distances[start:stop] = best[:, :k]
    return KNN(indices.cpu().numpy(), distances.cpu().numpy(), metric)


#: random-projection trees that seed pynndescent (see :func:`nndescent_knn`); fewer when our
#: join of the leaves seeds it (:func:`~icongraph.forest.forest_graph`, measured there)
MAX_TREES, MAX_JOINED_TREES = 16, 12


def nndescent_knn(X, k: int, metric: str = "euclidean", *, random_state: int | None = None,
                  n_jobs: int = -1, verbose: bool | int = False) -> KNN:
    """Approximate kNN with pynndescent (the index umap-learn uses), self removed.

    umap-learn's settings but at most ``MAX_TREES`` random-projection trees (umap-learn: up to
    64): NN-descent refines the graph anyway. Measured at 1M x 50 (``make_manifolds``), recall
    on 2,000 exact queries was 0.9983 with 55, 32, 16 and 8 trees, in 49.5, 33.3, 23.0 and
    18.4 s; on 100k x 50 Gaussian noise (the hardest case) 0.701 with 21 trees, 0.688 with 16.
    Its candidates per point (``max_candidates``) follow :func:`nndescent_schedule`.

    From :data:`SPATIAL_MIN_SAMPLES` rows, dense data is indexed in a spatial order
    (:func:`~icongraph.ordering.spatial_order`, a float32 copy of ``X`` in that order; a
    memory-mapped ``X`` is read in blocks), so that NN-descent reads near rows from near
    memory: the same recall, 5-18% faster from 200k to 10M points (:mod:`icongraph.ordering`).
    The copy matters more for a memory-mapped ``X``: NN-descent's random reads of a map's file
    pages took twice as long at 1M (52 s against 26 s). The neighbours are returned in the
    data's order, and the pages of a memory-mapped ``X`` are released once copied
    (:func:`~icongraph.validation.release_mapped_pages`). There, for the euclidean distance,
    NN-descent starts from :func:`~icongraph.forest.forest_graph` (pynndescent's forest, our
    leaf join: at 10M x 50 the search took 153.5 s against 176.6 s, recall 0.999 against
    0.998); the cosine distance keeps pynndescent's own start. That start is built from
    ``MAX_JOINED_TREES`` trees: the forest and the join cost about 4.4 s a tree at 10M, and
    NN-descent makes up the start's lower recall. With 12 trees instead of 16 the search took
    149.4 s against 165.9 s at 10M (recall@14 on 1,000 exact queries 0.9975 against 0.9989),
    and on mnist1d generated at 2M (40 features, the hard case) 65.7-66.2 s against
    68.3-69.7 s (0.9642 against 0.9649; the forest, the join and ``NNDescent`` timed, the
    spatial order excluded); on a second mnist1d set at 2M (``load_mnist1d(2_000_000, 12)``)
    62.3 s against 63.2 s, recall 0.9629 against 0.9653: on hard data the gain is small and
    costs a little recall. Inside a 10M fit, where NN-descent then ran a third iteration, the
    search took 175.5 s against 184.4 s in back-to-back runs.

    pynndescent has no progress hook, only its ``verbose`` messages: with ``verbose`` they are
    read (:class:`_NNDescentMessages`) to move the bar one NN-descent iteration at a time, and
    logged as detail lines at ``verbose >= 2``, never printed."""
    from pynndescent import NNDescent

    _check_metric(metric)
    n = X.shape[0]
    check_n_neighbors(k, n)
    joined = _joined_start(X, metric)
    n_trees, n_iters, candidates = nndescent_schedule(n, joined)
    order, start = None, {}
    if _spatially_ordered(X):
        order = spatial_order(X, normalise=metric == "cosine", seed=random_state or 0)
        X, data = permuted_rows(X, order), X
        release_mapped_pages(data)  # the search reads only the copy
        if joined:  # NN-descent starts from our join of pynndescent's forest
            seed = (random_state if random_state is not None
                    else int(np.random.default_rng().integers(2**62)))
            graph = forest_graph(X, k + 1, n_trees, seed)
            if graph is not None:
                start = {"init_graph": graph[0], "init_dist": graph[1], "tree_init": False}
    detail(verbose, "pynndescent, %d trees%s, at most %d iterations, %d candidates, %s order",
           n_trees, " joined by leaf (icongraph.forest)" if start else "", n_iters, candidates,
           "the data's" if order is None else "a spatial")
    with progress(None, "kNN (pynndescent)", verbose, total=n_iters, unit="iteration") as bar:
        messages = (contextlib.redirect_stdout(_NNDescentMessages(bar, verbose, sys.stdout))
                    if level(verbose) else contextlib.nullcontext())
        with messages:
            index = NNDescent(X, n_neighbors=k + 1, metric=metric, random_state=random_state,
                              n_trees=n_trees, n_iters=n_iters, max_candidates=candidates,
                              low_memory=True, n_jobs=n_jobs, compressed=True,
                              verbose=bool(level(verbose)), **start)
            idx, dist = index.neighbor_graph
            del index, X, start
    return _others_in_data_order(idx, dist, order, k, metric)


#: from this many dense rows pynndescent searches a copy in a spatial order (below, the
#: order's cost outweighs its gain: 70k x 40 1.8 s against 1.4 s, 200k x 50 7.0 against 7.4)
SPATIAL_MIN_SAMPLES = 200_000


def _spatially_ordered(X) -> bool:
    """Whether :func:`nndescent_knn` searches ``X`` in a spatial order (part of the cache
    key)."""
    return not sp.issparse(X) and X.shape[0] >= SPATIAL_MIN_SAMPLES


def _joined_start(X, metric: str) -> bool:
    """Whether NN-descent starts from our leaf join (:func:`nndescent_knn`; part of the cache
    key)."""
    return _spatially_ordered(X) and metric == "euclidean"


def _others_in_data_order(idx: np.ndarray, dist: np.ndarray, order: np.ndarray | None, k: int,
                          metric: str) -> KNN:
    """From (N, m > k) neighbour lists found on ``X[order]`` (row ``r`` holds point
    ``order[r]``; None: the data's order), which may list the point itself: per point in the
    data's order its first ``k`` others, renamed by ``order`` (the self entry dropped, or else
    the farthest). One parallel pass, no (N, m) temporaries."""
    n = idx.shape[0]
    order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, np.int64)
    out_idx = np.empty((n, k), np.int32)
    out_dist = np.empty((n, k), np.float32)
    _keep_others(idx, dist, order, out_idx, out_dist)
    if (out_idx < 0).any():
        raise ValueError("kNN search returned missing neighbours; the data may have too few "
                         "distinct points for n_neighbors.")
    return KNN(out_idx, out_dist, metric)


@njit(parallel=True, cache=True)
def _keep_others(idx, dist, order, out_idx, out_dist):
    """``out[order[r]]`` = the first ``k`` entries of row ``r`` other than ``r``, renamed by
    ``order`` (-1 stays -1)."""
    k = out_idx.shape[1]
    for r in prange(idx.shape[0]):
        p = order[r]
        kept = 0
        for s in range(idx.shape[1]):
            j = idx[r, s]
            if j == r or kept == k:
                continue
            out_idx[p, kept] = order[j] if j >= 0 else -1
            out_dist[p, kept] = dist[r, s]
            kept += 1


class _NNDescentMessages(io.TextIOBase):
    """What pynndescent prints while it builds an index, read as ``sys.stdout`` (its
    ``print`` calls, the compiled ones included, write to ``sys.stdout``): an iteration line
    ``i / n`` moves ``bar`` to ``i`` iterations, and every line, its time stamp removed, is a
    detail line (``verbose >= 2``). Meant for the ``with`` block of one build: whatever else
    prints meanwhile is read the same way, except what a log handler writes to ``sys.stdout``
    while a line is logged, which goes on to ``stdout`` (the stream this one stands in for)."""

    ITERATION = re.compile(r"^(\d+)\s*/\s*(\d+)$")
    #: pynndescent's prefix ``time.ctime()``, "Tue Dec  1 09:30:00 2026"
    TIME_STAMP = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\s*")

    def __init__(self, bar, verbose, stdout):
        super().__init__()
        self.bar, self.verbose, self.stdout = bar, verbose, stdout
        self._partial, self._logging = "", False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._logging:
            return self.stdout.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            line = self.TIME_STAMP.sub("", line.strip())
            if line:
                self._logging = True
                try:
                    detail(self.verbose, "pynndescent: %s", line)
                finally:
                    self._logging = False
            match = self.ITERATION.match(line)
            if match:
                self.bar.update(int(match[1]) - self.bar.n)
        return len(text)


def sharded_knn(X, k: int, metric: str, group, *, method: str = "exact", device=None,
                random_state: int | None = None, n_jobs: int = -1,
                verbose: bool | int = False) -> KNN:
    """The kNN graph of ``X`` (N, D) searched by the ranks of ``group``
    (:class:`~icongraph.distributed.Group`), every rank given the whole ``X``; every rank
    returns the whole graph.

    * ``"exact"``: each rank searches the neighbours of its own rows
      (:meth:`~icongraph.distributed.Group.bounds`) among all rows (:func:`exact_knn` with
      ``queries``, ``k + 1`` found and the point itself dropped): the same graph as one
      process's (a query's result does not depend on the other queries).
    * ``"nndescent"``: each rank indexes its shard of rows with pynndescent (the exact search
      for a shard of at most ``k + 1`` rows) and queries every row of ``X`` against it; the
      ``k + 1`` candidates per row go to the rank that owns the row
      (:meth:`~icongraph.distributed.Group.exchange_rows`, an all-to-all), which keeps the
      ``k`` nearest other points among its rows' ``W (k + 1)`` candidates (ties to the lower
      index). Queries cost N per rank; each rank receives ``8 W ceil(N / W) (k + 1)`` bytes
      of candidates.

    Either way each rank's rows are then all-gathered (indices and distances in one
    collective), and a point with fewer than ``k`` neighbours found fails on every rank alike.
    """
    n = X.shape[0]
    check_n_neighbors(k, n)
    group.check_same("the kNN search's (N, D, k)", (n, X.shape[1], k))
    lo, hi = group.bounds(n)
    if method == "exact":
        kk = min(k + 1, n)
        part = exact_knn(X, kk, metric, queries=X[lo:hi], device=device, verbose=verbose)
        idx, dist = _drop_self_rows(part.indices, part.distances, np.arange(lo, hi), k)
    else:
        candidates = shard_candidates(X, k, metric, lo, hi, device=device,
                                      random_state=random_state, n_jobs=n_jobs)
        mine = group.exchange_rows(torch.from_numpy(candidates), n).cpu().numpy()
        del candidates
        idx, dist = _merged(list(mine), lo)  # (hi - lo, W (k + 1), 2) -> this rank's rows
    # indices and distances in one collective: the int32 bits travel as float32
    packed = np.stack([idx.view(np.float32), dist], axis=2)  # (hi - lo, k, 2)
    full = group.gather_rows(torch.from_numpy(packed), n).cpu().numpy()
    return _found(np.ascontiguousarray(full[:, :, 0]).view(np.int32),
                  np.ascontiguousarray(full[:, :, 1]), metric)


def shard_candidates(X, k: int, metric: str, lo: int, hi: int, *, device=None,
                     random_state: int | None = None, n_jobs: int = -1) -> np.ndarray:
    """One rank's part of :func:`sharded_knn`'s pynndescent search: the ``k + 1`` nearest
    rows of ``X[lo:hi]`` to every row of ``X`` (N, D), by a pynndescent index of the shard
    (the exact search for a shard of at most ``k + 1`` rows; missing ones index -1 at
    distance inf), packed as (N, k + 1, 2) float32: the global indices' int32 bits, then the
    distances (one collective carries both)."""
    n, kk = X.shape[0], k + 1
    indices = np.full((n, kk), -1, np.int32)
    distances = np.full((n, kk), np.inf, np.float32)
    size = hi - lo
    if size > kk:
        from pynndescent import NNDescent

        n_trees, n_iters, candidates = nndescent_schedule(size)
        shard = X[lo:hi] if sp.issparse(X) else np.ascontiguousarray(X[lo:hi])
        index = NNDescent(shard, n_neighbors=kk, metric=metric,
                          random_state=random_state, n_trees=n_trees, n_iters=n_iters,
                          max_candidates=candidates, low_memory=True, n_jobs=n_jobs,
                          compressed=False)
        idx, dist = index.query(X, k=kk)
        indices[:], distances[:] = idx + lo, dist
    elif size > 0:
        part = exact_knn(X[lo:hi], size, metric, queries=X, device=device)
        indices[:, :size], distances[:, :size] = part.indices + lo, part.distances
    return np.stack([indices.view(np.float32), distances], axis=2)


def merge_candidates(candidates: list[np.ndarray], metric: str) -> KNN:
    """The kNN graph from every shard's :func:`shard_candidates` (each (N, k + 1, 2)): per
    row the ``k`` nearest candidates other than the point itself, ties to the lower index."""
    return _found(*_merged(candidates, 0), metric)


def _merged(candidates: list[np.ndarray], first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) (M, k) of rows ``first_row .. first_row + M`` from the shards'
    candidates for them (each (M, k + 1, 2), packed as :func:`shard_candidates` packs): the
    ``k`` nearest other than the row itself, ties to the lower index; -1 at distance inf
    where fewer were found."""
    m, kk = candidates[0].shape[:2]
    both = np.concatenate(candidates, axis=1)  # (M, W (k + 1), 2)
    cand_idx = np.ascontiguousarray(both[..., 0]).view(np.int32)
    rows = np.arange(first_row, first_row + m)[:, None]
    cand_dist = np.where((cand_idx < 0) | (cand_idx == rows), np.inf, both[..., 1])
    order = np.lexsort((cand_idx, cand_dist), axis=1)[:, :kk - 1]
    dist = np.take_along_axis(cand_dist, order, 1).astype(np.float32)
    idx = np.where(np.isinf(dist), -1, np.take_along_axis(cand_idx, order, 1))
    return idx.astype(np.int32), dist


def _found(idx: np.ndarray, dist: np.ndarray, metric: str) -> KNN:
    """The merged graph, or ``ValueError`` when some point has fewer than k neighbours."""
    if (idx < 0).any() or np.isinf(dist).any():
        raise ValueError("the sharded kNN search found fewer than k neighbours for some "
                         "points; the data may have too few distinct points for n_neighbors.")
    return KNN(idx, dist, metric)


def _drop_self_rows(idx: np.ndarray, dist: np.ndarray, rows: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """From (M, k+1) neighbour lists of the points ``rows`` (which may list the point itself),
    keep ``k`` others per row: the self entry dropped, or else the farthest."""
    is_self = idx == rows[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(idx, order, 1).astype(np.int32),
            np.take_along_axis(dist, order, 1).astype(np.float32))


def sparse_knn_lists(distances, n_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists from a sparse kNN-distance matrix: scanpy's ``obsp['distances']``
    (``n_neighbors - 1`` entries per row, the point itself left out) or scikit-learn's
    ``kneighbors_graph(mode='distance')``.

    Row ``i`` stores the distances from ``i`` to its neighbours; an explicitly stored zero is
    a neighbour at distance 0, a diagonal entry is dropped. Every row must hold about the same
    number of entries: ``k`` is the smallest count, and a row with more keeps its ``k``
    nearest (with a warning naming the counts; nothing is padded). A row without entries, or
    one with fewer than half the entries of the fullest row, is refused: such a matrix is a
    general graph, not a kNN graph.

    Parameters
    ----------
    distances : scipy sparse matrix
        (N, N) non-negative distances.
    n_samples : int, optional
        N, checked against the matrix.

    Returns
    -------
    indices : np.ndarray
        (N, k) int64, each row's neighbours sorted by distance (ties by column).
    distances : np.ndarray
        (N, k) float32, ascending along each row.
    """
    graph = sp.csr_matrix(distances)
    n = graph.shape[0]
    if graph.shape[1] != n or (n_samples is not None and n != n_samples):
        raise ValueError(f"a sparse precomputed_knn must be (N, N) with N = {n_samples or n} "
                         f"samples; got shape {graph.shape}.")
    rows = np.repeat(np.arange(n), np.diff(graph.indptr))
    keep = graph.indices != rows
    rows, cols = rows[keep], graph.indices[keep]
    dist = np.asarray(graph.data[keep], dtype=np.float32)
    counts = np.bincount(rows, minlength=n)
    k, most = int(counts.min()), int(counts.max())
    if 2 * k < most:
        first = int(np.argmin(counts))
        raise ValueError(f"the sparse precomputed_knn is not a kNN graph: its rows hold {k} to "
                         f"{most} neighbours (row {first}: {k}). Give every point its k nearest "
                         "neighbours, or pass the graph as p (ICon(p=graph)).")
    if k < most:
        warnings.warn(f"the sparse precomputed_knn has {k} to {most} neighbours per row: every "
                      f"row is cut to its {k} nearest.", stacklevel=3)
    order = np.lexsort((cols, dist, rows))
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    order = order[rank < k]
    return cols[order].reshape(n, k).astype(np.int64), dist[order].reshape(n, k)


def as_knn(knn, n_samples: int | None = None, metric: str = "euclidean") -> KNN:
    """User-supplied kNN: a :class:`KNN`, a tuple ``(indices, distances)`` of shape (N, k), or
    a sparse (N, N) kNN-distance matrix (:func:`sparse_knn_lists`)."""
    if isinstance(knn, KNN):
        idx, dist, metric = knn.indices, knn.distances, knn.metric
    elif sp.issparse(knn):
        idx, dist = sparse_knn_lists(knn, n_samples)
    else:
        try:
            idx, dist = knn
        except (TypeError, ValueError):
            raise ValueError("precomputed kNN must be a KNN, a tuple (indices, distances) or a "
                             "sparse kNN-distance matrix.") from None
    idx = np.asarray(idx)
    dist = np.asarray(dist, dtype=np.float32)
    if idx.ndim != 2 or idx.shape != dist.shape:
        raise ValueError(f"kNN indices {idx.shape} and distances {dist.shape} must be equal 2-D shapes.")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"kNN indices must be integers; got dtype {idx.dtype}.")
    n = idx.shape[0] if n_samples is None else n_samples
    if idx.shape[0] != n:
        raise ValueError(f"kNN has {idx.shape[0]} rows but the data has {n} samples.")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"kNN indices must lie in [0, {n}); got [{idx.min()}, {idx.max()}].")
    if not np.all(np.isfinite(dist)) or (dist < 0).any():
        raise ValueError("kNN distances must be finite and non-negative.")
    if (idx == np.arange(n)[:, None]).any():
        raise ValueError("precomputed kNN lists points as their own neighbours; remove self "
                         "entries (e.g. drop the first column of sklearn's kneighbors output).")
    order = np.argsort(dist, axis=1, kind="stable")
    return KNN(np.take_along_axis(idx, order, 1).astype(np.int32),
               np.take_along_axis(dist, order, 1), metric)


def precomputed_knn(knn, k: int, n_samples: int, metric: str = "euclidean",
                    reason: str = "the target") -> KNN:
    """A user's kNN graph for a fit that wants ``k`` neighbours per point: checked against
    the data (:func:`as_knn`), cut to the ``k`` nearest when it has more, and used as it is
    with a warning naming both numbers when it has fewer (scanpy, for one, stores
    ``n_neighbors - 1`` per row).

    Parameters
    ----------
    knn : KNN, tuple (indices, distances) or scipy sparse matrix
        The user's graph: (N, m) arrays, or an (N, N) kNN-distance matrix such as scanpy's
        ``obsp['distances']`` (:func:`sparse_knn_lists`).
    k : int
        Neighbours the fit asks for.
    n_samples : int
        Rows of the data.
    metric : str
        The metric of a tuple (a :class:`KNN` carries its own).
    reason : str
        What asks for ``k`` (``"n_neighbors=30"``), for the warning.

    Returns
    -------
    KNN
        ``min(k, m)`` neighbours per point.
    """
    knn = as_knn(knn, n_samples, metric)
    if knn.n_neighbors > k:
        return knn.truncate(k)
    if knn.n_neighbors < k:
        warnings.warn(f"precomputed_knn has {knn.n_neighbors} neighbours per point, fewer than "
                      f"the {k} that {reason} asks for: using {knn.n_neighbors}. Pass a larger "
                      "graph, or lower the parameter to match.", stacklevel=4)
    return knn


def _precomputed_knn_rule(name, value):
    """None, a :class:`KNN`, a pair ``(indices, distances)`` or a sparse kNN-distance matrix
    (checked against the data in ``fit``, :func:`precomputed_knn`)."""
    if value is None or isinstance(value, KNN) or sp.issparse(value):
        return
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name} must be None, a KNN, a tuple (indices, distances) of (N, k) "
                         "arrays or a sparse (N, N) kNN-distance matrix; got "
                         f"{type(value).__name__}.")


#: rules (:func:`~icongraph.validation.check_params`) of the kNN parameters every estimator
#: shares
KNN_RULES = {"metric": choice(METRICS), "precomputed_knn": _precomputed_knn_rule,
             "knn_method": choice(KNN_METHODS), "knn_cache": path_or_none()}


#: bytes pynndescent's candidate lists may take (4 arrays of N x ``max_candidates`` int32 or
#: float32): umap-learn's 60 candidates up to 4.47M points, fewer above
NNDESCENT_CANDIDATE_BYTES = 4 << 30
#: the fewest candidates per point :func:`nndescent_schedule` gives
MIN_CANDIDATES = 20


def nndescent_schedule(n: int, joined: bool = False) -> tuple[int, int, int]:
    """(random-projection trees, NN-descent iterations, candidates per point) for ``n``
    points: umap-learn's rule, with the trees capped at :data:`MAX_TREES`
    (:data:`MAX_JOINED_TREES` for a ``joined`` start, :func:`nndescent_knn`) and the candidates
    (umap-learn: 60) at what fits in :data:`NNDESCENT_CANDIDATE_BYTES`, at least
    :data:`MIN_CANDIDATES`. Part of the kNN cache key.

    The candidate lists are pynndescent's largest arrays: at 10M points, 60 candidates
    took 9.6 GB (the search peaked at 14.3 GiB), 20 took 3.2 GB (8.8 GB), with recall on
    ``make_manifolds`` 0.999 and 0.997; fewer candidates cost recall on hard data (200k
    overlapping clusters: 0.815 with 60, 0.749 with 30), so only the largest inputs get them.
    """
    candidates = int(np.clip(NNDESCENT_CANDIDATE_BYTES // (16 * max(n, 1)), MIN_CANDIDATES, 60))
    cap = MAX_JOINED_TREES if joined else MAX_TREES
    return (min(cap, 5 + int(round(np.sqrt(n) / 20.0))), max(5, int(round(np.log2(n)))),
            candidates)


def data_fingerprint(X) -> str:
    """A content hash of a data matrix (shape, dtype and every byte; blake2b, ~1 GB/s)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        parts = (X.data, X.indices, X.indptr)
    else:
        parts = (np.ascontiguousarray(X),)
    h.update(repr((X.shape, str(X.dtype))).encode())
    for part in parts:
        h.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return h.hexdigest()


#: sparse data is searched exactly (densified) while N x D stays below this many entries: the
#: dense copy is at most 64 MB, where pynndescent's sparse path costs 15-25 s of JIT
#: compilation in every fresh process
EXACT_SPARSE_MAX_ENTRIES = 1 << 24


def _resolve_method(method: str, X, device) -> str:
    """``'auto'`` -> ``'exact'`` below :data:`EXACT_MAX_SAMPLES` points or on CUDA (sparse
    data only while its dense copy has at most :data:`EXACT_SPARSE_MAX_ENTRIES` entries), else
    ``'nndescent'``; other names pass through."""
    if method != "auto":
        return method
    on_cuda = device is not None and torch.device(device).type == "cuda"
    small = X.shape[0] <= EXACT_MAX_SAMPLES
    densifiable = not sp.issparse(X) or X.shape[0] * X.shape[1] <= EXACT_SPARSE_MAX_ENTRIES
    return "exact" if (small or on_cuda) and densifiable else "nndescent"


def knn_search(X, k: int, metric: str = "euclidean", *, method: str = "auto", device=None,
               random_state: int | None = None, n_jobs: int = -1, verbose: bool | int = False,
               cache_dir: str | None = None) -> KNN:
    """The k nearest neighbours of every row of ``X``.

    ``method`` 'exact', 'nndescent' or 'auto' (exact below :data:`EXACT_MAX_SAMPLES` points,
    or on CUDA where the blocked search is fast at any size).

    Inside an initialised torch.distributed group every rank calls this with the whole ``X``
    and the search is split between them (:func:`sharded_knn`; rank 0 writes the cache).

    With ``cache_dir`` the graph is stored on disk keyed by the data's fingerprint, the metric
    and the method (and, for pynndescent, the seed and :func:`nndescent_schedule`); a later
    search for the same or a smaller ``k`` on the same data loads it instead, so trying several
    methods costs one kNN search.

    Parameters
    ----------
    X : array-like or sparse matrix of shape (N, D)
        The data.
    k : int
        Neighbours per point, the point itself excluded (``1 <= k < N``).
    metric : {"euclidean", "cosine"}, default="euclidean"
        The distance.
    method : {"auto", "exact", "nndescent"}, default="auto"
        The search (see above).
    device : str, torch.device or None, default=None
        Where the exact search runs (None: the CPU).
    random_state : int or None, default=None
        Seed of pynndescent.
    n_jobs : int, default=-1
        CPU threads (-1: all).
    verbose : bool or int, default=False
        A bar over the search (blocks of the exact search, NN-descent iterations); from 2,
        detail lines naming the method and a cache file loaded.
    cache_dir : str, path or None, default=None
        The cache folder (see above).

    Returns
    -------
    KNN
        ``indices`` (N, k) and ``distances`` (N, k), nearest first.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> knn = icongraph.knn_search(X, 15, random_state=0)
    >>> icongraph.Clustering(n_clusters=10, precomputed_knn=knn, random_state=0).fit(X)
    Clustering(...)
    """
    n = X.shape[0]
    check_n_neighbors(k, n)
    if cache_dir is not None:
        from pathlib import Path

        resolved = _resolve_method(method, X, device)
        tag = resolved
        if resolved == "nndescent":
            joined = _joined_start(X, metric)
            n_trees, n_iters, candidates = nndescent_schedule(n, joined)
            order = ("data" if not _spatially_ordered(X)
                     else "spatial-joined" if joined else "spatial")
            tag = f"nndescent-{random_state}-t{n_trees}-i{n_iters}-c{candidates}-{order}"
        stem = f"knn-{data_fingerprint(X)}-{metric}-{tag}"
        folder = Path(cache_dir)
        for path in sorted(folder.glob(stem + "-k*.npz")):
            stored_k = int(path.stem.rsplit("-k", 1)[1])
            if stored_k >= k:
                detail(verbose, "loaded from the cache %s", path)
                with np.load(path) as data:
                    return KNN(data["indices"], data["distances"], metric).truncate(k)
        knn = knn_search(X, k, metric, method=resolved, device=device,
                         random_state=random_state, n_jobs=n_jobs, verbose=verbose)
        if distributed.current().rank == 0:  # in a process group every rank has the graph
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"{stem}-k{k}.npz", indices=knn.indices, distances=knn.distances)
        return knn
    method = _resolve_method(method, X, device)
    detail(verbose, "%s search of %d points, k=%d", method, n, k)
    group = distributed.current()
    if group.active and method in ("exact", "nndescent"):
        return sharded_knn(X, k, metric, group, method=method, device=device,
                           random_state=random_state, n_jobs=n_jobs, verbose=verbose)
    if method == "exact":
        return exact_knn(X, k, metric, device=device, verbose=verbose)
    if method == "nndescent":
        return nndescent_knn(X, k, metric, random_state=random_state, n_jobs=n_jobs,
                             verbose=verbose)
    raise ValueError(f"knn_method must be one of {KNN_METHODS}; got {method!r}.")
