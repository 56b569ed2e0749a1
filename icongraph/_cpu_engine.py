"""The CPU hot loop: the sampled I-Con gradient in numba, parallel over anchors.

Each anchor ``i`` is owned by one thread, which reads the embedding and writes only row ``i`` of
the gradient: no races, so CPU results depend only on ``random_state`` (not on thread count or
scheduling; the torch engine on CUDA accumulates with atomics and is not bit-reproducible).
Negatives come from a counter-based hash of ``(seed, epoch, i, t)``, the same function as
:func:`icongraph._torch_engine.hash_negatives` in torch, so the CPU and torch paths draw
identical samples; from :data:`POOL_MIN_SAMPLES` points the CPU engine draws them from each
epoch's pool of :data:`POOL_SIZE` rows instead (:func:`fill_pool`), which stays in cache.
The formulas are documented in :mod:`icongraph.objective`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .kernels import GAUSSIAN, SCALED_STUDENT, STUDENT, UMAP

PER_ANCHOR, GLOBAL, NEG = 0, 1, 2
M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1


class EngineArrays(NamedTuple):
    """What the kernels read that stays fixed for a fit, built once by
    :class:`~icongraph.objective.Objective` (its ``engine``) with the types below: a field of
    another type in one call would compile a second specialisation.

    Attributes
    ----------
    indptr : np.ndarray
        (N + 1,) int64, the CSR row pointers of the symmetrised target ``p + p^T``.
    indices : np.ndarray
        (E,) int32, its columns.
    weights : np.ndarray
        (E,) float32, each edge's attraction weight for the gradient of its row's anchor.
    edge_rate, edge_phase : np.ndarray
        (E,) float32 edge schedule (:func:`edge_active`), or (0,): every edge every epoch.
    row_mass : np.ndarray
        (N,) float32, the target's row masses ``m_i = sum_j p_ij``.
    neg_scale : np.ndarray
        (N,) float32, the NEG estimator's repulsion weight per anchor; (1,) otherwise.
    label_class : np.ndarray
        (N,) int32, each anchor's class for the label part of ``p~`` (-1: none), or (0,).
    class_ptr, class_members, class_position : np.ndarray
        (C + 1,) int64, (N_l,) int32, (N,) int32: class ``c``'s members are
        ``class_members[class_ptr[c]:class_ptr[c + 1]]``, a point's position among them
        (:class:`~icongraph.targets.LabelClasses`).
    label_scale : np.ndarray
        (N,) float32, ``(1 - alpha) p_scale w_i``: a same-class pair's weight is
        ``label_scale[i] (m_i + m_j) / n_label``; or (0,).
    n_label : int
        Same-class partners per labelled anchor (0: no labels).
    n_neg : int
        Negatives per anchor; ``<= 0``: every other point (exact mode).
    estimator : int
        ``PER_ANCHOR``, ``GLOBAL`` or ``NEG``.
    code : int
        The kernel's code (:mod:`icongraph.kernels`).
    p0, p1 : float
        The kernel's parameters.
    alpha : float
        The debiasing weight of ``p``.
    p_scale : float
        The attraction per unit of ``p~``: 1 for the KL estimators, ``1 / w_max`` for NEG.
    clip : float
        Each pair's force is clipped at this, per coordinate (``inf``: no clipping).
    edge_share : np.ndarray
        (E,) float32, ``p_ij / (p_ij + p_ji)`` of each stored edge ``(i, j)`` (row ``i``'s
        share of its weight) when ``q_alpha > 0``; (0,) otherwise.
    q_alpha : float
        The debiasing weight of ``q`` (:func:`sampled_gradient_q`; 0: :func:`sampled_gradient`).
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    edge_rate: np.ndarray
    edge_phase: np.ndarray
    row_mass: np.ndarray
    neg_scale: np.ndarray
    label_class: np.ndarray
    class_ptr: np.ndarray
    class_members: np.ndarray
    class_position: np.ndarray
    label_scale: np.ndarray
    n_label: int
    n_neg: int
    estimator: int
    code: int
    p0: float
    p1: float
    alpha: float
    p_scale: float
    clip: float
    edge_share: np.ndarray
    q_alpha: float


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


#: mixed into an epoch's seed for its negative pool (a stream apart from the anchors')
POOL_KEY = 0x27D4EB2F
#: From this many points the CPU engine draws each epoch's negatives from a pool of
#: ``POOL_SIZE`` rows of ``y`` copied to a contiguous buffer (:func:`fill_pool`): 512 KiB in
#: 2-D, resident in a core's L2 cache, where uniform draws over all N rows each miss the
#: cache. Every negative is still uniform on the other points (over the pools); one epoch's
#: repulsion is then estimated from ``POOL_SIZE`` points of the layout instead of all N.
#: With the per-block kernel the pool pays from about 100k points (one evaluation on the 1M
#: generator in RCM order 0.074 s against 0.130 s uniform, at 200k 0.0145 against 0.0198 s);
#: from 200k, where a pool holds a third of the points or fewer, UMAP's refinement took 9-15%
#: less time on the 1M generator and mnist1d (1M and 300k) with quality within the seeds'
#: spread (docs/scaling.md).
POOL_SIZE = 65_536
POOL_MIN_SAMPLES = 200_000
#: no pool: negatives uniform over all rows (the arguments' defaults)
NO_POOL = np.zeros(0, np.int64)
NO_POOL_Y = np.zeros((0, 2), np.float32)


@njit(inline="always", cache=True)
def gather_pool_run(y, i, base, m, pool_rows, pool_y, part, diffs, start, rows):
    """The ``m`` negatives of anchor ``i`` (``base`` = its hashed seed) from the epoch's pool,
    as pairs ``start <= t < start + m``: their differences ``diffs[:, t] = y_i - y_row`` (read
    from ``pool_y``) and (``rows``, or whenever the slow path runs) their rows ``part[t]``.

    The slots are consecutive (wrapping) from one uniform first slot, each moved on to the
    next slot while its row is ``i`` (a pool from :func:`fill_pool` holds two distinct rows,
    so this ends). The pool's rows are independent and uniform, so over the pool's draw each
    negative is uniform on the ``N - 1`` other points however the slots are chosen; a run
    takes one hash per anchor and reads ``pool_y`` contiguously (a UMAP evaluation at 10M
    points took 0.72 s against 0.92 s with one hashed slot per negative, in a prototype of
    :func:`sampled_gradient`). In 2-D the run is read in one pass that looks up a slot's row
    only when its difference is zero (the anchor itself or a duplicate point): a pass reading
    every slot's row made a 1M evaluation 0.083-0.085 s against 0.076-0.078 s.
    """
    p = pool_rows.shape[0]
    s = (hash32(base + GOLDEN) * p) >> 32
    if s + m <= p and diffs.shape[0] == 2:  # the usual case: one contiguous pass, no wrap
        y0 = y[i, 0]
        y1 = y[i, 1]
        hit = False
        for t in range(m):
            a0 = y0 - pool_y[s + t, 0]
            a1 = y1 - pool_y[s + t, 1]
            diffs[0, start + t] = a0
            diffs[1, start + t] = a1
            if a0 == 0 and a1 == 0 and pool_rows[s + t] == i:  # i itself, or a duplicate
                hit = True
        if not hit:
            if rows:
                for t in range(m):
                    part[start + t] = pool_rows[s + t]
            return
    for t in range(start, start + m):  # a slot holds i, the run wraps, or d != 2
        r = s
        while pool_rows[r] == i:
            r = r + 1 if r + 1 < p else 0
        part[t] = pool_rows[r]
        gather_diff(y, i, pool_y, r, t, diffs)
        s = s + 1 if s + 1 < p else 0


