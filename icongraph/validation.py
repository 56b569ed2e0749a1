"""Input validation: every public entry point turns user data into clean float32 arrays here.

The rule is "a clear ``ValueError`` naming the problem, and the caller's data untouched": every
function returns a new array, or the caller's own array when it is already in the right form,
which icongraph never writes to.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["NonNumericError", "check_data", "check_not_container", "check_feature_names",
           "check_is_fitted", "check_new_data", "check_labels", "encode_labels",
           "check_n_features",
           "check_n_neighbors", "check_random_state",
           "to_numpy", "check_number", "check_choice", "check_callbacks", "check_params",
           "number", "choice", "boolean", "callbacks_rule", "mapping", "path_or_none",
           "DataChangedError", "MappedFile", "release_mapped_pages"]


def to_numpy(X) -> np.ndarray | sp.spmatrix:
    """Torch tensors, pandas frames, lists -> numpy (scipy sparse is passed through)."""
    if sp.issparse(X):
        return X
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch.Tensor, without importing torch
        return X.detach().cpu().numpy()
    if hasattr(X, "to_numpy"):  # pandas
        return X.to_numpy()
    return np.asarray(X)


class NonNumericError(ValueError, TypeError):
    """Data that cannot be read as numbers: a ``ValueError`` like every bad input here, and a
    ``TypeError`` like numpy's and scikit-learn's for the same input."""


def _empty_message(name: str, shape) -> str:
    """The message for data without samples or features (scikit-learn's wording after ours)."""
    what = "sample(s)" if shape[0] == 0 else "feature(s)"
    return (f"{name} is empty: found array with 0 {what} (shape={tuple(shape)}) while a minimum "
            "of 1 is required.")


def check_not_container(X, name: str = "X") -> None:
    """Refuse, with the way forward, an object that holds data but is not an array: an
    AnnData (``icongraph.tl``, or one of its matrices) or a torch-geometric graph (``fit``
    takes a ``Data`` whole; elsewhere its ``x``). Recognised by the class's module, so neither
    package is imported.

    Raises
    ------
    ValueError
        For an ``anndata`` or ``torch_geometric`` object.
    """
    cls = type(X)
    package = cls.__module__.split(".")[0]
    if package == "anndata":
        raise ValueError(f"{name} is an AnnData object; icongraph's estimators take arrays. Use "
                         "icongraph.tl.embed(adata, ...) or icongraph.tl.cluster(adata, ...), "
                         "which read adata.obsm[use_rep] and write the result back, or pass a "
                         "matrix such as adata.obsm['X_pca'].")
    if package == "torch_geometric":
        raise ValueError(f"{name} is a torch_geometric {cls.__name__}; fit takes a Data (x as "
                         "X, its graph as p, y as labels), everywhere else pass its features "
                         "data.x.")


#: rows per block when checking for NaN/inf
FINITE_CHECK_ROWS = 65536


def check_data(X, *, name: str = "X", min_samples: int = 1, allow_sparse: bool = True,
               scaling=None):
    """Validate a 2-D numeric data matrix (n_samples, n_features) and return it as float32.

    Dense input that is already C-contiguous float32 is returned as is, without a copy (as
    scikit-learn's ``check_array``: at 1M x 50 a copy is 200 MB of peak memory); nothing in
    icongraph writes to it. Anything else is converted to a new C-contiguous float32 array.
    Raises ``ValueError`` for empty, 1-D, complex, non-numeric or object input and for NaN/inf
    values (for input that cannot be read as numbers a :class:`NonNumericError`, also a
    ``TypeError``); the messages carry scikit-learn's phrases for the same faults.
    Scipy sparse input is returned as a float32 CSR copy when ``allow_sparse``.

    ``scaling`` makes the result scale-free (:mod:`icongraph.scaling`): a metric name fits a
    :class:`~icongraph.scaling.DataScale` to ``X`` (centred for ``'euclidean'``), computed
    from the input's own precision before the float32 cast; a ``DataScale`` applies a fitted
    one (new points). Then ``(values, data_scale)`` is returned.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D array of shape (n_samples, n_features).")
    check_not_container(X, name)
    X = to_numpy(X)
    if sp.issparse(X):
        if not allow_sparse:
            raise ValueError(f"{name} is a sparse matrix; this operation needs a dense array.")
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}.")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(_empty_message(name, X.shape))
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        if not np.all(np.isfinite(X.data)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        values = source = X
    else:
        if X.dtype == object or not (
            np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.bool_)
        ):
            try:
                X = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise NonNumericError(
                    f"{name} must be numeric; got dtype {X.dtype} that cannot be converted ({err})."
                ) from None
        if np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(f"Complex data not supported: {name} is complex; icongraph needs "
                             "real-valued data.")
        if X.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features); got {X.ndim}-D with shape {X.shape}. "
                "Reshape your data: X.reshape(-1, 1) for a single feature, X.reshape(1, -1) for "
                "a single sample."
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(_empty_message(name, X.shape))
        values, source = np.ascontiguousarray(X, dtype=np.float32), X
        if not all(np.isfinite(values[lo:lo + FINITE_CHECK_ROWS]).all()  # no N x D mask
                   for lo in range(0, values.shape[0], FINITE_CHECK_ROWS)):
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            raise ValueError(
                f"{name} contains NaN or infinite values in {bad.size} row(s), first row {bad[0]}."
            )
    if values.shape[0] < min_samples:
        raise ValueError(f"{name} has {values.shape[0]} samples; at least {min_samples} needed.")
    if scaling is None:
        return values
    from .scaling import DataScale

    if not isinstance(scaling, DataScale):
        scaling = DataScale.fit(source, centre=scaling == "euclidean")
    return (values if scaling.identity else scaling.apply(source)), scaling


def check_is_fitted(estimator, attribute: str) -> None:
    """Raise scikit-learn's ``NotFittedError`` (a ``ValueError`` and an ``AttributeError``)
    unless ``estimator`` has the fitted ``attribute``.

    Parameters
    ----------
    estimator : object
        The estimator a method was called on.
    attribute : str
        An attribute that ``fit`` sets.
    """
    if not hasattr(estimator, attribute):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet; call "
                             "'fit' before using it.")


def check_feature_names(estimator, X, *, reset: bool) -> None:
    """Record (``reset``, in ``fit``) or check (in ``transform``/``predict``) the column names
    of ``X`` as scikit-learn's ``validate_data`` does: ``feature_names_in_`` for a DataFrame
    with string column names, a ``ValueError`` for names that differ from fit's, a
    ``UserWarning`` for a DataFrame given to a model fitted on an array or the reverse. Called
    before the content of ``X`` is checked, as scikit-learn does (a renamed column is reported
    as such, not as the NaN that reindexing gave it). scikit-learn is imported only when names
    are involved, so an array-only session does not load it.

    Parameters
    ----------
    estimator : object
        The estimator fitted on, or applied to, ``X``.
    X : array-like
        The caller's data as passed.
    reset : bool
        Record rather than check.
    """
    if hasattr(X, "columns") or hasattr(estimator, "feature_names_in_"):
        from sklearn.utils.validation import validate_data

        validate_data(estimator, X, reset=reset, skip_check_array=True)


def check_n_features(estimator, n_features: int, *, reset: bool) -> None:
    """Record (``reset``) or check ``n_features_in_``, with scikit-learn's message.

    Parameters
    ----------
    estimator : object
        The estimator fitted on, or applied to, the data.
    n_features : int
        The number of columns of the validated data.
    reset : bool
        Record rather than check.

    Raises
    ------
    ValueError
        When checking, for a number of columns other than fit's.
    """
    if reset:
        estimator.n_features_in_ = n_features
    elif n_features != estimator.n_features_in_:
        raise ValueError(f"X has {n_features} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input.")


def check_new_data(estimator, X) -> np.ndarray:
    """New points for a fitted ``estimator`` (``transform``/``predict``): column names and the
    number of features checked against ``fit``'s, then the fitted ``data_scale_`` applied from
    the caller's own precision. Returns a dense float32 array (n, D)."""
    check_feature_names(estimator, X, reset=False)
    values = check_data(X, allow_sparse=False)
    check_n_features(estimator, values.shape[1], reset=False)
    if estimator.data_scale_.identity:
        return values
    return check_data(X, allow_sparse=False, scaling=estimator.data_scale_)[0]


def check_n_neighbors(n_neighbors: int, n_samples: int) -> int:
    """``n_neighbors`` must be a positive integer with ``n_samples >= n_neighbors + 1``."""
    check_number("n_neighbors", n_neighbors, 1, integer=True)
    if n_samples < n_neighbors + 1:
        raise ValueError(
            f"Too few points for n_neighbors={n_neighbors}: got {n_samples} samples, need at "
            f"least n_neighbors + 1 = {n_neighbors + 1}. Lower n_neighbors (or perplexity)."
        )
    return int(n_neighbors)


def check_labels(labels, n_samples: int, name: str = "labels") -> np.ndarray:
    """1-D labels of length ``n_samples``, returned as a copy (any hashable dtype)."""
    labels = to_numpy(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {labels.shape}.")
    if labels.shape[0] != n_samples:
        raise ValueError(f"{name} has length {labels.shape[0]} but the data has {n_samples} rows.")
    return np.array(labels, copy=True)


def encode_labels(labels, n_samples: int, name: str = "y", *, return_classes: bool = False):
    """Class labels as integer codes, ``-1`` for an unlabelled point (umap-learn's convention).

    Parameters
    ----------
    labels : array-like
        (N,) numbers (a numeric ``-1`` marks an unlabelled point) or strings (every point is
        labelled); numpy, pandas, torch or a list.
    n_samples : int
        N, the data's rows.
    name : str
        The argument's name, for messages.
    return_classes : bool
        Also return the distinct labels.

    Returns
    -------
    np.ndarray
        (N,) int32 codes ``0 .. C-1`` in the sorted order of the distinct labels
        (:func:`numpy.unique`), ``-1`` where unlabelled.
    np.ndarray
        Only with ``return_classes``: the (C,) distinct labels, ``classes[code]`` the label of
        a code (numbers or strings, as given).

    Raises
    ------
    ValueError
        Labels that are not 1-D or not of length N, NaN or infinite values, objects that are
        neither numbers nor strings, no labelled point, or a single class among the labelled
        points.
    """
    values = check_labels(labels, n_samples, name)
    if values.dtype == object:
        if all(isinstance(v, str) for v in values):
            values = values.astype(str)
        else:
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError):
                kinds = sorted({type(v).__name__ for v in values})
                raise ValueError(f"{name} cannot be encoded as class labels: it holds "
                                 f"{', '.join(kinds)} values (use numbers, -1 for unlabelled, "
                                 "or strings).") from None
    if values.dtype.kind in "US":
        labelled = np.ones(n_samples, bool)
    elif values.dtype.kind in "biuf":
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"{name} holds NaN or infinite values; mark unlabelled points with "
                             "-1.")
        labelled = values != -1
    else:
        raise ValueError(f"{name} cannot be encoded as class labels (dtype {values.dtype}); "
                         "use numbers (-1 for unlabelled) or strings.")
    if not labelled.any():
        raise ValueError(f"{name} has no labelled point (every label is -1).")
    classes, codes = np.unique(values[labelled], return_inverse=True)
    if len(classes) < 2:
        hint = "" if labelled.all() else (" (-1 marks an unlabelled point: give a class named "
                                          "-1 another label)")
        raise ValueError(f"{name} has a single class ({classes[0].item()!r}) among its labelled "
                         f"points{hint}: a label graph or a classifier needs at least 2 classes.")
    out = np.full(n_samples, -1, np.int32)
    out[labelled] = codes
    return (out, classes) if return_classes else out


