"""Kernels ``k(y_i, y_j)`` for the learned neighbourhood ``q(j|i) = k_ij / sum_l k_il``.

Every kernel is a function of the squared distance ``d2 = |y_i - y_j|^2`` with values in (0, 1],
and exposes ``log k(d2)`` (torch, for autograd and the dense KL) and its slope
``g(d2) = d log k / d d2`` in closed form: the gradient of ``log k`` with respect to ``y_i`` is
``2 g(d2) (y_i - y_j)``. The CPU engine evaluates the same formulas in numba, selected by
``code`` and the two parameters ``params``.

=========  ======================================  =================================
name       k(d2)                                    g(d2)
=========  ======================================  =================================
gaussian   exp(-d2 / (2 s^2))                       -1 / (2 s^2)
student    (1 + d2/nu)^(-(nu+1)/2)   (t-SNE: nu=1)  -(nu+1) / (2 nu (1 + d2/nu))
umap       1 / (1 + a d2^b)                         -a b d2^(b-1) / (1 + a d2^b)
=========  ======================================  =================================

Two kernels live on the unit sphere (``sphere = True``): the optimiser keeps every row of the
embedding at norm 1 (:mod:`icongraph.sphere`), where ``d2 = 2 - 2 cos(y_i, y_j)`` lies in
[0, 4], and a temperature ``tau`` sets their width:

==============  =============================================  ================================
name            k(d2) on the unit sphere                       g(d2)
==============  =============================================  ================================
cosine          exp((cos - 1) / tau) = exp(-d2 / (2 tau))      -1 / (2 tau)
student-sphere  (1 + d2 / (nu tau))^(-(nu+1)/2)                -(nu+1) / (2 (nu tau + d2))
==============  =============================================  ================================

``cosine`` is InfoNCE's ``exp(cos / tau)`` divided by the constant ``exp(1 / tau)``, which
cancels in ``q``: the Gaussian kernel of width ``sigma^2 = tau`` on the normalised points (the
engines run it as the Gaussian). ``student-sphere`` tends to ``cosine`` as ``nu -> inf``.
Both depend on ``d2 / tau`` only, which makes the temperature learnable at no cost
(:func:`icongraph.sphere.temperature_gradient`).

The two Student-t kernels can learn their degrees of freedom (``learn_dof=True``). With
``s = 1 / nu`` (``student``) or ``1 / (nu tau)`` (``student-sphere``) and ``x = s d2``::

    h(d2) = d log k / d nu = -1/2 log1p(x) + (nu + 1) d2 / (2 nu (1/s + d2))
    u(d2) = h / g = (1 + x) log1p(x) / (s (nu + 1)) - d2 / nu

Every pair the engines weigh has a force ``w c (y_i - y_j)`` with ``c = 2 dL/dd2`` per unit
weight, and ``dL/dd2 = dL/dlog k * g``, so the pair adds ``w c u / 2`` to ``dL/dnu``: the
engines sum it over the same sampled pairs as the forces (``dof_rows``), an exact gradient of
the sampled objective (:class:`~icongraph.optimize.DofLearner`).

The cluster kernel (:class:`ClusterKernel`, ``q="cluster"``) is not a function of a distance:
on soft assignments ``phi = softmax(logits / T)`` (N, C)::

    q(j|i) = sum_c phi_ic w_j phi_jc / M_c,   M_c = sum_k w_k phi_kc   (the cluster masses)
    q~(j|i) = (1 - a_q) q(j|i) + a_q / N                                (debiasing on q)

Its rows sum to 1 with the C masses as the exact normaliser: no negatives
(:func:`cluster_kernel`, :func:`cluster_mass`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Kernel", "GaussianKernel", "StudentKernel", "UMAPKernel", "SphereKernel",
           "CosineKernel", "SphereStudentKernel", "find_ab_params", "KERNELS", "get_kernel",
           "ClusterKernel", "cluster_kernel", "cluster_mass"]

#: the engines' kernel codes; SCALED_STUDENT is ``(1 + p1 d2)^(-(p0+1)/2)``
GAUSSIAN, STUDENT, UMAP, SCALED_STUDENT = 0, 1, 2, 3


class Kernel:
    """Base class of the learned neighbourhood's kernel ``k(y_i, y_j)``, a function of the squared
    distance ``d2``; ``q(j|i) = k_ij / Z``.

    Subclasses (frozen dataclasses) set ``name`` and ``code`` and implement :meth:`log_k_torch`
    and :meth:`slope_torch`; the estimators take one as ``q=`` (``ICon(q=StudentKernel(0.5))``).

    Attributes
    ----------
    name : str
        The name ``q=`` takes (``"gaussian"``, ``"student"``, ``"umap"``, ...).
    code : int
        The numba engine's kernel code (-1: no compiled path; the torch engine runs it).
    params : tuple of float
        The kernel's two parameters as the engines take them.
    smooth : bool
        Whether ``k`` is smooth at ``d2 = 0`` (needed by the ``"fft"`` estimator).
    sphere : bool
        Whether the kernel lives on the unit sphere (rows kept at norm 1).

    Examples
    --------
    >>> from icongraph import StudentKernel
    >>> kernel = StudentKernel(dof=1.0)
    >>> float(kernel.log_k([0.0, 1.0])[1])  # log 1 / (1 + 1)
    -0.6931471805599453
    """

    name: str = ""
    code: int = -1

    @property
    def params(self) -> tuple[float, float]:
        raise NotImplementedError

    def log_k_torch(self, d2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def slope_torch(self, d2: torch.Tensor) -> torch.Tensor:
        """``g(d2) = d log k / d d2`` (closed form)."""
        raise NotImplementedError

    #: ``(c0, c1)`` with ``k(d2) = s(d2) (c0 + c1 d2)``, ``s = -dk/dd2``, where such an identity
    #: holds (None otherwise): the grid normaliser then gets ``sum_j k_ij`` from the same sums
    #: as the forces (FIt-SNE's trick), one kernel transform instead of two
    slope_identity: tuple[float, float] | None = None
    #: whether ``k`` is smooth at ``d2 = 0`` (grid interpolation, the ``"fft"`` estimator,
    #: needs it: a cusp's spike leaks onto the neighbouring grid nodes)
    smooth: bool = True
    #: whether ``k`` is defined on the unit sphere: the embedding's rows are kept at norm 1
    sphere: bool = False
    #: whether the degrees of freedom are fitted with the embedding (the Student-t kernels)
    learn_dof: bool = False

    def log_k(self, d2) -> np.ndarray:
        """``log k`` on numpy input (float64), for tests and reports."""
        return self.log_k_torch(torch.as_tensor(np.asarray(d2, dtype=np.float64))).numpy()


@dataclass(frozen=True)
class GaussianKernel(Kernel):
    """Gaussian ``k = exp(-d2 / (2 sigma^2))`` (SNE).

    Parameters
    ----------
    sigma : float, default=1.0
        The width.

    Attributes
    ----------
    sigma : float
        As given.

    Examples
    --------
    >>> import icongraph
    >>> icongraph.ICon(p="perplexity", q=icongraph.GaussianKernel(1.0), estimator="per_anchor")
    ICon(...)
    """

    sigma: float = 1.0
    name = "gaussian"
    code = GAUSSIAN

    def __post_init__(self):
        if not self.sigma > 0:
            raise ValueError(f"Gaussian kernel width sigma must be > 0; got {self.sigma}.")

    @property
    def params(self):
        return (0.5 / self.sigma**2, 0.0)

    @property
    def slope_identity(self):
        return (2.0 * self.sigma**2, 0.0)

    def log_k_torch(self, d2):
        return -d2 * (0.5 / self.sigma**2)

    def slope_torch(self, d2):
        return torch.full_like(d2, -0.5 / self.sigma**2)


def _check_learnable(what: str, value, flag_name: str, flag) -> None:
    """Refuse a kernel parameter ``value`` that is not a finite number > 0 (a 0-d tensor is
    one: autograd in the tests), or its learning ``flag`` that is not a bool."""
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.number, torch.Tensor))
                                       and 0 < value < np.inf):
        raise ValueError(f"{what} must be a finite number > 0; got {value!r}.")
    if not isinstance(flag, (bool, np.bool_)):
        raise ValueError(f"{flag_name} must be True or False; got {flag!r}.")


class _LearnableDof:
    """The degrees of freedom ``dof`` of a Student-t kernel, optionally learned
    (``learn_dof``; the fitted value is the estimator's ``kernel_.dof``), and their slope
    ``h = d log k / d dof`` (module docstring); a kernel defines ``_dof_scale()``, the ``s``
    of ``log k = -(dof + 1)/2 log1p(s d2)``."""

    def _check_dof(self):
        _check_learnable("Student-t degrees of freedom", self.dof, "learn_dof", self.learn_dof)

    def with_dof(self, dof: float) -> Kernel:
        """The same kernel with other degrees of freedom."""
        return replace(self, dof=dof)

    def dof_slope_torch(self, d2: torch.Tensor) -> torch.Tensor:
        """``h(d2) = d log k / d dof`` (closed form), the shape of ``d2``."""
        s, nu = self._dof_scale(), self.dof
        return -0.5 * torch.log1p(s * d2) + 0.5 * (nu + 1.0) * d2 / (nu * (1.0 / s + d2))


@dataclass(frozen=True)
class StudentKernel(_LearnableDof, Kernel):
    """Student-t ``k = (1 + d2/dof)^(-(dof+1)/2)``; ``dof=1`` is t-SNE's Cauchy kernel and
    smaller ``dof`` gives heavier tails (more separated clusters). ``learn_dof`` fits ``dof``
    with the embedding (module docstring).

    Learned from 1 in the t-SNE-like composition (symmetric perplexity-30 ``p``, global
    estimator, 2-D, ICon's defaults) on digits it settles at 3.96 / 4.00 / 3.99 (seeds 0-2):
    the objective prefers a lighter tail than the Cauchy kernel. 5-fold 10-NN accuracy 0.986
    vs 0.989 at dof 1, kNN preservation@15 0.550 vs 0.571, ``kl_divergence_`` 0.92 vs 1.19
    (seed 0): a lighter tail fits ``p`` better but separates the clusters less and keeps
    fewer neighbourhoods. From dof 10 it settles at 4.05 too (KL 0.92); from a heavier tail
    than Cauchy's (dof 0.5) the layout and the tail feed each other and dof runs to the floor
    of :data:`~icongraph.optimize.DOF_RANGE` (0.01, KL 1.34): start the learning at dof >= 1.

    Parameters
    ----------
    dof : float, default=1.0
        Degrees of freedom, > 0.
    learn_dof : bool, default=False
        Fit ``dof`` with the embedding.

    Attributes
    ----------
    dof : float
        As given, or as learned (``kernel_.dof`` of a fit with ``learn_dof``).

    Examples
    --------
    >>> import icongraph
    >>> model = icongraph.ICon(p="perplexity", q=icongraph.StudentKernel(0.5), estimator="global")
    >>> icongraph.ICon(p="perplexity", q="student", q_params={"dof": 0.5})  # the same kernel
    ICon(...)
    """

    dof: float = 1.0
    learn_dof: bool = False
    name = "student"
    code = STUDENT

    def __post_init__(self):
        self._check_dof()

    def _dof_scale(self):
        return 1.0 / self.dof

    @property
    def params(self):
        return (float(self.dof), 0.0)

    @property
    def slope_identity(self):
        return (2.0 * self.dof / (self.dof + 1.0), 2.0 / (self.dof + 1.0))

    def log_k_torch(self, d2):
        return -0.5 * (self.dof + 1.0) * torch.log1p(d2 / self.dof)

    def slope_torch(self, d2):
        return -0.5 * (self.dof + 1.0) / (self.dof + d2)


@dataclass(frozen=True)
class UMAPKernel(Kernel):
    """UMAP's ``k = 1 / (1 + a d2^b)``; build it from ``min_dist``/``spread`` with
    :meth:`from_min_dist` (the curve fit umap-learn does).

    Parameters
    ----------
    a, b : float, default=1.577, 0.895
        The curve's parameters (the defaults are ``min_dist=0.1``, ``spread=1``'s).

    Attributes
    ----------
    a, b : float
        As given.

    Examples
    --------
    >>> from icongraph import UMAPKernel
    >>> kernel = UMAPKernel.from_min_dist(min_dist=0.1, spread=1.0)
    >>> round(kernel.a, 2), round(kernel.b, 2)  # doctest: +SKIP
    (1.58, 0.9)
    """

    a: float = 1.577
    b: float = 0.895
    name = "umap"
    code = UMAP

    def __post_init__(self):
        if not (self.a > 0 and self.b > 0):
            raise ValueError(f"UMAP kernel needs a > 0 and b > 0; got a={self.a}, b={self.b}.")

    @property
    def smooth(self):
        return self.b >= 1.0

    @classmethod
    def from_min_dist(cls, min_dist: float = 0.1, spread: float = 1.0) -> UMAPKernel:
        return cls(*find_ab_params(spread, min_dist))

    @property
    def params(self):
        return (float(self.a), float(self.b))

    def log_k_torch(self, d2):
        return -torch.log1p(self.a * d2.clamp_min(0.0) ** self.b)

    def slope_torch(self, d2):
        d2 = d2.clamp_min(1e-12)
        d2b = d2**self.b
        return -self.a * self.b * d2b / (d2 * (1.0 + self.a * d2b))


class SphereKernel(Kernel):
    """Base class of the kernels on the unit sphere: a ``temperature`` ``tau > 0`` and
    ``learn_temperature`` (fit ``tau`` with the embedding, by the exact gradient of the same
    sampled objective; the fitted value is the estimator's ``kernel_.temperature``)."""

    sphere = True

    def _check_temperature(self):
        _check_learnable(f"the {self.name} kernel's temperature", self.temperature,
                         "learn_temperature", self.learn_temperature)

    def with_temperature(self, temperature: float) -> SphereKernel:
        """The same kernel at another temperature."""
        return replace(self, temperature=temperature)


@dataclass(frozen=True)
class CosineKernel(SphereKernel):
    """InfoNCE's cosine kernel with temperature on the unit sphere,
    ``k = exp((cos(y_i, y_j) - 1) / tau) = exp(-d2 / (2 tau))`` (``|y| = 1``).

    The default ``tau = 0.1``: uniform 15-NN ``p``, per-anchor normaliser, 3-D, seeds 0 and 1,
    5-fold 10-NN accuracy / kNN preservation@15 for tau 0.05 / 0.1 / 0.2 / 0.5 (mean of
    digits, tissue_gene_expression and pbmc68k_reduced): 0.898 / 0.904 / 0.905 / 0.901 and
    0.542 / 0.539 / 0.533 / 0.488. Learned from 0.5 it settles at 0.06-0.1 (0.905 / 0.542)."""

    temperature: float = 0.1
    learn_temperature: bool = False
    name = "cosine"
    code = GAUSSIAN

    def __post_init__(self):
        self._check_temperature()

    @property
    def params(self):
        return (0.5 / float(self.temperature), 0.0)

    def log_k_torch(self, d2):
        return -d2 * (0.5 / self.temperature)

    def slope_torch(self, d2):
        return torch.full_like(d2, -0.5 / float(self.temperature))


@dataclass(frozen=True)
class SphereStudentKernel(_LearnableDof, SphereKernel):
    """Student-t on the unit sphere with a temperature,
    ``k = (1 + d2 / (dof tau))^(-(dof+1)/2)`` (``|y| = 1``): on the sphere ``d2 <= 4``, so
    without the temperature the kernel could not fall below ``5^-1`` (``dof = 1``); the
    temperature sets the width, the degrees of freedom the tail; either or both can be
    learned (``learn_temperature``, ``learn_dof``).

    The default ``tau = 0.05`` (``dof = 1``, the same suite as :class:`CosineKernel`), for tau
    0.02 / 0.05 / 0.1 / 0.2 / 0.5: accuracy 0.905 / 0.908 / 0.909 / 0.907 / 0.907,
    preservation 0.617 / 0.614 / 0.598 / 0.579 / 0.540 (0.02 less accurate on digits and tissue);
    heavier tails than the cosine kernel keep more of the neighbourhoods on every data set."""

    dof: float = 1.0
    temperature: float = 0.05
    learn_temperature: bool = False
    learn_dof: bool = False
    name = "student-sphere"
    code = SCALED_STUDENT

    def __post_init__(self):
        self._check_dof()
        self._check_temperature()

    def _dof_scale(self):
        return 1.0 / (self.dof * self.temperature)

    @property
    def params(self):
        return (float(self.dof), 1.0 / (float(self.dof) * float(self.temperature)))

    def log_k_torch(self, d2):
        return -0.5 * (self.dof + 1.0) * torch.log1p(d2 / (self.dof * self.temperature))

    def slope_torch(self, d2):
        return -0.5 * (self.dof + 1.0) / (self.dof * self.temperature + d2)


@lru_cache(maxsize=64)
def find_ab_params(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """Fit ``1/(1 + a x^(2b))`` to the curve that is 1 up to ``min_dist`` and decays as
    ``exp(-(x - min_dist)/spread)`` beyond it (least squares on [0, 3 spread]), as umap-learn."""
    from scipy.optimize import curve_fit

    if not spread > 0:
        raise ValueError(f"spread must be > 0; got {spread}.")
    if not 0 <= min_dist <= spread:
        raise ValueError(f"min_dist must lie in [0, spread={spread}]; got {min_dist}.")
    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), x, y)
    return float(a), float(b)


KERNELS = {"gaussian": GaussianKernel, "student": StudentKernel, "umap": UMAPKernel,
           "cosine": CosineKernel, "student-sphere": SphereStudentKernel}


def get_kernel(kernel, **params) -> Kernel:
    """A :class:`Kernel` from an instance or a registered name (``KERNELS``) plus parameters."""
    if isinstance(kernel, Kernel):
        return kernel
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)} or pass a "
                         "Kernel instance.")
    return KERNELS[kernel](**params)


