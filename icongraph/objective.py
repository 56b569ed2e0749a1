"""The I-Con objective on a sparse target, its sampled gradient and its exact dense value.

With ``p~`` the (debiased) target, ``k`` the kernel and ``Z_i = sum_{l != i} k_il``::

    L = sum_ij p~_ij log p~_ij  -  sum_ij p~_ij log k_ij  +  (normaliser term)

Attraction runs over the sparse edges of ``p`` (plus the uniform debiasing part, sampled with the
negatives); the normaliser is estimated from ``m`` uniformly sampled negatives per anchor.
Three estimators (``estimator=``):

* ``"per_anchor"`` (InfoNCE-style, conditional ``q(j|i)``): term ``sum_i m_i log Z_i``,
  ``Z_i ~ (N-1)/m sum_t k(i, n_t)``. Gradient for pair (i, n):
  ``(m_i min(k/zsum_i, 1) + m_n min(k/zsum_n, 1)) * 2 g (y_i - y_n)``: unbiased given the
  ``Z`` estimates except for the cap, which bounds each sampled share ``q`` at 1 as the true
  ``q(j|i)`` is (a variance guard for light-tailed kernels); ``log Z_i`` in the reported loss is
  biased low by Jensen (O(1/m)).
* ``"global"`` (t-SNE-like joint ``q_ij = k_ij / Z``): term ``M log Z`` with
  ``Z ~ (N-1)/m sum_i zsum_i``; pair coefficient ``2 M / sum_i zsum_i``. The reported value is
  ``M KL(P/M || Q)``.
* ``"fft"`` (the same joint ``q`` with ``Z`` and the repulsion summed over *all* pairs by grid
  interpolation, 1-D and 2-D only; :func:`all_pairs_gradient`): no sampling noise, the
  gradient openTSNE and FIt-SNE follow. Attraction runs over every stored edge every epoch.
  Up to ``EXACT_PAIRS_MAX_SAMPLES`` points the sums run over all pairs exactly instead
  (cheaper than the grid's transforms there; :func:`all_pair_sums`).
* ``"neg"`` (fixed normaliser, UMAP-like; Damrich et al. 2023): ``q`` is read as a Bernoulli
  probability and the loss is the binary cross-entropy
  ``sum_ij w_ij (-log k_ij) + sum_i r_i sum_t -log(1 - k(i, n_t))``, only the anchor moving on a
  negative pair, with ``r_i = negative_sample_rate deg_i / (m w_max)``: umap-learn's update in
  expectation (each edge is an update of weight ``w/w_max`` per epoch, each update draws
  ``negative_sample_rate`` negatives); ``deg_i`` is the weighted row mass ``sum_j w_ij``.

Normaliser estimates lag one epoch (they come from the previous evaluation), so one pass over the
data per epoch suffices. ``n_negatives <= 0`` enumerates every other point instead (exact mode);
for ``"neg"``, ``n_negatives=None`` draws umap-learn's count (:func:`matched_negatives`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from . import _cpu_engine as cpu
from . import distributed
from .kernels import Kernel
from .targets import Target

#: the "fft" estimator sums over all pairs exactly up to this many points (N^2 kernel
#: evaluations cost less than the grid's transforms there)
EXACT_PAIRS_MAX_SAMPLES = 10_000
#: same-class partners drawn per labelled anchor and epoch (the label part of ``p~``)
N_LABEL_PARTNERS = 5

__all__ = ["EXACT_PAIRS_MAX_SAMPLES", "N_LABEL_PARTNERS", "ESTIMATORS", "Objective", "check_composition",
           "check_q_alpha",
           "epoch_seed", "matched_negatives", "exact_loss", "all_pair_sums",
           "all_pairs_gradient"]

#: name -> the numba engine's code; ``"fft"`` is the global estimator with ``Z`` and the
#: repulsion from grid interpolation (:func:`all_pairs_gradient`) instead of negatives
ESTIMATORS = {"per_anchor": cpu.PER_ANCHOR, "global": cpu.GLOBAL, "neg": cpu.NEG,
              "fft": cpu.GLOBAL}


def epoch_seed(seed: int, epoch: int) -> int:
    """The per-epoch seed both engines hash negatives from."""
    return int(cpu.hash32(np.int64(seed) + np.int64(epoch + 1) * cpu.GOLDEN))


def matched_negatives(negative_sample_rate: float, target: Target) -> int:
    """Negatives per anchor per epoch that umap-learn draws on average:
    ``ceil(negative_sample_rate * mean_i(deg_i) / w_max)`` (each edge ``(i, j)`` is
    ``w_ij / w_max`` updates of ``i`` per epoch, each with ``negative_sample_rate``
    negatives; ``deg_i = sum_j w_ij``). About 32 on UMAP's 15-NN fuzzy graphs (mean
    ``deg_i`` 5.7-6.9 on the real-data suite). Drawing that many keeps the repulsion's
    sampling noise at umap-learn's level; fewer negatives, reweighted to the same expected
    force, blur the finest local structure."""
    w_max = float(target.graph.data.max()) if target.graph.nnz else 1.0
    return max(1, int(np.ceil(negative_sample_rate * float(target.row_mass.mean()) / w_max)))


@dataclass
class Objective:
    """Target + kernel + estimator, prepared as the arrays both engines consume (for the numba
    engine bundled once as ``engine``, an :class:`~icongraph._cpu_engine.EngineArrays`).

    ``weights`` holds the attraction weight of each stored edge for the *gradient* of anchor
    ``i``: ``(1 - alpha)(p_ij + p_ji) s`` with ``p_scale`` ``s = 1`` for the KL estimators and
    ``1 / w_max`` for NEG (whose attraction is ``p~ / w_max``, umap-learn's update rate); the
    uniform part of ``p~`` attracts a sampled pair with ``alpha (m_i + m_j) s / m``. With
    labels (:func:`~icongraph.targets.with_labels`) row ``i`` of ``p`` is scaled by ``1 - w_i``
    before symmetrising, and each labelled anchor draws ``n_label_partners`` (``L``) members of
    its class per epoch, uniformly among the others (the engines' counter hash, keyed like the
    negatives), each attracting with weight ``(1 - alpha) s w (m_i + m_j) / L``: in expectation
    the gradient of the label part, never its ``n_c^2`` edges.
    With ``edge_sampling`` an edge is visited only in ``w_e / max w`` of the epochs (evenly
    spaced, deterministic) with weight ``max w``: the same expected gradient for a fraction of
    the work on graphs with many weak edges (UMAP's epochs-per-sample idea).

    Parameters
    ----------
    target : Target
        The fitted target ``p``.
    kernel : Kernel
        The kernel of ``q``.
    estimator : {"per_anchor", "global", "fft", "neg"}, default="per_anchor"
        How the normaliser is estimated.
    n_negatives : int or None, default=5
        Negatives per anchor and epoch (0 or less: every other point; None with ``"neg"``:
        umap-learn's count, :func:`matched_negatives`).
    negative_sample_rate : float, default=5.0
        UMAP's negatives per edge update (``"neg"``).
    clip : float, default=inf
        Each pair's force clipped per coordinate (UMAP: 4).
    edge_sampling : bool, default=False
        Visit edges in proportion to their weight (see above).
    n_label_partners : int, default=5
        Class members drawn per labelled anchor and epoch.
    q_alpha : float in [0, 1), default=0.0
        Debiasing of ``q``: ``q~ = (1 - q_alpha) q + q_alpha U`` (``U`` uniform on the anchor's
        N - 1 others, or on the pairs for the global estimators), loss ``-sum p~ log q~``;
        not with ``"neg"``. The sampled engines then run
        :func:`~icongraph._cpu_engine.sampled_gradient_q` (attraction weighted by ``rho =
        (1 - q_alpha) q / q~``, normaliser by ``S_i = sum_j p~_ij rho_ij``) with its lagged
        state from :meth:`q_state`; ``"fft"`` weights its sums the same way at the current
        ``Z`` (:func:`all_pairs_gradient`). 0 runs today's engines unchanged.

    Attributes
    ----------
    n : int
        Points N.
    total_mass : float
        ``sum_ij p_ij``.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph import FuzzyTarget, Objective, UMAPKernel, knn_search
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> target = FuzzyTarget(15).build(knn_search(X, 14, random_state=0))
    >>> objective = Objective(target, UMAPKernel(), estimator="neg", n_negatives=None)
    """

    target: Target
    kernel: Kernel
    estimator: str = "per_anchor"
    n_negatives: int | None = 5
    negative_sample_rate: float = 5.0
    clip: float = np.inf
    edge_sampling: bool = False
    n_label_partners: int = N_LABEL_PARTNERS
    q_alpha: float = 0.0

    def __post_init__(self):
        check_composition(self.estimator, self.kernel, q_alpha=self.q_alpha)
        self.q_alpha = float(self.q_alpha)
        if self.n_negatives is None and self.estimator == "neg":
            self.n_negatives = matched_negatives(self.negative_sample_rate, self.target)
        if not isinstance(self.n_negatives, (int, np.integer)) or isinstance(self.n_negatives, bool):
            raise ValueError(f"n_negatives must be an integer (<= 0: exact mode; None: the "
                             f"'neg' estimator's matched count); got {self.n_negatives!r}.")
        if self.estimator == "fft":
            self.edge_sampling = False  # the interpolated gradient is exact: keep it so
        p = self.target.graph
        self.n = p.shape[0]
        if self.n < 2:
            raise ValueError("the objective needs at least 2 points.")
        mass = self.target.row_mass
        w_lab = self.target.label_weights
        # the stored edges: p + p^T; for a symmetric p (and no labels reweighting its rows)
        # that is 2 p on p's own structure, with no transpose formed (1.7 GB less at 10M)
        symmetric = self.target.symmetric and not w_lab.any()
        if w_lab.any():  # the kNN part of a labelled row keeps 1 - w_i of its mass
            p = (sp.diags((1.0 - w_lab).astype(np.float32)) @ p).tocsr()
        if symmetric:  # the weights a new array, the structure p's own (never written)
            p = p if p.has_sorted_indices else p.sorted_indices()
            sym = sp.csr_matrix((p.data * np.float32(2.0), p.indices, p.indptr), shape=p.shape)
        else:
            sym = (p + p.T).tocsr()
            sym.sort_indices()
        self.alpha = float(self.target.alpha)
        if self.estimator == "neg":
            w_max = float(self.target.graph.data.max())
            self.p_scale = 1.0 / w_max
            self.neg_scale = (self.negative_sample_rate * mass / (w_max * self.m)).astype(
                np.float32)
        else:
            self.p_scale = 1.0
            self.neg_scale = np.zeros(1, np.float32)
        sym.data *= np.float32((1.0 - self.alpha) * self.p_scale)
        if self.q_alpha > 0.0 and symmetric:  # p_ij / (p_ij + p_ji): each direction's share
            self.edge_share = np.full(sym.nnz, 0.5, np.float32)
        elif self.q_alpha > 0.0:
            rows = np.repeat(np.arange(self.n), np.diff(sym.indptr))
            own = np.asarray(p[rows, sym.indices]).ravel() * ((1.0 - self.alpha) * self.p_scale)
            self.edge_share = (own / np.maximum(sym.data, 1e-30)).astype(np.float32)
        else:
            self.edge_share = np.zeros(0, np.float32)
        self.indptr = sym.indptr.astype(np.int64)
        self.indices = sym.indices.astype(np.int32, copy=False)
        self.weights = sym.data.astype(np.float32, copy=False)
        del sym
        if self.edge_sampling:  # visit edge e in w_e / w_max of the epochs, with weight w_max
            w_max = float(self.weights.max())
            self.edge_rate = (self.weights / w_max).astype(np.float32)
            self.edge_phase = np.modf(np.arange(len(self.weights)) * 0.6180339887498949)[0]
            self.edge_phase = self.edge_phase.astype(np.float32)
            self.weights = np.full_like(self.weights, w_max)
        else:
            self.edge_rate = self.edge_phase = np.zeros(0, np.float32)
        self.row_mass = mass.astype(np.float32)
        self.total_mass = float(mass.sum())
        self.code = ESTIMATORS[self.estimator]
        self.kernel_params = self.kernel.params if self.kernel.code >= 0 else (0.0, 0.0)
        p0, p1 = self.kernel_params
        classes = self.target.classes
        if w_lab.any():
            self.n_label = int(self.n_label_partners)
            if self.n_label < 1:
                raise ValueError(f"n_label_partners must be >= 1; got {self.n_label_partners}.")
            self.label_class, self.class_ptr = classes.label, classes.ptr
            self.class_members, self.class_position = classes.members, classes.position
            self.label_scale = ((1.0 - self.alpha) * self.p_scale * w_lab).astype(np.float32)
        else:
            self.n_label = 0
            self.label_class = self.class_members = self.class_position = np.zeros(0, np.int32)
            self.class_ptr = np.zeros(1, np.int64)
            self.label_scale = np.zeros(0, np.float32)
        self.engine = cpu.EngineArrays(
            indptr=self.indptr, indices=self.indices, weights=self.weights,
            edge_rate=self.edge_rate, edge_phase=self.edge_phase, row_mass=self.row_mass,
            neg_scale=self.neg_scale, label_class=self.label_class, class_ptr=self.class_ptr,
            class_members=self.class_members, class_position=self.class_position,
            label_scale=self.label_scale, n_label=self.n_label, n_neg=int(self.n_negatives),
            estimator=int(self.code), code=int(self.kernel.code), p0=float(p0), p1=float(p1),
            alpha=float(self.alpha), p_scale=float(self.p_scale), clip=float(self.clip),
            edge_share=self.edge_share, q_alpha=self.q_alpha)

    def reorder_(self, order: np.ndarray) -> None:
        """Store the points in ``order`` (row ``r`` is point ``order[r]``;
        :mod:`icongraph.ordering`), in place: the edges, their weights, schedule and shares,
        the row masses and the NEG weights are relabelled one array at a time, ``target`` and
        the kernel are kept. ``reorder_(rank)`` with ``rank[order] = arange(N)`` restores the
        first order. Not with labels (their classes would need relabelling too).

        Parameters
        ----------
        order : (N,) int64
            A permutation of the points.
        """
        from .ordering import CSRPermutation

        if self.n_label:
            raise ValueError("a labelled objective cannot be reordered.")
        moved = CSRPermutation(self.indptr, order)
        engine, self.engine = self.engine, None
        # the engine tuple holds the arrays too: keep only its scalars, so each old array is
        # freed once replaced
        engine = engine._replace(indices=None, weights=None, edge_rate=None, edge_phase=None,
                                 edge_share=None)
        self.indices = moved.indices(self.indices)
        for name in ("weights", "edge_rate", "edge_phase", "edge_share"):
            setattr(self, name, moved.values(getattr(self, name)))
        self.indptr = moved.indptr
        self.row_mass = self.row_mass[moved.order]
        if len(self.neg_scale) == self.n:
            self.neg_scale = self.neg_scale[moved.order]
        self.engine = engine._replace(
            indptr=self.indptr, indices=self.indices, weights=self.weights,
            edge_rate=self.edge_rate, edge_phase=self.edge_phase, row_mass=self.row_mass,
            neg_scale=self.neg_scale, edge_share=self.edge_share)

    def set_kernel(self, kernel: Kernel) -> None:
        """Swap in ``kernel`` of the same form with other parameters (a learned temperature):
        both engines read the new one from the next evaluation on."""
        if kernel.code != self.kernel.code:
            raise ValueError(f"set_kernel keeps the kernel's form; got {kernel!r} for "
                             f"{self.kernel!r}.")
        self.kernel = kernel
        self.kernel_params = kernel.params
        p0, p1 = self.kernel_params
        self.engine = self.engine._replace(p0=float(p0), p1=float(p1))

    @property
    def m(self) -> int:
        """Negatives per anchor per evaluation (N - 1 in exact mode)."""
        return self.n - 1 if self.n_negatives <= 0 else int(self.n_negatives)

    def normaliser_terms(self, zsum: np.ndarray | torch.Tensor) -> float:
        """The normaliser part of the loss from per-anchor sums of k over the negatives."""
        if self.estimator == "neg":
            return 0.0
        zsum = torch.as_tensor(zsum, dtype=torch.float64)
        scale = (self.n - 1) / self.m
        if self.estimator == "per_anchor":
            mass = torch.as_tensor(self.row_mass, dtype=torch.float64, device=zsum.device)
            return float((mass * torch.log(scale * zsum)).sum())
        total = self.total_mass
        return total * float(np.log(scale * float(zsum.sum()))) - total * np.log(total)

    def constant(self) -> float:
        """``sum p~ log p~`` (0 for NEG, whose loss is a cross-entropy, not a KL); computed once."""
        if not hasattr(self, "_constant"):
            self._constant = 0.0 if self.estimator == "neg" else self.target.entropy_term()
        return self._constant

    def q_state(self, zsum, s_rows):
        """``(s_prev, q_level, global_scale)`` for the next evaluation with ``q_alpha > 0``
        from this one's ``zsum`` and ``s_rows`` (:func:`~icongraph._cpu_engine.
        sampled_gradient_q`): per anchor, ``S_j`` lagged one evaluation (``s_prev``); global,
        the mean kernel value ``Z / (N (N - 1))`` (``q_level``) and the pair coefficient
        ``2 S / sum_i zsum_i`` with ``S = sum_i s_rows[i]`` (0-d tensors on CUDA: no sync)."""
        if self.estimator == "global":
            total = zsum.sum()
            return s_rows, total / (self.n * self.m), 2.0 * s_rows.sum() / total
        return s_rows, 0.0, 0.0

    def normaliser_state(self, zsum):
        """``(z_prev, global_scale)`` for the next evaluation from this one's ``zsum``."""
        if self.estimator in ("global", "fft"):
            return zsum, 2.0 * self.total_mass / zsum.sum()  # a 0-d tensor on CUDA: no sync
        return zsum, 0.0


def _grid_sums(obj: Objective, y: torch.Tensor, normaliser: bool, uniform: bool,
               with_log: bool, shift, cache: dict | None) -> dict:
    """:func:`all_pair_sums`'s sums from grid interpolation (float64, centred layout)."""
    from .interpolation import grid_potentials

    kernel = obj.kernel
    n, d = y.shape
    keep = 1.0 - obj.q_alpha
    yc = y.detach().double()
    yc = yc - yc.mean(0)  # forces are translation invariant; centring keeps them accurate
    ones = torch.ones((n, 1), dtype=torch.float64, device=y.device)
    sq = (yc * yc).sum(1, keepdim=True)

    def k(d2):
        return torch.exp(kernel.log_k_torch(d2))

    def rho(d2):  # (1 - a_q) k / k~: 1 without the debiasing of q
        return keep * k(d2) / (keep * k(d2) + shift) if obj.q_alpha > 0 else torch.ones_like(d2)

    def log_k_debiased(d2):  # log k~
        return torch.log(keep * k(d2) + shift) if obj.q_alpha > 0 else kernel.log_k_torch(d2)

    groups, names = [], []
    if normaliser:
        groups.append((lambda d2: -k(d2) * kernel.slope_torch(d2), torch.cat([ones, yc, sq], 1)))
        names.append("s")
        if kernel.slope_identity is None:
            groups.append((k, ones))
            names.append("k")
    if uniform:
        mass = torch.as_tensor(obj.row_mass, dtype=torch.float64, device=y.device)[:, None]
        groups.append((lambda d2: -kernel.slope_torch(d2) * rho(d2),
                       torch.cat([ones, yc, mass, mass * yc], 1)))
        names.append("r")
        if obj.q_alpha > 0:
            groups.append((rho, ones))
            names.append("rho")
    if with_log:
        groups.append((log_k_debiased, ones))
        names.append("log")
    phi = dict(zip(names, grid_potentials(y, groups, cache=cache)))
    zero = torch.zeros(1, dtype=torch.float64, device=y.device)  # the self terms f(0) c_i
    sums = {}
    if normaliser:
        s1, sy, ssq = phi["s"][:, :1], phi["s"][:, 1:1 + d], phi["s"][:, 1 + d:]
        if kernel.slope_identity is None:
            row_z = phi["k"][:, 0] - 1.0  # k(0) = 1: remove the self term
        else:
            c0, c1 = kernel.slope_identity
            k_sums = c0 * s1 + c1 * (sq * s1 - 2 * (yc * sy).sum(1, keepdim=True) + ssq)
            row_z = k_sums[:, 0] - 1.0
        sums.update(force_s=yc * s1 - sy, row_z=row_z)
    if uniform:
        r = phi["r"]
        r1, ry, rm, rmy = r[:, :1], r[:, 1:1 + d], r[:, 1 + d:2 + d], r[:, 2 + d:]
        sums.update(force_r=yc * r1 - ry, force_rm=yc * rm - rmy)
        if obj.q_alpha > 0:
            sums["rho_sum"] = phi["rho"][:, 0] - rho(zero)
    if with_log:
        sums["log_k"] = phi["log"][:, 0] - log_k_debiased(zero)
    return sums


def check_composition(estimator: str, kernel: Kernel, n_samples: int | None = None,
                      n_components: int | None = None, q_alpha: float = 0.0) -> None:
    """Refuse a normaliser ``estimator`` that cannot work with this kernel or layout, before
    any work.

    Parameters
    ----------
    estimator : str
        A key of :data:`ESTIMATORS`.
    kernel : Kernel
        The kernel ``q``.
    n_samples, n_components : int, optional
        The layout's size, when known: the ``"fft"`` estimator interpolates on a 1-D or 2-D
        grid above :data:`EXACT_PAIRS_MAX_SAMPLES` points; the sphere needs 2 dimensions.
    q_alpha : float, default=0.0
        The debiasing of ``q`` (:class:`Objective`): in [0, 1), and > 0 only with the KL
        estimators (not ``"neg"``).

    Raises
    ------
    ValueError
        An unknown estimator; ``"fft"`` with a kernel that has a cusp at 0, lives on the
        sphere or learns its degrees of freedom, or in 3-D and above on more than
        ``EXACT_PAIRS_MAX_SAMPLES`` points; a kernel on the sphere in fewer than 2 dimensions;
        ``q_alpha`` not a number in [0, 1), or > 0 with ``"neg"``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)}; got {estimator!r}.")
    check_q_alpha(q_alpha, estimator)
    if kernel.sphere and estimator == "fft":
        raise ValueError(f"the 'fft' estimator interpolates on a planar grid and cannot serve "
                         f"the {kernel.name!r} kernel on the sphere; use estimator='per_anchor' "
                         "or 'global' (sampled negatives).")
    if kernel.sphere and n_components is not None and n_components < 2:
        raise ValueError(f"the {kernel.name!r} kernel lives on the unit sphere, which needs "
                         f"n_components >= 2 (2: the circle, 3: the sphere); got "
                         f"{n_components}.")
    if estimator == "fft" and kernel.learn_dof:
        raise ValueError("learn_dof needs the gradient of the normaliser in dof, which the "
                         "engines sum over sampled negatives: use estimator='global' (or "
                         "'per_anchor', 'neg') with learn_dof, or a fixed dof with 'fft'.")
    if estimator == "fft" and not kernel.smooth:
        raise ValueError(f"the 'fft' estimator interpolates the kernel on a grid, which "
                         f"needs a kernel smooth at 0; {kernel!r} has a cusp there. "
                         "Use estimator='global' (sampled negatives).")
    if (estimator == "fft" and n_components is not None and n_components > 2
            and n_samples is not None and n_samples > EXACT_PAIRS_MAX_SAMPLES):
        raise ValueError(f"the 'fft' estimator interpolates on a 1-D or 2-D grid above "
                         f"{EXACT_PAIRS_MAX_SAMPLES} points; use estimator='global' (sampled "
                         f"negatives) for a {n_components}-D embedding of {n_samples} points.")


def check_q_alpha(q_alpha, estimator: str) -> None:
    """``q_alpha`` is a number in [0, 1), and 0 unless ``estimator`` normalises ``q``
    (every estimator but ``"neg"``); a ValueError otherwise."""
    if (isinstance(q_alpha, bool) or not isinstance(q_alpha, (int, float, np.integer, np.floating))
            or not 0.0 <= q_alpha < 1.0):
        raise ValueError(f"q_alpha must be a number in [0, 1); got {q_alpha!r}.")
    if q_alpha > 0 and estimator == "neg":
        raise ValueError(f"q_alpha={q_alpha!r} debiases a normalised q, but the 'neg' estimator "
                         "(UMAP's negative sampling) has no normaliser: q is a Bernoulli "
                         "probability there. Use q_alpha=0, or estimator='per_anchor' or "
                         "'global'.")


def all_pair_sums(obj: Objective, y: torch.Tensor, normaliser: bool = True,
                  uniform: bool = False, with_log: bool = False, shift=0.0,
                  cache: dict | None = None) -> dict:
    """Sums over all pairs that the ``"fft"`` estimator needs, with ``s = -dk/dd2``,
    ``r = -d log k / dd2`` and, for the debiasing of ``q`` (``a_q = obj.q_alpha > 0``),
    ``k~ = (1 - a_q) k + shift`` and ``rho = (1 - a_q) k / k~`` (``k~ = k``, ``rho = 1`` when
    ``a_q = 0``); tensors on ``y``'s device:

    * ``normaliser``: ``force_s`` (N, d): ``sum_j s_ij (y_i - y_j)``; ``row_z`` (N,):
      ``sum_{j != i} k_ij``;
    * ``uniform`` (the uniform part of ``p~``): ``force_r``, ``force_rm`` (N, d):
      ``sum_j rho_ij r_ij (y_i - y_j)`` and ``sum_j m_j rho_ij r_ij (y_i - y_j)`` (``m`` the
      row masses); with ``a_q > 0`` also ``rho_sum`` (N,): ``sum_{j != i} rho_ij``;
    * ``with_log``: ``log_k`` (N,): ``sum_{j != i} log k~_ij``.

    Up to :data:`EXACT_PAIRS_MAX_SAMPLES` points they are exact (the numba engine on CPU,
    blocked torch elsewhere); above, from grid interpolation (:func:`_grid_sums`, 1-D and 2-D;
    ``cache`` as in :func:`~icongraph.interpolation.grid_potentials`, for calls whose kernels
    do not change). In a process group (:mod:`icongraph.distributed`) each rank sums the rows
    of its shard and they are all-gathered (the grid's sums are computed whole on every rank).
    """
    n = y.shape[0]
    if n > EXACT_PAIRS_MAX_SAMPLES:
        return _grid_sums(obj, y, normaliser, uniform, with_log, shift, cache)
    debias = obj.q_alpha > 0
    keys = ((["force_s", "row_z"] if normaliser else [])
            + (["force_r", "force_rm"] + (["rho_sum"] if debias else []) if uniform else [])
            + (["log_k"] if with_log else []))
    group = distributed.current()
    lo, hi = group.bounds(n)
    if y.device.type == "cpu" and obj.kernel.code >= 0:
        y32 = y.detach().float().numpy()
        out = {"force_s": np.zeros_like(y32), "row_z": np.zeros(n, np.float32),
               "force_r": np.zeros_like(y32), "force_rm": np.zeros_like(y32),
               "log_k": np.zeros(n, np.float32), "rho_sum": np.zeros(n, np.float32)}
        cpu.all_pair_sums(np.ascontiguousarray(y32.T), obj.engine, normaliser, uniform,
                          with_log, float(shift), out["force_s"], out["row_z"],
                          out["force_r"], out["force_rm"], out["log_k"], out["rho_sum"], lo, hi)
        group.gather_numpy_rows([out[key] for key in keys], lo, hi)
        return {key: torch.from_numpy(out[key]).double() for key in keys}
    kernel = obj.kernel
    keep = 1.0 - obj.q_alpha
    yd = y.detach().double()
    mass = torch.as_tensor(obj.row_mass, dtype=torch.float64, device=y.device)
    sums = {key: [] for key in keys}
    block = max(1, (1 << 22) // max(n, 1))
    for start in range(lo, hi, block):
        stop = min(start + block, hi)
        diff = yd[start:stop, None, :] - yd[None, :, :]  # (B, N, d)
        d2 = (diff * diff).sum(-1)
        log_k = kernel.log_k_torch(d2)
        g = kernel.slope_torch(d2)
        k = torch.exp(log_k)
        if normaliser:
            sums["force_s"].append(((-k * g)[..., None] * diff).sum(1))
            sums["row_z"].append(k.sum(1) - 1.0)  # k(0) = 1: remove the self term
        # the debiased pair weight and log-kernel (their self terms at k(0) = 1 subtracted)
        k_t = keep * k + shift if debias else k
        r = -g * (keep * k / k_t) if debias else -g
        if uniform:
            sums["force_r"].append((r[..., None] * diff).sum(1))
            sums["force_rm"].append(((r * mass)[..., None] * diff).sum(1))
            if debias:
                sums["rho_sum"].append((keep * k / k_t).sum(1) - keep / (keep + shift))
        if with_log:
            sums["log_k"].append(torch.log(k_t).sum(1) - torch.log(
                torch.as_tensor(keep + shift, dtype=torch.float64, device=y.device))
                if debias else log_k.sum(1))  # log k(0) = 0
    width = {"force_s": yd.shape[1], "force_r": yd.shape[1], "force_rm": yd.shape[1]}
    sums = {key: torch.cat(parts) if parts else yd.new_zeros((0, width[key]) if key in width
                                                               else (0,))  # an empty shard's
            for key, parts in sums.items()}
    if group.active:  # one collective of the shard's rows, packed side by side
        cols = [v.reshape(v.shape[0], -1) for v in sums.values()]
        full = group.gather_rows(torch.cat(cols, 1), n).to(y.device)
        at, out = 0, {}
        for (key, value), col in zip(sums.items(), cols):
            part = full[:, at:at + col.shape[1]]
            out[key] = part[:, 0].contiguous() if value.dim() == 1 else part.contiguous()
            at += col.shape[1]
        sums = out
    return sums


def all_pairs_gradient(obj: Objective, y: torch.Tensor, exaggeration: float, attract,
                       with_loss: bool = False, cache: dict | None = None):
    """The ``"fft"`` estimator: t-SNE's joint normaliser and repulsion over *all* pairs
    (:func:`all_pair_sums`) added to the attraction. With ``s = -dk/dd2``, ``M = sum_ij
    p~_ij`` and ``Z = sum_{i != j} k_ij``::

        dL/dy_i = (attraction) - (4 S / Z) sum_j s_ij (y_i - y_j)

    with ``S = M``, or with the debiasing of ``q`` (``a_q = obj.q_alpha > 0``; ``q~ = k~ / Z``,
    ``k~ = (1 - a_q) k + a_q Z / (N (N - 1))``, every attracting pair weighted by
    ``rho = (1 - a_q) k / k~``) ``S = sum_ij p~_ij rho_ij``. For ``alpha > 0`` the uniform
    part of ``p~`` attracts every pair with weight ``alpha (m_i + m_j) rho_ij / (N - 1)``
    (``m`` the row masses), times the exaggeration, as in the sampled engine.

    Parameters
    ----------
    obj : Objective
        The objective (estimator ``"fft"``).
    y : torch.Tensor
        (N, d) the embedding.
    exaggeration : float
        Multiplies the attraction.
    attract : callable
        ``attract(shift) -> (grad, loss_rows, s_rows)``: the edge (and same-class) attraction
        at ``shift = a_q Z / (N (N - 1))`` (a 0-d tensor), from the numba engine
        (:func:`~icongraph._cpu_engine.edge_gradient`) or
        :func:`~icongraph._torch_engine.edge_forces_torch`: ``grad`` (N, d), which this
        function adds to, the edges' loss per row (N,) and, with ``a_q > 0``, their part of
        ``S`` per row (N,; else None).
    with_loss : bool, default=False
        Whether to compute the loss (the global estimator's ``L``).
    cache : dict, optional
        Kept across epochs: the interpolation grid and the kernels' transforms.

    Returns
    -------
    (grad, loss) : the (N, d) gradient and the loss (NaN unless ``with_loss``).
    """
    n = y.shape[0]
    debias, alpha = obj.q_alpha > 0, obj.alpha > 0
    # without the debiasing of q one set of sums; with it, Z first: the pair weights need it
    sums = all_pair_sums(obj, y, uniform=alpha and not debias,
                         with_log=with_loss and alpha and not debias, cache=cache)
    z = sums["row_z"].sum().clamp_min(1e-300)
    shift = obj.q_alpha * z / (n * (n - 1))
    grad, loss_rows, s_rows = attract(shift)
    if debias and alpha:
        sums.update(all_pair_sums(obj, y, normaliser=False, uniform=True,
                                  with_log=with_loss, shift=shift))
    total = obj.total_mass
    mass = torch.as_tensor(obj.row_mass, dtype=torch.float64, device=y.device)
    weight = total
    if debias:
        weight = torch.as_tensor(s_rows, dtype=torch.float64, device=y.device).sum()
        if alpha:
            weight = weight + obj.alpha / (n - 1) * (mass * sums["rho_sum"]).sum()
    step = -(4.0 * weight / z) * sums["force_s"]
    if alpha:
        pull = mass[:, None] * sums["force_r"] + sums["force_rm"]
        step = step + (2.0 * exaggeration * obj.alpha / (n - 1)) * pull
    grad.add_(step.to(grad.dtype))
    loss = float("nan")
    if with_loss:
        loss = obj.constant() + float(loss_rows.sum()) + total * float(torch.log(z)) \
            - total * np.log(total)
        if alpha:
            loss -= obj.alpha / (n - 1) * float((mass * sums["log_k"]).sum())
    return grad, loss


def exact_loss(target: Target, kernel: Kernel, y, estimator: str = "per_anchor",
               negative_sample_rate: float = 5.0, q_alpha: float = 0.0) -> torch.Tensor:
    """The objective by brute force on dense (N, N) matrices (float64; small N only).

    Differentiable in ``y`` (a torch tensor). For ``"neg"`` the attraction is
    ``-sum_ij p~_ij / w_max log k_ij`` and the repulsion moves only the anchor, as the sampled
    estimator does, so its autograd gradient is the estimator's expectation.

    Parameters
    ----------
    target : Target
        ``p`` (with its debiasing and labels).
    kernel : Kernel
        The kernel of ``q``.
    y : array-like or torch.Tensor of shape (N, d)
        The embedding.
    estimator : {"per_anchor", "global", "fft", "neg"}, default="per_anchor"
        Which objective: conditional ``q`` per anchor, joint ``q`` (``"global"`` and ``"fft"``),
        or UMAP's binary cross-entropy.
    negative_sample_rate : float, default=5.0
        The repulsion's weight of ``"neg"``.
    q_alpha : float in [0, 1), default=0.0
        The debiasing of ``q``: ``q~ = (1 - q_alpha) q + q_alpha U`` with ``U`` uniform on the
        N - 1 other points of the anchor (``"per_anchor"``) or on the ``N (N - 1)`` pairs
        (``"global"``, ``"fft"``); the loss is ``sum p~ log p~ - sum p~ log q~`` (the global
        one on ``p~ / M``, times ``M``). Not with ``"neg"``.

    Returns
    -------
    torch.Tensor
        The loss, a float64 scalar (``M`` times ``kl_divergence_``, ``M`` the target's mass).

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> model = icongraph.TSNE(random_state=0).fit(X[:500])
    >>> loss = icongraph.exact_loss(model.target_, model.kernel_, model.embedding_, "fft")
    >>> bool(abs(loss / model.target_.row_mass.sum() - model.kl_divergence_) < 1e-3)
    True
    """
    check_q_alpha(q_alpha, "global" if estimator == "fft" else estimator)
    y = torch.as_tensor(y, dtype=torch.float64)
    n = y.shape[0]
    p = torch.as_tensor(target.graph.toarray(), dtype=torch.float64)
    off = ~torch.eye(n, dtype=torch.bool)
    mass = p.sum(1)
    alpha = target.alpha
    w = torch.as_tensor(target.label_weights, dtype=torch.float64)[:, None]
    p_t = (1 - w) * p
    if target.classes is not None:
        label = torch.as_tensor(target.classes.label, dtype=torch.long)
        same = ((label[:, None] == label[None, :]) & (label[:, None] >= 0) & off).double()
        p_t = p_t + w * mass[:, None] * same / same.sum(1, keepdim=True).clamp_min(1.0)
    p_t = (1 - alpha) * p_t + (alpha * mass / (n - 1))[:, None]
    p_t = p_t * off
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1).masked_fill(~off, 1.0)  # diag unused
    if estimator == "neg":
        w_max = p.max()
        d2_anchor = ((y[:, None, :] - y.detach()[None, :, :]) ** 2).sum(-1).masked_fill(~off, 1.0)
        k_anchor = torch.exp(kernel.log_k_torch(d2_anchor))
        rate = negative_sample_rate * mass / (w_max * (n - 1))
        att = -(p_t / w_max * kernel.log_k_torch(d2))[off].sum()
        rep = -(rate[:, None] * torch.log((1 - k_anchor).clamp_min(1e-12)))[off].sum()
        return att + rep
    log_k = kernel.log_k_torch(d2)
    cross = -(p_t * log_k)[off].sum()
    ent = (p_t[p_t > 0] * torch.log(p_t[p_t > 0])).sum()
    if estimator == "per_anchor":
        log_z = torch.logsumexp(log_k.masked_fill(~off, -torch.inf), dim=1)
        if q_alpha > 0:  # q~(j|i) = (1 - a_q) k_ij / Z_i + a_q / (N - 1)
            q_t = (1 - q_alpha) * torch.exp(log_k - log_z[:, None]) + q_alpha / (n - 1)
            return ent - (p_t * torch.log(q_t))[off].sum()
        return ent + cross + (mass * log_z).sum()
    if estimator in ("global", "fft"):
        total = mass.sum()
        log_z = torch.logsumexp(log_k[off], dim=0)
        if q_alpha > 0:  # q~_ij = (1 - a_q) k_ij / Z + a_q / (N (N - 1))
            q_t = (1 - q_alpha) * torch.exp(log_k - log_z) + q_alpha / (n * (n - 1))
            return ent - (p_t * torch.log(q_t))[off].sum() - total * torch.log(total)
        return ent + cross + total * log_z - total * torch.log(total)
    raise ValueError(f"unknown estimator {estimator!r}.")
