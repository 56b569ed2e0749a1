"""Positive sampling ``j ~ p~(.|i)`` for a batch of anchors, never a dense matrix.

An edge of the graph ``p`` by weight, then neighbour propagation over ``steps`` hops, never a
matrix power: random walks (``propagation='walk'``, ``p = (P + ... + P^t) / t``) or a uniform
draw from the points reachable in 1..t hops (``propagation='reachable'``); a uniform point with
probability ``alpha`` (debiasing); or, with labels, a uniform member of the anchor's class (an
unlabelled anchor, label ``-1``, takes a graph positive).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["PositiveSampler", "PROPAGATIONS", "REACHABLE_STORE_MAX", "REACHABLE_CHUNK"]

PROPAGATIONS = ("walk", "reachable")
#: reachable propagation: the distinct reachable points are stored for every node while
#: N x (k + ... + k^steps) is at most this many entries, else rebuilt per chunk of anchors
REACHABLE_STORE_MAX = 1 << 25
REACHABLE_CHUNK = 1 << 22


class PositiveSampler:
    """Draws ``j ~ p~(.|i)`` for anchors: a random walk of 1..steps steps by edge weight on a
    CSR graph (``(P + ... + P^t) / t``), or with ``propagation='reachable'`` a uniform draw
    from the distinct points within ``steps`` hops; then a uniform point with probability
    ``alpha``; or a same-class point when ``labels`` (N,) int is given: for every anchor
    without a graph, else for the labelled ones (``labels >= 0``), the unlabelled ones walking
    the graph. All vectorised torch ops on
    ``device`` (a walk step is an index into equal-weight rows, else a ``searchsorted`` over
    cumulative edge weights)."""

    def __init__(self, graph: sp.csr_matrix | None, n: int, device, steps: int = 1,
                 alpha: float = 0.0, labels: np.ndarray | None = None,
                 propagation: str = "walk"):
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}; got {propagation!r}.")
        self.n, self.steps, self.alpha, self.device = n, steps, alpha, device
        self.reachable = propagation == "reachable"
        self.labelled = None
        if labels is not None:
            labels = np.asarray(labels)
            labelled = labels >= 0 if graph is not None else np.ones(n, bool)
            order = np.flatnonzero(labelled)
            order = order[np.argsort(labels[order], kind="stable")]
            _, codes, counts = np.unique(labels[labelled], return_inverse=True,
                                         return_counts=True)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            start, count = np.zeros(n, np.int64), np.ones(n, np.int64)  # unlabelled: unused
            start[labelled], count[labelled] = starts[codes], counts[codes]
            self.members = torch.as_tensor(order, device=device)
            self.start = torch.as_tensor(start, device=device)
            self.count = torch.as_tensor(count, device=device)
            self.labelled = torch.as_tensor(labelled, device=device)
        self.graph = graph
        if graph is None:
            self.reachable = False
            return
        cum = np.concatenate([[0.0], np.cumsum(graph.data.astype(np.float64))])
        starts, ends = graph.indptr[:-1], graph.indptr[1:]
        self.cum = torch.as_tensor(cum[1:], device=device)
        self.before = torch.as_tensor(cum[starts], device=device)
        self.mass = torch.as_tensor(cum[ends] - cum[starts], device=device)  # same float64 sums
        self.first = torch.as_tensor(starts.astype(np.int64), device=device)
        self.last = torch.as_tensor(np.maximum(ends - 1, starts).astype(np.int64), device=device)
        self.cols = torch.as_tensor(graph.indices.astype(np.int64), device=device)
        # equal weights within every row (uniform kNN p): a walk step is an index, no search
        degree = np.diff(graph.indptr)
        row_mean = np.repeat(np.asarray(graph.sum(1)).ravel() / np.maximum(degree, 1), degree)
        self.uniform_rows = bool(np.allclose(graph.data, row_mean, rtol=1e-6, atol=0))
        self.degree = torch.as_tensor(degree.astype(np.int64), device=device)
        self.reach_cols = None
        if self.reachable:  # (N, max degree) neighbour table, -1 padded
            table = np.full((n, max(int(degree.max()), 1)), -1, np.int64)
            rows = np.repeat(np.arange(n), degree)
            table[rows, np.arange(graph.nnz) - graph.indptr[rows]] = graph.indices
            self.table = torch.as_tensor(table, device=device)
            self.reach_width = sum(table.shape[1] ** s for s in range(1, steps + 1))
            if n * self.reach_width <= REACHABLE_STORE_MAX:
                self._store_reachable()

    def _reachable_lists(self, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk candidates of ``anchors`` (B,): ``cand`` (B, k + ... + k^steps) sorted per
        row, and ``keep`` marking the first copy of each distinct point (the anchor itself and
        padding excluded)."""
        hop, levels = anchors[:, None], []
        for _ in range(self.steps):
            hop = self.table[hop.clamp_min(0)].masked_fill((hop < 0)[..., None], -1)
            hop = hop.reshape(anchors.shape[0], -1)
            levels.append(hop)
        cand = torch.cat(levels, 1).sort(1).values
        keep = (cand >= 0) & (cand != anchors[:, None])
        keep[:, 1:] &= cand[:, 1:] != cand[:, :-1]
        return cand, keep

    def _store_reachable(self) -> None:
        """The distinct reachable points of every node as a CSR (``reach_first``,
        ``reach_count``, ``reach_cols``), built once in chunks of ``REACHABLE_CHUNK`` entries."""
        chunk = max(1, REACHABLE_CHUNK // self.reach_width)
        counts, cols = [], []
        for lo in range(0, self.n, chunk):
            cand, keep = self._reachable_lists(torch.arange(lo, min(lo + chunk, self.n),
                                                            device=self.device))
            counts.append(keep.sum(1))
            cols.append(cand[keep].int())
        self.reach_count = torch.cat(counts)
        self.reach_first = torch.cumsum(self.reach_count, 0) - self.reach_count
        self.reach_cols = torch.cat(cols)

    def _reachable(self, anchors: torch.Tensor, repeats: int, gen: torch.Generator):
        """``repeats`` uniform draws per anchor from the distinct points reachable from it in
        1..steps hops (the anchor itself excluded), laid out as ``anchors.repeat(repeats)``:
        an index into the stored lists, or, when they were too large to store, lists rebuilt
        per chunk of anchors (``chunk x (k + ... + k^steps)`` entries, never for all N)."""
        if self.reach_cols is not None:
            return _uniform_member(self.reach_first, self.reach_count, self.reach_cols,
                                   anchors.repeat(repeats), gen)
        chunk = max(1, REACHABLE_CHUNK // self.reach_width)
        out = torch.empty((repeats, anchors.shape[0]), dtype=anchors.dtype, device=self.device)
        for lo in range(0, anchors.shape[0], chunk):
            a = anchors[lo:lo + chunk]
            cand, keep = self._reachable_lists(a)
            rank = keep.cumsum(1)
            count = rank[:, -1:]
            u = torch.rand((a.shape[0], repeats), generator=gen, device=self.device,
                           dtype=torch.float64)
            pick = (u * count).long().clamp_max(count - 1) + 1  # 1-based rank among distinct
            drawn = cand.gather(1, torch.searchsorted(rank, pick))
            out[:, lo:lo + chunk] = torch.where(count > 0, drawn, a[:, None]).T
        return out.reshape(-1)

    def _step(self, nodes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.uniform_rows:
            return _uniform_member(self.first, self.degree, self.cols, nodes, gen)
        u = torch.rand(nodes.shape, generator=gen, device=self.device, dtype=torch.float64)
        target = self.before[nodes] + u * self.mass[nodes]
        edge = torch.searchsorted(self.cum, target, right=True)
        edge = torch.minimum(torch.maximum(edge, self.first[nodes]), self.last[nodes])
        return self.cols[edge]

    def sample(self, anchors: torch.Tensor, gen: torch.Generator,
               repeats: int = 1) -> torch.Tensor:
        """``repeats`` positives per anchor (B,), laid out as ``anchors.repeat(repeats)``."""
        repeated = anchors.repeat(repeats)
        same = None
        if self.labelled is not None:  # supervised: a uniform member of the anchor's class
            u = torch.rand(repeated.shape, generator=gen, device=self.device)
            pick = (u * self.count[repeated]).long().clamp_max(self.count[repeated] - 1)
            same = self.members[(self.start[repeated] + pick).clamp_max(len(self.members) - 1)]
            if self.graph is None:
                return same
        if self.reachable:
            nodes = self._reachable(anchors, repeats, gen)
        else:
            nodes = self._step(repeated, gen)
            n_steps = torch.randint(1, self.steps + 1, repeated.shape, generator=gen,
                                    device=self.device) if self.steps > 1 else None
            for s in range(2, self.steps + 1):
                nodes = torch.where(n_steps >= s, self._step(nodes, gen), nodes)
        if self.alpha > 0:
            uniform = torch.rand(repeated.shape, generator=gen, device=self.device) < self.alpha
            other = torch.randint(0, self.n, repeated.shape, generator=gen, device=self.device)
            nodes = torch.where(uniform, other, nodes)
        if same is not None:  # unlabelled anchors keep their graph positive
            nodes = torch.where(self.labelled[repeated], same, nodes)
        return nodes


def _uniform_member(first: torch.Tensor, count: torch.Tensor, cols: torch.Tensor,
                    nodes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A uniform entry of each CSR row ``nodes`` (row ``r`` holds ``cols[first[r]:first[r] +
    count[r]]``), as int64; a node with an empty row draws itself."""
    count = count[nodes]
    u = torch.rand(nodes.shape, generator=gen, device=nodes.device, dtype=torch.float64)
    pick = (u * count).long().clamp_max(count - 1).clamp_min(0)
    at = (first[nodes] + pick).clamp_max(max(len(cols) - 1, 0))
    return torch.where(count > 0, cols[at].long(), nodes)

