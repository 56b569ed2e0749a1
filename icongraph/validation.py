"""Input validation: every public entry point turns user data into clean float32 arrays here.

The rule is "a clear ``ValueError`` naming the problem, and the caller's data untouched": every
function returns a new array, or the caller's own array when it is already in the right form,
which icongraph never writes to.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["NonNumericError", "check_data", "check_feature_names", "check_is_fitted",
           "check_labels", "check_n_features", "check_n_neighbors", "check_random_state",
           "to_numpy"]


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


#: rows per block when checking for NaN/inf
FINITE_CHECK_ROWS = 65536


def check_data(X, *, name: str = "X", min_samples: int = 1, allow_sparse: bool = True):
    """Validate a 2-D numeric data matrix (n_samples, n_features) and return it as float32.

    Dense input that is already C-contiguous float32 is returned as is, without a copy (as
    scikit-learn's ``check_array``: at 1M x 50 a copy is 200 MB of peak memory); nothing in
    icongraph writes to it. Anything else is converted to a new C-contiguous float32 array.
    Raises ``ValueError`` for empty, 1-D, complex, non-numeric or object input and for NaN/inf
    values (for input that cannot be read as numbers a :class:`NonNumericError`, also a
    ``TypeError``); the messages carry scikit-learn's phrases for the same faults.
    Scipy sparse input is returned as a float32 CSR copy when ``allow_sparse``.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D array of shape (n_samples, n_features).")
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
        values = X
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
        values = np.ascontiguousarray(X, dtype=np.float32)
        if not all(np.isfinite(values[lo:lo + FINITE_CHECK_ROWS]).all()  # no N x D mask
                   for lo in range(0, values.shape[0], FINITE_CHECK_ROWS)):
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            raise ValueError(
                f"{name} contains NaN or infinite values in {bad.size} row(s), first row {bad[0]}."
            )
    if values.shape[0] < min_samples:
        raise ValueError(f"{name} has {values.shape[0]} samples; at least {min_samples} needed.")
    return values


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


def check_n_neighbors(n_neighbors: int, n_samples: int) -> int:
    """``n_neighbors`` must be a positive integer with ``n_samples >= n_neighbors + 1``."""
    if not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer; got {n_neighbors!r}.")
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
