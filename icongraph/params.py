"""The scikit-learn parameter protocol, declared once: a class lists its parameters and their
defaults in ``_param_defaults`` and gets ``__init__``, ``get_params``, ``set_params``, a
``__signature__`` for help() and IDEs, and a ``__repr__`` showing what differs from defaults.

Written out rather than inherited from ``sklearn.base.BaseEstimator`` because importing
scikit-learn costs ~1 s of every cold start; ``sklearn.base.clone`` and grid search work as
usual (they only need ``get_params``/``set_params``).
"""

from __future__ import annotations

import inspect

__all__ = ["ParamsMixin"]


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

    def __repr__(self) -> str:
        defaults = self._param_defaults()
        changed = [f"{k}={getattr(self, k)!r}" for k in self._get_param_names()
                   if getattr(self, k) is not defaults[k] and getattr(self, k) != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"
