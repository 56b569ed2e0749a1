"""Initial embeddings: PCA (default), spectral (Laplacian eigenmaps of p), random, an array, or
coarse-to-fine (:func:`interpolate_from_sample`: a fit on a random sample, spread through p).

Every initialisation is rescaled so its largest coordinate magnitude is ``scale`` (umap-learn
uses 10). Spectral init falls back to PCA (random without data) with a warning when the graph is
disconnected or the eigensolver does not converge quickly, since PCA is cheap and nearly as good
a start.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit, prange

from .validation import check_data

__all__ = ["initialize", "check_init_array", "pca_init", "spectral_init",
           "interpolate_from_sample", "rescale", "INITS"]

INITS = ("pca", "spectral", "random")
#: rows per float64 block of the PCA start (its extra memory: this x D x 8 bytes)
PCA_BLOCK_ROWS = 65536


def rescale(y: np.ndarray, scale: float) -> np.ndarray:
    """``y`` (N, d) centred and scaled so its largest coordinate magnitude is ``scale``."""
    y = y - y.mean(axis=0)
    peak = np.abs(y).max()
    return (y * (scale / peak if peak > 0 else 1.0)).astype(np.float32)


def pca_init(X, n_components: int, seed: int) -> np.ndarray:
    """Projection of centred ``X`` on its top principal axes (eigenvectors of the D x D
    covariance, torch; for sparse input TruncatedSVD from scikit-learn, uncentred so the data
    stays sparse). Signs are fixed so
    each axis's largest loading is positive; zero-variance data gets a tiny seeded jitter.
    Up to 4,096 features the mean, the covariance and the projection run over blocks of
    :data:`PCA_BLOCK_ROWS` rows in float64, so a memory-mapped ``X`` is read, never copied
    whole."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    if sp.issparse(X):
        from sklearn.decomposition import TruncatedSVD

        y = TruncatedSVD(n_components, random_state=seed).fit_transform(X)
    elif d <= 4096:  # the D x D covariance from row blocks: no float64 copy of X
        # (the products in torch, on the fit's thread count: numpy's BLAS picks its own
        # threads, and its sums then depend on the process, breaking reproducibility)
        def centred_blocks():
            for start in range(0, n, PCA_BLOCK_ROWS):
                yield torch.from_numpy(np.asarray(X[start:start + PCA_BLOCK_ROWS],
                                                  np.float64)) - mean

        mean = torch.zeros(d, dtype=torch.float64)
        for start in range(0, n, PCA_BLOCK_ROWS):
            mean += torch.from_numpy(np.asarray(X[start:start + PCA_BLOCK_ROWS],
                                                np.float64)).sum(0)
        mean /= max(n, 1)
        cov = torch.zeros((d, d), dtype=torch.float64)
        for block in centred_blocks():
            cov += block.T @ block
        _, vecs = torch.linalg.eigh(cov)
        axes = vecs[:, -n_components:].flip(1)
        signs = torch.sign(axes[axes.abs().argmax(0), torch.arange(axes.shape[1])])
        y = torch.cat([block @ (axes * signs) for block in centred_blocks()]).numpy()
    else:
        data = torch.as_tensor(np.asarray(X, np.float64))
        centred = data - data.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=n_components, center=False, niter=4)
        axes = v[:, :n_components]
        signs = torch.sign(axes[axes.abs().argmax(0), torch.arange(axes.shape[1])])
        y = (centred @ (axes * signs)).numpy()
        if y.shape[1] < n_components:  # fewer features than output dimensions
            y = np.hstack([y, np.zeros((n, n_components - y.shape[1]))])
    if not np.all(np.abs(y).max(axis=0) > 1e-12 * max(np.abs(y).max(), 1e-30)):
        y = y + 1e-4 * max(np.abs(y).max(), 1.0) * rng.standard_normal(y.shape)
    return y.astype(np.float32)


def spectral_init(graph: sp.csr_matrix, n_components: int, seed: int, maxiter: int | None = None,
                  fallback: str = "PCA") -> np.ndarray | None:
    """Eigenvectors 2..d+1 of the normalised adjacency ``D^-1/2 W D^-1/2`` (the smoothest
    Laplacian eigenvectors); None (with a warning that names the ``fallback`` the caller
    uses instead) when disconnected or not converged."""
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = graph.shape[0]
    sym = ((graph + graph.T) * 0.5).tocsr()
    n_comp, _ = connected_components(sym, directed=False)
    if n_comp > 1:
        warnings.warn(f"spectral init: the graph has {n_comp} connected components; using "
                      f"{fallback} init instead.", stacklevel=3)
        return None
    if n <= n_components + 1:
        return None
    deg = np.asarray(sym.sum(axis=1)).ravel()
    inv_sqrt = sp.diags(1.0 / np.sqrt(deg))
    norm_adj = (inv_sqrt @ sym @ inv_sqrt).astype(np.float64)
    k = n_components + 1
    rng = np.random.default_rng(seed)
    try:
        if n < 2000:
            vals, vecs = np.linalg.eigh(norm_adj.toarray())
            vecs = vecs[:, ::-1][:, :k]
        else:
            vals, vecs = eigsh(norm_adj, k=k, which="LA", v0=rng.uniform(-1, 1, n),
                               tol=1e-4, maxiter=maxiter or max(5 * n, 1000))
            vecs = vecs[:, np.argsort(vals)[::-1]]
    except ArpackNoConvergence:
        warnings.warn(f"spectral init did not converge; using {fallback} init instead.",
                      stacklevel=3)
        return None
    return (inv_sqrt @ vecs[:, 1:k]).astype(np.float32)


