"""Targets ``p(j|i)``: who each point should consider its neighbours, as a sparse graph.

A target *spec* (``PerplexityTarget``, ``UniformKNNTarget``, ``FuzzyTarget``,
``PrecomputedTarget``) says how many neighbours it needs and turns a :class:`~icongraph.knn.KNN`
into a :class:`Target`: the sparse weights ``p`` (CSR, N x N) plus the debiasing scalar ``alpha``
of ``p~ = (1 - alpha) p + alpha / N``, which is never stored densely. Specs are registered by name
in ``TARGETS``; a new one is a small class with ``n_neighbors_for`` and ``build``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import torch

from .graph import as_csr_graph, edge_entropy, knn_to_csr, row_normalize, symmetrize
from .knn import KNN

__all__ = ["Target", "PerplexityTarget", "UniformKNNTarget", "FuzzyTarget", "PrecomputedTarget",
           "TARGETS", "get_target", "calibrate_bandwidths", "perplexity_weights",
           "fuzzy_weights", "debias"]


@dataclass(frozen=True)
class Target:
    """A fitted target neighbourhood.

    ``graph`` (N, N) CSR float32 holds ``p``: row ``i`` is ``p(.|i)`` (rows sum to 1 for
    conditional targets; for UMAP's fuzzy set the raw memberships). ``alpha`` is the debiasing
    weight: the objective uses ``p~(j|i) = (1 - alpha) p(j|i) + alpha m_i / (N - 1)`` (j != i) with
    ``m_i = sum_j p(j|i)``, handled as a scalar.
    """

    graph: sp.csr_matrix
    alpha: float = 0.0

    @property
    def n_samples(self) -> int:
        return self.graph.shape[0]

    @property
    def row_mass(self) -> np.ndarray:
        """``m_i = sum_j p(j|i)`` (N,), float32."""
        return np.asarray(self.graph.sum(axis=1), dtype=np.float32).ravel()

    def entropy_term(self) -> float:
        """``sum_ij p~_ij log p~_ij`` in closed form (the constant that turns the cross-entropy
        into a KL); the uniform part contributes analytically, never as N^2 terms."""
        n, a = self.n_samples, self.alpha
        if a == 0.0:
            return edge_entropy(self.graph)
        g = self.graph.tocoo()
        w = g.data.astype(np.float64)
        m = self.row_mass.astype(np.float64)
        u = a * m / (n - 1)  # uniform weight of row i on each of the other points
        on_edge = (1 - a) * w + u[g.row]
        total = float(np.sum(on_edge * np.log(on_edge)))
        n_off = n - 1 - np.diff(self.graph.indptr)  # non-edge, non-self entries per row
        pos = u > 0
        total += float(np.sum(n_off[pos] * u[pos] * np.log(u[pos])))
        return total


def debias(target: Target, alpha: float) -> Target:
    """alpha-debiasing ``p~ = (1 - alpha) p + alpha / N`` (label smoothing for any p), kept as a
    scalar on the target: sampling draws a uniform ``j`` with probability ``alpha``."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1); got {alpha}.")
    return replace(target, alpha=float(alpha))


def calibrate_bandwidths(dist: torch.Tensor, target: torch.Tensor, mass_fn, n_iter: int = 64
                         ) -> torch.Tensor:
    """Per-row bandwidth ``s_i`` with ``mass_fn(dist / s) == target`` by geometric bisection.

    ``dist`` (n, k) non-negative, ``mass_fn`` maps scaled distances (n, k) to (n,) and must
    increase with ``s``. Vectorised over rows (no Python loop over points).
    """
    scale = dist.amax(dim=1).clamp_min(1e-12)
    lo, hi = scale * 1e-8, scale * 1e8
    for _ in range(n_iter):
        mid = torch.sqrt(lo * hi)
        too_big = mass_fn(dist / mid[:, None]) > target
        hi = torch.where(too_big, mid, hi)
        lo = torch.where(too_big, lo, mid)
    return torch.sqrt(lo * hi)


