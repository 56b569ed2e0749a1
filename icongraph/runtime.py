"""How a fit runs: its device, its thread counts, the rules of the runtime parameters every
estimator shares (``random_state``, ``device``, ``n_jobs``, ``verbose``), and the error a
diverged optimisation raises."""

from __future__ import annotations

import contextlib
import numbers
import os

import numpy as np
import torch

from .validation import boolean, check_random_state

__all__ = ["resolve_device", "threads", "torch_threads", "child_env", "RUNTIME_RULES",
           "DivergenceError"]


def resolve_device(device) -> torch.device:
    """``'auto'``/None -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available.")
    return device


def child_env(threads: int) -> dict:
    """This process's environment for a child process limited to ``threads`` threads in
    OpenMP, MKL, OpenBLAS and numba (the benchmarks' fresh fits)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


@contextlib.contextmanager
def threads(n_jobs: int | None):
    """Run with ``n_jobs`` threads in numba and torch (-1/None: all cores); restores after."""
    import numba

    if n_jobs is None or n_jobs < 0:
        n = numba.config.NUMBA_NUM_THREADS
    else:
        n = max(1, min(int(n_jobs), numba.config.NUMBA_NUM_THREADS))
    old_numba, old_torch = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(old_numba)
        torch.set_num_threads(old_torch)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run torch on ``n`` threads (None: unchanged); restores after."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class DivergenceError(FloatingPointError):
    """The optimisation produced a non-finite loss or embedding (it diverged).

    A ``FloatingPointError``, raised by ``fit`` with a remedy in its message (a lower
    ``learning_rate``, ...).

    Examples
    --------
    >>> import icongraph
    >>> try:
    ...     icongraph.UMAP(learning_rate=1e30).fit(X)  # doctest: +SKIP
    ... except icongraph.DivergenceError as err:
    ...     print(err)
    """


def _n_jobs_rule(name, value):
    """None, -1 or another negative integer (every core), or a positive count."""
    if value is None or (_integer(value) and value != 0):
        return
    raise ValueError(f"{name} must be a positive integer, or -1 (or None) for every core; got "
                     f"{value!r}.")


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _random_state_rule(name, value):
    """What :func:`~icongraph.validation.check_random_state` accepts (numpy generators are
    not drawn from here: that happens once, when ``fit`` takes its seed)."""
    if not isinstance(value, (np.random.RandomState, np.random.Generator)):
        check_random_state(value)


#: rules of the parameters that say how a fit runs, shared by every estimator. ``verbose``
#: takes umap-learn's levels: False/0 silent, True/1 a line when each phase starts and ends (with
#: its seconds) and progress bars, 2 and above detail lines as well (:mod:`icongraph.progress`)
RUNTIME_RULES = {
    "random_state": _random_state_rule,
    "device": lambda name, value: resolve_device(value),
    "n_jobs": _n_jobs_rule,
    "verbose": boolean(allow_int=True),
}