#: integer seeds below this are used as given; it is what every RNG downstream accepts (numpy's
#: ``RandomState`` behind pynndescent and scikit-learn, the 32-bit counter hash of the engines)
SEED_SPACE = 1 << 32


def check_random_state(random_state) -> int:
    """The integer seed, in ``[0, 2**32)``, from which every random draw of a fit derives.

    Parameters
    ----------
    random_state : None, int, numpy integer, numpy.random.RandomState or numpy.random.Generator
        ``None`` draws a fresh seed from the OS entropy; a numpy RNG draws one from its stream.
        A non-negative integer below ``2**32`` is the seed itself; a larger one (of any size) is
        hashed to 32 bits by :class:`numpy.random.SeedSequence`, so ``2**32`` or ``2**63 + 5``
        do not alias a small seed the way truncating them would (distinct seeds then coincide
        only by a 32-bit hash collision).

    Returns
    -------
    int
        A seed in ``[0, 2**32)``; passing it back returns it unchanged.

    Raises
    ------
    ValueError
        For a negative integer or anything else that is not a seed.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if not isinstance(random_state, numbers.Integral) or random_state < 0:
        raise ValueError(f"random_state must be None, a non-negative int or a numpy RNG; got "
                         f"{random_state!r}.")
    seed = int(random_state)
    if seed < SEED_SPACE:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


# -- parameters -------------------------------------------------------------------------------
# Every estimator declares a rule per parameter (name -> rule) and calls :func:`check_params`
# first thing in ``fit``, so a wrong type, range or choice is refused before any work with a
# message naming the parameter, the value and what is accepted. A rule is a callable
# ``rule(name, value)`` that raises ``ValueError``; the factories below build them.


def _is_real(value, integer: bool = False) -> bool:
    """A real number (an integer when ``integer``), not a bool."""
    kind = numbers.Integral if integer else numbers.Real
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))


def check_number(name: str, value, low: float = -np.inf, high: float = np.inf, *,
                 integer: bool = False, low_open: bool = False, high_open: bool = False,
                 allow_none: bool = False) -> None:
    """Check that ``value`` is a finite real (an integer when ``integer``) in an interval.

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : object
        What the caller passed.
    low, high : float
        The interval's ends (``-inf``/``inf``: unbounded on that side).
    integer : bool
        Require an integer (``numbers.Integral``; ``2.0`` and ``True`` are refused).
    low_open, high_open : bool
        Exclude the lower / upper end.
    allow_none : bool
        Accept ``None`` (the default applies; the message does not mention it).

    Raises
    ------
    ValueError
        Naming the parameter, the accepted interval and the value, e.g.
        ``n_epochs must be an integer in [1, inf); got 2.5.``
    """
    if value is None and allow_none:
        return
    ok = _is_real(value, integer)
    if ok:
        x = float(value)
        ok = (np.isfinite(x) and (x > low if low_open else x >= low)
              and (x < high if high_open else x <= high))
    if ok:
        return
    lower = "(-inf" if low == -np.inf else f"{'(' if low_open else '['}{low:g}"
    upper = "inf)" if high == np.inf else f"{high:g}{')' if high_open else ']'}"
    if integer:
        what = "an integer in"
    else:  # a bounded interval says "finite" by itself
        what = "a finite number in" if np.inf in (-low, high) else "in"
    raise ValueError(f"{name} must be {what} {lower}, {upper}; got {value!r}.")


def check_choice(name: str, value, choices, *, allow_none: bool = False) -> None:
    """Check that ``value`` is one of the strings ``choices`` (or None when ``allow_none``).

    Raises
    ------
    ValueError
        ``{name} must be one of {choices}; got {value!r}.``
    """
    if value is None and allow_none:
        return
    if not (isinstance(value, str) and value in tuple(choices)):
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}.")


def check_callbacks(callbacks, signature: str = "cb(epoch, loss, embedding)") -> None:
    """Check ``callbacks``: None or a list (any iterable) of callables.

    A single function is refused rather than wrapped (as Keras and Lightning take a list):
    ``callbacks=f`` is more often a slip for ``callbacks=[f]`` than a wish, and the message says
    how to pass it.

    Raises
    ------
    ValueError
        For a single callable or string, a non-iterable, or an entry that is not callable.
    """
    if callbacks is None:
        return
    if callable(callbacks) or isinstance(callbacks, (str, bytes)):
        raise ValueError(f"callbacks must be a list of functions {signature}; got a single "
                         f"object {callbacks!r}: wrap it in a list, callbacks=[f].")
    try:
        items = list(callbacks)
    except TypeError:
        raise ValueError(f"callbacks must be a list of functions {signature}; got "
                         f"{callbacks!r}.") from None
    for cb in items:
        if not callable(cb):
            raise ValueError(f"every callback must be callable; got {cb!r}.")


def number(low: float = -np.inf, high: float = np.inf, **kwargs):
    """A rule for :func:`check_params`: :func:`check_number` with these bounds and options."""
    return lambda name, value: check_number(name, value, low, high, **kwargs)


def choice(choices, *, allow_none: bool = False):
    """A rule for :func:`check_params`: one of ``choices``."""
    return lambda name, value: check_choice(name, value, choices, allow_none=allow_none)


def boolean(*, allow_none: bool = False, allow_int: bool = False):
    """A rule for :func:`check_params`: a bool (an integer >= 0 too when ``allow_int``, as
    scikit-learn's ``verbose``)."""
    def rule(name, value):
        if (isinstance(value, (bool, np.bool_)) or (value is None and allow_none)
                or (allow_int and _is_real(value, integer=True) and value >= 0)):
            return
        what = "a bool or an integer >= 0" if allow_int else "True or False"
        raise ValueError(f"{name} must be {what}; got {value!r}.")
    return rule


def callbacks_rule(signature: str):
    """A rule for :func:`check_params`: :func:`check_callbacks` with this signature."""
    return lambda name, value: check_callbacks(value, signature)


def mapping():
    """A rule for :func:`check_params`: None or a dict of keyword arguments."""
    def rule(name, value):
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{name} must be None or a dict of keyword arguments; got "
                             f"{value!r}.")
    return rule