def _entropy_of_exp(scaled: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``p_j ∝ exp(-scaled_j)`` per row; increases with bandwidth."""
    logits = -scaled
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(log_p.exp() * log_p).sum(dim=1)


def _row_chunks(n: int, k: int, budget: int = 8_000_000):
    step = max(1, budget // max(k, 1))
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def perplexity_weights(distances: np.ndarray, perplexity: float) -> np.ndarray:
    """t-SNE's conditional ``p(j|i) ∝ exp(-d_ij^2 / (2 sigma_i^2))`` with each ``sigma_i`` set so
    that the row's perplexity ``exp(H)`` equals ``perplexity``. (N, k) in, rows sum to 1."""
    out = np.empty_like(distances, dtype=np.float32)
    target = torch.tensor(np.log(perplexity), dtype=torch.float64)
    for s, e in _row_chunks(*distances.shape):
        d2 = torch.as_tensor(distances[s:e], dtype=torch.float64) ** 2
        d2 = d2 - d2[:, :1]  # shift by the nearest distance: same p, better conditioned
        bw = calibrate_bandwidths(d2, target, _entropy_of_exp)
        out[s:e] = torch.softmax(-d2 / bw[:, None], dim=1).numpy()
    return out


def fuzzy_weights(distances: np.ndarray, local_connectivity: float = 1.0,
                  bandwidth: float = 1.0) -> np.ndarray:
    """UMAP's fuzzy memberships ``exp(-(d_ij - rho_i) / sigma_i)`` with ``rho_i`` the distance to
    the nearest (non-identical) neighbour and ``sum_j w_ij = log2(k + 1)`` (k neighbours plus
    the point itself, as umap-learn counts them). (N, k) in, weights in (0, 1]."""
    n, k = distances.shape
    out = np.empty_like(distances, dtype=np.float32)
    target = torch.tensor(np.log2(k + 1) * bandwidth, dtype=torch.float64)
    global_mean = float(np.mean(distances))
    lc = int(np.floor(local_connectivity))
    frac = local_connectivity - lc
    for s, e in _row_chunks(n, k):
        d = torch.as_tensor(distances[s:e], dtype=torch.float64)
        pos_sorted, _ = torch.where(d > 0, d, torch.full_like(d, float("inf"))).sort(dim=1)
        n_pos = (d > 0).sum(dim=1)
        # rho: the local_connectivity-th non-zero distance, interpolated (umap-learn's rule)
        if lc > 0:
            rho_full = pos_sorted[:, lc - 1]
            if frac > 0 and lc < k:
                rho_full = rho_full + frac * (pos_sorted[:, lc] - rho_full)
        else:
            rho_full = frac * pos_sorted[:, 0]
        max_pos = torch.where(d > 0, d, torch.zeros_like(d)).amax(dim=1)
        rho = torch.where(n_pos >= local_connectivity, rho_full, max_pos)
        shifted = (d - rho[:, None]).clamp_min(0.0)
        sigma = calibrate_bandwidths(shifted, target, lambda x: torch.exp(-x).sum(dim=1))
        row_mean = d.mean(dim=1)
        floor = torch.where(rho > 0, 1e-3 * row_mean, torch.full_like(rho, 1e-3 * global_mean))
        sigma = torch.maximum(sigma, floor).clamp_min(1e-12)
        out[s:e] = torch.exp(-shifted / sigma[:, None]).numpy()
    return out


@dataclass(frozen=True)
class PerplexityTarget:
    """Gaussian ``p`` calibrated to a perplexity (SNE/t-SNE); ``symmetric`` gives
    ``(P + P^T) / 2`` (t-SNE's joint p, scaled so rows sum to about 1). Uses 3*perplexity
    neighbours, as openTSNE."""

    perplexity: float = 30.0
    symmetric: bool = True
    name = "perplexity"

    def __post_init__(self):
        if not self.perplexity > 0:
            raise ValueError(f"perplexity must be > 0; got {self.perplexity}.")

    def n_neighbors_for(self, n_samples: int) -> int:
        if n_samples - 1 < self.perplexity:
            raise ValueError(f"Too few points for perplexity={self.perplexity}: got {n_samples} "
                             f"samples, need more than the perplexity. Lower the perplexity.")
        return int(min(n_samples - 1, max(3 * self.perplexity, 1)))

    def row_weights(self, distances: np.ndarray) -> np.ndarray:
        return perplexity_weights(distances, self.perplexity)

    def build(self, knn: KNN) -> Target:
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "mean") if self.symmetric else graph)


@dataclass(frozen=True)
class UniformKNNTarget:
    """``p(j|i) = 1/k`` on the k nearest neighbours (optionally symmetrised by the mean)."""

    n_neighbors: int = 15
    symmetric: bool = False
    name = "knn"

    def n_neighbors_for(self, n_samples: int) -> int:
        return self.n_neighbors

    def row_weights(self, distances: np.ndarray) -> np.ndarray:
        return np.full(distances.shape, 1.0 / distances.shape[1], np.float32)

    def build(self, knn: KNN) -> Target:
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "mean") if self.symmetric else graph)


@dataclass(frozen=True)
class FuzzyTarget:
    """UMAP's fuzzy simplicial set: smooth-kNN memberships and the fuzzy union. ``n_neighbors``
    counts the point itself, as in umap-learn (15 means 14 other points)."""

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

    def build(self, knn: KNN) -> Target:
        graph = knn_to_csr(knn.indices, self.row_weights(knn.distances))
        return Target(symmetrize(graph, "union", self.set_op_mix_ratio))


@dataclass(frozen=True)
class PrecomputedTarget:
    """A user graph (scipy sparse, networkx, torch edge_index [+ weights]); rows are normalised
    to ``p(.|i)`` unless ``normalize=False``."""

    graph: object = field(repr=False)
    normalize: bool = True
    name = "precomputed"

    def n_neighbors_for(self, n_samples: int) -> int:
        return 0

    def build(self, knn: KNN | None = None, n_samples: int | None = None) -> Target:
        graph = as_csr_graph(self.graph, n_samples)
        return Target(row_normalize(graph) if self.normalize else graph)


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
