"""The scikit-learn estimator protocol, without importing scikit-learn.

:class:`ParamsMixin`: a class lists its parameters and their defaults in ``_param_defaults``
and gets ``__init__``, ``get_params``, ``set_params``, a ``__signature__`` for help() and IDEs,
a ``__repr__`` showing what differs from defaults, and ``__sklearn_tags__``.
:class:`TransformerOutputMixin`: ``set_output`` (pandas output of ``transform`` and
``fit_transform``) and ``get_feature_names_out``.

Written out rather than inherited from ``sklearn.base.BaseEstimator`` because importing
scikit-learn costs ~1 s of every cold start: it is imported only where it is asked for (the
tags, a ``NotFittedError``, DataFrame feature names; pandas only for pandas output), and
``clone``, pipelines, grid search and ``sklearn.utils.estimator_checks`` work as usual.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np

from .validation import check_is_fitted

__all__ = ["ParamsMixin", "TransformerOutputMixin", "OUTPUT_CONTAINERS"]

#: the containers ``set_output(transform=...)`` accepts
OUTPUT_CONTAINERS = ("default", "pandas")


class ParamsMixin:
    """Subclasses override :meth:`_param_defaults` (name -> default)."""

    @classmethod
    def _param_defaults(cls) -> dict:
        return {}

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(cls._param_defaults())

    def __init__(self, **params):
        defaults = self._param_defaults()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected parameter(s) {unknown}; "
                            f"valid: {sorted(defaults)}.")
        for name, default in defaults.items():
            setattr(self, name, params.get(name, default))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=v)
             for n, v in cls._param_defaults().items()])

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        names = self._get_param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {names}.")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's tags for an estimator without a target (subclasses add theirs).

        Returns
        -------
        sklearn.utils.Tags
        """
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    def __repr__(self) -> str:
        defaults = self._param_defaults()
        changed = [f"{k}={getattr(self, k)!r}" for k in self._get_param_names()
                   if getattr(self, k) is not defaults[k] and getattr(self, k) != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"


class TransformerOutputMixin:
    """``set_output`` and ``get_feature_names_out`` for an estimator whose ``transform`` and
    ``fit_transform`` return ``_n_features_out`` columns; they pass their array through
    :meth:`_wrap_output`. The output names are the lower-case class name and the column
    index (``umap0``, ``umap1``), as scikit-learn's decompositions name theirs."""

    def set_output(self, *, transform=None):
        """Set the container that ``transform`` and ``fit_transform`` return.

        Parameters
        ----------
        transform : {"default", "pandas"} or None, default=None
            ``"default"``: a numpy array; ``"pandas"``: a DataFrame with the columns of
            :meth:`get_feature_names_out` and, for DataFrame input, its index; ``None``: leave
            the setting unchanged. Without a setting, scikit-learn's global
            ``transform_output`` applies (``sklearn.set_config``).

        Returns
        -------
        self
        """
        if transform is None:
            return self
        if transform not in OUTPUT_CONTAINERS:
            raise ValueError(f"transform must be one of {OUTPUT_CONTAINERS} or None; got "
                             f"{transform!r}.")
        self._sklearn_output_config = {**getattr(self, "_sklearn_output_config", {}),
                                       "transform": transform}
        return self

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked: it must match ``feature_names_in_`` (or have ``n_features_in_``
            entries when the model was fitted without names).

        Returns
        -------
        numpy.ndarray of str (object dtype)
            ``<class name in lower case><i>`` for each output column ``i``.
        """
        check_is_fitted(self, "_n_features_out")
        if input_features is not None:
            input_features = np.asarray(input_features, dtype=object)
            names = getattr(self, "feature_names_in_", None)
            if names is not None and not np.array_equal(input_features, names):
                raise ValueError("input_features is not equal to feature_names_in_")
            if names is None and len(input_features) != self.n_features_in_:
                raise ValueError(f"input_features should have length equal to number of "
                                 f"features ({self.n_features_in_}), got "
                                 f"{len(input_features)}")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)

    def _output_container(self) -> str:
        """This estimator's ``set_output`` choice, else scikit-learn's global one (which can
        only have been changed if scikit-learn is imported)."""
        container = getattr(self, "_sklearn_output_config", {}).get("transform")
        if container is None:
            sklearn = sys.modules.get("sklearn")
            container = "default" if sklearn is None else sklearn.get_config()["transform_output"]
        if container not in OUTPUT_CONTAINERS:
            raise ValueError(f"{type(self).__name__} can output {OUTPUT_CONTAINERS}; the "
                             f"configured output is {container!r}.")
        return container

    def _wrap_output(self, Y: np.ndarray, X):
        """``Y`` (N, n_features_out) in the configured container; a DataFrame keeps the index
        of ``X`` when ``X`` is a pandas object."""
        if self._output_container() == "default":
            return Y
        import pandas as pd

        index = X.index if isinstance(X, (pd.DataFrame, pd.Series)) else None
        return pd.DataFrame(Y, index=index, columns=self.get_feature_names_out(), copy=False)
