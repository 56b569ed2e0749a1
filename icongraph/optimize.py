"""The optimisation loop: one pass of the sampled gradient per epoch, a torch optimiser step.

The gradient comes from the numba engine on CPU (built-in kernels) or from the torch engine
(CUDA, or kernels without a numba form); the step is a ``torch.optim`` optimiser with a
learning-rate schedule, on the same tensor both engines read (no copies, no host syncs on CUDA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import _cpu_engine as cpu
from .objective import Objective, epoch_seed, sampled_gradient_torch, torch_arrays
from .progress import progress

__all__ = ["optimize", "resolve_device", "threads"]

SCHEDULES = ("linear", "constant", "cosine")
OPTIMIZERS = ("sgd", "adam")


def resolve_device(device) -> torch.device:
    """``'auto'``/None -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available.")
    return device


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


def _scheduler(optimizer, schedule: str, n_epochs: int):
    if schedule == "linear":
        fn = lambda e: max(1.0 - e / n_epochs, 0.0)  # noqa: E731
    elif schedule == "cosine":
        fn = lambda e: 0.5 * (1.0 + np.cos(np.pi * min(e / n_epochs, 1.0)))  # noqa: E731
    elif schedule == "constant":
        fn = lambda e: 1.0  # noqa: E731
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def optimize(objective: Objective, y0: np.ndarray, *, n_epochs: int = 200,
             learning_rate: float = 1.0, optimizer: str = "sgd", momentum: float = 0.0,
             schedule: str = "linear", exaggeration: float = 1.0, exaggeration_epochs: int = 0,
             seed: int = 0, device=None, loss_every: int = 10,
             callbacks: Sequence[Callable] = (), verbose: bool = False):
    """Minimise ``objective`` from ``y0`` (N, d). Returns ``(y, losses)``: the embedding as a
    float32 numpy array and the loss estimates ``[(epoch, loss), ...]``.

    Each callback is called as ``cb(epoch, loss, embedding)`` after every epoch (``loss`` is the
    latest estimate, refreshed every ``loss_every`` epochs; ``embedding`` a torch tensor view
    that must not be modified); returning ``True`` stops the optimisation early.
    """
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1; got {n_epochs}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}.")
    device = resolve_device(device)
    use_numba = device.type == "cpu" and objective.kernel.code >= 0
    y = torch.nn.Parameter(torch.tensor(np.asarray(y0, np.float32), device=device))
    n = y.shape[0]
    if optimizer == "adam":
        opt = torch.optim.Adam([y], lr=learning_rate)
    else:
        opt = torch.optim.SGD([y], lr=learning_rate, momentum=momentum)
    sched = _scheduler(opt, schedule, n_epochs)
    p0, p1 = objective.kernel_params
    if use_numba:
        y_np = y.data.numpy()
        grad_np = np.zeros_like(y_np)
        y.grad = torch.from_numpy(grad_np)
        zsums = [np.ones(n, np.float32), np.ones(n, np.float32)]  # written / read alternately
        loss_rows = np.zeros(n, np.float32)
    else:
        arrays = torch_arrays(objective, device)
        zsums = [torch.ones(n, device=device)]

    def evaluate(epoch: int, exag: float, z_prev, g_scale: float, with_loss: bool):
        seed_e = epoch_seed(seed, epoch)
        if use_numba:
            zsum = zsums[epoch % 2]
            cpu.sampled_gradient(y_np, objective.indptr, objective.indices, objective.weights,
                                 float(exag), int(objective.n_negatives), seed_e, objective.code,
                                 objective.kernel.code, p0, p1, objective.row_mass,
                                 objective.alpha, z_prev, float(g_scale), objective.neg_scale,
                                 float(objective.clip), with_loss, grad_np, zsum, loss_rows)
            return zsum, loss_rows
        with torch.no_grad():
            grad, z, rows = sampled_gradient_torch(objective, arrays, y.data, seed_e, exag,
                                                   z_prev, g_scale, with_loss)
        y.grad = grad
        return z, rows

    # one evaluation to seed the normaliser estimates (they lag one epoch)
    z_prev, g_scale = objective.normaliser_state(evaluate(-1, 1.0, zsums[0], 1.0, False)[0])
    losses: list[tuple[int, float]] = []
    loss = float("nan")
    for epoch in progress(range(n_epochs), "optimise", verbose, unit="epoch"):
        with_loss = (epoch % loss_every == 0) or epoch == n_epochs - 1
        exag = exaggeration if epoch < exaggeration_epochs else 1.0
        z_new, rows = evaluate(epoch, exag, z_prev, g_scale, with_loss)
        if with_loss:
            loss = (objective.constant() + float(rows.sum())
                    + objective.normaliser_terms(z_new))
            losses.append((epoch, loss))
        z_prev, g_scale = objective.normaliser_state(z_new)
        opt.step()
        sched.step()
        if any([bool(cb(epoch, loss, y.data)) for cb in callbacks]):
            break
    return y.detach().cpu().numpy(), losses
