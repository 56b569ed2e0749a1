"""One training loop for every estimator: ``step`` runs a whole epoch (gradient and update),
the loss is read every ``loss_every`` epochs, and hooks watch each epoch (the finite-loss guard,
the user's callbacks) behind a progress bar, which shows the latest loss.

The loop adds no host syncs of its own: the loss is the number ``step`` returns, and the guard,
the bar and the detail lines (``verbose >= 2``: the loss about every tenth of the epochs) read
it only on the epochs that refresh it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .progress import detail, progress
from .runtime import DivergenceError

__all__ = ["train", "schedule", "LoopState", "Hook", "FiniteGuard", "Callbacks", "Converged",
           "FULL_BATCH_FLOATS"]

#: detail lines (``verbose >= 2``) report the loss about this many times per run
LOSS_REPORTS = 10
#: full-batch training while the rows' floats of one step stay below this many
FULL_BATCH_FLOATS = 1 << 24
#: rows per mini-batch above it; epochs of a full batch; Adam steps of a mini-batch fit
MINI_BATCH = 8192
FULL_BATCH_EPOCHS = 300
MINI_BATCH_STEPS = 600


@dataclass
class LoopState:
    """What the hooks see after each epoch.

    Attributes
    ----------
    n_epochs : int
        The epochs asked for.
    view : callable
        ``view()`` returns what is learned as a torch tensor, a view that must not be modified:
        the embedding (N, d), or a clustering's probabilities (B, C) of its last step.
    epoch : int
        The epoch just run (-1 before the first).
    lr : float
        Its step size (for messages).
    with_loss : bool
        Whether this epoch refreshed the loss.
    loss : float
        The latest loss estimate (NaN before the first).
    losses : list of (int, float)
        Every ``(epoch, loss)`` read so far.
    """

    n_epochs: int
    view: Callable[[], torch.Tensor]
    epoch: int = -1
    lr: float = math.nan
    with_loss: bool = False
    loss: float = math.nan
    losses: list[tuple[int, float]] = field(default_factory=list)


class Hook:
    """Something that watches the loop; both methods are optional."""

    def on_epoch(self, state: LoopState) -> bool | None:
        """Called after every epoch; returning ``True`` stops the loop."""
        return None

    def on_end(self, state: LoopState) -> None:
        """Called once after the last epoch (also after an early stop)."""


class FiniteGuard(Hook):
    """Stop with :class:`~icongraph.runtime.DivergenceError` when the loss (or what ``watch``
    returns) is not finite: checked on the epochs that refresh the loss, and at the end.

    Parameters
    ----------
    watch : callable, optional
        ``watch()`` returns a tensor that must stay finite, such as the embedding.
    watched : str
        What ``watch`` returns, named in the message.
    remedy : str
        Appended to the message's advice to lower the learning rate.
    """

    def __init__(self, watch: Callable[[], torch.Tensor] | None = None,
                 watched: str = "embedding", remedy: str = ""):
        self.watch, self.watched, self.remedy = watch, watched, remedy

    def on_epoch(self, state: LoopState) -> None:
        if state.with_loss:
            self._check(state)

    def on_end(self, state: LoopState) -> None:
        if state.epoch >= 0:
            self._check(state)

    def _check(self, state: LoopState) -> None:
        finite = math.isfinite(state.loss)
        if finite and (self.watch is None or bool(torch.isfinite(self.watch()).all())):
            return
        what = self.watched if finite else "loss"
        raise DivergenceError(
            f"the {what} became non-finite at epoch {state.epoch} (loss {state.loss}): the "
            f"optimisation diverged. Lower learning_rate (the step was {state.lr:g})"
            f"{self.remedy}; nothing was returned.")


class Callbacks(Hook):
    """The user's callbacks, each called as ``cb(epoch, loss, view())`` after every epoch; any
    returning ``True`` stops the loop (all of them are called first).

    Parameters
    ----------
    callbacks : sequence of callable
        May be empty (then nothing is called).
    """

    def __init__(self, callbacks: Sequence[Callable] | None):
        self.callbacks = tuple(callbacks or ())

    def on_epoch(self, state: LoopState) -> bool:
        if not self.callbacks:
            return False
        view = state.view()
        return any([bool(cb(state.epoch, state.loss, view)) for cb in self.callbacks])


class Converged(Hook):
    """Stop when a hard assignment has settled: every ``every`` epochs (from ``min_epochs``)
    ``labels()`` is compared with its value ``every`` epochs before, and the loop stops once
    the fraction of entries that changed is at most ``tol`` (scikit-learn's KMeans stops on
    its centres' shift in the same spirit).

    Parameters
    ----------
    labels : callable
        ``labels()`` returns the current assignment as an integer tensor (B,) on any device,
        for a fixed set of rows; the comparison stays on that device and one number per check
        is read on the host.
    tol : float or None
        The largest fraction of changed labels that counts as settled (0: none may change);
        None never stops (every epoch asked for runs).
    every, min_epochs : int
        The checks' spacing and the first epoch that may stop.

    Attributes
    ----------
    stopped_at : int or None
        The epoch after which the loop stopped, None while it has not.
    """

    def __init__(self, labels: Callable[[], torch.Tensor], tol: float | None,
                 every: int = 10, min_epochs: int = 50):
        self.labels, self.tol, self.every, self.min_epochs = labels, tol, every, min_epochs
        self.previous: torch.Tensor | None = None
        self.stopped_at: int | None = None

    def on_epoch(self, state: LoopState) -> bool:
        if self.tol is None or (state.epoch + 1) % self.every:
            return False
        current = self.labels()
        previous, self.previous = self.previous, current
        if previous is None or state.epoch + 1 < self.min_epochs:
            return False
        if float((current != previous).float().mean()) <= self.tol:
            self.stopped_at = state.epoch
            return True
        return False


def schedule(n: int, row_floats: int, batch_size: int | None,
             n_epochs: int | None) -> tuple[int, int]:
    """(batch size, epochs) of a fit on ``n`` rows whose step holds ``row_floats`` floats per
    row.

    Full batch and ``FULL_BATCH_EPOCHS`` epochs (one Adam step each) while
    ``n x row_floats <= FULL_BATCH_FLOATS``; otherwise mini-batches of ``MINI_BATCH`` rows and
    enough epochs for ``MINI_BATCH_STEPS`` Adam steps (at least 2 passes over the data), so a
    step's memory is bounded whatever ``n``. ``batch_size`` and ``n_epochs`` (None: these
    defaults) override; the batch is at most ``n``.
    """
    batch = batch_size or (n if n * row_floats <= FULL_BATCH_FLOATS else MINI_BATCH)
    batch = min(batch, n)
    if n_epochs is not None:
        return batch, int(n_epochs)
    if batch >= n:
        return batch, FULL_BATCH_EPOCHS
    return batch, max(2, math.ceil(MINI_BATCH_STEPS / math.ceil(n / batch)))


def train(step: Callable[[int, bool], float | None], n_epochs: int, *,
          hooks: Sequence[Hook] = (), loss_every: int = 1, lr_at: Callable[[int], float],
          view: Callable[[], torch.Tensor], desc: str = "train",
          verbose: bool | int = False) -> LoopState:
    """Run ``step`` for ``n_epochs`` epochs, with hooks.

    Parameters
    ----------
    step : callable
        ``step(epoch, with_loss)`` runs one whole epoch (gradient and update) and returns the
        loss as a float when ``with_loss``, else None.
    n_epochs : int
        Epochs to run (0: none; the hooks' ``on_end`` still runs).
    hooks : sequence of Hook
        Called in order after every epoch; the loop stops after an epoch where any returns
        ``True``.
    loss_every : int
        ``with_loss`` is true every ``loss_every`` epochs, from epoch 0, and at the last.
    lr_at : callable
        ``lr_at(epoch)`` is the epoch's step size, for messages.
    view : callable
        What is learned, for the hooks (:attr:`LoopState.view`).
    desc : str
        The progress bar's label outside a phase (inside one, the phase's name labels it).
    verbose : bool or int
        1 (True): a progress bar (:func:`~icongraph.progress.progress`) showing the latest
        loss; 2 and above: also a detail line with the loss on the loss epochs about every
        ``n_epochs / LOSS_REPORTS`` epochs, and at the last.

    Returns
    -------
    LoopState
        The state after the last epoch run; ``losses`` holds every loss read.
    """
    state = LoopState(n_epochs=n_epochs, view=view)
    every = max(1, -(-n_epochs // LOSS_REPORTS))
    reported = -every
    with progress(range(n_epochs), desc, verbose, unit="epoch") as bar:
        for epoch in bar:
            with_loss = epoch % loss_every == 0 or epoch == n_epochs - 1
            loss = step(epoch, with_loss)
            state.epoch, state.lr, state.with_loss = epoch, lr_at(epoch), with_loss
            if with_loss:
                state.loss = loss
                state.losses.append((epoch, loss))
                bar.set_postfix(refresh=False, loss=f"{loss:.4g}")
                if epoch - reported >= every or epoch == n_epochs - 1:
                    detail(verbose, "epoch %d/%d, loss %.6g", epoch + 1, n_epochs, loss)
                    reported = epoch
            if any([bool(hook.on_epoch(state)) for hook in hooks]):
                break
    for hook in hooks:
        hook.on_end(state)
    return state
