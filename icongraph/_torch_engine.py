"""The torch twin of the numba engine: the sampled I-Con gradient on any device (CUDA, or
kernels without a numba form), drawing the same negatives as :mod:`icongraph._cpu_engine`.

Every function reads an :class:`~icongraph.objective.Objective` ``obj`` (its kernel, estimator,
negatives, clip and edge schedule) and the arrays :func:`torch_arrays` put on the device once.
Anchors are processed in chunks fixed on the host, so the loop never syncs to find them; on
CUDA the scatters use atomics and results are not bit-reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _cpu_engine as cpu
from .kernels import Kernel, UMAPKernel

__all__ = ["hash_negatives", "hash_label_partners", "sampled_gradient_torch",
           "sampled_gradient_torch_q",
           "edge_forces_torch", "label_forces_torch", "torch_arrays"]


def _hash32_torch(x: torch.Tensor) -> torch.Tensor:
    x = x & cpu.M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & cpu.M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & cpu.M32
    return x ^ (x >> 16)


def hash_negatives(anchors: torch.Tensor, n_neg: int, seed: int, n: int) -> torch.Tensor:
    """Uniform negatives ``j != i`` of each anchor: the same draws as the numba engine.

    Parameters
    ----------
    anchors : torch.Tensor
        (B,) integer anchor ids ``i``.
    n_neg : int
        Negatives per anchor.
    seed : int
        The epoch's seed (:func:`~icongraph.objective.epoch_seed`).
    n : int
        N, the number of points.

    Returns
    -------
    torch.Tensor
        (B, n_neg) int64 negatives, uniform on the N - 1 points other than the anchor.
    """
    base = _hash32_torch(_hash32_torch(anchors.long()) ^ seed)
    t = torch.arange(1, n_neg + 1, device=anchors.device, dtype=torch.long)
    h = _hash32_torch(base[:, None] + t[None, :] * cpu.GOLDEN)
    j = (h * (n - 1)) >> 32
    return j + (j >= anchors.long()[:, None]).long()


def hash_label_partners(arrays: dict, anchors: torch.Tensor, n_label: int,
                        seed: int) -> torch.Tensor:
    """Same-class partners of each anchor: the same draws as the numba engine's
    :func:`~icongraph._cpu_engine.label_partner`.

    Parameters
    ----------
    arrays : dict
        From :func:`torch_arrays` (``label_class``, ``class_ptr``, ``class_members``,
        ``class_position``).
    anchors : torch.Tensor
        (B,) integer anchor ids ``i``.
    n_label : int
        Partners per anchor.
    seed : int
        The epoch's seed (:func:`~icongraph.objective.epoch_seed`).

    Returns
    -------
    torch.Tensor
        (B, n_label) int64 partners, uniform on the other members of the anchor's class; an
        anchor without a class (``label_class`` -1) gets arbitrary valid indices (its pairs
        weigh 0).
    """
    anchors = anchors.long()
    cls = arrays["label_class"][anchors].long()
    c = cls.clamp_min(0)
    start = arrays["class_ptr"][c]
    size = arrays["class_ptr"][c + 1] - start
    base = _hash32_torch(_hash32_torch(_hash32_torch(anchors) ^ seed) ^ cpu.LABEL_KEY)
    t = torch.arange(1, n_label + 1, device=anchors.device, dtype=torch.long)
    h = _hash32_torch(base[:, None] + t[None, :] * cpu.GOLDEN)
    r = (h * (size - 1).clamp_min(1)[:, None]) >> 32
    at = start[:, None] + r + (r >= arrays["class_position"][anchors].long()[:, None]).long()
    return arrays["class_members"][at.clamp_max(arrays["class_members"].shape[0] - 1)].long()


def label_forces_torch(obj, arrays: dict, y: torch.Tensor, start: int, stop: int, seed: int,
                       exaggeration: float, with_loss: bool, grad: torch.Tensor,
                       loss_rows: torch.Tensor, dof_rows: torch.Tensor | None = None,
                       shift=None, s_rows: torch.Tensor | None = None) -> None:
    """Add the sampled same-class attraction of anchors ``start:stop`` to ``grad`` (and its
    loss to ``loss_rows``): the torch twin of the label part of the numba engine, weight
    ``label_scale[i] (m_i + m_j) / n_label`` per pair, loss ``-label_scale[i] m_i / n_label
    log k``. Nothing without labels. With ``shift`` the pairs are those of the debiased joint
    ``q`` (:func:`edge_forces_torch`).

    Parameters
    ----------
    obj : Objective
        The objective (:class:`~icongraph.objective.Objective`).
    arrays : dict
        Its arrays on ``y``'s device, from :func:`torch_arrays`.
    y : torch.Tensor
        (N, d) the embedding.
    start, stop : int
        The anchors.
    seed : int
        The epoch's seed (:func:`~icongraph.objective.epoch_seed`).
    exaggeration : float
        Multiplies the attraction.
    with_loss : bool
        Whether to add the pairs' loss to ``loss_rows``.
    grad, loss_rows : torch.Tensor
        (N, d), (N,), added to in place.
    dof_rows : torch.Tensor, optional
        (N,), added to in place: the pairs' ``w c u`` (:func:`_add_dof`).
    shift, s_rows : optional
        As in :func:`edge_forces_torch`.
    """
    if obj.n_label == 0:
        return
    anchors = torch.arange(start, stop, device=y.device)
    partners = hash_label_partners(arrays, anchors, obj.n_label, seed)
    a = anchors[:, None].expand_as(partners).reshape(-1)
    j = partners.reshape(-1)
    mass = arrays["row_mass"]
    scale = torch.where(arrays["label_class"][a] >= 0, arrays["label_scale"][a], 0.0) / obj.n_label
    diff = y[a] - y[j]
    d2 = (diff * diff).sum(1)
    k, g = _kernel_and_slope(obj.kernel, d2)
    coef, weight = -2.0 * exaggeration * g, scale * (mass[a] + mass[j])
    rho, log_k = _debiased_pairs(obj, k, shift)
    if shift is not None:
        weight = weight * rho
        s_rows.index_add_(0, a, scale * mass[a] * rho)
    grad.index_add_(0, a, (coef[:, None] * diff).clamp(-obj.clip, obj.clip) * weight[:, None])
    _add_dof(obj.kernel, dof_rows, a, d2, g, coef * weight)
    if with_loss:
        loss_rows.index_add_(0, a, -scale * mass[a] * (
            log_k if shift is not None else obj.kernel.log_k_torch(d2)))


def _debiased_pairs(obj, k: torch.Tensor, shift):
    """``(rho, log k~)`` per pair for the debiased joint ``q~ = k~ / Z`` with ``k~ = (1 - a_q)
    k + shift`` and ``rho = (1 - a_q) k / k~`` (``a_q = obj.q_alpha``); ``(None, None)``
    when ``shift`` is None (no debiasing)."""
    if shift is None:
        return None, None
    k_t = (1.0 - obj.q_alpha) * k + shift
    return (1.0 - obj.q_alpha) * k / k_t, torch.log(k_t)


def _negative_pairs(obj, y: torch.Tensor, anchors: torch.Tensor, m: int, seed: int):
    """The ``m`` negatives of each of ``anchors`` (every other point in exact mode, else
    :func:`hash_negatives`) as flat pairs ``(a, j, y_a - y_j, d2, k, g)``, anchor-major."""
    n = y.shape[0]
    if obj.n_negatives <= 0:
        negs = torch.arange(n - 1, device=y.device)[None, :].expand(len(anchors), -1)
        negs = negs + (negs >= anchors[:, None]).long()
    else:
        negs = hash_negatives(anchors, m, seed, n)
    a = anchors[:, None].expand_as(negs).reshape(-1)
    j = negs.reshape(-1)
    diff = y[a] - y[j]
    d2 = (diff * diff).sum(1)
    k, g = _kernel_and_slope(obj.kernel, d2)
    return a, j, diff, d2, k, g


def sampled_gradient_torch(obj, arrays: dict, y: torch.Tensor, seed: int, epoch: int,
                           exaggeration: float, z_prev: torch.Tensor, global_scale,
                           with_loss: bool = False, dof_rows: torch.Tensor | None = None):
    """The torch twin of :func:`icongraph._cpu_engine.sampled_gradient` (CUDA, custom kernels).

    Anchors are processed in the chunks of ``arrays`` (bounded memory, no host syncs).

    Parameters
    ----------
    obj : Objective
        The objective (:class:`~icongraph.objective.Objective`).
    arrays : dict
        Its arrays on ``y``'s device, from :func:`torch_arrays`.
    y : torch.Tensor
        (N, d) the embedding.
    seed : int
        The epoch's seed (:func:`~icongraph.objective.epoch_seed`).
    epoch : int
        The epoch (the edge schedule).
    exaggeration : float
        Multiplies the attraction.
    z_prev : torch.Tensor
        (N,) the previous evaluation's ``zsum`` (the per-anchor estimator's normalisers).
    global_scale : float or torch.Tensor
        The global estimator's pair coefficient ``2 M / sum_i zsum_i`` (0-d on CUDA).
    with_loss : bool
        Whether to fill ``loss_rows``.
    dof_rows : torch.Tensor, optional
        (N,) overwritten with the degrees of freedom's gradient per anchor, as the numba
        engine's ``dof_rows`` (``dL/dnu = 1/4 sum_i dof_rows[i]``); None: not computed.

    Returns
    -------
    grad : torch.Tensor
        (N, d) the gradient.
    zsum : torch.Tensor
        (N,) the sum of ``k`` over each anchor's negatives.
    loss_rows : torch.Tensor
        (N,) the attraction / NEG part of the loss estimate per anchor (zeros unless
        ``with_loss``).
    """
    n, d = y.shape
    kernel, clip = obj.kernel, obj.clip
    grad = torch.zeros_like(y)
    zsum = torch.zeros(n, dtype=y.dtype, device=y.device)
    loss_rows = torch.zeros(n, dtype=y.dtype, device=y.device)
    mass = arrays["row_mass"]
    m = obj.m
    if dof_rows is not None:
        dof_rows.zero_()
    for start, stop, e0, e1 in arrays["chunks"]:
        edge_forces_torch(obj, arrays, y, e0, e1, epoch, exaggeration, with_loss, grad,
                           loss_rows, dof_rows)
        label_forces_torch(obj, arrays, y, start, stop, seed, exaggeration, with_loss, grad,
                           loss_rows, dof_rows)
        anchors = torch.arange(start, stop, device=y.device)
        a, j, diff, d2, k, g = _negative_pairs(obj, y, anchors, m, seed)
        zsum[start:stop] = k.view(stop - start, m).sum(1).clamp_min(1e-12)
        terms = []  # (coefficient, weight, weight in the dof's gradient)
        if obj.alpha > 0:
            uniform = obj.alpha * obj.p_scale / m
            terms.append((-2.0 * exaggeration * g, uniform * (mass[a] + mass[j]), 1.0))
            if with_loss:
                loss_rows.index_add_(0, a, -uniform * mass[a] * kernel.log_k_torch(d2))
        if obj.estimator == "per_anchor":
            share = (mass[a] * (k / z_prev[a]).clamp_max(1.0)
                     + mass[j] * (k / z_prev[j]).clamp_max(1.0))
            terms.append((2.0 * g, share, 1.0))
        elif obj.estimator == "global":
            terms.append((2.0 * k * g, torch.ones_like(k) * global_scale, 1.0))
        else:
            scale = arrays["neg_scale"][a]
            if isinstance(kernel, UMAPKernel):
                rep = -kernel.b * k / (0.001 + d2)
            else:
                rep = k * g / (1.0 - k).clamp_min(1e-3)
            terms.append((2.0 * rep, scale, 2.0))  # a negative moves its anchor only
            if with_loss:
                loss_rows.index_add_(0, a, -scale * torch.log((1.0 - k).clamp_min(1e-12)))
        for coef, weight, dof_weight in terms:
            grad.index_add_(0, a, (coef[:, None] * diff).clamp(-clip, clip) * weight[:, None])
            _add_dof(kernel, dof_rows, a, d2, g, dof_weight * coef * weight)
    return grad, zsum, loss_rows


def sampled_gradient_torch_q(obj, arrays: dict, y: torch.Tensor, seed: int, epoch: int,
                             exaggeration: float, z_prev: torch.Tensor, s_prev: torch.Tensor,
                             q_level, global_scale, with_loss: bool = False,
                             dof_rows: torch.Tensor | None = None):
    """The torch twin of :func:`icongraph._cpu_engine.sampled_gradient_q`: the sampled
    gradient with the debiasing of ``q`` (``obj.q_alpha > 0``, the KL estimators), the same
    pairs and weights. ``s_prev`` (N,) is the previous evaluation's ``S``, ``q_level`` the
    global estimator's lagged ``Z / (N (N - 1))`` (a 0-d tensor on CUDA: no sync); other
    arguments as :func:`sampled_gradient_torch`.

    Returns
    -------
    grad, zsum, s_rows, loss_rows : torch.Tensor
        (N, d), (N,), (N,), (N,): as :func:`sampled_gradient_torch`, with ``s_rows`` this
        evaluation's ``S_i`` (global: row ``i``'s part of ``S``).
    """
    n, d = y.shape
    kernel, clip = obj.kernel, obj.clip
    grad = torch.zeros_like(y)
    zsum = torch.zeros(n, dtype=y.dtype, device=y.device)
    s_rows = torch.zeros(n, dtype=y.dtype, device=y.device)
    loss_rows = torch.zeros(n, dtype=y.dtype, device=y.device)
    mass = arrays["row_mass"]
    m = obj.m
    keep, mix = 1.0 - obj.q_alpha, obj.q_alpha
    log_keep = float(np.log(keep))
    per_anchor = obj.estimator == "per_anchor"
    level = z_prev / m if per_anchor else None

    def ratios(k, a, j):
        """``(rho_ij, rho_ji)`` of pairs ``(a, j)``: :func:`~icongraph._cpu_engine.q_ratio`."""
        r_i = keep * k / (keep * k + mix * (level[a] if per_anchor else q_level))
        return r_i, (keep * k / (keep * k + mix * level[j]) if per_anchor else r_i)

    def add(a, diff, d2, g, coef, weight):
        grad.index_add_(0, a, (coef[:, None] * diff).clamp(-clip, clip) * weight[:, None])
        _add_dof(kernel, dof_rows, a, d2, g, coef * weight)

    def attract(a, j, diff, d2, k, g, own, other, cross):
        """Pairs whose row-``a`` part of ``p~`` is ``own`` and row-``j`` part ``other``; row
        ``a``'s loss counts ``-cross log k`` (an edge: half its weight, as the numba engine)."""
        r_i, r_j = ratios(k, a, j)
        s_rows.index_add_(0, a, own * r_i)
        add(a, diff, d2, g, -2.0 * exaggeration * g, own * r_i + other * r_j)
        if with_loss:
            loss_rows.index_add_(0, a, own * (torch.log(r_i.clamp_min(1e-38)) - log_keep)
                                 - cross * kernel.log_k_torch(d2))

    if dof_rows is not None:
        dof_rows.zero_()
    for start, stop, e0, e1 in arrays["chunks"]:
        rows, cols = arrays["rows"][e0:e1], arrays["cols"][e0:e1]
        w = arrays["weights"][e0:e1]
        if obj.edge_sampling:
            rate = arrays["edge_rate"][e0:e1].double()
            phase = arrays["edge_phase"][e0:e1].double()
            w = w * (torch.floor((epoch + 1) * rate + phase) > torch.floor(epoch * rate + phase))
        own = w * arrays["edge_share"][e0:e1] if per_anchor else 0.5 * w
        diff = y[rows] - y[cols]
        d2 = (diff * diff).sum(1)
        k, g = _kernel_and_slope(kernel, d2)
        attract(rows, cols, diff, d2, k, g, own, w - own, 0.5 * w)
        anchors = torch.arange(start, stop, device=y.device)
        if obj.n_label > 0:
            partners = hash_label_partners(arrays, anchors, obj.n_label, seed)
            a = anchors[:, None].expand_as(partners).reshape(-1)
            j = partners.reshape(-1)
            scale = torch.where(arrays["label_class"][a] >= 0, arrays["label_scale"][a],
                                0.0) / obj.n_label
            diff = y[a] - y[j]
            d2 = (diff * diff).sum(1)
            k, g = _kernel_and_slope(kernel, d2)
            attract(a, j, diff, d2, k, g, scale * mass[a], scale * mass[j], scale * mass[a])
        a, j, diff, d2, k, g = _negative_pairs(obj, y, anchors, m, seed)
        zsum[start:stop] = k.view(stop - start, m).sum(1).clamp_min(1e-12)
        if obj.alpha > 0:
            uniform = obj.alpha / m
            attract(a, j, diff, d2, k, g, uniform * mass[a], uniform * mass[j],
                    uniform * mass[a])
        if per_anchor:  # S_i of this chunk is complete: its edges come before its negatives
            share = (s_rows[a] * (k / z_prev[a]).clamp_max(1.0)
                     + s_prev[j] * (k / z_prev[j]).clamp_max(1.0))
            add(a, diff, d2, g, 2.0 * g, share)
        else:
            add(a, diff, d2, g, 2.0 * k * g, torch.ones_like(k) * global_scale)
    return grad, zsum, s_rows, loss_rows


