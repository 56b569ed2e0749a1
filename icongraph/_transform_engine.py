"""The engine of ``transform``: the gradient of new points against a frozen embedding (numba on
CPU, its torch twin elsewhere), each new point with its own conditional normaliser.

New point ``a`` (position ``y_a``) has target row ``p(.|a)`` over the N fitted points
(:meth:`~icongraph.targets.Target.to_new`), ``m_a = sum_j p(j|a)``, and the fitted positions
``Y`` never move. For the KL estimators (per-anchor conditional ``q(j|a) = k_aj / Z_a``,
``Z_a = sum_{j <= N} k_aj``) and the debiased ``p~(j|a) = (1 - alpha) p(j|a) + alpha m_a / N``::

    L_a = -sum_j p~(j|a) log k_aj + m_a log Z_a
    dL_a/dy_a = sum_j -2 (1 - alpha) p(j|a) g_aj (y_a - y_j)
                + sum_j 2 (m_a k_aj / Z_a - alpha m_a / N) g_aj (y_a - y_j)

and for NEG (UMAP), with the fit's largest membership ``w_max`` and
``r_a = negative_sample_rate sum_j w_aj / (w_max m)``::

    L_a = sum_j (w_aj / w_max) (-log k_aj) + r_a sum_t -log(1 - k(a, n_t))

The second sums run over ``m`` negatives ``n_t`` drawn uniformly from the N fitted points, with
``N / m`` and the sampled ``Z_a`` standing in for the full sums (``n_negatives <= 0``: every
fitted point, the exact gradient). A new point's negatives are hashed from ``(seed, epoch,
key_a)``, ``key_a`` a hash of its float32 row (:func:`point_keys`): its identity, not its
position in the batch. Points never interact, so a batch and its points one by one get the same
gradients.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit, prange

from . import _cpu_engine as cpu
from ._cpu_engine import (
    BLOCK,
    GOLDEN,
    NEG,
    add_forces,
    gather_pairs,
    hash32,
    kernels_and_slopes,
    log_kernel,
    neg_negatives,
)
from ._torch_engine import _hash32_torch, _kernel_and_slope
from .kernels import Kernel, UMAPKernel

__all__ = ["partial_arrays", "point_keys", "partial_gradient",
           "partial_gradient_torch", "torch_partial_arrays"]


def partial_arrays(rows: sp.csr_matrix, kernel: Kernel, estimator: str, n_negatives: int | None,
                   negative_sample_rate: float, clip: float, alpha: float,
                   w_max: float) -> cpu.EngineArrays:
    """The engine's arrays for new points with target rows ``rows``: an
    :class:`~icongraph._cpu_engine.EngineArrays` whose rows are the M new points and whose
    columns are the N fitted points, every edge every epoch.

    Parameters
    ----------
    rows : scipy.sparse.csr_matrix
        (M, N) from :meth:`~icongraph.targets.Target.to_new` (k entries per row).
    kernel : Kernel
        The fitted kernel.
    estimator : str
        ``"neg"``, or ``"per_anchor"`` (the conditional normaliser every KL estimator uses here).
    n_negatives : int
        Negatives per new point and epoch, the fit's count (``<= 0``: all N fitted points,
        exact): a constant, so a point draws the same negatives alone as in any batch.
    negative_sample_rate : float
        NEG's negatives per unit of membership.
    clip : float
        The per-coordinate force clip.
    alpha : float
        The fit's debiasing weight of ``p`` (ignored by NEG).
    w_max : float
        The fit's largest target weight (NEG's scale of an edge).

    Returns
    -------
    EngineArrays
        ``weights`` (E,) are ``(1 - alpha) p(j|a)`` or NEG's ``w_aj / w_max``; ``row_mass``
        (M,) ``m_a = sum_j p(j|a)``; ``neg_scale`` (M,) NEG's ``r_a``, else (1,).
    """
    p = rows.data.astype(np.float64)
    mass = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
    neg = estimator == "neg"
    m = rows.shape[1] if n_negatives <= 0 else n_negatives
    alpha = 0.0 if neg else float(alpha)
    if neg:
        weights, neg_scale = p / w_max, negative_sample_rate * mass / (w_max * m)
    else:
        weights, neg_scale = (1.0 - alpha) * p, np.zeros(1)
    p0, p1 = kernel.params if kernel.code >= 0 else (0.0, 0.0)
    empty = np.zeros(0, np.float32)
    no_class = np.zeros(0, np.int32)
    return cpu.EngineArrays(  # new points take no label partners: they have no labels
        indptr=rows.indptr.astype(np.int64), indices=rows.indices.astype(np.int32),
        weights=weights.astype(np.float32), edge_rate=empty, edge_phase=empty,
        row_mass=mass.astype(np.float32), neg_scale=neg_scale.astype(np.float32),
        label_class=no_class, class_ptr=np.zeros(1, np.int64), class_members=no_class,
        class_position=no_class, label_scale=empty, n_label=0,
        n_neg=int(n_negatives), estimator=int(cpu.NEG if neg else cpu.PER_ANCHOR),
        code=int(kernel.code), p0=float(p0), p1=float(p1), alpha=alpha,
        p_scale=float(1.0 / w_max if neg else 1.0), clip=float(clip),
        edge_share=empty, q_alpha=0.0)  # new points are placed without the debiasing of q


@njit(parallel=True, cache=True)
def _row_hashes(words, out):
    n, d = words.shape
    for a in prange(n):
        h = hash32(np.int64(d))
        for c in range(d):
            h = hash32(h ^ np.int64(words[a, c]))
        out[a] = h


def point_keys(X: np.ndarray) -> np.ndarray:
    """(M,) int64 keys in [0, 2^32): a hash of each row's float32 bytes, the identity that
    draws a new point's negatives (equal rows share their draws)."""
    words = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32)
    out = np.empty(words.shape[0], np.int64)
    _row_hashes(words, out)
    return out