@dataclass(frozen=True)
class ClusterKernel:
    """The cluster kernel on soft assignments (module docstring): ``temperature`` ``T > 0``
    of the softmax of the logits, ``q_alpha`` in [0, 1) the uniform part mixed into ``q``
    (its debiasing, as ``alpha`` debiases ``p``). Not a :class:`Kernel`: it is no function of a
    distance, and only a clustering fits it (:class:`~icongraph.clustering.Clustering`, or
    ``ICon(q="cluster")``)."""

    temperature: float = 1.0
    q_alpha: float = 0.0
    name = "cluster"

    def __post_init__(self):
        for name, low, high in (("temperature", 0.0, np.inf), ("q_alpha", 0.0, 1.0)):
            value = getattr(self, name)
            ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.number))
                  and (low < value < high if name == "temperature" else low <= value < high))
            if not ok:
                interval = "(0, inf)" if name == "temperature" else "[0, 1)"
                raise ValueError(f"the cluster kernel's {name} must be a number in {interval}; "
                                 f"got {value!r}.")

    def assignments(self, logits: torch.Tensor) -> torch.Tensor:
        """``phi = softmax(logits / T)`` (B, C) of ``logits`` (B, C)."""
        return torch.softmax(logits / self.temperature, dim=1)

    def pair_loss(self, phi_a: torch.Tensor, phi_p: torch.Tensor, mass: torch.Tensor,
                  w_p: torch.Tensor | None, n: int) -> torch.Tensor:
        """``-mean log q~(j|i)`` over sampled pairs (0-d tensor): anchors ``phi_a`` (B, C),
        their positives ``phi_p`` (R B, C) laid out as ``anchors.repeat(R)``, masses ``M``
        (C,), the positives' weights ``w_j`` (R B,) or None (uniform), ``n`` = N."""
        # a cluster whose every phi underflowed has mass 0: the floor keeps 0 / 0 out
        mass = mass.clamp_min(torch.finfo(mass.dtype).tiny)
        q = (phi_p.view(-1, *phi_a.shape) * (phi_a / mass)).sum(-1).reshape(-1)
        if w_p is not None:
            q = q * w_p
        return -torch.log((1 - self.q_alpha) * q + self.q_alpha / n + 1e-12).mean()


def cluster_kernel(phi: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dense ``q(j|i) = sum_c phi_ic w_j phi_jc / sum_k w_k phi_kc`` (N, N): small N and tests."""
    w = torch.ones(phi.shape[0], dtype=phi.dtype) if weights is None else weights
    return (phi / cluster_mass(phi, w)) @ (w[:, None] * phi).T


def cluster_mass(phi: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cluster masses ``M_c = sum_k w_k phi_kc`` (C,)."""
    return phi.sum(0) if weights is None else (weights[:, None] * phi).sum(0)