@njit(parallel=True, cache=True)
def fill_pool(y, seed, pool_rows, pool_y):
    """The epoch's negative pool (P >= 2 slots, N >= 2 points): ``pool_rows`` (P,) uniform on
    the N rows, independently (hashed from ``seed``; the second made to differ from the first
    if it equals it), and ``pool_y`` (P, d) their rows of ``y``, contiguous."""
    n = y.shape[0]
    key = hash32(seed ^ POOL_KEY)
    for s in prange(pool_rows.shape[0]):
        pool_rows[s] = (hash32(key + (s + 1) * GOLDEN) * n) >> 32
    if pool_rows[1] == pool_rows[0]:
        pool_rows[1] = pool_rows[0] + 1 if pool_rows[0] + 1 < n else 0
    for s in prange(pool_rows.shape[0]):
        for c in range(y.shape[1]):
            pool_y[s, c] = y[pool_rows[s], c]


#: mixed into an anchor's hashed seed for its same-class partners (a stream apart from its
#: negatives)
LABEL_KEY = 0x5BD1E995


@njit(inline="always", cache=True)
def label_partner(arrays, base, t, i):
    """The ``t``-th same-class partner of anchor ``i`` (``base`` = its hashed seed, as for the
    negatives): uniform on the other members of its class (``arrays.label_class[i] >= 0``)."""
    c = arrays.label_class[i]
    start = arrays.class_ptr[c]
    h = hash32(hash32(base ^ LABEL_KEY) + (t + 1) * GOLDEN)
    r = (h * (arrays.class_ptr[c + 1] - start - 1)) >> 32
    return arrays.class_members[start + r + (r >= arrays.class_position[i])]