def edge_forces_torch(obj, arrays: dict, y: torch.Tensor, e0: int, e1: int,
                       epoch: int, exaggeration: float, with_loss: bool, grad: torch.Tensor,
                       loss_rows: torch.Tensor, dof_rows: torch.Tensor | None = None,
                       shift=None, s_rows: torch.Tensor | None = None) -> None:
    """Add the attraction of the stored edges ``e0:e1`` to ``grad`` (and their loss to
    ``loss_rows``): the torch twin of the edge part of the numba engine.

    Parameters
    ----------
    obj : Objective
        The objective (:class:`~icongraph.objective.Objective`).
    arrays : dict
        Its arrays on ``y``'s device, from :func:`torch_arrays` (``rows``, ``cols``,
        ``weights``, and with edge sampling ``edge_rate`` and ``edge_phase``).
    y : torch.Tensor
        (N, d) the embedding.
    e0, e1 : int
        The range of stored edges (CSR order).
    epoch : int
        The epoch (the edge schedule).
    exaggeration : float
        Multiplies the attraction.
    with_loss : bool
        Whether to add the edges' loss to ``loss_rows``.
    grad : torch.Tensor
        (N, d), added to in place.
    loss_rows : torch.Tensor
        (N,), added to in place when ``with_loss``.
    dof_rows : torch.Tensor, optional
        (N,), added to in place: the edges' ``w c u`` (:func:`_add_dof`).
    shift : float or 0-d tensor, optional
        The debiasing of the joint ``q`` (``"fft"`` with ``q_alpha = a_q > 0``): ``k~ =
        (1 - a_q) k + shift``; each edge is weighted by ``rho = (1 - a_q) k / k~``, its loss
        is ``-w/2 log k~`` and its ``w/2 rho`` is added to ``s_rows`` (N,), row ``i``'s part of
        ``S = sum_ij p~_ij rho_ij`` (:func:`~icongraph.objective.all_pairs_gradient`).
    """
    rows, cols, w = arrays["rows"][e0:e1], arrays["cols"][e0:e1], arrays["weights"][e0:e1]
    if obj.edge_sampling:  # the same schedule as the numba engine, as a mask
        rate = arrays["edge_rate"][e0:e1].double()  # float64, as numba computes it
        phase = arrays["edge_phase"][e0:e1].double()
        w = w * (torch.floor((epoch + 1) * rate + phase) > torch.floor(epoch * rate + phase))
    diff = y[rows] - y[cols]
    d2 = (diff * diff).sum(1)
    k, g = _kernel_and_slope(obj.kernel, d2)
    coef = -2.0 * exaggeration * g
    pull = w
    rho, log_k = _debiased_pairs(obj, k, shift)
    if shift is not None:
        pull = w * rho
        s_rows.index_add_(0, rows, 0.5 * pull)
    grad.index_add_(0, rows, (coef[:, None] * diff).clamp(-obj.clip, obj.clip) * pull[:, None])
    _add_dof(obj.kernel, dof_rows, rows, d2, g, coef * pull)
    if with_loss:
        loss_rows.index_add_(0, rows, -0.5 * w * (
            log_k if shift is not None else obj.kernel.log_k_torch(d2)))


