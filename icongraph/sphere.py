"""Optimising on the unit sphere: the kernels with ``sphere = True`` (:mod:`icongraph.kernels`)
see ``y_i = z_i / |z_i|``, and the engines' gradient ``dL/dy`` is carried back to the stored
rows ``z`` through the normalisation; the temperature is learned from the same gradient.

With ``y = z / |z|`` the chain rule is the tangent projection::

    dL/dz_i = (I - y_i y_i^T) dL/dy_i / |z_i|

and since ``L`` does not change when a row is rescaled, the optimiser may renormalise ``z``
after every step (:func:`normalise_`): ``|z| = 1`` at every evaluation, so the engines read
``z`` itself as ``y`` and the step is projected gradient descent with a retraction.

Every sphere kernel depends on ``d2 / tau`` only, so scaling all ``y`` by ``s`` is the same as
dividing ``tau`` by ``s^2`` (Euler's theorem on homogeneous functions)::

    dL/dlog tau = -1/2 sum_i <y_i, dL/dy_i>

the radial part of the gradient that the projection discards: exact for the objective the
gradient estimates (the same sampled pairs, no extra pass), as long as no force is clipped
(``clip``, on by default only for NEG, caps pairs whatever ``tau``) and, for NEG, up to its
regularised repulsion.
"""

from __future__ import annotations

import numpy as np
import torch

from .kernels import Kernel

__all__ = ["normalise_", "normalised", "sphere_gradient_", "temperature_gradient", "TemperatureLearner"]

#: a row shorter than this is a zero row: :func:`normalise_` puts it on the first axis (a zero
#: row divided by a float32 norm near 1e-30 took steps of 1e29, overflowed and stayed at 0)
MIN_NORM = 1e-12


def normalise_(z: torch.Tensor) -> torch.Tensor:
    """Rescale every row of ``z`` (N, d) to norm 1, in place; a row of norm below ``MIN_NORM``
    becomes the first unit vector (no point is left off the sphere). Returns ``z``."""
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    z.div_(norm.clamp_min(MIN_NORM))
    z[:, :1] += (norm < MIN_NORM).to(z.dtype)  # no host sync: a mask added, not indexed
    return z


def normalised(z: torch.Tensor) -> torch.Tensor:
    """Every row of ``z`` (N, d) at norm 1, a new tensor that autograd differentiates through
    (an encoder's output on the sphere: the chain rule then is the tangent projection above)."""
    return z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(MIN_NORM)


def sphere_gradient_(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Turn ``grad`` (N, d), ``dL/dy`` at ``y = z / |z|``, into ``dL/dz =
    (grad - <y, grad> y) / |z|``, in place; returns ``grad``.

    Parameters
    ----------
    z : torch.Tensor
        (N, d) the stored rows (any norm > 0).
    grad : torch.Tensor
        (N, d) the gradient with respect to the normalised rows ``y``, overwritten.
    """
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(MIN_NORM)
    radial = (z * grad).sum(1, keepdim=True) / norm  # <y, grad>
    return grad.sub_(radial * z / norm).div_(norm)


def temperature_gradient(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dL/dlog tau = -1/2 sum_i <y_i, dL/dy_i>`` (0-d tensor) for a kernel that depends on
    ``d2 / tau`` only, from the gradient ``grad`` (N, d) at the unit rows ``y`` (N, d)."""
    return -0.5 * (y * grad).sum(dtype=torch.float64)


class TemperatureLearner:
    """Gradient descent on ``log tau`` of a learned sphere kernel, one step per epoch:
    ``log tau -= lr tau dL/dlog tau / M`` with ``M`` the target's mass (so the step is the mean
    over anchors and does not grow with N), at the embedding's step ``lr tau`` of that epoch
    (:func:`~icongraph.optimize.take_step`).

    Parameters
    ----------
    kernel : Kernel
        The starting kernel (``sphere``, ``learn_temperature``).
    total_mass : float
        ``M = sum_ij p_ij``.
    """

    def __init__(self, kernel: Kernel, total_mass: float):
        self.kernel = kernel
        self.log_tau = float(np.log(float(kernel.temperature)))
        self.total_mass = float(total_mass)

    def step(self, y: torch.Tensor, grad: torch.Tensor, lr: float) -> Kernel:
        """Step on ``log tau`` from the gradient ``grad`` (N, d) with respect to the unit rows
        ``y`` (before its projection); returns the kernel at the new temperature (one host
        read of a scalar per epoch)."""
        slope = float(temperature_gradient(y, grad)) / self.total_mass
        self.log_tau -= lr * float(self.kernel.temperature) * slope
        self.kernel = self.kernel.with_temperature(float(np.exp(self.log_tau)))
        return self.kernel