ONE = np.float32(1.0)
ZERO = np.float32(0.0)
HALF = np.float32(0.5)
EPS_NEG = np.float32(0.001)


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE-754 bits of a float32 as an int32 (a bit cast, no conversion)."""
    return types.int32(types.float32), lambda ctx, builder, sig, args: builder.bitcast(
        args[0], ir.IntType(32))


@intrinsic
def _bits_float(typingctx, x):
    """The float32 whose IEEE-754 bits are the int32 ``x``."""
    return types.float32(types.int32), lambda ctx, builder, sig, args: builder.bitcast(
        args[0], ir.FloatType())


# Least-squares polynomials on 2000 Chebyshev nodes of [0, 1] (numpy ``polyfit``, rounded to
# float32): log2(1 + m) of degree 6 (abs. error 2.1e-6) and 2^f of degree 5 (abs. error 1.1e-7)
LOG2_1P = tuple(np.float32(c) for c in (
    2.1237408418528503e-06, 1.4424753189086914, -0.7175578474998474, 0.45552709698677063,
    -0.27462324500083923, 0.11929823458194733, -0.025123203173279762))
EXP2 = tuple(np.float32(c) for c in (
    0.9999998807907104, 0.6931546330451965, 0.24014076590538025, 0.055863283574581146,
    0.00894621480256319, 0.0018951073288917542))
TINY = np.float32(1.1754944e-38)  # the smallest normal float32
EXP_LIMIT = np.float32(126.0)
LN2 = np.float32(np.log(2.0))
LOSS_FLOOR = np.float32(1e-12)


@njit(inline="always", cache=True)
def fast_log2(x):
    """``log2 x`` for float32 ``x > 0`` from the exponent bits and a polynomial in the mantissa
    (absolute error 2.1e-6; ``x`` floored at the smallest normal float32). No libm call, so
    loops over it vectorise (libm's ``logf``/``powf`` do not)."""
    bits = _float_bits(max(x, TINY))
    m = _bits_float((bits & 0x007FFFFF) | 0x3F800000) - ONE  # mantissa - 1, in [0, 1)
    c = LOG2_1P
    return (np.float32((bits >> 23) - 127) + c[0]
            + m * (c[1] + m * (c[2] + m * (c[3] + m * (c[4] + m * (c[5] + m * c[6]))))))


@njit(inline="always", cache=True)
def fast_ln(x):
    """The natural log ``ln 2 * log2 x`` by :func:`fast_log2`."""
    return LN2 * fast_log2(x)


@njit(inline="always", cache=True)
def fast_pow(x, p):
    """``x ** p`` for float32 ``x >= 0`` as ``2^(p log2 x)`` (:func:`fast_log2`, then a
    polynomial for the fraction): relative error below 2e-5. ``p log2 x`` is clamped to
    [-126, 126], so the result is always a finite positive float32."""
    y = min(max(p * fast_log2(x), -EXP_LIMIT), EXP_LIMIT)
    n = np.floor(y)
    f = y - n
    e = EXP2
    frac = e[0] + f * (e[1] + f * (e[2] + f * (e[3] + f * (e[4] + f * e[5]))))
    return _bits_float(_float_bits(frac) + (np.int32(n) << 23))


@njit(inline="always", cache=True)
def kernel_and_slope(code, d2, p0, p1):
    """``(k(d2), g(d2) = d log k / d d2)`` for the built-in kernels (see kernels.py), in the
    precision of ``d2`` (float32 in the engine: half the cost of float64 ``pow``/``exp``)."""
    if code == STUDENT:
        if p0 == ONE:
            k = ONE / (ONE + d2)
            return k, -k
        return fast_pow(ONE + d2 / p0, -HALF * (p0 + ONE)), -HALF * (p0 + ONE) / (p0 + d2)
    if code == GAUSSIAN:
        return np.exp(-d2 * p0), -p0
    if code == SCALED_STUDENT:  # (1 + p1 d2)^(-(p0+1)/2), the Student-t on the sphere
        return (fast_pow(ONE + p1 * d2, -HALF * (p0 + ONE)),
                -HALF * (p0 + ONE) * p1 / (ONE + p1 * d2))
    # UMAP: 1 / (1 + a d2^b)
    if d2 <= 0.0:
        return ONE, d2 * 0
    d2b = fast_pow(d2, p1)
    k = ONE / (ONE + p0 * d2b)
    return k, -p0 * p1 * d2b * k / d2


@njit(inline="always", cache=True)
def log_kernel(code, d2, p0, p1):
    """``log k(d2)`` for the loss estimate, in float32 by :func:`fast_log2` (libm's float64
    ``log1p`` doubled the cost of the epochs that report the loss)."""
    if code == STUDENT:
        return -HALF * (p0 + ONE) * fast_ln(ONE + d2 / p0)
    if code == GAUSSIAN:
        return -d2 * p0
    if code == SCALED_STUDENT:
        return -HALF * (p0 + ONE) * fast_ln(ONE + p1 * d2)
    if d2 <= 0.0:
        return d2 * 0
    return -fast_ln(ONE + p0 * fast_pow(d2, p1))


@njit(inline="always", cache=True)
def log_kernels(code, d2, out, count, p0, p1, start=0):
    """``out[t] = log_kernel(d2[t])`` for ``start <= t < count``: one loop per kernel, so that LLVM
    vectorises it (as :func:`kernels_and_slopes`; the code's branch inside the loop made a
    loss epoch at 10M points cost 2.2x a plain one, 1.6x now)."""
    if code == UMAP:
        for t in range(start, count):
            out[t] = log_kernel(UMAP, d2[t], p0, p1)
    elif code == STUDENT:
        for t in range(start, count):
            out[t] = log_kernel(STUDENT, d2[t], p0, p1)
    elif code == SCALED_STUDENT:
        for t in range(start, count):
            out[t] = log_kernel(SCALED_STUDENT, d2[t], p0, p1)
    else:
        for t in range(start, count):
            out[t] = log_kernel(GAUSSIAN, d2[t], p0, p1)


@njit(inline="always", cache=True)
def dof_ratio(code, d2, p0, p1):
    """``u(d2) = (d log k / d nu) / (d log k / d d2)`` of the Student-t kernels (``nu = p0``;
    :mod:`icongraph.kernels`): ``(1 + x) log1p(x) / (s (nu + 1)) - d2 / nu`` with ``x = s d2``,
    ``s = 1 / nu`` (``STUDENT``) or ``p1 = 1 / (nu tau)`` (``SCALED_STUDENT``)."""
    s = ONE / p0 if code == STUDENT else p1
    x = s * d2
    return (ONE + x) * np.log1p(x) / (s * (p0 + ONE)) - d2 / p0


@njit(inline="always", cache=True)
def neg_repulsion(k, g):
    """``d/d d2 [-log(1 - k)] = k g / (1 - k)`` (``g = d log k / d d2``), regularised."""
    return k * g / max(ONE - k, EPS_NEG)


@njit(inline="always", cache=True)
def umap_repulsion(d2, k, b):
    """:func:`neg_repulsion` for UMAP's kernel in umap-learn's regularised form
    ``-b / ((0.001 + d2)(1 + a d2^b))`` (``k = 1 / (1 + a d2^b)``)."""
    return -b * k / (EPS_NEG + d2)


@njit(inline="always", cache=True)
def neg_coefs(code, d2, k, g, lo, hi, b, coef):
    """The NEG estimator's force coefficients of negatives ``lo <= t < hi``: ``coef[t] = 2
    d/dd2 [-log(1 - k_t)]`` (:func:`umap_repulsion` for UMAP's kernel, else
    :func:`neg_repulsion`). One loop per form: a branch inside stops vectorising."""
    two = np.float32(2.0)
    if code == UMAP:
        for t in range(lo, hi):
            coef[t] = two * umap_repulsion(d2[t], k[t], b)
    else:
        for t in range(lo, hi):
            coef[t] = two * neg_repulsion(k[t], g[t])


@njit(inline="always", cache=True)
def neg_sums(k, lo, hi, scale, with_loss, wts, loss):
    """One anchor's NEG negatives ``lo <= t < hi``: ``wts[t] = scale`` (the anchor's ``r_i``);
    returns ``(sum_t k_t, loss)`` with ``-scale sum_t log(1 - k_t)`` added to ``loss`` when
    ``with_loss``."""
    z = 0.0
    for t in range(lo, hi):
        z += k[t]
        wts[t] = scale
    if with_loss:
        for t in range(lo, hi):
            loss -= scale * fast_ln(max(ONE - k[t], LOSS_FLOOR))
    return z, loss


@njit(inline="always", cache=True)
def neg_forces(grad, i, diffs, coef, k, lo, hi, scale, clip):
    """One anchor's NEG negatives ``lo <= t < hi`` in one pass: adds ``scale sum_t
    clip(coef[t] diffs[:, t])`` to ``grad[i]`` (``scale`` the anchor's ``r_i``) and returns
    ``sum_t k_t`` (:func:`add_forces` with every weight ``scale``; 2-D unrolled)."""
    z = ZERO
    if diffs.shape[0] == 2:
        t0 = ZERO
        t1 = ZERO
        for t in range(lo, hi):
            z += k[t]
            t0 += min(max(coef[t] * diffs[0, t], -clip), clip)
            t1 += min(max(coef[t] * diffs[1, t], -clip), clip)
        grad[i, 0] += scale * t0
        grad[i, 1] += scale * t1
        return z
    for t in range(lo, hi):
        z += k[t]
    for c in range(diffs.shape[0]):
        total = ZERO
        for t in range(lo, hi):
            total += min(max(coef[t] * diffs[c, t], -clip), clip)
        grad[i, c] += scale * total
    return z


@njit(inline="always", cache=True)
def neg_negatives(code, d2, k, g, lo, hi, b, scale, with_loss, coef, wts, loss):
    """:func:`neg_coefs` then :func:`neg_sums` for one anchor's negatives ``lo <= t < hi``
    (new points, ``_transform_engine``)."""
    neg_coefs(code, d2, k, g, lo, hi, b, coef)
    return neg_sums(k, lo, hi, scale, with_loss, wts, loss)


@njit(inline="always", cache=True)
def add_forces(grad, i, diffs, coef, wts, count, clip, start=0, accumulate=False):
    """``grad[i] = sum_t wts[t] clip(coef[t] diffs[:, t])`` over ``start <= t < count``
    (``accumulate``: added to ``grad[i]``), ``diffs[c, t] = y_ic - y_jc`` gathered once
    (clip per coordinate; inf disables): one contiguous loop, no second gather; 2-D (the
    usual case) unrolled, as a loop over a run-time dimension is not vectorised. (Four
    interleaved partial sums made an evaluation slower, not faster.)"""
    if diffs.shape[0] == 2:
        t0 = ZERO  # widened to y's dtype by numba's type unification
        t1 = ZERO
        for t in range(start, count):
            t0 += wts[t] * min(max(coef[t] * diffs[0, t], -clip), clip)
            t1 += wts[t] * min(max(coef[t] * diffs[1, t], -clip), clip)
        if accumulate:
            t0 += grad[i, 0]
            t1 += grad[i, 1]
        grad[i, 0] = t0
        grad[i, 1] = t1
        return
    for c in range(diffs.shape[0]):
        total = ZERO
        for t in range(start, count):
            total += wts[t] * min(max(coef[t] * diffs[c, t], -clip), clip)
        grad[i, c] = grad[i, c] + total if accumulate else total


@njit(inline="always", cache=True)
def gather_edges(y, i, indptr, indices, weights, edge_rate, edge_phase, epoch, diffs, wts, end):
    """Anchor ``i``'s edges (those of this epoch under an edge schedule ``edge_rate`` of E
    entries, :func:`edge_active`) as pairs from ``end`` on: ``diffs[:, t] = y_i - y_j``,
    ``wts[t]`` the edge's weight. Returns the end of them. Without a schedule no edge is
    tested, and in 2-D the anchor's coordinates stay in registers (a store to ``diffs`` may
    alias ``y`` for LLVM, so it reloads them otherwise): on the 1M generator the block's
    gather alone took 0.036-0.037 s with both against 0.044 s with neither (medians of 7)."""
    if edge_rate.shape[0] > 0:
        for e in range(indptr[i], indptr[i + 1]):
            if edge_active(edge_rate[e], edge_phase[e], epoch):
                gather_diff(y, i, y, indices[e], end, diffs)
                wts[end] = weights[e]
                end += 1
        return end
    if diffs.shape[0] == 2:
        y0 = y[i, 0]
        y1 = y[i, 1]
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            diffs[0, end] = y0 - y[j, 0]
            diffs[1, end] = y1 - y[j, 1]
            wts[end] = weights[e]
            end += 1
        return end
    for e in range(indptr[i], indptr[i + 1]):
        gather_diff(y, i, y, indices[e], end, diffs)
        wts[end] = weights[e]
        end += 1
    return end


@njit(inline="always", cache=True)
def gather_diff(y, i, partners, j, t, diffs):
    """``diffs[:, t] = y_i - partners_j`` (2-D unrolled)."""
    if diffs.shape[0] == 2:
        diffs[0, t] = y[i, 0] - partners[j, 0]
        diffs[1, t] = y[i, 1] - partners[j, 1]
        return
    for c in range(diffs.shape[0]):
        diffs[c, t] = y[i, c] - partners[j, c]


@njit(inline="always", cache=True)
def squared_norms(diffs, d2, start, count):
    """``d2[t] = |diffs[:, t]|^2`` for ``start <= t < count``, vectorised (2-D unrolled)."""
    if diffs.shape[0] == 2:
        for t in range(start, count):
            d2[t] = diffs[0, t] * diffs[0, t] + diffs[1, t] * diffs[1, t]
        return
    for t in range(start, count):
        d2[t] = ZERO
    for c in range(diffs.shape[0]):
        for t in range(start, count):
            d2[t] += diffs[c, t] * diffs[c, t]


@njit(inline="always", cache=True)
def gather_diffs(y, i, part, count, diffs, d2):
    """``diffs[c, t] = y_ic - y_part[t]c`` and ``d2[t] = |y_i - y_part[t]|^2`` for ``t < count``
    (:func:`gather_pairs` with the partners in ``y`` itself)."""
    gather_pairs(y, i, y, part, count, diffs, d2)


@njit(inline="always", cache=True)
def gather_pairs(y, i, partners, part, count, diffs, d2, start=0):
    """``diffs[c, t] = y_ic - partners_part[t]c`` and ``d2[t]`` its squared norm for
    ``start <= t < count`` (one gather of each partner's row; 2-D unrolled)."""
    if y.shape[1] == 2:
        y0 = y[i, 0]
        y1 = y[i, 1]
        for t in range(start, count):
            j = part[t]
            a0 = y0 - partners[j, 0]
            a1 = y1 - partners[j, 1]
            diffs[0, t] = a0
            diffs[1, t] = a1
            d2[t] = a0 * a0 + a1 * a1
        return
    for t in range(start, count):
        j = part[t]
        total = y[i, 0] - y[i, 0]
        for c in range(y.shape[1]):
            diff = y[i, c] - partners[j, c]
            diffs[c, t] = diff
            total += diff * diff
        d2[t] = total


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


@njit(inline="always", cache=True)
def kernels_and_slopes(code, d2, k, g, count, p0, p1, start=0):
    """``k[t], g[t] = kernel_and_slope(d2[t])`` for ``start <= t < count``: a loop over a contiguous
    buffer with no gathers and no libm calls, so LLVM vectorises it. Gathering first and
    evaluating the kernel on the buffer made a UMAP epoch at 100k 1.45x faster than evaluating
    it between gathers. One loop per kernel: a branch on ``code`` inside the loop kept LLVM
    from vectorising it (hoisting it, with the 2-D paths of :func:`gather_diffs` and
    :func:`add_forces`, made a UMAP epoch on mnist1d at 70k 2.5x faster)."""
    if code == UMAP:
        for t in range(start, count):
            k[t], g[t] = kernel_and_slope(UMAP, d2[t], p0, p1)
    elif code == STUDENT:
        for t in range(start, count):
            k[t], g[t] = kernel_and_slope(STUDENT, d2[t], p0, p1)
    elif code == SCALED_STUDENT:
        for t in range(start, count):
            k[t], g[t] = kernel_and_slope(SCALED_STUDENT, d2[t], p0, p1)
    else:
        for t in range(start, count):
            k[t], g[t] = kernel_and_slope(GAUSSIAN, d2[t], p0, p1)


#: anchors per parallel task; each task allocates its own small buffers once
BLOCK = 512
#: :func:`sampled_gradient`'s pairs per parallel task, about: a block takes as many anchors
#: (at most ``BLOCK``) as have this many pairs on average, so that its loops over all the
#: block's pairs are long enough to run in vector registers
BLOCK_PAIRS = 8192

#: How the gradient kernels compile. fastmath without the no-inf/no-NaN assumptions (``clip``
#: is inf when clipping is off). ``error_model="numpy"``: a float division by zero gives inf
#: or NaN, as in numpy, where numba's default (Python's) checks every divisor and raises
#: ``ZeroDivisionError``. That check was a branch in every loop with a division, and it kept
#: LLVM from vectorising them: the UMAP kernel's loop (:func:`kernels_and_slopes`) ran one
#: pair at a time (scalar ``divss``), about 7.5 ns a pair. The divisors are positive
#: parameters, floored sums (``zsum`` at 1e-12) or guarded (``d2 <= 0``); the one that can
#: reach 0, :func:`q_ratio`'s when every kernel value underflows, now gives NaN instead of
#: raising, and a non-finite loss or embedding stops the fit with a ``DivergenceError``
#: (:class:`~icongraph.loop.FiniteGuard`, at every loss epoch and at the end).
KERNEL_OPTIONS = {"parallel": True, "fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"},
                  "error_model": "numpy", "cache": True}


