"""The CPU hot loop: the sampled I-Con gradient in numba, parallel over anchors.

Each anchor ``i`` is owned by one thread, which reads the embedding and writes only row ``i`` of
the gradient: no races, so CPU results depend only on ``random_state`` (not on thread count or
scheduling; the torch engine on CUDA accumulates with atomics and is not bit-reproducible).
Negatives come from a counter-based hash of ``(seed, epoch, i, t)``, the same function as
:func:`icongraph.objective.hash_negatives` in torch, so the CPU and torch paths draw identical
samples. The formulas are documented in :mod:`icongraph.objective`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .kernels import GAUSSIAN, STUDENT, UMAP

PER_ANCHOR, GLOBAL, NEG = 0, 1, 2
M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1


@njit(inline="always", cache=True)
def hash32(x):
    """A 32-bit integer mixer (multipliers below 2^31 so int64 never overflows)."""
    x = x & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & M32
    x ^= x >> 16
    return x


@njit(inline="always", cache=True)
def negative_index(base, t, i, n):
    """The ``t``-th negative of an anchor (``base`` = its hashed seed): uniform on j != i."""
    h = hash32(base + (t + 1) * GOLDEN)
    j = (h * (n - 1)) >> 32
    return j + (j >= i)


ONE = np.float32(1.0)
HALF = np.float32(0.5)
EPS_NEG = np.float32(0.001)


@njit(inline="always", cache=True)
def kernel_and_slope(code, d2, p0, p1):
    """``(k(d2), g(d2) = d log k / d d2)`` for the built-in kernels (see kernels.py), in the
    precision of ``d2`` (float32 in the engine: half the cost of float64 ``pow``/``exp``)."""
    if code == STUDENT:
        if p0 == ONE:
            k = ONE / (ONE + d2)
            return k, -k
        return (ONE + d2 / p0) ** (-HALF * (p0 + ONE)), -HALF * (p0 + ONE) / (p0 + d2)
    if code == GAUSSIAN:
        return np.exp(-d2 * p0), -p0
    # UMAP: 1 / (1 + a d2^b)
    if d2 <= 0.0:
        return ONE, d2 * 0
    d2b = d2**p1
    k = ONE / (ONE + p0 * d2b)
    return k, -p0 * p1 * d2b * k / d2


@njit(inline="always", cache=True)
def log_kernel(code, d2, p0, p1):
    d2 = np.float64(d2)
    if code == STUDENT:
        return -0.5 * (p0 + 1.0) * np.log1p(d2 / p0)
    if code == GAUSSIAN:
        return -d2 * p0
    return -np.log1p(p0 * max(d2, 0.0) ** p1)


@njit(inline="always", cache=True)
def neg_repulsion(code, d2, k, g, p1):
    """``d/d d2 [-log(1 - k)] = k g / (1 - k)``; for UMAP's kernel umap-learn's regularised
    ``-b / ((0.001 + d2)(1 + a d2^b))``."""
    if code == UMAP:
        return -p1 * k / (EPS_NEG + d2)
    return k * g / max(ONE - k, EPS_NEG)


@njit(inline="always", cache=True)
def add_force(grad, y, i, j, coef, weight, clip):
    """``grad[i] += weight * clip(coef * (y_i - y_j))`` (clip per coordinate; inf disables)."""
    for c in range(y.shape[1]):
        f = coef * (y[i, c] - y[j, c])
        if f > clip:
            f = clip
        elif f < -clip:
            f = -clip
        grad[i, c] += weight * f


@njit(inline="always", cache=True)
def sq_dist(y, i, j):
    d2 = y[i, 0] - y[i, 0]  # a zero of y's dtype
    for c in range(y.shape[1]):
        diff = y[i, c] - y[j, c]
        d2 += diff * diff
    return d2


@njit(inline="always", cache=True)
def edge_active(rate, phase, epoch):
    """Edge schedule: an edge of rate ``r`` <= 1 is visited in ``r`` of the epochs, evenly
    spaced (offset ``phase``); its weight is pre-divided by ``r`` so the expectation is exact."""
    return np.floor((epoch + 1) * rate + phase) > np.floor(epoch * rate + phase)


# fastmath without the no-inf/no-NaN assumptions: ``clip`` is inf when clipping is off
@njit(parallel=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}, cache=True)
def sampled_gradient(y, indptr, indices, weights, edge_rate, edge_phase, epoch, exaggeration,
                     n_neg, seed, estimator, code, p0, p1, row_mass, alpha, z_prev,
                     global_scale, neg_scale, clip, with_loss, grad, zsum, loss_rows):
    """Fill ``grad`` (N, d), ``zsum`` (N,) = sum of k over each anchor's negatives, and (when
    ``with_loss``) ``loss_rows`` (N,) with the attraction / NEG part of the loss estimate.

    ``edge_rate`` (E,) in (0, 1] schedules edges (see :func:`edge_active`); an empty array
    visits every edge every epoch. ``n_neg <= 0`` is the exact mode: every other point is a
    negative (small N, tests).
    """
    n = y.shape[0]
    exact = n_neg <= 0
    m = n - 1 if exact else n_neg
    scheduled = edge_rate.shape[0] > 0
    a = np.float32(p0)
    b = np.float32(p1)
    clip32 = np.float32(clip)
    two = np.float32(2.0)
    exag2 = np.float32(2.0 * exaggeration)
    for i in prange(n):
        for c in range(y.shape[1]):
            grad[i, c] = 0.0
        loss = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            if scheduled and not edge_active(edge_rate[e], edge_phase[e], epoch):
                continue
            j = indices[e]
            d2 = sq_dist(y, i, j)
            k, g = kernel_and_slope(code, d2, a, b)
            add_force(grad, y, i, j, -exag2 * g, weights[e], clip32)
            if with_loss:
                loss -= 0.5 * weights[e] * log_kernel(code, d2, p0, p1)
        base = hash32(seed ^ hash32(i))
        z = 0.0
        m_i = row_mass[i]
        for t in range(m):
            j = (t + (t >= i)) if exact else negative_index(base, t, i, n)
            d2 = sq_dist(y, i, j)
            k, g = kernel_and_slope(code, d2, a, b)
            z += k
            if alpha > 0.0:  # uniform part of the debiased p, both directions
                add_force(grad, y, i, j, -exag2 * g,
                          np.float32(alpha * (m_i + row_mass[j]) / m), clip32)
                if with_loss:
                    loss -= alpha * m_i / m * log_kernel(code, d2, p0, p1)
            if estimator == PER_ANCHOR:
                # q-shares k/Z of both directions; each capped at 1 as a true q(j|i) is
                share = m_i * min(k / z_prev[i], ONE) + row_mass[j] * min(k / z_prev[j], ONE)
                add_force(grad, y, i, j, two * g, share, clip32)
            elif estimator == GLOBAL:
                add_force(grad, y, i, j, two * k * g, np.float32(global_scale), clip32)
            else:
                add_force(grad, y, i, j, two * neg_repulsion(code, d2, k, g, b),
                          neg_scale[i], clip32)
                if with_loss:
                    loss -= neg_scale[i] * np.log(max(1.0 - np.float64(k), 1e-12))
        zsum[i] = max(z, 1e-12)  # a floor keeps 1/Z finite when every k underflows
        loss_rows[i] = loss
