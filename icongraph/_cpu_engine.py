"""The CPU hot loop: the sampled I-Con gradient in numba, parallel over anchors.

Each anchor ``i`` is owned by one thread, which reads the embedding and writes only row ``i`` of
the gradient: no races, so results depend only on ``random_state`` (not on thread count or
scheduling). Negatives come from a counter-based hash of ``(seed, epoch, i, t)``, the same
function as :func:`icongraph.objective.hash_negatives` in torch, so the CPU and torch paths
draw identical samples. The formulas are documented in :mod:`icongraph.objective`.
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


@njit(inline="always", cache=True)
def kernel_and_slope(code, d2, p0, p1):
    """``(k(d2), g(d2) = d log k / d d2)`` for the built-in kernels (see kernels.py)."""
    if code == STUDENT:
        if p0 == 1.0:
            k = 1.0 / (1.0 + d2)
            return k, -k
        return (1.0 + d2 / p0) ** (-0.5 * (p0 + 1.0)), -0.5 * (p0 + 1.0) / (p0 + d2)
    if code == GAUSSIAN:
        return np.exp(-d2 * p0), -p0
    # UMAP: 1 / (1 + a d2^b)
    if d2 <= 0.0:
        return 1.0, 0.0
    d2b = d2**p1
    k = 1.0 / (1.0 + p0 * d2b)
    return k, -p0 * p1 * d2b * k / d2


@njit(inline="always", cache=True)
def log_kernel(code, d2, p0, p1):
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
        return -p1 * k / (0.001 + d2)
    return k * g / max(1.0 - k, 1e-3)


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
    d2 = 0.0
    for c in range(y.shape[1]):
        diff = y[i, c] - y[j, c]
        d2 += diff * diff
    return d2


@njit(parallel=True, fastmath=True, cache=True)
def sampled_gradient(y, indptr, indices, weights, exaggeration, n_neg, seed, estimator,
                     code, p0, p1, row_mass, alpha, z_prev, global_scale, neg_scale, clip,
                     with_loss, grad, zsum, loss_rows):
    """Fill ``grad`` (N, d), ``zsum`` (N,) = sum of k over each anchor's negatives, and (when
    ``with_loss``) ``loss_rows`` (N,) with the attraction / NEG part of the loss estimate.

    ``n_neg <= 0`` is the exact mode: every other point is a negative (small N, tests).
    """
    n = y.shape[0]
    exact = n_neg <= 0
    m = n - 1 if exact else n_neg
    for i in prange(n):
        for c in range(y.shape[1]):
            grad[i, c] = 0.0
        loss = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            d2 = sq_dist(y, i, j)
            k, g = kernel_and_slope(code, d2, p0, p1)
            add_force(grad, y, i, j, -2.0 * g * exaggeration, weights[e], clip)
            if with_loss:
                loss -= 0.5 * weights[e] * log_kernel(code, d2, p0, p1)
        base = hash32(seed ^ hash32(i))
        z = 0.0
        m_i = row_mass[i]
        for t in range(m):
            j = (t + (t >= i)) if exact else negative_index(base, t, i, n)
            d2 = sq_dist(y, i, j)
            k, g = kernel_and_slope(code, d2, p0, p1)
            z += k
            if alpha > 0.0:  # uniform part of the debiased p, both directions
                add_force(grad, y, i, j, -2.0 * g * exaggeration,
                          alpha * (m_i + row_mass[j]) / m, clip)
                if with_loss:
                    loss -= alpha * m_i / m * log_kernel(code, d2, p0, p1)
            if estimator == PER_ANCHOR:
                # q-shares k/Z of both directions; each capped at 1 as a true q(j|i) is
                share = m_i * min(k / z_prev[i], 1.0) + row_mass[j] * min(k / z_prev[j], 1.0)
                add_force(grad, y, i, j, 2.0 * g, share, clip)
            elif estimator == GLOBAL:
                add_force(grad, y, i, j, 2.0 * k * g, global_scale, clip)
            else:
                add_force(grad, y, i, j, 2.0 * neg_repulsion(code, d2, k, g, p1),
                          neg_scale[i], clip)
                if with_loss:
                    loss -= neg_scale[i] * np.log(max(1.0 - k, 1e-12))
        zsum[i] = max(z, 1e-12)  # a floor keeps 1/Z finite when every k underflows
        loss_rows[i] = loss
