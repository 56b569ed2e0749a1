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

The cluster kernel of clustering is not a function of a distance: on soft assignments
``phi`` (N, C), ``q(j|i) = sum_c phi_ic w_j phi_jc / M_c`` with the cluster masses
``M_c = sum_k w_k phi_kc`` (:func:`cluster_kernel`, :func:`cluster_mass`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Kernel", "GaussianKernel", "StudentKernel", "UMAPKernel", "SphereKernel",
           "CosineKernel", "SphereStudentKernel", "find_ab_params", "KERNELS", "get_kernel",
           "cluster_kernel", "cluster_mass"]

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


@dataclass(frozen=True)
class StudentKernel(Kernel):
    """Student-t ``k = (1 + d2/dof)^(-(dof+1)/2)``; ``dof=1`` is t-SNE's Cauchy kernel and
    smaller ``dof`` gives heavier tails (more separated clusters).

    Parameters
    ----------
    dof : float, default=1.0
        Degrees of freedom, > 0.

    Attributes
    ----------
    dof : float
        As given.

    Examples
    --------
    >>> import icongraph
    >>> model = icongraph.ICon(p="perplexity", q=icongraph.StudentKernel(0.5), estimator="global")
    >>> icongraph.ICon(p="perplexity", q="student", q_params={"dof": 0.5})  # the same kernel
    ICon(...)
    """

    dof: float = 1.0
    name = "student"
    code = STUDENT

    def __post_init__(self):
        if not self.dof > 0:
            raise ValueError(f"Student-t degrees of freedom must be > 0; got {self.dof}.")

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
        tau = self.temperature
        if isinstance(tau, bool) or not (isinstance(tau, (int, float, np.number, torch.Tensor))
                                         and 0 < tau < np.inf):
            raise ValueError(f"the {self.name} kernel's temperature must be a finite number > "
                             f"0; got {tau!r}.")
        if not isinstance(self.learn_temperature, (bool, np.bool_)):
            raise ValueError(f"learn_temperature must be True or False; got "
                             f"{self.learn_temperature!r}.")

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
class SphereStudentKernel(SphereKernel):
    """Student-t on the unit sphere with a temperature,
    ``k = (1 + d2 / (dof tau))^(-(dof+1)/2)`` (``|y| = 1``): on the sphere ``d2 <= 4``, so
    without the temperature the kernel could not fall below ``5^-1`` (``dof = 1``); the
    temperature sets the width, the degrees of freedom the tail.

    The default ``tau = 0.05`` (``dof = 1``, the same suite as :class:`CosineKernel`), for tau
    0.02 / 0.05 / 0.1 / 0.2 / 0.5: accuracy 0.905 / 0.908 / 0.909 / 0.907 / 0.907,
    preservation 0.617 / 0.614 / 0.598 / 0.579 / 0.540 (0.02 less accurate on digits and tissue);
    heavier tails than the cosine kernel keep more of the neighbourhoods on every data set."""

    dof: float = 1.0
    temperature: float = 0.05
    learn_temperature: bool = False
    name = "student-sphere"
    code = SCALED_STUDENT

    def __post_init__(self):
        if not self.dof > 0:
            raise ValueError(f"Student-t degrees of freedom must be > 0; got {self.dof}.")
        self._check_temperature()

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


def cluster_kernel(phi: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dense ``q(j|i) = sum_c phi_ic w_j phi_jc / sum_k w_k phi_kc`` (N, N): small N and tests."""
    w = torch.ones(phi.shape[0], dtype=phi.dtype) if weights is None else weights
    return (phi / cluster_mass(phi, w)) @ (w[:, None] * phi).T


def cluster_mass(phi: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cluster masses ``M_c = sum_k w_k phi_kc`` (C,)."""
    return phi.sum(0) if weights is None else (weights[:, None] * phi).sum(0)
