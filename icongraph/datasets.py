"""Bundled and generated datasets. Nothing is downloaded: digits ships with scikit-learn,
pbmc68k_reduced with scanpy, and :func:`make_manifolds` generates labelled data with real
manifold structure at any size (see ``datasets/README.md`` for provenance)."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits", "load_pbmc68k", "make_manifolds", "load", "DATASETS"]


def load_digits():
    """scikit-learn's 8x8 digits: X (1797, 64) float32, y (1797,) int."""
    from sklearn.datasets import load_digits as sk_digits

    X, y = sk_digits(return_X_y=True)
    return X.astype(np.float32), y


def load_pbmc68k():
    """scanpy's bundled pbmc68k_reduced: 700 cells, its 50-d PCA (``obsm['X_pca']``) and the
    ``bulk_labels`` cell types. Needs scanpy (``pip install scanpy``)."""
    try:
        import scanpy as sc
    except ImportError as err:
        raise ImportError("the pbmc68k dataset ships inside scanpy: pip install scanpy") from err
    adata = sc.datasets.pbmc68k_reduced()
    _, y = np.unique(np.asarray(adata.obs["bulk_labels"]), return_inverse=True)
    return np.asarray(adata.obsm["X_pca"], dtype=np.float32), y


def make_manifolds(n_samples: int = 100_000, n_classes: int = 20, ambient_dim: int = 50,
                   intrinsic_dim: int = 2, n_superclasses: int = 4, noise: float = 0.05,
                   seed: int = 0, chunk: int = 200_000):
    """Labelled points on curved manifolds: class ``c`` is a smooth random map of a
    ``intrinsic_dim``-cube into ``ambient_dim`` dimensions (random Fourier features, so each
    class is a bent, folded sheet, not a blob), placed around one of ``n_superclasses``
    super-cluster centres (a two-level hierarchy, neighbouring classes overlapping at the
    edges), plus isotropic noise. Returns X (n, ambient_dim) float32 and y (n,) int64.
    Memory is O(n * ambient_dim); generated in chunks."""
    if n_samples < n_classes:
        raise ValueError(f"n_samples={n_samples} is smaller than n_classes={n_classes}.")
    rng = np.random.default_rng(seed)
    n_feat = 8
    freq = rng.normal(0, 2.0, (n_classes, n_feat, intrinsic_dim))
    phase = rng.uniform(0, 2 * np.pi, (n_classes, n_feat))
    mix = rng.normal(0, 1.0, (n_classes, n_feat, ambient_dim)) / np.sqrt(n_feat)
    linear = rng.normal(0, 1.0, (n_classes, intrinsic_dim, ambient_dim))
    super_centre = rng.normal(0, 4.0, (n_superclasses, ambient_dim))
    parent = rng.integers(0, n_superclasses, n_classes)
    centre = super_centre[parent] + rng.normal(0, 1.5, (n_classes, ambient_dim))
    y = np.sort(rng.integers(0, n_classes, n_samples))
    X = np.empty((n_samples, ambient_dim), np.float32)
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        labels = y[start:stop]
        u = rng.uniform(-1, 1, (stop - start, intrinsic_dim))
        feats = np.sin(np.einsum("nd,nfd->nf", u, freq[labels]) + phase[labels])
        block = np.einsum("nf,nfa->na", feats, mix[labels])
        block += np.einsum("nd,nda->na", u, linear[labels])
        block += centre[labels] + noise * rng.standard_normal(block.shape)
        X[start:stop] = block
    order = rng.permutation(n_samples)
    return X[order], y[order]


DATASETS = {"digits": load_digits, "pbmc68k": load_pbmc68k, "manifolds": make_manifolds}


def load(name: str, n_samples: int | None = None, seed: int = 0, n_classes: int = 20):
    """A dataset by name: 'digits', 'pbmc68k' or 'manifolds' (generated: ``n_samples`` points
    in ``n_classes`` classes)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    if name == "manifolds":
        return make_manifolds(n_samples or 100_000, n_classes=n_classes, seed=seed)
    X, y = DATASETS[name]()
    if n_samples is not None and n_samples < X.shape[0]:
        keep = np.sort(np.random.default_rng(seed).choice(X.shape[0], n_samples, replace=False))
        X, y = X[keep], y[keep]
    return X, y
