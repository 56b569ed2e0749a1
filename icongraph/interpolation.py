"""Kernel sums over all pairs of a 1-D or 2-D embedding by interpolation on a grid (FIt-SNE).

For kernels ``f`` of the squared distance and charges ``c`` (N, C) this computes the potentials

    phi_i = sum_j f(|y_i - y_j|^2) c_j          (N, C), j over every point, i included

in ``O(N p^d + G^d log G)`` instead of ``O(N^2)`` (Linderman et al. 2019, "Fast
interpolation-based t-SNE"; openTSNE's ``negative_gradient_method="fft"``):

1. a square around the points is cut into ``B`` boxes per dimension (``B >= min_intervals``,
   boxes at most ``interval`` wide, ``B`` a 5-smooth FFT length), each holding ``p`` equispaced
   interpolation nodes, so the nodes form one regular grid of ``G = B p`` points per dimension;
2. each point spreads its charges onto the ``p^d`` nodes of its box with the Lagrange
   polynomial weights ``w_k(t) = prod_{l != k} (t - x_l) / (x_k - x_l)`` of its position;
3. the node-to-node sums ``sum_m f(|g_n - g_m|^2) c_m`` are one discrete convolution with the
   kernel sampled at the grid offsets, done by FFT on a ``2G`` circulant embedding;
4. each point reads its potential back from its box's nodes with the same weights.

The error is that of degree ``p - 1`` interpolation of a smooth kernel over a box of width at
most ``interval``: for the Cauchy kernel at the defaults (``p = 3``, ``interval = 1``) relative
errors are about 1e-4 on the t-SNE normaliser (tested against brute force). Spreading and
reading back are in float64; the convolution is in float32 (torch's float64 FFT is 5-10x
slower here, and float32 adds errors near 1e-6 relative to the largest potential).
The grid size is read on the host once per call (one sync on CUDA). With a ``cache`` the grid
keeps its geometry while it covers the points, so the kernel's transform is computed again only
when the layout outgrows it (a few dozen times in a t-SNE run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["grid_potentials", "N_NODES", "MIN_INTERVALS", "INTERVAL"]

#: interpolation nodes per box and dimension, minimum boxes per dimension, largest box width
#: (openTSNE's and FIt-SNE's defaults)
N_NODES = 3
MIN_INTERVALS = 50
INTERVAL = 1.0


def _lagrange_weights(t: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """(..., n_nodes) Lagrange basis polynomials at ``t`` in [0, 1] (box-local coordinates) for
    the nodes ``x_k = (k + 1/2) / n_nodes``."""
    nodes = (torch.arange(n_nodes, dtype=t.dtype, device=t.device) + 0.5) / n_nodes
    weights = []
    for k in range(n_nodes):
        w = torch.ones_like(t)
        for m in range(n_nodes):
            if m != k:
                w = w * (t - nodes[m]) / float(nodes[k] - nodes[m])
        weights.append(w)
    return torch.stack(weights, dim=-1)


def _smooth_size(n: int) -> int:
    """The smallest integer >= ``n`` with no prime factor above 5 (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _geometry(span: float, cache: dict | None, min_intervals: int, interval: float):
    """``(n_boxes, width)`` covering ``span``: the cached grid while it still covers the span
    with boxes at most ``interval`` wide and is not over twice too large, else a new one
    with 10% headroom (so a growing layout re-grids rarely and the kernel's transform is
    reused in between)."""
    if cache is not None and "geometry" in cache:
        n_boxes, width = cache["geometry"]
        extent = n_boxes * width
        if span <= extent and (2 * span >= extent or n_boxes == min_intervals):
            return n_boxes, width
    n_boxes = _smooth_size(max(int(min_intervals), int(math.ceil(1.1 * span / interval))))
    width = max(1.1 * span, 1e-12) / n_boxes
    if cache is not None:
        cache.clear()
        cache["geometry"] = (n_boxes, width)
    return n_boxes, width


def _kernel_spectrum(f, size: int, spacing: float, dim: int, device) -> torch.Tensor:
    """The real FFT of ``f`` at the circulant grid offsets (shape ``(2 size,) * dim``), with
    the kernel evaluated on one quadrant of offsets and mirrored (it is even in each axis)."""
    o = torch.arange(size + 1, dtype=torch.float64, device=device) * spacing
    sq = o * o
    quadrant = f(sq if dim == 1 else sq[:, None] + sq[None, :]).float()
    mirror = torch.arange(2 * size, device=device)
    mirror = torch.where(mirror <= size, mirror, 2 * size - mirror)
    full = quadrant[mirror] if dim == 1 else quadrant[mirror][:, mirror]
    return torch.fft.rfftn(full, dim=tuple(range(-dim, 0)))


def grid_potentials(y: torch.Tensor,
                    groups: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]],
                    n_nodes: int = N_NODES, min_intervals: int = MIN_INTERVALS,
                    interval: float = INTERVAL, cache: dict | None = None,
                    engine: str = "auto") -> list[torch.Tensor]:
    """Potentials ``phi_i = sum_j f(|y_i - y_j|^2) c_j`` for each ``(f, c)`` in ``groups``.

    Parameters
    ----------
    y : (N, d) tensor, d in {1, 2}
        The embedding.
    groups : sequence of ``(f, charges)``
        ``f`` maps a tensor of squared distances to kernel values (float64 in, float64 out);
        ``charges`` is (N, C_g). Every group shares one spreading of the points.
    n_nodes, min_intervals, interval
        Interpolation nodes per box, minimum boxes per dimension, largest box width.
    cache : dict, optional
        Kept by the caller across calls (one per optimisation, groups always in the same
        order): the grid geometry and the kernels' transforms are reused while the grid
        still fits the points.
    engine : {"auto", "numba", "torch"}
        "auto": numba spreading and scipy's FFT on CPU, torch on other devices (tests force
        "torch" on CPU to check the device path against the CPU one).

    Returns
    -------
    list of (N, C_g) float64 tensors, one per group (the self term ``f(0) c_i`` included).
    """
    n, dim = y.shape
    if dim not in (1, 2):
        raise ValueError(f"grid interpolation supports 1-D and 2-D embeddings; got {dim}-D.")
    yd = y.detach().to(torch.float64)
    lo = yd.min()
    span = float(yd.max() - lo)  # the one host read: it sizes the grid
    n_boxes, width = _geometry(span, cache, min_intervals, interval)
    size = n_boxes * n_nodes  # grid nodes per dimension
    charges = [torch.as_tensor(c, dtype=torch.float64, device=y.device) for _, c in groups]
    spectra = []
    for index, (f, _) in enumerate(groups):
        key = ("spectrum", index)
        spectrum = None if cache is None else cache.get(key)
        if spectrum is None:
            spectrum = _kernel_spectrum(f, size, width / n_nodes, dim, y.device)
            if cache is not None:
                cache[key] = spectrum
        spectra.append(spectrum)
    if engine not in ("auto", "numba", "torch"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'torch'; got {engine!r}.")
    if engine == "numba" or (engine == "auto" and y.device.type == "cpu"):
        return _potentials_numba(yd.numpy(), float(lo), width, n_boxes, n_nodes, charges,
                                 spectra)
    pos = (yd - lo) / width
    box = pos.floor().clamp_(0, n_boxes - 1)
    weights = _lagrange_weights(pos - box, n_nodes)  # (N, d, p)
    node = box.long()[..., None] * n_nodes + torch.arange(n_nodes, device=y.device)  # (N, d, p)
    if dim == 2:
        weights = (weights[:, 0, :, None] * weights[:, 1, None, :]).reshape(n, -1)
        node = (node[:, 0, :, None] * size + node[:, 1, None, :]).reshape(n, -1)
    else:
        weights, node = weights[:, 0], node[:, 0]
    flat = node.reshape(-1)
    results = []
    for charge, spectrum in zip(charges, spectra):
        c = charge.shape[1]
        grid = torch.zeros((size**dim, c), dtype=torch.float64, device=y.device)
        grid.index_add_(0, flat, (weights[:, :, None] * charge[:, None, :]).reshape(-1, c))
        conv = _convolve(grid.T.reshape((c,) + (size,) * dim), spectrum)
        at_nodes = conv.reshape(c, -1).T.double()  # (G^d, C)
        results.append((at_nodes[node] * weights[:, :, None]).sum(1))
    return results


def _convolve(grid: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """(C, G, ...) node values convolved with the kernel whose circulant transform is
    ``spectrum``: zero-padded to 2G, multiplied in Fourier space, cropped back (float32)."""
    dim = grid.dim() - 1
    size = grid.shape[-1]
    shape, axes = (2 * size,) * dim, tuple(range(-dim, 0))
    conv = torch.fft.irfftn(torch.fft.rfftn(grid.float(), s=shape, dim=axes) * spectrum,
                            s=shape, dim=axes)
    return conv[:, :size, :size] if dim == 2 else conv[:, :size]


def _potentials_numba(y, lo: float, width: float, n_boxes: int, n_nodes: int, charges,
                      spectra) -> list[torch.Tensor]:
    """The CPU path of :func:`grid_potentials`: spreading and reading back in numba, the
    convolution by scipy's FFT on numba's thread count (pocketfft threads, not OpenMP: torch's
    OpenMP team and numba's contend for the cores between numba's parallel regions, which made
    every small torch op here 10x slower)."""
    import numba
    import scipy.fft

    from . import _cpu_engine as cpu

    n, dim = y.shape
    size = n_boxes * n_nodes
    taps = n_nodes**dim
    node = np.empty((n, taps), np.int64)
    weight = np.empty((n, taps), np.float64)
    shape, axes = (2 * size,) * dim, tuple(range(-dim, 0))
    workers = numba.get_num_threads()
    results = []
    for charge, spectrum in zip(charges, spectra):
        c = charge.shape[1]
        grid = np.zeros((c, size**dim), np.float64)
        cpu.grid_spread(y, lo, width, n_boxes, n_nodes, charge.numpy(), grid, node, weight)
        grid = grid.reshape((c,) + (size,) * dim).astype(np.float32)
        freq = scipy.fft.rfftn(grid, s=shape, axes=axes, workers=workers)
        freq *= spectrum.numpy()
        conv = scipy.fft.irfftn(freq, s=shape, axes=axes, workers=workers)
        conv = conv[:, :size, :size] if dim == 2 else conv[:, :size]
        values = np.ascontiguousarray(conv.reshape(c, -1), dtype=np.float64)
        out = np.empty((n, c), np.float64)
        cpu.grid_gather(values, node, weight, out)
        results.append(torch.from_numpy(out))
    return results