def path_or_none():
    """A rule for :func:`check_params`: None or a directory path (str or ``os.PathLike``)."""
    def rule(name, value):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{name} must be None or a directory path; got {value!r}.")
    return rule


def check_params(estimator, rules: dict) -> None:
    """Check every parameter of ``estimator`` against ``rules`` (name -> rule) before any
    work; parameters whose check needs the data or another object are in ``rules`` too, as
    rules that do what can be done without the data.

    Raises
    ------
    ValueError
        From the first parameter (in alphabetical order) that breaks its rule.
    """
    for name in sorted(rules):
        rules[name](name, getattr(estimator, name))


class DataChangedError(RuntimeError):
    """The file behind a memory-mapped input changed while a fit was reading it."""


@dataclass(frozen=True)
class MappedFile:
    """The file behind a memory-mapped array (``np.load(path, mmap_mode="r")``, ``np.memmap``)
    as a fit starts to read it: its path, size and modification time, so that a change
    during the fit (the kNN graph from one version of the data, the start from another) is
    an error instead of a silent mix. Arrays in memory have no file and are never checked.

    Attributes
    ----------
    path : str or None
        The file (None: not memory-mapped).
    size, mtime_ns : int
        ``os.stat`` of the file at the start.
    """

    path: str | None = None
    size: int = 0
    mtime_ns: int = 0

    @classmethod
    def of(cls, X) -> MappedFile:
        """The file behind ``X`` (itself or the array it views), if any."""
        path = getattr(_memmap_base(X), "filename", None)
        if path is None or not os.path.exists(path):
            return cls()
        stat = os.stat(path)
        return cls(str(path), stat.st_size, stat.st_mtime_ns)

    def check(self, stage: str) -> None:
        """Raise :class:`DataChangedError` if the file was modified since :meth:`of`.

        Parameters
        ----------
        stage : str
            What the fit has done so far, for the message (``"the kNN search"``).
        """
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except OSError as err:
            raise DataChangedError(f"the memory-mapped input {self.path!r} became unreadable "
                                   f"during {stage} ({err}); fit again from a stable "
                                   "file.") from None
        if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns):
            raise DataChangedError(
                f"the memory-mapped input {self.path!r} was modified during {stage} (size "
                f"{self.size} -> {stat.st_size} bytes, modification time changed): the fit "
                "may have read two versions of the data. Fit again once the file is no "
                "longer written, or from a copy (np.array(X)).")


def _memmap_base(X) -> np.memmap | None:
    """The ``np.memmap`` that ``X`` is or views, if any."""
    base = X
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    return base


def release_mapped_pages(X) -> None:
    """Drop the pages of a read-only memory-mapped ``X`` from this process's resident memory
    once a pass over it is done (``madvise(MADV_DONTNEED)``): they stay in the OS page cache
    and are read again from there on the next access, so nothing changes but the resident
    set (at 10M x 50 float32, the 2 GB a pass over the file maps). A no-op for arrays in
    memory, writable or copy-on-write maps (their pages may hold changes) and where the OS
    has no ``madvise``.

    Parameters
    ----------
    X : array-like
        The data.
    """
    import mmap

    base = _memmap_base(X)
    handle = getattr(base, "_mmap", None)
    if base is None or base.mode != "r" or handle is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    handle.madvise(mmap.MADV_DONTNEED)
