"""Targets ``p(j|i)``: who each point should consider its neighbours, as a sparse graph.

A target *spec* (``PerplexityTarget``, ``UniformKNNTarget``, ``FuzzyTarget``,
``PrecomputedTarget``) says how many neighbours it needs and turns a :class:`~icongraph.knn.KNN`
into a :class:`Target`: the sparse weights ``p`` (CSR, N x N) plus the debiasing scalar ``alpha``,
never stored densely. ``alpha`` has one meaning across the package::

    p~(.|i) = (1 - alpha) p(.|i) + alpha m_i U_i,     m_i = sum_j p(j|i),

with ``U_i`` uniform on the support of ``q(.|i)``: the N - 1 other points for the distance
kernels (``p~(j|i) = (1 - alpha) p(j|i) + alpha m_i / (N - 1)``, j != i), all N points for the
cluster kernel. For a row-stochastic ``p`` and the cluster kernel this is the paper's
``(1 - alpha) p + alpha / N``. Specs are
registered by name in ``TARGETS``; a new one is a small class with ``n_neighbors_for`` and ``build``
(and ``to_new``, the rows ``p(.|new point)`` over the fitted points, when it can place new points).

Labels (:func:`with_labels`) mix a same-class graph into ``p`` without storing its ``n_c^2``
edges: with ``w_i`` the label weight of point ``i`` (``target_weight`` for a labelled point of a
class with at least 2 members, else 0) and ``n_c`` the size of its class ``c = y_i``::

    p~(j|i) = (1 - alpha) [(1 - w_i) p(j|i) + w_i m_i [y_j = y_i] / (n_c - 1)] + alpha m_i / (N - 1)

(j != i): the row mass ``m_i`` is kept, and the objective samples same-class partners.

Neighbour propagation (:func:`propagate`, ``propagation_steps`` ``t``) replaces the graph by
the mean of the walks of 1..t steps on it, before labels and ``alpha`` apply (see there).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from .graph import as_csr_graph, edge_entropy, knn_to_csr, row_normalize, symmetrize
from .knn import KNN, KNNIndex
from .memory import check_memory
from .pyg import data_graph, is_data

__all__ = ["Target", "PerplexityTarget", "UniformKNNTarget", "FuzzyTarget", "PrecomputedTarget",
           "TARGETS", "get_target", "perplexity_weights",
           "fuzzy_weights", "debias", "propagate", "walk_sum", "propagation_bytes", "PROPAGATION_BYTES",
           "with_labels", "LabelClasses", "new_rows", "new_lists"]


class LabelClasses(NamedTuple):
    """The classes of a target's labels in compact form (never the same-class edges).

    Attributes
    ----------
    label : np.ndarray
        (N,) int32, each point's class among the classes of at least 2 members, -1 for an
        unlabelled point or a class of one.
    ptr : np.ndarray
        (C + 1,) int64, class ``c``'s members are ``members[ptr[c]:ptr[c + 1]]``.
    members : np.ndarray
        (ptr[-1],) int32, the points of those classes sorted by class (then by index).
    position : np.ndarray
        (N,) int32, each point's position within its class's members (-1 where ``label`` is).
    """

    label: np.ndarray
    ptr: np.ndarray
    members: np.ndarray
    position: np.ndarray


@dataclass(frozen=True, eq=False)
class Target:
    """A fitted target neighbourhood.

    ``graph`` (N, N) CSR float32 holds ``p``: row ``i`` is ``p(.|i)`` (rows sum to 1 for
    conditional targets; for UMAP's fuzzy set the raw memberships). ``alpha`` is the debiasing
    weight: the objective uses ``p~(j|i) = (1 - alpha) p(j|i) + alpha m_i / (N - 1)`` (j != i) with
    ``m_i = sum_j p(j|i)``, handled as a scalar. ``labels`` (N,) int (``-1``: unlabelled) and
    ``target_weight`` add the label part of the module's definition (:func:`with_labels`).

    Parameters
    ----------
    graph : scipy.sparse.csr_matrix of float32, shape (N, N)
        ``p``.
    alpha : float, default=0.0
        The debiasing weight.
    labels : ndarray of int, shape (N,), or None, default=None
        Class labels (``-1``: unlabelled).
    target_weight : float, default=0.0
        The labels' share of a labelled row.
    spec : object, default=None
        The spec that built the target (places new points in ``transform``).
    index : KNNIndex or None, default=None
        The kNN index of the training points (for new points).
    symmetric : bool, default=False
        ``graph`` equals its transpose (set by the targets that symmetrise it): the objective
        then stores ``p + p^T = 2 p`` without forming the transpose. False claims nothing.

    Attributes
    ----------
    n_samples : int
        N.
    row_mass : ndarray of shape (N,)
        ``m_i``.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> target = icongraph.PerplexityTarget(30).build(icongraph.knn_search(X, 90))
    >>> target.graph.shape, icongraph.debias(target, 0.1).alpha
    ((1797, 1797), 0.1)
    """

    graph: sp.csr_matrix
    alpha: float = 0.0
    labels: np.ndarray | None = field(default=None, repr=False)
    target_weight: float = 0.0

    @cached_property
    def classes(self) -> LabelClasses | None:
        """The labels' classes of at least 2 members in compact form; None without labels."""
        if self.labels is None:
            return None
        y = np.asarray(self.labels, np.int64)
        sizes = np.bincount(y[y >= 0])
        keep = (y >= 0) & (sizes[np.maximum(y, 0)] >= 2 if sizes.size else False)
        codes = np.cumsum(sizes >= 2) - 1  # old class -> compact class
        label = np.where(keep, codes[np.maximum(y, 0)] if sizes.size else -1, -1)
        members = np.flatnonzero(keep)
        members = members[np.argsort(label[members], kind="stable")]
        ptr = np.zeros(int(label.max(initial=-1)) + 2, np.int64)
        np.cumsum(np.bincount(label[keep], minlength=len(ptr) - 1), out=ptr[1:])
        position = np.full(len(y), -1, np.int32)
        position[members] = np.arange(len(members)) - ptr[label[members]]
        return LabelClasses(label.astype(np.int32), ptr, members.astype(np.int32), position)

    @property
    def label_weights(self) -> np.ndarray:
        """``w_i`` (N,) float32: ``target_weight`` for a point of a class with at least 2
        members, else 0 (all 0 without labels)."""
        if self.classes is None:
            return np.zeros(self.n_samples, np.float32)
        return np.where(self.classes.label >= 0, self.target_weight, 0.0).astype(np.float32)

    @property
    def n_samples(self) -> int:
        return self.graph.shape[0]

    @property
    def row_mass(self) -> np.ndarray:
        """``m_i = sum_j p(j|i)`` (N,), float32."""
        return np.asarray(self.graph.sum(axis=1), dtype=np.float32).ravel()

    def entropy_term(self) -> float:
        """``sum_ij p~_ij log p~_ij`` in closed form (the constant that turns the cross-entropy
        into a KL). Per row, the entries take four values: on an edge ``(1 - alpha)(1 - w_i)
        p_ij + u_i (+ l_i`` inside the class), on a non-edge member of the class ``l_i + u_i``,
        elsewhere ``u_i``, with ``u_i = alpha m_i / (N - 1)`` and ``l_i = (1 - alpha) w_i m_i /
        (n_c - 1)``: the uniform and label parts contribute analytically, never as N^2 or
        ``n_c^2`` terms."""
        n, a = self.n_samples, self.alpha
        w_lab = self.label_weights.astype(np.float64)
        if a == 0.0 and not w_lab.any():
            return edge_entropy(self.graph)

        def xlogx(v, count=1.0):  # sum count v log v over v > 0
            v, count = np.broadcast_arrays(v, count)
            pos = v > 0
            return float(np.sum(count[pos] * v[pos] * np.log(v[pos])))

        g = self.graph.tocoo()
        m = self.row_mass.astype(np.float64)
        u = a * m / (n - 1)  # uniform weight of row i on each of the other points
        n_off = n - 1 - np.diff(self.graph.indptr)  # non-edge, non-self entries per row
        on_edge = (1 - a) * (1 - w_lab[g.row]) * g.data.astype(np.float64) + u[g.row]
        if w_lab.any():
            label = self.classes.label
            size = np.diff(self.classes.ptr)[np.maximum(label, 0)]
            lab = np.where(label >= 0, (1 - a) * w_lab * m / np.maximum(size - 1, 1), 0.0)
            inside = (label[g.row] >= 0) & (label[g.row] == label[g.col])
            on_edge += np.where(inside, lab[g.row], 0.0)
            class_off = np.where(label >= 0, size - 1, 0) - np.bincount(
                g.row[inside], minlength=n)  # non-edge members of the class
            n_off = n_off - class_off
            total = xlogx(lab + u, class_off)
        else:
            total = 0.0
        return total + xlogx(on_edge) + xlogx(u, n_off)

    #: the spec that built this target and the fit's rows (see :meth:`to_new`); None when the
    #: target was built without them
    spec: object = field(default=None, repr=False, compare=False)
    index: KNNIndex | None = field(default=None, repr=False, compare=False)
    symmetric: bool = field(default=False, repr=False, compare=False)

    def to_new(self, X_new, **overrides) -> sp.csr_matrix:
        """The target rows of new points over the fitted ones, as openTSNE's affinities'
        ``to_new``: row ``a`` is ``p(.|a)`` for the new point ``a`` (its neighbours found by
        :meth:`KNNIndex.query <icongraph.knn.KNNIndex.query>` on :attr:`index`, weighted by
        the spec's ``to_new``; never symmetrised, and ``alpha`` stays a scalar, not in the rows).

        Parameters
        ----------
        X_new : np.ndarray
            (M, D) new points, scaled as the fitted rows.
        **overrides
            Parameters of the spec's ``to_new`` (``perplexity=`` for a perplexity target).

        Returns
        -------
        scipy.sparse.csr_matrix
            (M, N) float32, ``k`` stored entries per row in the order of the neighbours.

        Raises
        ------
        ValueError
            For a precomputed graph (no features), or a target built without its spec and
            index.
        """
        if isinstance(self.spec, PrecomputedTarget):
            self.spec.to_new(self.index, X_new)
        if self.spec is None or self.index is None:
            raise ValueError("this target keeps no kNN index of the fitted rows (it was built "
                             "without them), so it cannot place new points.")
        return self.spec.to_new(self.index, X_new, **overrides)


def debias(target: Target, alpha: float) -> Target:
    """alpha-debiasing ``p~(j|i) = (1 - alpha) p(j|i) + alpha m_i / (N - 1)`` (the paper's
    ``(1 - alpha) p + alpha / N`` over the N - 1 other points; label smoothing for any p), kept as a
    scalar on the target: sampling draws a uniform ``j`` with probability ``alpha``.

    Parameters
    ----------
    target : Target
        A fitted target.
    alpha : float in [0, 1)
        The uniform share.

    Returns
    -------
    Target
        A copy of ``target`` with ``alpha`` set (the graph is shared, not copied).

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> target = icongraph.UniformKNNTarget(15).build(icongraph.knn_search(X, 15))
    >>> icongraph.debias(target, 0.2).alpha
    0.2
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1); got {alpha}.")
    return replace(target, alpha=float(alpha))


#: bytes per stored entry of a propagated graph, counted by :func:`propagation_bytes`: the
#: power and the running sum (float32 value + int32 column each), the result and its transpose
#: while symmetrising, and the objective's symmetrised copy (8 + 8 + 16)
PROPAGATION_BYTES = 32


def propagation_bytes(n_samples: int, degree: float, steps: int) -> float:
    """The bytes :func:`propagate` needs on a graph of ``n_samples`` rows with ``degree``
    entries per row: ``N x min(N, degree^t)`` entries (the walks of ``t`` steps reach at most
    ``degree^t`` points) at :data:`PROPAGATION_BYTES` each; 0 for ``t = 1`` (no power)."""
    if steps <= 1:
        return 0.0
    width = min(float(n_samples), float(max(degree, 1.0)) ** steps)
    return PROPAGATION_BYTES * n_samples * width


def walk_sum(graph: sp.spmatrix, steps: int) -> sp.csr_matrix:
    """``P + P^2 + ... + P^t`` (N, N) CSR float64 for ``t = steps`` and ``P = D^-1 G`` the
    row-stochastic walk on ``graph`` ``G`` (a row without mass stays empty): the explicit
    sparse power that :func:`propagate` and :func:`~icongraph.refine.walk_target` share."""
    graph = sp.csr_matrix(graph)
    mass = np.asarray(graph.sum(axis=1), np.float64).ravel()
    inverse = np.divide(1.0, mass, out=np.zeros_like(mass), where=mass > 0)
    walk = (sp.diags(inverse) @ graph.astype(np.float64)).tocsr()
    power, total = walk, walk
    for _ in range(steps - 1):
        power = (power @ walk).tocsr()
        total = total + power
    return sp.csr_matrix(total)


def propagate(target: Target, steps: int) -> Target:
    """Neighbour propagation: ``p`` replaced by the mean of the walks of 1..t steps on it, as
    an explicit sparse matrix power (the embedding engines consume explicit edges).

    With ``G`` the target's graph (N, N), ``m_i = sum_j G_ij`` its row masses,
    ``D = diag(m)`` and ``P = D^-1 G`` the row-stochastic walk::

        P_t = (P + P^2 + ... + P^t) / t
        P'_t = offdiag(P_t) with rows renormalised to 1   (a walk back to i is no pair)
        G_t = D P'_t                                       (row i keeps its mass m_i)
        G_t <- (G_t + G_t^T) / 2                           (when G is symmetric)

    A row-stochastic target (``PerplexityTarget(symmetric=False)``, ``UniformKNNTarget``, a
    normalised precomputed graph) keeps rows summing to 1 exactly. A symmetric target (t-SNE's
    joint ``p``, UMAP's fuzzy union) is symmetrised by the mean after the walk, as the target
    itself symmetrises: ``G_t`` stays symmetric and keeps the total mass ``sum_i m_i`` exactly,
    each row its mass up to that mean (as t-SNE's rows sum to about 1). Labels and
    ``alpha`` then apply to ``G_t`` as to any graph. :class:`~icongraph.clustering.Clustering`
    realises the same ``P_t`` by sampled random walks (:mod:`icongraph.positives`), never
    storing it; its cluster kernel defines ``q(i|i)``, so there a walk back to ``i`` counts.

    Parameters
    ----------
    target : Target
        The built target; its ``alpha`` and labels are kept.
    steps : int
        ``t >= 1``; 1 returns ``target`` unchanged.

    Returns
    -------
    Target
        The target with ``graph`` = ``G_t`` (N, N) CSR float32, up to ``N x min(N, k^t)``
        entries for ``k`` entries per row of ``G``.

    Raises
    ------
    ValueError
        ``steps`` not an integer >= 1.
    ~icongraph.memory.InsufficientMemoryError
        Before the power, when ``N x min(N, k^t)`` entries (``k`` the mean entries per row)
        will not fit in memory.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"propagation_steps must be an integer >= 1; got {steps!r}.")
    if steps == 1:
        return target
    graph = target.graph.tocsr()
    n = graph.shape[0]
    degree = graph.nnz / max(n, 1)
    check_memory(f"propagation_steps={steps} on {n} points with {degree:.0f} edges each",
                 {"propagated p": propagation_bytes(n, degree, steps)},
                 "Lower propagation_steps or the neighbours (n_neighbors, perplexity); "
                 "Clustering(propagation_steps=...) draws the same walks without the power.")
    mass = np.asarray(graph.sum(axis=1), np.float64).ravel()
    total = walk_sum(graph, steps)
    total.setdiag(0.0)
    total.eliminate_zeros()
    rows = np.asarray(total.sum(axis=1), np.float64).ravel()
    scale = np.divide(mass, rows, out=np.zeros_like(mass), where=rows > 0)
    result = (sp.diags(scale) @ total).tocsr()
    symmetric = target.symmetric or (
        abs(graph - graph.T).max() <= 1e-6 * max(float(graph.data.max(initial=0.0)), 1e-30))
    if symmetric:
        return replace(target, graph=symmetrize(result, "mean"), symmetric=True)
    result.sort_indices()
    return replace(target, graph=result.astype(np.float32))


def with_labels(target: Target, labels: np.ndarray, target_weight: float) -> Target:
    """Mix the label graph into ``p`` (the module's definition), kept as labels on the target.

    Parameters
    ----------
    target : Target
        The data graph's target.
    labels : np.ndarray
        (N,) int class codes, ``-1`` for an unlabelled point
        (:func:`~icongraph.validation.encode_labels`).
    target_weight : float
        In [0, 1]: 0 the data graph only, 1 the label graph only (for labelled points).

    Returns
    -------
    Target
        The same graph and ``alpha`` with ``labels`` and ``target_weight`` set.
    """
    if not 0.0 <= target_weight <= 1.0:
        raise ValueError(f"target_weight must lie in [0, 1]; got {target_weight}.")
    labels = np.asarray(labels)
    if labels.shape != (target.n_samples,):
        raise ValueError(f"labels have shape {labels.shape}; expected ({target.n_samples},).")
    return replace(target, labels=labels.astype(np.int32), target_weight=float(target_weight))


@njit(parallel=True, cache=True)
def _perplexity_rows(d2, log_perplexity, out):
    """Row-wise ``p_j ∝ exp(-beta d2_j)`` with entropy ``log_perplexity`` by bisection on beta."""
    n, k = d2.shape
    for i in prange(n):
        shift = d2[i, 0]
        beta, lo, hi = 1.0, 0.0, np.inf
        for _ in range(200):
            total, weighted = 0.0, 0.0
            for j in range(k):
                w = np.exp(-beta * (d2[i, j] - shift))
                total += w
                weighted += w * (d2[i, j] - shift)
            entropy = np.log(total) + beta * weighted / total
            if abs(entropy - log_perplexity) < 1e-6:
                break
            if entropy > log_perplexity:  # too flat: sharpen
                lo = beta
                beta = beta * 2.0 if hi == np.inf else 0.5 * (lo + hi)
            else:
                hi = beta
                beta = 0.5 * (lo + hi)
        total = 0.0
        for j in range(k):
            out[i, j] = np.exp(-beta * (d2[i, j] - shift))
            total += out[i, j]
        for j in range(k):
            out[i, j] /= total


@njit(parallel=True, cache=True)
def _fuzzy_rows(dist, local_connectivity, target, global_mean, out):
    """umap-learn's smooth kNN memberships per row: ``rho`` = the interpolated
    local_connectivity-th non-zero distance, ``sigma`` so that
    ``f(sigma) = sum_j exp(-max(d_j - rho, 0) / sigma) = target`` to 1e-5 (umap-learn's
    tolerance), floored at 1e-3 of the mean distance.

    ``f`` increases with ``sigma``. umap-learn bisects (22 sums of ``k`` exponentials per row
    on average on the 10M generator's rows, from 1); here a Newton step on ``log sigma``,
    ``df / dlog sigma = sum_j e_j d_j / sigma``
    (``d_j = d_ij - rho > 0``), from the mean of those ``d_j``, is taken whenever it lands
    inside the bisection's bracket, and a bisection step otherwise: the same answer to the
    tolerance in about 4 sums (on the 1M generator's kNN lists the weights moved by at most
    6.1e-6, the row sums by at most 2e-5)."""
    n, k = dist.shape
    index = int(np.floor(local_connectivity))
    frac = local_connectivity - index
    for i in prange(n):
        row = dist[i]
        first = 0  # sorted rows (a kNN search's): the non-zero distances are a view
        while first < k and row[first] <= 0.0:
            first += 1
        ascending = True
        for j in range(first, k - 1):
            if row[j] > row[j + 1]:
                ascending = False
                break
        nonzero = row[first:] if ascending else np.sort(row[row > 0.0])
        rho = 0.0
        if nonzero.shape[0] >= local_connectivity:
            if index > 0:
                rho = nonzero[index - 1]
                if frac > 1e-5 and index < nonzero.shape[0]:
                    rho += frac * (nonzero[index] - nonzero[index - 1])
            else:
                rho = frac * nonzero[0]
        elif nonzero.shape[0] > 0:
            rho = nonzero[-1]
        lo, hi, mid, above = 0.0, np.inf, 0.0, 0
        for j in range(k):  # start at the mean of the positive d_j - rho
            if row[j] > rho:
                mid += row[j] - rho
                above += 1
        mid = mid / above if above else 1.0
        for _ in range(64):
            psum = 0.0
            slope = 0.0  # d psum / d log sigma
            for j in range(k):
                d = row[j] - rho
                if d > 0:
                    e = np.exp(-(d / mid))
                    psum += e
                    slope += e * d / mid
                else:
                    psum += 1.0
            if abs(psum - target) < 1e-5:
                break
            if psum > target:
                hi = mid
            else:
                lo = mid
            newton = mid * np.exp((target - psum) / slope) if slope > 0.0 else -1.0
            if lo < newton < hi:
                mid = newton
            elif psum > target:
                mid = 0.5 * (lo + hi)
            else:
                mid = mid * 2.0 if hi == np.inf else 0.5 * (lo + hi)
        floor = 1e-3 * (row.mean() if rho > 0.0 else global_mean)
        sigma = max(mid, floor)
        for j in range(k):
            d = row[j] - rho
            out[i, j] = np.exp(-(d / sigma)) if d > 0 else 1.0


def perplexity_weights(distances: np.ndarray, perplexity: float) -> np.ndarray:
    """t-SNE's conditional ``p(j|i) ∝ exp(-d_ij^2 / (2 sigma_i^2))`` with each ``sigma_i`` set so
    that the row's perplexity ``exp(H)`` equals ``perplexity``. (N, k) in, rows sum to 1."""
    d2 = np.asarray(distances, dtype=np.float64) ** 2
    out = np.empty(d2.shape, np.float64)
    _perplexity_rows(d2, float(np.log(perplexity)), out)
    return out.astype(np.float32)


def fuzzy_weights(distances: np.ndarray, local_connectivity: float = 1.0,
                  bandwidth: float = 1.0, count_self: bool = True) -> np.ndarray:
    """UMAP's fuzzy memberships ``exp(-(d_ij - rho_i) / sigma_i)`` with ``rho_i`` the distance to
    the nearest (non-identical) neighbour and ``sum_j w_ij = log2(k + 1)`` (k neighbours plus
    the point itself, as umap-learn counts them; ``count_self=False``: ``log2(k)``, as
    umap-learn's ``transform`` counts a new point's k neighbours). (N, k) in, weights in
    (0, 1]."""
    d = np.asarray(distances, dtype=np.float64)
    out = np.empty(d.shape, np.float32)  # computed in float64, stored rounded
    _fuzzy_rows(d, float(local_connectivity),
                float(np.log2(d.shape[1] + int(count_self)) * bandwidth), float(d.mean()), out)
    return out


def new_rows(knn: KNN, weights: np.ndarray, n_reference: int) -> sp.csr_matrix:
    """(M, N) CSR float32 with row ``a`` holding ``weights[a]`` at columns ``knn.indices[a]``:
    every entry kept (zeros too) in the order of the neighbours, so row ``a``'s entries are
    ``indptr[a]:indptr[a] + k``."""
    m, k = knn.indices.shape
    indptr = np.arange(0, m * k + 1, k, dtype=np.int64)
    return sp.csr_matrix((np.asarray(weights, np.float32).ravel(),
                          knn.indices.astype(np.int32).ravel(), indptr),
                         shape=(m, n_reference))


def new_lists(rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """The (M, k) neighbour indices (int32) and weights (float32) of rows built by
    :func:`new_rows` (k stored entries per row)."""
    k = int(rows.indptr[1] - rows.indptr[0])
    return (rows.indices.reshape(-1, k).astype(np.int32, copy=False),
            rows.data.reshape(-1, k).astype(np.float32, copy=False))


@dataclass(frozen=True)
class PerplexityTarget:
    """Gaussian ``p`` calibrated to a perplexity (SNE/t-SNE); ``symmetric`` gives
    ``(P + P^T) / 2`` (t-SNE's joint p, scaled so rows sum to about 1). Uses
    ``neighbors_factor * perplexity`` neighbours (3, as openTSNE, by default).

    Parameters
    ----------
    perplexity : float, default=30.0
        The effective number of neighbours.
    symmetric : bool, default=True
        Symmetrise (t-SNE) or keep the conditional rows (SNE).
    neighbors_factor : float, default=3.0
        Neighbours searched per unit of perplexity.

    Attributes
    ----------
    perplexity, symmetric, neighbors_factor
        As given.

    Examples
    --------
    >>> import icongraph
    >>> model = icongraph.ICon(p=icongraph.PerplexityTarget(50), q="student", estimator="global")
    >>> icongraph.ICon(p="perplexity", p_params={"perplexity": 50})  # the same target
    ICon(...)
    """

    perplexity: float = 30.0
    symmetric: bool = True
    neighbors_factor: float = 3.0
    name = "perplexity"

    def __post_init__(self):
        if not self.perplexity > 0:
            raise ValueError(f"perplexity must be > 0; got {self.perplexity}.")
        if not self.neighbors_factor >= 1:
            raise ValueError(f"neighbors_factor must be >= 1 (k >= perplexity); got "
                             f"{self.neighbors_factor}.")

    def n_neighbors_for(self, n_samples: int) -> int:
        if n_samples - 1 < self.perplexity:
            raise ValueError(f"Too few points for perplexity={self.perplexity}: got {n_samples} "
                             f"samples, need more than the perplexity. Lower the perplexity.")
        return int(min(n_samples - 1, max(np.ceil(self.neighbors_factor * self.perplexity), 1)))

    def row_weights(self, distances: np.ndarray) -> np.ndarray:
        return perplexity_weights(distances, self.perplexity)

    @property
    def neighbors_reason(self) -> str:
        """What sets the neighbours this target asks for, for messages."""
        return f"perplexity={self.perplexity:g} ({self.neighbors_factor:g} x perplexity)"

    def build(self, knn: KNN) -> Target:
        if knn.n_neighbors < self.perplexity:
            raise ValueError(f"the kNN graph has {knn.n_neighbors} neighbours per point, fewer "
                             f"than perplexity={self.perplexity}: the calibration cannot reach it "
                             "(1.5-3 x perplexity neighbours are usual).")
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "mean") if self.symmetric else graph,
                      symmetric=self.symmetric)

    def to_new(self, index: KNNIndex, X_new, perplexity: float | None = None) -> sp.csr_matrix:
        """Rows ``p(.|a)`` (M, N) of new points: calibrated to ``perplexity`` (default the
        fit's; openTSNE's ``transform`` uses 5) on ``neighbors_factor x perplexity`` nearest
        fitted rows; each row sums to 1."""
        spec = self if perplexity is None else replace(self, perplexity=perplexity)
        knn = index.query(X_new, spec.n_neighbors_for(index.n_samples))
        return new_rows(knn, spec.row_weights(knn.distances), index.n_samples)


@dataclass(frozen=True)
class UniformKNNTarget:
    """``p(j|i) = 1/k`` on the k nearest neighbours (optionally symmetrised by the mean).

    Parameters
    ----------
    n_neighbors : int, default=15
        k.
    symmetric : bool, default=False
        Symmetrise by the mean ``(P + P^T) / 2``.

    Attributes
    ----------
    n_neighbors, symmetric
        As given.

    Examples
    --------
    >>> import icongraph
    >>> model = icongraph.ICon(p=icongraph.UniformKNNTarget(10), q="cosine",
    ...                        estimator="per_anchor", n_components=3)  # InfoNCE on 10-NN pairs
    """

    n_neighbors: int = 15
    symmetric: bool = False
    name = "knn"

    def n_neighbors_for(self, n_samples: int) -> int:
        return self.n_neighbors

    def row_weights(self, distances: np.ndarray) -> np.ndarray:
        return np.full(distances.shape, 1.0 / distances.shape[1], np.float32)

    @property
    def neighbors_reason(self) -> str:
        """What sets the neighbours this target asks for, for messages."""
        return f"n_neighbors={self.n_neighbors}"

    def build(self, knn: KNN) -> Target:
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "mean") if self.symmetric else graph,
                      symmetric=self.symmetric)

    def to_new(self, index: KNNIndex, X_new) -> sp.csr_matrix:
        """Rows ``p(.|a) = 1/k`` (M, N) on the ``k = n_neighbors`` nearest fitted rows."""
        knn = index.query(X_new, self.n_neighbors)
        return new_rows(knn, self.row_weights(knn.distances), index.n_samples)


