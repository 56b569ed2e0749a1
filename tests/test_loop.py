"""The shared training loop: when the loss is read, how hooks stop it, what the guard says."""

import math

import pytest
import torch

from icongraph import DivergenceError
from icongraph.loop import Callbacks, Converged, FiniteGuard, Hook, train


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


def test_converged_stops_once_the_labels_settle_and_not_before_min_epochs():
    # the labels change at every check up to epoch 39, then stay; checks every 10 epochs
    history = [torch.tensor([e // 10 % 2, 0, 0, 0]) if e < 40 else torch.zeros(4, dtype=torch.long)
               for e in range(100)]
    epoch = {"now": 0}

    def labels():
        return history[epoch["now"]]

    class Clock(Hook):
        def on_epoch(self, state):
            epoch["now"] = state.epoch

    hook = Converged(labels, tol=0.0, every=10, min_epochs=30)
    state, calls = _run([0.0] * 100, 100, hooks=[Clock(), hook])
    # epoch 59 is the first check whose labels equal those of the check before (epoch 49)
    assert hook.stopped_at == 59 and state.epoch == 59 and len(calls) == 60
    # min_epochs holds the stop back; tol=None never stops
    late = Converged(labels, tol=0.0, every=10, min_epochs=80)
    assert _run([0.0] * 100, 100, hooks=[Clock(), late])[0].epoch == 79
    never = Converged(labels, tol=None)
    assert _run([0.0] * 100, 100, hooks=[Clock(), never])[0].epoch == 99
    assert never.stopped_at is None
    # a tolerance of a quarter of the labels accepts one change in four
    loose = Converged(lambda: history[epoch["now"]] if epoch["now"] >= 40 else
                      torch.tensor([epoch["now"] // 10 % 2, 0, 0, 0]), tol=0.25, every=10,
                      min_epochs=10)
    assert _run([0.0] * 100, 100, hooks=[Clock(), loose])[0].epoch == 19
