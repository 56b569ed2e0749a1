"""Hard refinement of a partition on the I-Con cluster loss: local moves, then re-bisection of
neighbouring cluster pairs, each accepted only when the exact loss decreases.

The soft fit (:class:`~icongraph.clustering.Clustering`) minimises the loss over soft
assignments; its argmax is not the minimum over hard partitions (on the clustering suite it was
above the Leiden communities it started from on 5 of 6 datasets). For a hard partition ``c``
(N,) with cluster sizes ``M_c`` the cluster kernel is ``q(j|i) = [c_i = c_j] / M_{c_i}``, and
with the target ``p~ = (1 - alpha) P_t + alpha / N`` (``P_t`` the walk of
:mod:`icongraph.positives`, row-stochastic, returns to ``i`` included) the loss is exact in
closed form::

    L(c) = -1/N sum_ij p~(j|i) log q~(j|i),   q~ = (1 - a_q) q + a_q / N + eps
         = g + 1/N sum_c V_c h(M_c)
    g      = -log(a_q / N + eps)                          (the loss of a pair across clusters)
    h(M)   = -log((1 - a_q) / M + a_q / N + eps) - g      (< 0: a pair inside a cluster of M)
    V_c    = sum_{i, j in c} (1 - alpha) P_t(j|i) + alpha M_c^2 / N

(``eps = 1e-12``, as :meth:`~icongraph.kernels.ClusterKernel.pair_loss`). Moving point ``i``
from cluster ``a`` to ``b`` changes only ``V_a, V_b, M_a, M_b``, by the edges of ``i``: one
move costs O(degree), as in Leiden's local moving (Traag et al. 2019). :func:`local_moving`
visits the points in a seeded random order, moving each to the neighbouring cluster that lowers
the loss most (never emptying a cluster), and queues again the neighbours of every point moved
(Leiden's fast local moving) until no move lowers the loss. :func:`refine` then re-splits the
union of each cluster with its most connected neighbour (by its
connected components, else by the sign of the Fiedler vector of the graph restricted to the
union), refines the split by local moves and keeps it only if the loss went down: the move that
undoes two clusters each cut across the same two groups, which no single-point move can. The
loss never increases, and the same seed gives the same partition at any thread count (the
moves are sequential; the Fiedler vector is a fixed number of sparse products).

The target is the explicit sparse matrix ``P_t`` (``t`` = ``propagation_steps``), at most
``REFINE_MAX_EDGES`` stored edges: :func:`target_edges` bounds them before any work, and
beyond the bound there is no refinement (the caller keeps the soft fit's argmax).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit
from scipy.sparse.csgraph import connected_components

from .targets import walk_sum

__all__ = ["HardLoss", "local_moving", "refine", "target_edges", "REFINE_MAX_EDGES"]

#: most edges of the explicit target (float64 weights and int32 indices: about 12 bytes each,
#: and twice that while it is symmetrised)
REFINE_MAX_EDGES = 40_000_000
#: visits of local moving at most, in passes over the points; re-bisection rounds at most;
#: neighbours per cluster tried
LOCAL_PASSES, REBISECT_ROUNDS, REBISECT_NEIGHBOURS = 50, 2, 1
#: sparse products of the power iteration for the Fiedler vector of a pair's union
FIEDLER_ITERATIONS = 50
EPS = 1e-12


def target_edges(graph: sp.csr_matrix, steps: int) -> int:
    """An upper bound on the stored edges of ``P_t`` for the CSR ``graph`` (N, N): for t = 1
    its edges, for t = 2 ``sum_i sum_{j in N(i)} (1 + deg j)``, and so on (the walks of
    1..t steps), doubled for the symmetrised copy. O(edges), nothing of ``P_t`` is built."""
    pattern = graph.astype(bool).astype(np.float64)
    walks, total = np.ones(graph.shape[0]), 0.0
    for _ in range(steps):
        walks = pattern @ walks  # the walks of one more step from each point
        total += walks.sum()
    return int(2 * min(total, float(graph.shape[0]) ** 2))


def walk_target(graph: sp.csr_matrix, steps: int, propagation: str = "walk") -> sp.csr_matrix:
    """The row-stochastic target ``P_t`` (N, N) that :class:`~icongraph.positives.
    PositiveSampler` samples without alpha: ``(P + ... + P^t) / t`` with ``P`` the
    row-normalised ``graph`` (``'walk'``; a walk back to ``i`` is a pair), or uniform over the
    distinct points within 1..t hops, ``i`` excluded (``'reachable'``; ``i`` itself when none)."""
    total = sp.csr_matrix(walk_sum(graph, steps) / steps)
    if propagation == "reachable":
        total.setdiag(0)
        total.eliminate_zeros()
        total.data[:] = 1.0
        count = np.diff(total.indptr)
        total = sp.csr_matrix(sp.diags(1.0 / np.maximum(count, 1)) @ total
                              + sp.diags((count == 0).astype(np.float64)))
    total.sort_indices()
    return total


@njit(cache=True)
def _size_term(size, n, q_alpha):
    """``h(M)`` of the module docstring."""
    floor = q_alpha / n + EPS
    return -np.log((1.0 - q_alpha) / size + floor) + np.log(floor)


@njit(cache=True)
def _objective(within, sizes, n, alpha, q_alpha):
    """``sum_c V_c h(M_c)``."""
    total = 0.0
    for c in range(sizes.shape[0]):
        if sizes[c] > 0:
            total += (within[c] + alpha * sizes[c] ** 2 / n) * _size_term(sizes[c], n, q_alpha)
    return total


@njit(cache=True)
def _state(indptr, indices, data, self_mass, labels, n_clusters):
    """Sizes ``M_c`` and within masses ``sum_{i, j in c} A_ij`` (C,) of ``labels``."""
    sizes, within = np.zeros(n_clusters), np.zeros(n_clusters)
    for i in range(labels.shape[0]):
        c = labels[i]
        sizes[c] += 1.0
        within[c] += self_mass[i]
        for e in range(indptr[i], indptr[i + 1]):
            if labels[indices[e]] == c:
                within[c] += 0.5 * data[e]  # S = A + A^T: each pair seen from both ends
    return sizes, within


@njit(cache=True)
def _local_moves(indptr, indices, data, self_mass, labels, sizes, within, alpha, q_alpha,
                 order, max_visits):
    """Leiden's fast local moving: a queue, first ``order``, of points each moved to the
    neighbouring cluster that lowers the objective most (never emptying its cluster); the
    neighbours of a moved point outside its new cluster join the queue again. Stops when the
    queue is empty (no move lowers the objective) or after ``max_visits`` visits; ``labels``,
    ``sizes`` and ``within`` are updated in place. Returns the number of moves."""
    n = labels.shape[0]
    n_clusters = sizes.shape[0]
    link = np.zeros(n_clusters)
    touched = np.empty(n_clusters, np.int64)
    queue = np.empty(n, np.int64)
    queued = np.zeros(n, np.bool_)
    head, length = 0, 0
    for i in order:
        if not queued[i]:
            queue[length] = i
            queued[i] = True
            length += 1
    moves, visits = 0, 0
    while length > 0 and visits < max_visits:
        i = queue[head]
        head = (head + 1) % n
        length -= 1
        queued[i] = False
        visits += 1
        a = labels[i]
        if sizes[a] <= 1.0:
            continue
        count = 0
        for e in range(indptr[i], indptr[i + 1]):
            c = labels[indices[e]]
            if link[c] == 0.0:
                touched[count] = c
                count += 1
            link[c] += data[e]
        mass_a = within[a] - link[a] - self_mass[i]
        leave = ((mass_a + alpha * (sizes[a] - 1.0) ** 2 / n)
                 * _size_term(sizes[a] - 1.0, n, q_alpha)
                 - (within[a] + alpha * sizes[a] ** 2 / n) * _size_term(sizes[a], n, q_alpha))
        best, best_change = a, 0.0
        for t in range(count):
            b = touched[t]
            if b == a:
                continue
            change = leave + (
                (within[b] + link[b] + self_mass[i] + alpha * (sizes[b] + 1.0) ** 2 / n)
                * _size_term(sizes[b] + 1.0, n, q_alpha)
                - (within[b] + alpha * sizes[b] ** 2 / n) * _size_term(sizes[b], n, q_alpha))
            if change < best_change - 1e-12 * abs(best_change + 1.0):
                best, best_change = b, change
        joined = link[best]
        for t in range(count):
            link[touched[t]] = 0.0
        if best == a:
            continue
        within[a] = mass_a
        within[best] += joined + self_mass[i]
        sizes[a] -= 1.0
        sizes[best] += 1.0
        labels[i] = best
        moves += 1
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            if not queued[j] and labels[j] != best:
                queue[(head + length) % n] = j
                queued[j] = True
                length += 1
    return moves


@njit(cache=True)
def _reassign(indptr, indices, data, self_mass, labels, sizes, within, nodes, targets):
    """Moves ``nodes[k]`` to ``targets[k]`` one by one, keeping ``sizes`` and ``within``."""
    for k in range(nodes.shape[0]):
        i, b = nodes[k], targets[k]
        a = labels[i]
        if a == b:
            continue
        to_a, to_b = 0.0, 0.0
        for e in range(indptr[i], indptr[i + 1]):
            c = labels[indices[e]]
            if c == a:
                to_a += data[e]
            elif c == b:
                to_b += data[e]
        within[a] -= to_a + self_mass[i]
        within[b] += to_b + self_mass[i]
        sizes[a] -= 1.0
        sizes[b] += 1.0
        labels[i] = b


class HardLoss:
    """The exact I-Con loss of hard partitions (module docstring) on a target.

    Parameters
    ----------
    target : scipy.sparse.csr_matrix
        ``P_t`` (N, N), row-stochastic (:func:`walk_target`).
    alpha : float
        Debiasing of ``p`` in [0, 1).
    q_alpha : float
        Debiasing of ``q`` in [0, 1).
    """

    def __init__(self, target: sp.csr_matrix, alpha: float, q_alpha: float):
        self.n = target.shape[0]
        self.alpha, self.q_alpha = float(alpha), float(q_alpha)
        scaled = (1.0 - self.alpha) * target
        self.self_mass = np.ascontiguousarray(scaled.diagonal(), dtype=np.float64)
        pairs = sp.csr_matrix(scaled + scaled.T)
        pairs.setdiag(0)
        pairs.eliminate_zeros()
        pairs.sort_indices()
        self.pairs = pairs
        self.cross = -np.log(self.q_alpha / self.n + EPS)  # g

    def _graph(self):
        return self.pairs.indptr, self.pairs.indices, self.pairs.data, self.self_mass

    def state(self, labels: np.ndarray, n_clusters: int):
        """Sizes and within masses (C,) of ``labels`` (N,) int64."""
        return _state(*self._graph(), labels, n_clusters)

    def value(self, sizes: np.ndarray, within: np.ndarray) -> float:
        """``L`` from a partition's sizes and within masses."""
        return self.cross + _objective(within, sizes, self.n, self.alpha, self.q_alpha) / self.n

    def __call__(self, labels: np.ndarray, n_clusters: int) -> float:
        """``L(labels)`` for ``labels`` (N,) in ``[0, n_clusters)``."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        return self.value(*self.state(labels, n_clusters))

    def local_moves(self, labels, sizes, within, order) -> int:
        """Local moving from ``order`` (in place); returns the number of moves."""
        return _local_moves(*self._graph(), labels, sizes, within, self.alpha, self.q_alpha,
                            np.asarray(order, dtype=np.int64), LOCAL_PASSES * self.n)

    def reassign(self, labels, sizes, within, nodes, targets) -> None:
        """Moves ``nodes`` to ``targets`` (in place)."""
        _reassign(*self._graph(), labels, sizes, within, nodes, targets)


def local_moving(loss: HardLoss, labels: np.ndarray, n_clusters: int,
                 seed: int) -> tuple[np.ndarray, float]:
    """Local moving from ``labels`` (N,) in a seeded random order: the partition (N,) int64
    and its loss ``L``, at most ``L(labels)`` (``seed`` as in :func:`refine`)."""
    labels = np.array(labels, dtype=np.int64)
    sizes, within = loss.state(labels, n_clusters)
    loss.local_moves(labels, sizes, within, np.random.default_rng(seed).permutation(len(labels)))
    return labels, loss.value(sizes, within)


def refine(loss: HardLoss, graph: sp.csr_matrix, labels: np.ndarray, n_clusters: int,
           seed: int, moved: bool = False) -> tuple[np.ndarray, float]:
    """The refined partition and its loss ``L``: local moves from ``labels`` (N,) (unless
    ``moved``: ``labels`` come from :func:`local_moving` already), then up to
    ``REBISECT_ROUNDS`` rounds of pair re-bisection (module docstring), each followed by local
    moves, while a round improves.

    Parameters
    ----------
    loss : HardLoss
        The exact loss on the target.
    graph : scipy.sparse.csr_matrix
        The graph (N, N) whose Fiedler vectors split a pair's union (its pattern, symmetrised).
    labels : numpy.ndarray
        The partition to start from (N,), in ``[0, n_clusters)`` (an empty cluster stays
        empty: no point has a neighbour in it).
    n_clusters : int
        C; no cluster is emptied.
    seed : int
        Seeds the order of the moves.
    moved : bool, default=False
        Skip the first local moving.

    Returns
    -------
    labels : numpy.ndarray
        (N,) int64.
    loss : float
        ``L`` of the returned partition, at most ``L(labels)``.
    """
    rng = np.random.default_rng(seed)
    if not moved:
        labels, _ = local_moving(loss, labels, n_clusters, seed)
    labels = np.array(labels, dtype=np.int64)
    sizes, within = loss.state(labels, n_clusters)
    n = labels.shape[0]
    if n_clusters < 2:
        return labels, loss.value(sizes, within)
    pattern = sp.csr_matrix(graph.astype(bool).astype(np.float64))
    pattern = sp.csr_matrix(pattern.maximum(pattern.T))
    for _ in range(REBISECT_ROUNDS):
        improved = 0
        for x, y in _neighbouring_pairs(loss.pairs, labels, n_clusters):
            union = np.flatnonzero((labels == x) | (labels == y))
            upper = _bisection(pattern[union][:, union], rng)
            if upper is None:
                continue
            # local moving may carry points outside the union too: all of labels is saved
            before, saved = loss.value(sizes, within), labels.copy()
            saved_sizes, saved_within = sizes.copy(), within.copy()
            loss.reassign(labels, sizes, within, union, np.where(upper, y, x).astype(np.int64))
            loss.local_moves(labels, sizes, within, rng.permutation(union))
            if loss.value(sizes, within) < before - 1e-12 * abs(before):
                improved += 1
            else:
                labels[:], sizes[:], within[:] = saved, saved_sizes, saved_within
        if not improved:
            break
        loss.local_moves(labels, sizes, within, rng.permutation(n))
    return labels, loss.value(sizes, within)


def _neighbouring_pairs(pairs: sp.csr_matrix, labels: np.ndarray,
                        n_clusters: int) -> list[tuple[int, int]]:
    """Each cluster with its ``REBISECT_NEIGHBOURS`` clusters of most target mass between
    them, as sorted distinct pairs."""
    n = labels.shape[0]
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, n_clusters))
    between = (onehot.T @ pairs @ onehot).toarray()
    np.fill_diagonal(between, 0.0)
    chosen = set()
    for x in range(n_clusters):
        for y in np.argsort(-between[x], kind="stable")[:REBISECT_NEIGHBOURS]:
            if between[x, y] > 0:
                chosen.add((min(x, int(y)), max(x, int(y))))
    return sorted(chosen)


def _bisection(sub: sp.csr_matrix, rng: np.random.Generator) -> np.ndarray | None:
    """Two sides (bool, (m,)) of the graph ``sub`` (m, m): its connected components, largest
    first, each to the lighter side; one component: the sign of its Fiedler vector, from
    ``FIEDLER_ITERATIONS`` lazy power steps on the normalised adjacency ``D^-1/2 A D^-1/2``
    deflated of its top eigenvector ``D^1/2 1``. None when a side would be empty."""
    m = sub.shape[0]
    if m < 4:
        return None
    count, component = connected_components(sub, directed=False)
    if count > 1:
        sizes = np.bincount(component)
        side, load = np.zeros(count, bool), [0, 0]
        for c in np.argsort(-sizes, kind="stable"):
            side[c] = load[1] < load[0]
            load[int(side[c])] += sizes[c]
        upper = side[component]
    else:
        degree = np.asarray(sub.sum(axis=1)).ravel()
        scale = 1.0 / np.sqrt(degree)
        top = np.sqrt(degree) / np.sqrt(degree.sum())
        vector = rng.standard_normal(m)
        for _ in range(FIEDLER_ITERATIONS):
            vector = 0.5 * (vector + scale * (sub @ (scale * vector)))
            vector -= (vector * top).sum() * top
            vector /= np.sqrt((vector * vector).sum())
        upper = vector * scale > 0
    return upper if 0 < upper.sum() < m else None