def _add_dof(kernel: Kernel, dof_rows: torch.Tensor | None, anchors: torch.Tensor,
             d2: torch.Tensor, g: torch.Tensor, wc: torch.Tensor) -> None:
    """Add ``w c u`` per pair to ``dof_rows[anchor]`` (nothing when ``dof_rows`` is None):
    ``wc`` (P,) each pair's weight times its force coefficient, ``u = h / g`` the ratio of the
    kernel's slopes in ``dof`` and in ``d2`` at the pairs' ``d2`` (P,), (``anchors`` (P,));
    :mod:`icongraph.kernels`."""
    if dof_rows is not None:
        dof_rows.index_add_(0, anchors, wc * kernel.dof_slope_torch(d2) / g)


def _kernel_and_slope(kernel: Kernel, d2: torch.Tensor):
    """``(k, g)`` in closed form where the kernel provides it, else by autograd of ``log k``."""
    try:
        g = kernel.slope_torch(d2)
        return torch.exp(kernel.log_k_torch(d2)), g
    except NotImplementedError:
        with torch.enable_grad():
            x = d2.detach().requires_grad_(True)
            log_k = kernel.log_k_torch(x)
            (g,) = torch.autograd.grad(log_k.sum(), x)
        return log_k.detach().exp(), g


def torch_arrays(obj, device, dtype=torch.float32, chunk_edges: int = 1 << 20,
                 rows: tuple[int, int] | None = None) -> dict:
    """The objective's arrays on ``device``, with anchor chunks computed once on the host, so
    the loop never syncs to find chunk boundaries.

    Parameters
    ----------
    obj : Objective
        The objective (:class:`~icongraph.objective.Objective`).
    device : str or torch.device
        Where the arrays go.
    dtype : torch.dtype
        The dtype of the weights and masses.
    chunk_edges : int
        About how many pairs (edges and negatives) one chunk of anchors holds.
    rows : (int, int), optional
        Only the anchors ``lo <= i < hi`` are chunked (a rank's shard,
        :mod:`icongraph.distributed`): the gradient's other rows stay 0. None: all.

    Returns
    -------
    dict
        ``rows``, ``cols`` (E,) int64 edge endpoints; ``weights`` (E,); ``row_mass`` (N,);
        ``neg_scale`` (N,) or (1,); ``edge_rate``, ``edge_phase`` (E,) or (0,); the label
        arrays of :class:`~icongraph._cpu_engine.EngineArrays` (``label_class``,
        ``class_ptr``, ``class_members``, ``class_position``, ``label_scale``); ``edge_share``
        (E,) or (0,); ``chunks``, a
        list of ``(start, stop, e0, e1)``: anchors ``start:stop`` and their edges ``e0:e1``.
    """
    indptr = obj.indptr
    degree = np.diff(indptr)
    start, end = (0, obj.n) if rows is None else rows
    rows = np.repeat(np.arange(obj.n, dtype=np.int64), degree)
    chunks = []
    per_row = max(1, int(degree.mean()) + obj.m + obj.n_label)
    step = max(1, chunk_edges // per_row)
    while start < end:
        stop = min(end, start + step)
        chunks.append((start, stop, int(indptr[start]), int(indptr[stop])))
        start = stop
    dev = torch.device(device)
    return {
        "rows": torch.as_tensor(rows, device=dev),
        "cols": torch.as_tensor(obj.indices.astype(np.int64), device=dev),
        "weights": torch.as_tensor(obj.weights, device=dev, dtype=dtype),
        "row_mass": torch.as_tensor(obj.row_mass, device=dev, dtype=dtype),
        "neg_scale": torch.as_tensor(obj.neg_scale, device=dev, dtype=dtype),
        "edge_rate": torch.as_tensor(obj.edge_rate, device=dev),
        "edge_phase": torch.as_tensor(obj.edge_phase, device=dev),
        "label_class": torch.as_tensor(obj.label_class, device=dev),
        "class_ptr": torch.as_tensor(obj.class_ptr, device=dev),
        "class_members": torch.as_tensor(obj.class_members, device=dev),
        "class_position": torch.as_tensor(obj.class_position, device=dev),
        "label_scale": torch.as_tensor(obj.label_scale, device=dev, dtype=dtype),
        "edge_share": torch.as_tensor(obj.edge_share, device=dev, dtype=dtype),
        "chunks": chunks,
    }