def interpolate_from_sample(graph: sp.csr_matrix, rows: np.ndarray, sample_embedding: np.ndarray,
                            seed: int, jitter: float = 1e-3, symmetric: bool = False
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Spread the embedding of the sampled ``rows`` (M,) (``sample_embedding`` (M, d)) to all N
    points through ``p``: every unplaced point with placed neighbours goes to their p-weighted
    mean ``y_i = sum_j w_ij y_j / sum_j w_ij`` (j placed; both edge directions count), repeated
    until nothing changes (each round reaches one hop further). Interpolated points get a seeded
    jitter of ``jitter`` x the sample's spread, so none coincide. Returns ``(y (N, d), placed
    (N,) bool)``: points in components of p without a sampled point stay unplaced (0).

    ``symmetric``: ``graph`` equals its transpose (:attr:`Target.symmetric
    <icongraph.targets.Target.symmetric>`), so both directions are ``graph`` itself and no
    ``p + p^T`` is formed (the mean is the same: ``2 p`` has the same ratios). Each round
    reads only the rows still unplaced (:func:`_placed_means`, in parallel): no copy of their
    edges, and 10M points take seconds instead of a sparse product of the whole graph per
    round."""
    n = graph.shape[0]
    sym = graph if symmetric else (graph + graph.T).tocsr()
    y = np.zeros((n, sample_embedding.shape[1]), np.float64)
    placed = np.zeros(n, bool)
    y[rows], placed[rows] = sample_embedding, True
    waiting = np.flatnonzero(~placed)
    while waiting.size:
        means, reached = _placed_means(sym.indptr, sym.indices, sym.data, placed, y, waiting)
        if not reached.any():
            break
        new = waiting[reached]
        y[new], placed[new] = means[reached], True
        waiting = waiting[~reached]
    spread = float(sample_embedding.std()) or 1.0
    noise = np.random.default_rng(seed).normal(0.0, jitter * spread, y.shape)
    noise[rows] = 0.0
    return (y + noise * placed[:, None]).astype(np.float32), placed


@njit(parallel=True, cache=True)
def _placed_means(indptr, indices, weights, placed, y, rows):
    """One round of :func:`interpolate_from_sample` over the unplaced ``rows`` (R,):
    ``means[r] = sum_j w_rj y_j / sum_j w_rj`` over the placed neighbours ``j`` of row ``r``
    (float64, in the row's index order), and ``reached[r]`` whether it has any (R, d), (R,).
    Reads only ``placed`` and ``y`` as they were before the round (Jacobi, not Gauss-Seidel),
    so the result does not depend on the thread count."""
    d = y.shape[1]
    means = np.zeros((rows.size, d), np.float64)
    reached = np.zeros(rows.size, np.bool_)
    for r in prange(rows.size):
        i = rows[r]
        mass = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            if placed[j]:
                w = np.float64(weights[e])
                mass += w
                for c in range(d):
                    means[r, c] += w * y[j, c]
        if mass > 0.0:
            reached[r] = True
            for c in range(d):
                means[r, c] /= mass
    return means, reached


def initialize(init, X, graph: sp.csr_matrix, n_components: int, seed: int,
               scale: float = 10.0) -> np.ndarray:
    """The starting embedding (N, n_components) for ``init`` in :data:`INITS` or an array (the
    estimators add ``'coarse'``, which needs a fit: ``_Embedding._coarse_init``)."""
    n = graph.shape[0]
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} or an array; got {init!r}.")
        y = None
        if init == "spectral":  # without data there is nothing to project for PCA
            fallback = "PCA" if X is not None else "random (no data X for PCA)"
            y = spectral_init(graph, n_components, seed, fallback=fallback)
        if init == "random" or (y is None and X is None):
            y = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, n_components))
        elif y is None:
            y = pca_init(X, n_components, seed)
        return rescale(np.asarray(y), scale)
    return check_init_array(init, n, n_components)


def check_init_array(init, n_samples: int, n_components: int) -> np.ndarray:
    """A user's starting layout as float32 (N, n_components), checked.

    Parameters
    ----------
    init : array-like
        The layout (numpy, torch, pandas, lists); not modified.
    n_samples, n_components : int
        The expected shape.

    Returns
    -------
    numpy.ndarray
        The layout as C-contiguous float32 (the caller's own array when it already is).

    Raises
    ------
    ValueError
        For a wrong shape, NaN/inf, or every point at the same position.
    """
    y = check_data(init, name="init", allow_sparse=False)
    if y.shape != (n_samples, n_components):
        raise ValueError(f"init array has shape {y.shape}; expected "
                         f"{(n_samples, n_components)} (n_samples, n_components).")
    if n_samples > 1 and not np.any(y != y[0]):
        raise ValueError("init array has every point at the same position: the layout "
                         "cannot separate them (forces between coincident points vanish). "
                         "Pass distinct positions or init='pca'.")
    return y