@dataclass(frozen=True)
class FuzzyTarget:
    """UMAP's fuzzy simplicial set: smooth-kNN memberships and the fuzzy union. ``n_neighbors``
    counts the point itself, as in umap-learn (15 means 14 other points).

    Parameters
    ----------
    n_neighbors : int, default=15
        As umap-learn's.
    local_connectivity : float, default=1.0
        As umap-learn's.
    set_op_mix_ratio : float in [0, 1], default=1.0
        1: fuzzy union, 0: fuzzy intersection (umap-learn's).

    Attributes
    ----------
    n_neighbors, local_connectivity, set_op_mix_ratio
        As given.

    Examples
    --------
    >>> import icongraph
    >>> model = icongraph.ICon(p=icongraph.FuzzyTarget(30), q="umap", estimator="neg")
    """

    n_neighbors: int = 15
    local_connectivity: float = 1.0
    set_op_mix_ratio: float = 1.0
    name = "fuzzy"

    def __post_init__(self):
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2 for the fuzzy set; got {self.n_neighbors}.")
        if not 0.0 <= self.set_op_mix_ratio <= 1.0:
            raise ValueError("set_op_mix_ratio must lie in [0, 1].")

    def n_neighbors_for(self, n_samples: int) -> int:
        if n_samples < self.n_neighbors:
            raise ValueError(f"Too few points for n_neighbors={self.n_neighbors}: got "
                             f"{n_samples} samples.")
        return self.n_neighbors - 1

    def row_weights(self, distances: np.ndarray) -> np.ndarray:
        return fuzzy_weights(distances, self.local_connectivity)

    @property
    def neighbors_reason(self) -> str:
        """What sets the neighbours this target asks for, for messages (the point itself
        counts among ``n_neighbors``)."""
        return f"n_neighbors={self.n_neighbors} (the point itself included)"

    def build(self, knn: KNN) -> Target:
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "union", self.set_op_mix_ratio), symmetric=True)

    def to_new(self, index: KNNIndex, X_new) -> sp.csr_matrix:
        """Memberships (M, N) of new points as umap-learn's ``transform`` computes them: the
        ``n_neighbors`` nearest fitted rows (the new point is not among them),
        ``local_connectivity - 1`` (floored at 0) and ``sum_j w_aj = log2(n_neighbors)``; no
        fuzzy union."""
        knn = index.query(X_new, self.n_neighbors)
        weights = fuzzy_weights(knn.distances, max(self.local_connectivity - 1.0, 0.0),
                                count_self=False)
        return new_rows(knn, weights, index.n_samples)


