"""A memory order of the points for the optimisation of large embeddings: graph neighbours
stored near each other, so the epochs' gathers of their positions hit the cache.

Each epoch reads, for every anchor, the positions of its graph neighbours and of its
negatives. Once the embedding outgrows a core's cache (8 bytes a point in 2-D: 200k points
fill 1.6 MB of a 2 MB L2 here) the neighbours' reads go further out, in the data's order a
random place each. A bandwidth-reducing order of the kNN graph (reverse Cuthill-McKee, a
breadth-first order from a peripheral point, scipy's) puts every point's neighbours within a
short window of rows, so the anchors of a block read a few contiguous stretches instead. The
negatives stay uniform over all points (hashed from the point's *position* in this order, so
a reordered fit draws other negatives than an unordered one: statistically the same fit, not
the same bits). Measured on the UMAP preset's 10M-point graph (``make_manifolds``, 210M
stored edges, 2 cores): one gradient evaluation 3.79 s in the data's order, 2.76 s in this
one; the order costs 13 s and relabelling the graph 2-3 s, once.

The optimiser reorders the objective in place (:meth:`~icongraph.objective.Objective.reorder_`,
one extra per-edge array alive at a time) and the start, runs, restores the objective and
returns the embedding in the data's order; callbacks see the data's order too. It applies
from :data:`LOCALITY_MIN_SAMPLES` points, on the CPU engine, without labels or an encoder.

The kNN search stores the data in a second order before any graph exists
(:func:`spatial_order`): the leaf order of a kd-tree on the rows' top principal coordinates,
so that NN-descent's candidates (neighbours of neighbours) are read from nearby rows.
Measured with pynndescent (umap-learn's settings, 2 cores, JIT warmed, the same recall in
either order; ``make_manifolds``): 1M x 50 25.8 s -> 22.1 s, 10M x 50 309 s -> 254 s (the
order and the copy included), 200k overlapping clusters 7.4 s -> 7.0 s.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

__all__ = ["LOCALITY_MIN_SAMPLES", "locality_order", "CSRPermutation", "spatial_order",
           "permuted_rows", "float64_rows"]

#: points from which the optimisation runs in the graph's locality order: from about where a
#: 2-D layout (1.6 MB at 200k) outgrows a core's L2 cache. With the per-block gradient kernel
#: one pooled UMAP evaluation took 0.0143 s in this order against 0.0210 s in the data's at
#: 200k points of the generator (0.0187 / 0.0233 s on mnist1d), 0.076 / 0.125 s at 1M
#: (0.122 / 0.141 s), for an order and relabelling of 0.1 s at 200k, 0.7-1.1 s at 1M; at
#: 50-100k 8-15% (``/work/exp5/ordercross.py``). Below, the order would change the fit (other
#: negatives drawn) for little.
LOCALITY_MIN_SAMPLES = 200_000


def locality_order(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The reverse Cuthill-McKee order of the symmetric graph given in CSR arrays:
    ``order[r]`` is the point stored at row ``r`` (int64, a permutation of ``range(N)``).
    Deterministic (scipy starts each connected component at a point of least degree)."""
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = len(indptr) - 1
    pattern = sp.csr_matrix((np.ones(len(indices), np.int8), indices, indptr), shape=(n, n))
    return reverse_cuthill_mckee(pattern, symmetric_mode=True).astype(np.int64)


@njit(parallel=True, cache=True)
def _permute_rows(indptr, order, new_indptr, values, out):
    for r in prange(len(order)):
        start = indptr[order[r]]
        at = new_indptr[r]
        for e in range(indptr[order[r] + 1] - start):
            out[at + e] = values[start + e]


@njit(parallel=True, cache=True)
def _rename(indices, rank):
    for e in prange(len(indices)):
        indices[e] = rank[indices[e]]