@njit(**KERNEL_OPTIONS)
def sampled_gradient(y, arrays, epoch, exaggeration, seed, z_prev, global_scale, with_loss,
                     grad, zsum, loss_rows, dof_rows, lo=0, hi=-1, pool_rows=NO_POOL,
                     pool_y=NO_POOL_Y):
    """Fill ``grad`` (N, d), ``zsum`` (N,) = sum of k over each anchor's negatives, (when
    ``with_loss``) ``loss_rows`` (N,) with the attraction / NEG part of the loss estimate, and
    (when ``dof_rows`` has N entries) the degrees of freedom's gradient per anchor.

    A parallel task takes a block of anchors (:data:`BLOCK_PAIRS`) and lays their pairs out in
    one buffer by kind: every anchor's attracting pairs (edges, then same-class partners), then
    every anchor's ``m`` negatives, then (``alpha > 0``) the negatives again for the uniform
    part of ``p~``. Each pair's difference is gathered once; squared distances, the kernel,
    its log (loss epochs) and the force coefficients are evaluated in loops over all the
    block's pairs of a kind, which LLVM vectorises; per anchor, the weights that depend on it
    are set and its forces summed per coordinate in a register (:func:`add_forces`,
    :func:`neg_forces`). The same loops over one anchor's 20-30 pairs at a time mostly ran
    their scalar remainder after the vector loop's set-up: a UMAP evaluation on the 10M
    generator took 1.23 s that way against 0.83 s per block (the embedding of a finished fit,
    pooled negatives, medians of 10 alternated; 1.69-1.84 s against 1.15-1.18 s with the
    loss). A row depends only on its anchor, never on the block, so shards and thread counts
    give the same rows.

    Parameters
    ----------
    y : np.ndarray
        (N, d) float32, the embedding.
    arrays : EngineArrays
        The fit's fixed arrays and scalars.
    epoch : int
        The epoch (the edge schedule).
    exaggeration : float
        Multiplies the attraction.
    seed : int
        The epoch's seed, hashed into the negatives.
    z_prev : np.ndarray
        (N,) float32, the previous evaluation's ``zsum`` (the per-anchor normalisers).
    global_scale : float
        The global estimator's pair coefficient ``2 M / sum_i zsum_i``.
    with_loss : bool
        Whether to fill ``loss_rows``.
    grad, zsum, loss_rows : np.ndarray
        (N, d), (N,), (N,) float32 outputs, overwritten.
    dof_rows : np.ndarray
        (N,) float32, overwritten with ``sum_t w_t c_t u(d2_t)`` over the anchor's pairs
        (:func:`dof_ratio`; a NEG negative, which moves its anchor only, counts twice), so
        that ``dL/dnu = 1/4 sum_i dof_rows[i]`` (forces unclipped); or (0,): not computed.
    lo, hi : int
        The anchors ``lo <= i < hi`` whose rows are filled (a rank's shard,
        :mod:`icongraph.distributed`; ``hi < 0``: up to N); the other rows are left as they
        are.
        A row depends only on ``y``, ``z_prev`` and the anchor, so shards give the rows of
        the whole.
    pool_rows, pool_y : np.ndarray
        (P,) int64 and (P, d) float32, the epoch's negative pool from :func:`fill_pool` (the
        same ``seed``): each anchor's negatives are a run of its slots (:func:`gather_pool_run`), their
        coordinates are read from ``pool_y``; (0,) (the default): negatives uniform over
        all rows (:func:`negative_index`). Not with exact negatives (``n_neg <= 0``).
    """
    indptr, indices, weights = arrays.indptr, arrays.indices, arrays.weights
    edge_rate, edge_phase = arrays.edge_rate, arrays.edge_phase
    learn_dof = dof_rows.shape[0] > 0
    neg_scale = arrays.neg_scale
    n_neg, estimator, code = arrays.n_neg, arrays.estimator, arrays.code
    p0, p1, alpha, clip = arrays.p0, arrays.p1, arrays.alpha, arrays.clip
    uniform = np.float32(alpha * arrays.p_scale / (n_neg if n_neg > 0 else y.shape[0] - 1))
    n = y.shape[0]
    exact = n_neg <= 0
    m = n - 1 if exact else n_neg
    a = np.float32(p0)
    b = np.float32(p1)
    clip32 = np.float32(clip)
    two = np.float32(2.0)
    exag2 = np.float32(2.0 * exaggeration)
    global32 = np.float32(global_scale)
    neg_factor = np.float32(2.0 if estimator == NEG else 1.0)  # a NEG negative moves i only
    rows = estimator == PER_ANCHOR or alpha > 0.0  # whether the negatives' rows are read
    row_mass, label_class, label_scale = arrays.row_mass, arrays.label_class, arrays.label_scale
    n_label = arrays.n_label
    per_label = np.float32(1.0 / max(n_label, 1))
    stop = n if hi < 0 else hi
    copies = 2 if alpha > 0.0 else 1  # the negatives, and again for the uniform part of p~
    mean_pairs = indptr[n] // max(n, 1) + n_label + copies * m + 1
    size = max(1, min(BLOCK, BLOCK_PAIRS // mean_pairs))  # anchors per block
    pool = pool_rows.shape[0]
    for block in prange((stop - lo + size - 1) // size):
        first = lo + block * size
        last = min(stop, first + size)
        nb = last - first
        neg0 = indptr[last] - indptr[first] + nb * n_label  # the negatives' section
        neg_end = neg0 + nb * m
        shift = neg_end - neg0  # from a negative to its copy for the uniform part
        width = neg0 + copies * nb * m
        part = np.empty(width, np.int64)  # a negative's partner j (its row of y)
        d2 = np.empty(width, np.float32)
        log_k = np.empty(width, np.float32)  # log k of each pair (the loss epochs)
        k = np.empty(width, np.float32)
        g = np.empty(width, np.float32)
        coef = np.empty(width, np.float32)  # force = wts * clip(coef * (y_i - y_j))
        wts = np.empty(width, np.float32)
        diffs = np.empty((y.shape[1], width), y.dtype)  # y_i - y_j of each pair, per coordinate
        att = np.empty(nb + 1, np.int64)  # anchor r's attracting pairs: att[r] <= t < att[r + 1]
        edges_end = np.empty(nb, np.int64)  # ... its edges first, up to edges_end[r]
        end = 0
        for i in range(first, last):  # gather every pair of the block
            r = i - first
            att[r] = end
            end = gather_edges(y, i, indptr, indices, weights, edge_rate, edge_phase, epoch,
                               diffs, wts, end)
            edges_end[r] = end
            base = hash32(seed ^ hash32(i))
            if n_label > 0 and label_class[i] >= 0:
                lab_i = label_scale[i] * per_label
                m_i = row_mass[i]
                for t in range(end, end + n_label):
                    j = label_partner(arrays, base, t - end, i)
                    gather_diff(y, i, y, j, t, diffs)
                    wts[t] = lab_i * (m_i + row_mass[j])
                end += n_label
            o = neg0 + r * m
            if pool > 0:
                gather_pool_run(y, i, base, m, pool_rows, pool_y, part, diffs, o, rows)
            else:
                for t in range(m):
                    j = (t + (t >= i)) if exact else negative_index(base, t, i, n)
                    part[o + t] = j
                    gather_diff(y, i, y, j, o + t, diffs)
        att[nb] = end
        # the block's kernels and coefficients, one vectorised loop per kind of pair
        squared_norms(diffs, d2, 0, end)
        squared_norms(diffs, d2, neg0, neg_end)
        kernels_and_slopes(code, d2, k, g, end, a, b)
        kernels_and_slopes(code, d2, k, g, neg_end, a, b, neg0)
        for t in range(end):
            coef[t] = -exag2 * g[t]
        if with_loss:
            log_kernels(code, d2, log_k, end, a, b)
            if alpha > 0.0:
                log_kernels(code, d2, log_k, neg_end, a, b, neg0)
        if estimator == NEG:
            neg_coefs(code, d2, k, g, neg0, neg_end, b, coef)
        elif estimator == PER_ANCHOR:
            for t in range(neg0, neg_end):
                coef[t] = two * g[t]
        else:  # GLOBAL
            for t in range(neg0, neg_end):
                coef[t] = two * k[t] * g[t]
                wts[t] = global32
        if alpha > 0.0:  # the uniform part of the debiased p: the negatives, attracting
            for t in range(neg0, neg_end):
                coef[t + shift] = -exag2 * g[t]
                d2[t + shift] = d2[t]
            for c in range(y.shape[1]):
                for t in range(neg0, neg_end):
                    diffs[c, t + shift] = diffs[c, t]
        for i in range(first, last):  # each anchor's weights, loss and forces
            r = i - first
            m_i = row_mass[i]
            o = neg0 + r * m
            loss = 0.0
            if with_loss:
                for t in range(att[r], edges_end[r]):
                    loss -= 0.5 * wts[t] * log_k[t]
                if att[r + 1] > edges_end[r]:
                    lab_loss = label_scale[i] * per_label * m_i
                    for t in range(edges_end[r], att[r + 1]):
                        loss -= lab_loss * log_k[t]
            add_forces(grad, i, diffs, coef, wts, att[r + 1], clip32, att[r])
            if estimator == NEG:
                s_i = neg_scale[i]
                z = neg_forces(grad, i, diffs, coef, k, o, o + m, s_i, clip32)
                if with_loss:
                    for t in range(o, o + m):
                        loss -= s_i * fast_ln(max(ONE - k[t], LOSS_FLOOR))
                if learn_dof:
                    for t in range(o, o + m):
                        wts[t] = s_i
            else:
                z = 0.0
                for t in range(o, o + m):
                    z += k[t]
                if estimator == PER_ANCHOR:
                    # q-shares k/Z of both directions; each capped at 1 as a true q(j|i) is
                    for t in range(o, o + m):
                        j = part[t]
                        wts[t] = (m_i * min(k[t] / z_prev[i], ONE)
                                  + row_mass[j] * min(k[t] / z_prev[j], ONE))
                add_forces(grad, i, diffs, coef, wts, o + m, clip32, o, True)
            if alpha > 0.0:
                for t in range(o, o + m):
                    wts[t + shift] = uniform * (m_i + row_mass[part[t]])
                if with_loss:
                    for t in range(o, o + m):
                        loss -= uniform * m_i * log_k[t]
                add_forces(grad, i, diffs, coef, wts, o + shift + m, clip32, o + shift, True)
            zsum[i] = max(z, 1e-12)  # a floor keeps 1/Z finite when every k underflows
            loss_rows[i] = loss
            if learn_dof:
                acc = 0.0
                for t in range(att[r], att[r + 1]):
                    acc += wts[t] * coef[t] * dof_ratio(code, d2[t], a, b)
                for t in range(o, o + m):
                    acc += neg_factor * wts[t] * coef[t] * dof_ratio(code, d2[t], a, b)
                if alpha > 0.0:
                    for t in range(o + shift, o + shift + m):
                        acc += wts[t] * coef[t] * dof_ratio(code, d2[t], a, b)
                dof_rows[i] = acc


@njit(inline="always", cache=True)
def q_ratio(k, level, keep, mix):
    """``rho = (1 - a_q) q / q~ = keep k / (keep k + mix level)`` (``keep = 1 - a_q``,
    ``mix = a_q``, ``level = Z_i / (N - 1)`` per anchor or ``Z / (N (N - 1))`` global): the
    share of the debiased ``q~`` that moves with the kernel, in (0, 1]."""
    return keep * k / (keep * k + mix * level)


@njit(**KERNEL_OPTIONS)
def sampled_gradient_q(y, arrays, epoch, exaggeration, seed, z_prev, s_prev, q_level,
                       global_scale, with_loss, grad, zsum, s_rows, loss_rows, dof_rows):
    """:func:`sampled_gradient` with the debiasing of ``q`` (``arrays.q_alpha = a_q > 0``;
    the KL estimators only)::

        q~_ij = (1 - a_q) q_ij + a_q U_ij,   L = -sum_ij p~_ij log q~_ij (+ const)
        dL = -sum_ij p~_ij rho_ij d log k_ij + sum_i S_i sum_l q_il d log k_il

    with ``rho_ij = (1 - a_q) q_ij / q~_ij`` (:func:`q_ratio`) and ``S_i = sum_j p~_ij
    rho_ij``; ``U`` uniform on the N - 1 other points per anchor (``q_ij = k_ij / Z_i``) or on
    the ``N (N - 1)`` pairs (global, ``q_ij = k_ij / Z``, ``S = sum_i S_i``). Every attracting
    pair (edge, same-class partner, uniform part of ``p~``) is weighted by ``rho`` of each
    direction, row ``i``'s part of an edge by ``edge_share``; the normaliser's weight ``m_i``
    becomes ``S_i``. Per anchor ``rho_ij`` reads ``Z_i / (N - 1) ~ z_prev[i] / m`` (lagged,
    as the q-shares), the other direction ``z_prev[j]`` and ``s_prev[j]`` (``S_j`` of the
    previous evaluation); ``S_i`` is summed over the anchor's own pairs before its negatives
    are weighted. Global: ``q_level`` is the lagged ``Z / (N (N - 1))`` and ``global_scale``
    ``2 S / sum_i zsum_i`` (:meth:`~icongraph.objective.Objective.q_state`). Fills ``s_rows``
    (N,) with this evaluation's ``S_i`` (global: row ``i``'s part of ``S``) and adds
    ``p~_ij log(rho_ij / (1 - a_q))`` per pair to ``loss_rows``, so that the loss estimate
    stays ``constant + sum(loss_rows) + normaliser terms``. Each thread writes only its
    anchors' rows: deterministic at any thread count. Other arguments as
    :func:`sampled_gradient`.
    """
    indptr, indices, weights = arrays.indptr, arrays.indices, arrays.weights
    learn_dof = dof_rows.shape[0] > 0
    edge_rate, edge_phase, share = arrays.edge_rate, arrays.edge_phase, arrays.edge_share
    n_neg, estimator, code = arrays.n_neg, arrays.estimator, arrays.code
    p0, p1, alpha, clip = arrays.p0, arrays.p1, arrays.alpha, arrays.clip
    n = y.shape[0]
    exact = n_neg <= 0
    m = n - 1 if exact else n_neg
    per_anchor = estimator == PER_ANCHOR
    scheduled = edge_rate.shape[0] > 0
    keep = np.float32(1.0 - arrays.q_alpha)
    mix = np.float32(arrays.q_alpha)
    log_keep = np.float32(np.log(1.0 - arrays.q_alpha))
    inv_m = np.float32(1.0 / m)
    level_global = np.float32(q_level)
    uniform = np.float32(alpha / m)
    a = np.float32(p0)
    b = np.float32(p1)
    clip32 = np.float32(clip)
    two = np.float32(2.0)
    exag2 = np.float32(2.0 * exaggeration)
    row_mass, label_class, label_scale = arrays.row_mass, arrays.label_class, arrays.label_scale
    n_label = arrays.n_label
    per_label = np.float32(1.0 / max(n_label, 1))
    max_degree = np.max(np.diff(indptr)) if n > 0 else 0
    width = max_degree + n_label + (2 if alpha > 0.0 else 1) * m
    for block in prange((n + BLOCK - 1) // BLOCK):
        part = np.empty(width, np.int64)
        d2 = np.empty(width, np.float32)
        k = np.empty(width, np.float32)
        g = np.empty(width, np.float32)
        coef = np.empty(width, np.float32)
        wts = np.empty(width, np.float32)
        own = np.empty(width, np.float32)  # an edge's share of row i
        diffs = np.empty((y.shape[1], width), y.dtype)
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            n_pos = 0
            for e in range(indptr[i], indptr[i + 1]):
                if scheduled and not edge_active(edge_rate[e], edge_phase[e], epoch):
                    continue
                part[n_pos] = indices[e]
                wts[n_pos] = weights[e]
                own[n_pos] = share[e] if per_anchor else HALF
                n_pos += 1
            base = hash32(seed ^ hash32(i))
            m_i = row_mass[i]
            n_att = n_pos
            if n_label > 0 and label_class[i] >= 0:
                for t in range(n_label):
                    part[n_pos + t] = label_partner(arrays, base, t, i)
                n_att += n_label
            for t in range(m):
                part[n_att + t] = (t + (t >= i)) if exact else negative_index(base, t, i, n)
            count = n_att + m
            gather_diffs(y, i, part, count, diffs, d2)
            kernels_and_slopes(code, d2, k, g, count, a, b)
            level_i = z_prev[i] * inv_m if per_anchor else level_global
            loss = 0.0
            s_i = 0.0
            for t in range(n_pos):  # edges: row i's part p_ij, row j's part p_ji
                r_i = q_ratio(k[t], level_i, keep, mix)
                r_j = q_ratio(k[t], z_prev[part[t]] * inv_m, keep, mix) if per_anchor else r_i
                w_i = wts[t] * own[t]
                s_i += w_i * r_i
                if with_loss:
                    loss += (w_i * (fast_ln(max(r_i, TINY)) - log_keep)
                             - HALF * wts[t] * log_kernel(code, d2[t], a, b))
                wts[t] = w_i * r_i + (wts[t] - w_i) * r_j
                coef[t] = -exag2 * g[t]
            if n_att > n_pos:  # same-class partners, weight label_scale[i] (m_i + m_j) / L
                lab_i = label_scale[i] * per_label
                for t in range(n_pos, n_att):
                    j = part[t]
                    r_i = q_ratio(k[t], level_i, keep, mix)
                    r_j = q_ratio(k[t], z_prev[j] * inv_m, keep, mix) if per_anchor else r_i
                    s_i += lab_i * m_i * r_i
                    if with_loss:
                        loss += lab_i * m_i * (fast_ln(max(r_i, TINY)) - log_keep
                                               - log_kernel(code, d2[t], a, b))
                    wts[t] = lab_i * (m_i * r_i + row_mass[j] * r_j)
                    coef[t] = -exag2 * g[t]
            z = 0.0
            for t in range(n_att, count):
                z += k[t]
                if alpha > 0.0:  # uniform part of the debiased p, both directions
                    j = part[t]
                    r_i = q_ratio(k[t], level_i, keep, mix)
                    r_j = q_ratio(k[t], z_prev[j] * inv_m, keep, mix) if per_anchor else r_i
                    u = t + m
                    part[u] = j
                    for c in range(y.shape[1]):
                        diffs[c, u] = diffs[c, t]
                    coef[u] = -exag2 * g[t]
                    wts[u] = uniform * (m_i * r_i + row_mass[j] * r_j)
                    s_i += uniform * m_i * r_i
                    if with_loss:
                        loss += uniform * m_i * (fast_ln(max(r_i, TINY)) - log_keep
                                                 - log_kernel(code, d2[t], a, b))
            s32 = np.float32(s_i)
            for t in range(n_att, count):  # the normaliser, S_i in place of m_i
                j = part[t]
                if per_anchor:
                    coef[t] = two * g[t]
                    wts[t] = (s32 * min(k[t] / z_prev[i], ONE)
                              + s_prev[j] * min(k[t] / z_prev[j], ONE))
                else:
                    coef[t] = two * k[t] * g[t]
                    wts[t] = np.float32(global_scale)
            n_forces = count + m if alpha > 0.0 else count
            add_forces(grad, i, diffs, coef, wts, n_forces, clip32)
            zsum[i] = max(z, 1e-12)
            s_rows[i] = s32
            loss_rows[i] = loss
            if learn_dof:
                acc = 0.0
                for t in range(n_forces):
                    acc += wts[t] * coef[t] * dof_ratio(code, d2[t if t < count else t - m], a, b)
                dof_rows[i] = acc


@njit(**KERNEL_OPTIONS)
def edge_gradient(y, arrays, exaggeration, seed, with_loss, grad, loss_rows, shift, s_rows,
                  lo=0, hi=-1):
    """The attraction alone: ``grad[i] = sum_e -2 exaggeration w_e g(d2_e) (y_i - y_j)`` over
    the stored edges ``e = (i, j)`` of row ``i`` and (``with_loss``) ``loss_rows[i] =
    -1/2 sum_e w_e log k(d2_e)`` (the weights are symmetrised, so each pair counts once in
    the sum over rows), plus the same-class partners of a labelled anchor drawn as in
    :func:`sampled_gradient` (weight ``label_scale[i] (m_i + m_j) / n_label``, loss
    ``-label_scale[i] m_i / n_label log k``). Used with a normaliser summed elsewhere
    (:func:`all_pair_sums` or the grid). One pass per edge with the forces in registers;
    parallel over blocks of anchors, each thread owning its rows: no races.

    With the debiasing of ``q`` (``arrays.q_alpha = a_q > 0``, the joint ``q~ = k~ / Z`` with
    ``k~ = (1 - a_q) k + shift`` and ``shift = a_q Z / (N (N - 1))``) every pair is weighted
    by ``rho = (1 - a_q) k / k~``, its loss is ``-w log k~`` and ``s_rows[i]`` receives row
    ``i``'s part of ``S = sum_ij p~_ij rho_ij`` (the normaliser's weight in place of ``M``).

    Parameters
    ----------
    y : np.ndarray
        (N, d) float32, the embedding.
    arrays : EngineArrays
        The fit's fixed arrays (its edges, weights and kernel are read).
    exaggeration : float
        Multiplies the attraction.
    seed : int
        The epoch's seed, hashed into the same-class partners.
    with_loss : bool
        Whether to fill ``loss_rows``.
    grad, loss_rows : np.ndarray
        (N, d), (N,) float32 outputs, overwritten on the rows ``lo <= i < hi`` (``hi < 0``:
        up to N; a rank's shard, :mod:`icongraph.distributed`).
    shift : float
        ``a_q Z / (N (N - 1))`` of the current layout (unused when ``a_q = 0``).
    s_rows : np.ndarray
        (N,) float32, row ``i``'s part of ``S`` written when ``a_q > 0`` (else may be empty).
    """
    indptr, indices, weights = arrays.indptr, arrays.indices, arrays.weights
    debias = arrays.q_alpha > 0.0
    keep = np.float32(1.0 - arrays.q_alpha)
    shift32 = np.float32(shift)
    code, p0, p1 = arrays.code, arrays.p0, arrays.p1
    row_mass, label_class, label_scale = arrays.row_mass, arrays.label_class, arrays.label_scale
    n_label = arrays.n_label
    n, dim = y.shape
    a = np.float32(p0)
    b = np.float32(p1)
    exag2 = np.float32(2.0 * exaggeration)
    cauchy = code == STUDENT and a == ONE
    stop = n if hi < 0 else hi
    for block in prange((stop - lo + BLOCK - 1) // BLOCK):
        force = np.empty(dim, np.float32)
        for i in range(lo + block * BLOCK, min(stop, lo + (block + 1) * BLOCK)):
            force[:] = 0.0
            loss = 0.0
            s_i = 0.0
            # t-SNE's case (Cauchy kernel, 2-D, no loss) unrolled with no branch in the loop:
            # the edge pass on mnist1d's 30k-point t-SNE graph (130 edges a row) 1.9x faster
            if cauchy and dim == 2 and not with_loss and not debias:
                y0 = y[i, 0]
                y1 = y[i, 1]
                f0 = ZERO
                f1 = ZERO
                for e in range(indptr[i], indptr[i + 1]):
                    j = indices[e]
                    a0 = y0 - y[j, 0]
                    a1 = y1 - y[j, 1]
                    coef = weights[e] * exag2 / (ONE + a0 * a0 + a1 * a1)
                    f0 += coef * a0
                    f1 += coef * a1
                force[0] = f0
                force[1] = f1
            else:
                for e in range(indptr[i], indptr[i + 1]):
                    j = indices[e]
                    d2 = sq_dist(y, i, j)
                    if debias:
                        k_e, g_e = kernel_and_slope(code, d2, a, b)
                        k_t = keep * k_e + shift32
                        rho = keep * k_e / k_t
                        coef = -weights[e] * rho * exag2 * g_e
                        s_i += HALF * weights[e] * rho
                        if with_loss:
                            loss -= HALF * weights[e] * np.log(k_t)
                    elif cauchy:  # g = -k
                        coef = weights[e] * exag2 / (ONE + d2)
                    else:
                        coef = -weights[e] * exag2 * kernel_and_slope(code, d2, a, b)[1]
                    if with_loss and not debias:
                        loss -= HALF * weights[e] * log_kernel(code, d2, a, b)
                    for c in range(dim):
                        force[c] += coef * (y[i, c] - y[j, c])
            if n_label > 0 and label_class[i] >= 0:
                base = hash32(seed ^ hash32(i))
                lab_i = label_scale[i] / n_label
                for t in range(n_label):
                    j = label_partner(arrays, base, t, i)
                    d2 = sq_dist(y, i, j)
                    k_e, g_e = kernel_and_slope(code, d2, a, b)
                    rho = ONE
                    if debias:
                        rho = keep * k_e / (keep * k_e + shift32)
                        s_i += lab_i * row_mass[i] * rho
                    coef = -lab_i * (row_mass[i] + row_mass[j]) * rho * exag2 * g_e
                    for c in range(dim):
                        force[c] += coef * (y[i, c] - y[j, c])
                    if with_loss:
                        loss -= lab_i * row_mass[i] * (np.log(keep * k_e + shift32) if debias
                                                       else log_kernel(code, d2, a, b))
            for c in range(dim):
                grad[i, c] = force[c]
            loss_rows[i] = loss
            if debias:
                s_rows[i] = s_i


@njit(**KERNEL_OPTIONS)
def all_pair_sums(yt, arrays, with_s, with_alpha, with_log, shift, force_s, row_z, force_r,
                  force_rm, log_k, rho_sum, lo=0, hi=-1):
    """Sums over every other point ``j`` of each point ``i`` (small N: N^2 kernel evaluations),
    with ``s = -dk/dd2``, ``r = -d log k / dd2`` and the debiasing of ``q``'s pair weight
    ``rho = (1 - a_q) k / k~``, ``k~ = (1 - a_q) k + shift`` (``rho = 1``, ``k~ = k`` when
    ``arrays.q_alpha = a_q`` is 0): when ``with_s``, ``force_s[i] = sum_j s_ij (y_i - y_j)``
    and ``row_z[i] = sum_{j != i} k_ij``; when ``with_alpha``, ``force_r[i] = sum_j rho_ij
    r_ij (y_i - y_j)``, ``force_rm[i] = sum_j m_j rho_ij r_ij (y_i - y_j)`` (``m`` the row
    masses) and, with ``a_q > 0``, ``rho_sum[i] = sum_{j != i} rho_ij``; when ``with_log``,
    ``log_k[i] = sum_{j != i} log k~_ij``. Each thread owns its anchors.

    Parameters
    ----------
    yt : np.ndarray
        (d, N) float32, the embedding transposed and C-contiguous, so every loop over ``j``
        reads contiguous memory and vectorises.
    arrays : EngineArrays
        The fit's fixed arrays (its kernel, row masses and ``q_alpha`` are read).
    with_s, with_alpha, with_log : bool
        Whether to fill ``force_s`` and ``row_z``; ``force_r``, ``force_rm`` (and
        ``rho_sum``); ``log_k``.
    shift : float
        ``a_q Z / (N (N - 1))`` (unused when ``a_q = 0``).
    force_s, row_z, force_r, force_rm, log_k, rho_sum : np.ndarray
        (N, d), (N,), (N, d), (N, d), (N,), (N,) float32 outputs, overwritten where filled.
    lo, hi : int
        Only the points ``lo <= i < hi`` are filled (a rank's shard,
        :mod:`icongraph.distributed`; ``hi < 0``: up to N); each still sums over every ``j``.
    """
    code, p0, p1, row_mass = arrays.code, arrays.p0, arrays.p1, arrays.row_mass
    debias = arrays.q_alpha > 0.0
    keep = np.float32(1.0 - arrays.q_alpha)
    shift32 = np.float32(shift)
    dim, n = yt.shape
    a = np.float32(p0)
    b = np.float32(p1)
    stop = n if hi < 0 else hi
    for block in prange((stop - lo + BLOCK - 1) // BLOCK):
        d2 = np.empty(n, np.float32)
        k = np.empty(n, np.float32)
        g = np.empty(n, np.float32)
        rho = np.ones(n, np.float32)
        for i in range(lo + block * BLOCK, min(stop, lo + (block + 1) * BLOCK)):
            d2[:] = 0.0
            for c in range(dim):
                y_ic = yt[c, i]
                for j in range(n):
                    diff = y_ic - yt[c, j]
                    d2[j] += diff * diff
            if code == STUDENT and a == ONE:  # t-SNE's Cauchy kernel: r = k, one division
                for j in range(n):
                    k[j] = ONE / (ONE + d2[j])
                    g[j] = k[j]
            else:
                kernels_and_slopes(code, d2, k, g, n, a, b)
                for j in range(n):
                    g[j] = -g[j]  # r = -g; s = k r
            if with_s:
                z = np.float32(0.0)
                for j in range(n):
                    z += k[j]
                row_z[i] = z - k[i]
                for c in range(dim):
                    y_ic = yt[c, i]
                    fs = np.float32(0.0)
                    for j in range(n):
                        fs += k[j] * g[j] * (y_ic - yt[c, j])
                    force_s[i, c] = fs
            if debias and (with_alpha or with_log):
                for j in range(n):
                    rho[j] = keep * k[j] / (keep * k[j] + shift32)
            if with_alpha:
                for c in range(dim):
                    y_ic = yt[c, i]
                    fr = np.float32(0.0)
                    frm = np.float32(0.0)
                    for j in range(n):
                        rd = rho[j] * g[j] * (y_ic - yt[c, j])
                        fr += rd
                        frm += row_mass[j] * rd
                    force_r[i, c] = fr
                    force_rm[i, c] = frm
                if debias:
                    total = np.float32(0.0)
                    for j in range(n):
                        total += rho[j]
                    rho_sum[i] = total - rho[i]
            if with_log:
                total = 0.0
                for j in range(n):
                    if j != i:
                        total += (np.log(keep * k[j] + shift32) if debias
                                  else log_kernel(code, d2[j], a, b))
                log_k[i] = total


@njit(inline="always", cache=True)
def lagrange_weight(t, k, n_nodes):
    """The ``k``-th Lagrange basis polynomial at ``t`` for nodes ``(m + 1/2) / n_nodes``."""
    x_k = (k + 0.5) / n_nodes
    w = 1.0
    for m in range(n_nodes):
        if m != k:
            x_m = (m + 0.5) / n_nodes
            w *= (t - x_m) / (x_k - x_m)
    return w


@njit(cache=True)
def grid_spread(y, lo, width, n_boxes, n_nodes, charges, grid, node, weight):
    """Spread ``charges`` (N, C) of the points ``y`` (N, d <= 2) onto the interpolation grid
    ``grid`` (C, G^d) float64, ``G = n_boxes n_nodes`` (see
    :mod:`icongraph.interpolation`), and record each point's ``p^d`` nodes and weights in
    ``node``/``weight`` (N, p^d) for :func:`grid_gather`. Serial (a scatter): O(N p^d C)."""
    n, dim = y.shape
    size = n_boxes * n_nodes
    wx = np.empty(n_nodes)
    wy = np.empty(n_nodes)
    for i in range(n):
        px = (y[i, 0] - lo) / width
        bx = min(max(int(np.floor(px)), 0), n_boxes - 1)
        for k in range(n_nodes):
            wx[k] = lagrange_weight(px - bx, k, n_nodes)
        if dim == 2:
            py = (y[i, 1] - lo) / width
            by = min(max(int(np.floor(py)), 0), n_boxes - 1)
            for k in range(n_nodes):
                wy[k] = lagrange_weight(py - by, k, n_nodes)
        t = 0
        for kx in range(n_nodes):
            for ky in range(n_nodes if dim == 2 else 1):
                if dim == 2:
                    node[i, t] = (bx * n_nodes + kx) * size + by * n_nodes + ky
                    weight[i, t] = wx[kx] * wy[ky]
                else:
                    node[i, t] = bx * n_nodes + kx
                    weight[i, t] = wx[kx]
                for c in range(charges.shape[1]):
                    grid[c, node[i, t]] += weight[i, t] * charges[i, c]
                t += 1


@njit(parallel=True, cache=True)
def grid_gather(values, node, weight, out):
    """``out[i, c] = sum_t weight[i, t] values[c, node[i, t]]``: potentials read back from the
    grid (``values`` (C, G^d)), parallel over points."""
    n, taps = node.shape
    for i in prange(n):
        for c in range(values.shape[0]):
            total = 0.0
            for t in range(taps):
                total += weight[i, t] * values[c, node[i, t]]
            out[i, c] = total