@dataclass(frozen=True)
class PrecomputedTarget:
    """A user graph (scipy sparse, networkx, torch edge_index [+ weights], a torch-geometric
    ``Data``); rows are normalised to ``p(.|i)`` unless ``normalize=False``.

    Parameters
    ----------
    graph : scipy sparse matrix, networkx graph, (edge_index, weights) or Data
        The graph, N nodes.
    normalize : bool, default=True
        Normalise each row to sum to 1.

    Attributes
    ----------
    graph, normalize
        As given.

    Examples
    --------
    >>> import networkx as nx
    >>> import icongraph
    >>> G = nx.karate_club_graph()
    >>> Y = icongraph.ICon(p=icongraph.PrecomputedTarget(G), q="student",
    ...                    estimator="global").fit_transform(None)
    >>> Y.shape
    (34, 2)
    """

    graph: object = field(repr=False)
    normalize: bool = True
    name = "precomputed"

    def n_neighbors_for(self, n_samples: int) -> int:
        return 0

    def build(self, knn: KNN | None = None, n_samples: int | None = None) -> Target:
        graph = (data_graph(self.graph, n_samples) if is_data(self.graph)
                 else as_csr_graph(self.graph, n_samples))
        return Target(row_normalize(graph) if self.normalize else graph)

    def to_new(self, index: KNNIndex | None, X_new) -> sp.csr_matrix:
        """Refused: a graph given as it is says nothing about points outside it."""
        raise ValueError("a precomputed p has no features to place new points from; fit X "
                         "with a kNN target (p='perplexity', 'knn' or 'fuzzy') to transform "
                         "new points.")


TARGETS = {cls.name: cls for cls in (PerplexityTarget, UniformKNNTarget, FuzzyTarget,
                                      PrecomputedTarget)}


def get_target(spec, **params):
    """A target spec from an instance or a registered name (``TARGETS``) plus parameters."""
    if hasattr(spec, "build"):
        return spec
    if spec not in TARGETS:
        raise ValueError(f"unknown target {spec!r}; choose one of {sorted(TARGETS)} or pass a "
                         "target object.")
    return TARGETS[spec](**params)