@njit(**cpu.KERNEL_OPTIONS)
def partial_gradient(y, reference, arrays, keys, seed, with_loss, grad, loss_rows):
    """Fill ``grad`` (M, d) with ``dL_a / dy_a`` of every new point (the module's formulas)
    and, when ``with_loss``, ``loss_rows`` (M,) with ``L_a`` (KL estimators: without the
    constant ``sum_j p~ log p~``). Parallel over blocks of new points, each thread owning its
    rows; the negatives of point ``a`` are hashed from ``seed`` and ``keys[a]`` only.

    Parameters
    ----------
    y : np.ndarray
        (M, d) float32, the new points.
    reference : np.ndarray
        (N, d) float32, the fitted embedding (read only).
    arrays : EngineArrays
        The new points' target rows and the objective's scalars (:func:`partial_arrays`).
    keys : np.ndarray
        (M,) int64, :func:`point_keys` of the new points.
    seed : int
        The epoch's seed (:func:`~icongraph.objective.epoch_seed`).
    with_loss : bool
        Whether to fill ``loss_rows``.
    grad, loss_rows : np.ndarray
        (M, d), (M,) float32 outputs, overwritten.
    """
    indptr, indices, weights = arrays.indptr, arrays.indices, arrays.weights
    row_mass, neg_scale = arrays.row_mass, arrays.neg_scale
    n_neg, estimator, code = arrays.n_neg, arrays.estimator, arrays.code
    n_new = y.shape[0]
    n = reference.shape[0]
    exact = n_neg <= 0
    m = n if exact else n_neg
    size = (np.max(np.diff(indptr)) if n_new > 0 else 0) + m  # pairs of a point, at most
    a_ = np.float32(arrays.p0)
    b_ = np.float32(arrays.p1)
    clip32 = np.float32(arrays.clip)
    two = np.float32(2.0)
    log_scale = np.log(n / m)  # Z_a ~ (N / m) sum_t k(a, n_t)
    for block in prange((n_new + BLOCK - 1) // BLOCK):
        part = np.empty(size, np.int64)
        d2 = np.empty(size, np.float32)
        k = np.empty(size, np.float32)
        g = np.empty(size, np.float32)
        coef = np.empty(size, np.float32)
        wts = np.empty(size, np.float32)
        diffs = np.empty((y.shape[1], size), y.dtype)
        for a in range(block * BLOCK, min(n_new, (block + 1) * BLOCK)):
            n_pos = indptr[a + 1] - indptr[a]
            for t in range(n_pos):
                part[t] = indices[indptr[a] + t]
                wts[t] = weights[indptr[a] + t]
            width = n_pos + m
            base = hash32(seed ^ keys[a])
            for t in range(m):
                part[n_pos + t] = t if exact else (hash32(base + (t + 1) * GOLDEN) * n) >> 32
            gather_pairs(y, a, reference, part, width, diffs, d2)
            kernels_and_slopes(code, d2, k, g, width, a_, b_)
            loss = 0.0
            for t in range(n_pos):
                coef[t] = -two * g[t]
            if with_loss:
                for t in range(n_pos):
                    loss -= wts[t] * log_kernel(code, d2[t], a_, b_)
            if estimator == NEG:
                loss = neg_negatives(code, d2, k, g, n_pos, width, b_, neg_scale[a], with_loss,
                                     coef, wts, loss)[1]
            else:
                m_a = row_mass[a]
                z = np.float32(0.0)
                for t in range(n_pos, width):
                    z += k[t]
                z = max(z, np.float32(1e-12))  # a floor keeps 1/Z finite when every k underflows
                u = np.float32(arrays.alpha * m_a / m)  # the uniform part of p~ per negative
                share = m_a / z
                for t in range(n_pos, width):
                    coef[t] = two * g[t]
                    wts[t] = share * k[t] - u
                if with_loss:
                    loss += m_a * (np.log(z) + log_scale)
                    if u > 0.0:
                        for t in range(n_pos, width):
                            loss -= u * log_kernel(code, d2[t], a_, b_)
            add_forces(grad, a, diffs, coef, wts, width, clip32)
            loss_rows[a] = loss


def partial_gradient_torch(arrays: cpu.EngineArrays, kernel: Kernel, y: torch.Tensor,
                           reference: torch.Tensor, keys: torch.Tensor, seed: int,
                           with_loss: bool = False, chunk_pairs: int = 1 << 20):
    """The torch twin of :func:`partial_gradient` (CUDA, or kernels without a numba form):
    the same negatives, the same formulas, rows summed without atomics (so a batch and its
    points one by one agree on any device).

    Parameters
    ----------
    arrays : EngineArrays
        :func:`partial_arrays` with its arrays on ``y``'s device (:func:`torch_partial_arrays`).
    kernel : Kernel
        The fitted kernel.
    y, reference : torch.Tensor
        (M, d) the new points, (N, d) the fitted embedding.
    keys : torch.Tensor
        (M,) int64 :func:`point_keys`.
    seed : int
        The epoch's seed.
    with_loss : bool
        Whether to compute the loss rows.
    chunk_pairs : int
        About how many pairs one chunk of new points holds.

    Returns
    -------
    grad : torch.Tensor
        (M, d).
    loss_rows : torch.Tensor
        (M,), zeros unless ``with_loss``.
    """
    n_new = y.shape[0]
    n_pos = int(arrays.indptr[1] - arrays.indptr[0])  # every row has k entries (to_new)
    indices, weights = arrays.indices.view(n_new, n_pos), arrays.weights.view(n_new, n_pos)
    n = reference.shape[0]
    exact = arrays.n_neg <= 0
    m = n if exact else arrays.n_neg
    grad = torch.empty_like(y)
    loss_rows = torch.zeros(n_new, dtype=y.dtype, device=y.device)
    t = torch.arange(1, m + 1, device=y.device, dtype=torch.long)
    step = max(1, chunk_pairs // (n_pos + m))
    for start in range(0, n_new, step):
        stop = min(n_new, start + step)
        if exact:
            negs = torch.arange(n, device=y.device).expand(stop - start, -1)
        else:
            base = _hash32_torch(keys[start:stop] ^ seed)
            negs = (_hash32_torch(base[:, None] + t[None, :] * GOLDEN) * n) >> 32
        part = torch.cat([indices[start:stop].long(), negs], 1)
        diff = y[start:stop, None, :] - reference[part]  # (B, k + m, d)
        d2 = (diff * diff).sum(-1)
        k, g = _kernel_and_slope(kernel, d2)
        att_coef, att_w = -2.0 * g[:, :n_pos], weights[start:stop]
        kn, gn, dn = k[:, n_pos:], g[:, n_pos:], d2[:, n_pos:]
        loss = 0.0
        if with_loss:
            loss = -(att_w * kernel.log_k_torch(d2[:, :n_pos])).sum(1)
        if arrays.estimator == NEG:
            if isinstance(kernel, UMAPKernel):
                rep = -kernel.b * kn / (0.001 + dn)
            else:
                rep = kn * gn / (1.0 - kn).clamp_min(1e-3)
            s_a = arrays.neg_scale[start:stop, None]
            rep_coef, rep_w = 2.0 * rep, s_a.expand_as(kn)
            if with_loss:
                loss = loss - (s_a * torch.log((1.0 - kn).clamp_min(1e-12))).sum(1)
        else:
            m_a = arrays.row_mass[start:stop, None]
            z = kn.sum(1, keepdim=True).clamp_min(1e-12)
            u = arrays.alpha * m_a / m
            rep_coef, rep_w = 2.0 * gn, m_a * kn / z - u
            if with_loss:
                loss = loss + m_a[:, 0] * (torch.log(z[:, 0]) + float(np.log(n / m)))
                if arrays.alpha > 0:
                    loss = loss - (u * kernel.log_k_torch(dn)).sum(1)
        coef = torch.cat([att_coef, rep_coef], 1)
        w = torch.cat([att_w, rep_w], 1)
        clip = arrays.clip
        grad[start:stop] = ((coef[..., None] * diff).clamp(-clip, clip) * w[..., None]).sum(1)
        if with_loss:
            loss_rows[start:stop] = loss
    return grad, loss_rows


def torch_partial_arrays(arrays: cpu.EngineArrays, device) -> cpu.EngineArrays:
    """``arrays`` (from :func:`partial_arrays`) with its edge and row arrays as tensors on
    ``device`` (``indptr`` stays on the host)."""
    dev = torch.device(device)
    return arrays._replace(**{name: torch.as_tensor(getattr(arrays, name), device=dev)
                              for name in ("indices", "weights", "row_mass", "neg_scale")})