class CSRPermutation:
    """The relabelling of a CSR graph by ``order`` (row ``r`` holds point ``order[r]``'s
    edges, each neighbour ``j`` renamed ``rank[j]``, ``rank[order] = arange(N)``), applied
    array by array so that only one extra per-edge array is alive at a time.

    Parameters
    ----------
    indptr : (N + 1,) int64
        The graph's row pointers.
    order : (N,) int64
        A permutation of the points.

    Attributes
    ----------
    indptr : (N + 1,) int64
        The relabelled graph's row pointers.
    rank : (N,) int64
        ``rank[i]``: the row of point ``i``.
    """

    def __init__(self, indptr: np.ndarray, order: np.ndarray):
        n = len(order)
        self.order = np.asarray(order, np.int64)
        self.rank = np.empty(n, np.int64)
        self.rank[self.order] = np.arange(n)
        self._old_indptr = indptr
        self.indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.diff(indptr)[self.order], out=self.indptr[1:])

    def values(self, values: np.ndarray) -> np.ndarray:
        """A per-edge array (E,) in the new edge order (an empty array is returned as is)."""
        if not len(values):
            return values
        out = np.empty_like(values)
        _permute_rows(self._old_indptr, self.order, self.indptr, values, out)
        return out

    def indices(self, indices: np.ndarray) -> np.ndarray:
        """The column indices (E,) in the new edge order, renamed."""
        out = self.values(indices)
        _rename(out, self.rank)
        return out


#: :func:`spatial_order`: principal axes, rows of the sample they come from, kd-tree leaf size,
#: rows per block of the projection and the copy
SPATIAL_AXES, SPATIAL_SAMPLE, SPATIAL_LEAF_SIZE, SPATIAL_BLOCK_ROWS = 8, 200_000, 256, 1 << 16


def float64_rows(X, start: int, stop: int, normalise: bool) -> np.ndarray:
    """Rows ``start:stop`` of dense ``X`` in float64, unit-normalised if asked."""
    a = np.asarray(X[start:stop], np.float64)
    if normalise:
        norm = np.sqrt(np.einsum("ij,ij->i", a, a))[:, None]
        a = np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
    return a


def spatial_order(X, *, normalise: bool = False, seed: int = 0) -> np.ndarray:
    """A memory order of the rows of dense ``X`` (N, D) in which near rows sit near each other:
    ``order[r]`` is the row stored at position ``r`` (int64, a permutation of ``range(N)``).

    The rows are projected on the top :data:`SPATIAL_AXES` principal axes of a seeded sample
    of :data:`SPATIAL_SAMPLE` rows (``Z = (X - mean) V``, (N, 8) float32, in blocks), and
    ordered as the leaves of a kd-tree on ``Z`` (scipy's ``cKDTree``, sliding-midpoint splits,
    leaves of :data:`SPATIAL_LEAF_SIZE` rows): rows of one leaf are contiguous, and sibling
    leaves adjacent. Deterministic for a given ``seed``. Extra memory: ``Z`` and the tree's
    float64 copy of it, 48 bytes a row.

    Parameters
    ----------
    X : array-like of shape (N, D)
        Dense data (a memmap is read in blocks).
    normalise : bool, default=False
        Order the unit-normalised rows (for the cosine distance).
    seed : int, default=0
        Seed of the sample behind the axes.
    """
    from scipy.spatial import cKDTree

    n, d = X.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, SPATIAL_SAMPLE), replace=False))
    rows = float64_rows(X[sample], 0, len(sample), normalise)
    mean = rows.mean(0)
    axes = np.linalg.eigh(np.cov(rows - mean, rowvar=False).reshape(d, d))[1][:, ::-1]
    axes = axes[:, :min(SPATIAL_AXES, d)]
    z = np.empty((n, axes.shape[1]), np.float32)
    for start in range(0, n, SPATIAL_BLOCK_ROWS):
        z[start:start + SPATIAL_BLOCK_ROWS] = (
            float64_rows(X, start, start + SPATIAL_BLOCK_ROWS, normalise) - mean) @ axes
    tree = cKDTree(z, leafsize=SPATIAL_LEAF_SIZE, balanced_tree=False, compact_nodes=False)
    return tree.indices.astype(np.int64)


def permuted_rows(X, order: np.ndarray) -> np.ndarray:
    """``X[order]`` as a C-contiguous float32 array (N, D), gathered in blocks of rows (a
    memmap is never converted whole)."""
    out = np.empty((len(order), X.shape[1]), np.float32)
    for start in range(0, len(order), SPATIAL_BLOCK_ROWS):
        out[start:start + SPATIAL_BLOCK_ROWS] = X[order[start:start + SPATIAL_BLOCK_ROWS]]
    return out
