"""The shared training loop: when the loss is read, how hooks stop it, what the guard says."""

import math

import pytest
import torch

from icongraph import DivergenceError
from icongraph.loop import Callbacks, FiniteGuard, Hook, train


def _run(losses, n_epochs, hooks=(), loss_every=1, view=None):
    calls = []

    def step(epoch, with_loss):
        calls.append((epoch, with_loss))
        return losses[epoch] if with_loss else None

    state = train(step, n_epochs, hooks=hooks, loss_every=loss_every, lr_at=lambda e: 0.5,
                  view=view or (lambda: torch.zeros(3, 2)))
    return state, calls


def test_the_loss_is_read_every_loss_every_epochs_and_at_the_last():
    state, calls = _run([float(e) for e in range(7)], 7, loss_every=3)
    assert calls == [(0, True), (1, False), (2, False), (3, True), (4, False), (5, False),
                     (6, True)]
    assert state.losses == [(0, 0.0), (3, 3.0), (6, 6.0)]
    assert (state.epoch, state.loss, state.lr) == (6, 6.0, 0.5)


def test_callbacks_see_the_latest_loss_and_stop_the_loop():
    seen = []

    def cb(epoch, loss, view):
        seen.append((epoch, loss, tuple(view.shape)))
        return epoch == 2

    class End(Hook):
        ended = None

        def on_end(self, state):
            End.ended = state.epoch

    state, calls = _run([1.0, 2.0, 3.0, 4.0], 4, hooks=[Callbacks([cb]), End()],
                        loss_every=2)
    assert seen == [(0, 1.0, (3, 2)), (1, 1.0, (3, 2)), (2, 3.0, (3, 2))]
    assert len(calls) == 3 and state.epoch == 2 and End.ended == 2


def test_no_epochs_run_no_step_and_the_guard_passes():
    state, calls = _run([], 0, hooks=[FiniteGuard(), Callbacks(None)])
    assert calls == [] and state.epoch == -1 and math.isnan(state.loss) and state.losses == []


def test_the_guard_names_the_epoch_the_step_and_the_remedy():
    with pytest.raises(DivergenceError, match=r"the loss became non-finite at epoch 1 \(loss "
                       r"nan\).*the step was 0\.5\) or raise temperature; nothing"):
        _run([1.0, math.nan, 1.0], 3, hooks=[FiniteGuard(remedy=" or raise temperature")])
    y = torch.tensor([[0.0, math.inf]])
    with pytest.raises(DivergenceError, match="the embedding became non-finite at epoch 0"):
        _run([1.0, 1.0], 2, hooks=[FiniteGuard(watch=lambda: y)])
