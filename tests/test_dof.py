"""Learned degrees of freedom of the Student-t kernels: the slope ``d log k / d dof`` and the
engines' ``dL/ddof`` against autograd, the two engines against each other, and the learning
itself on well-separated clusters."""

import numpy as np
import pytest
import torch

import icongraph
from icongraph import _cpu_engine as cpu
from icongraph import optimize
from icongraph._torch_engine import sampled_gradient_torch, torch_arrays
from icongraph.kernels import SphereStudentKernel, StudentKernel
from icongraph.knn import exact_knn
from icongraph.objective import Objective, exact_loss
from icongraph.targets import FuzzyTarget, PerplexityTarget, debias

KERNELS = [StudentKernel(1.0), StudentKernel(2.5), StudentKernel(0.4),
           SphereStudentKernel(2.0, 0.3)]


def _ids(kernel):
    return f"{kernel.name}{kernel.dof}"


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
def test_dof_slope_matches_autograd(kernel):
    d2 = torch.linspace(0.0, 20.0, 201, dtype=torch.float64)
    dof = torch.tensor(float(kernel.dof), dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(kernel.with_dof(dof).log_k_torch(d2).sum(), dof)
    closed = kernel.dof_slope_torch(d2)
    each = [torch.autograd.grad(kernel.with_dof(dof).log_k_torch(x), dof)[0] for x in d2[::20]]
    np.testing.assert_allclose(closed[::20].numpy(), torch.stack(each).numpy(), rtol=1e-10,
                               atol=1e-12)
    assert float(closed.sum()) == pytest.approx(float(auto), rel=1e-10)


def _problem(blobs, spec, alpha):
    X, _ = blobs
    target = spec.build(exact_knn(X, spec.n_neighbors_for(len(X))))
    if alpha:
        target = debias(target, alpha)
    y = np.random.default_rng(0).normal(0, 1.0, (len(X), 2)).astype(np.float32)
    return target, y


def _engine_dof_gradient(obj, y):
    """Exact mode (every other point a negative): a first pass for the normalisers, then
    ``dL/ddof = 1/4 sum_i dof_rows[i]``."""
    n = len(y)
    grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
    dof_rows = np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, np.ones(n, np.float32), 1.0, False, grad,
                         zsum, rows, dof_rows)
    z_prev, g_scale = obj.normaliser_state(zsum)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, z_prev, float(g_scale), False, grad, zsum,
                         rows, dof_rows)
    return 0.25 * dof_rows.astype(np.float64).sum()


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
@pytest.mark.parametrize("estimator", ["per_anchor", "global", "neg"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_engine_dof_gradient_matches_autograd(blobs, kernel, estimator, alpha):
    """The engine's sum over the exact objective's pairs is ``dL/ddof`` of the dense
    objective (:func:`~icongraph.objective.exact_loss`, autograd in ``dof``)."""
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(
        10, symmetric=estimator == "global")
    target, y = _problem(blobs, spec, alpha)
    obj = Objective(target, kernel, estimator, n_negatives=0, negative_sample_rate=5.0)
    engine = _engine_dof_gradient(obj, y)
    dof = torch.tensor(float(kernel.dof), dtype=torch.float64, requires_grad=True)
    dense = exact_loss(target, kernel.with_dof(dof), torch.tensor(y, dtype=torch.float64),
                       estimator, negative_sample_rate=5.0)
    (auto,) = torch.autograd.grad(dense, dof)
    assert engine == pytest.approx(float(auto), rel=2e-3, abs=1e-4 * float(target.row_mass.sum()))
    assert abs(float(auto)) > 1e-3  # not trivially zero at this point


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
@pytest.mark.parametrize("estimator", ["per_anchor", "global", "neg"])
def test_numba_and_torch_engines_agree_on_dof_rows(blobs, kernel, estimator):
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(10)
    target, y = _problem(blobs, spec, 0.2)
    obj = Objective(target, kernel, estimator, n_negatives=5)
    n = len(y)
    z_prev = np.full(n, 3.0, np.float32)
    grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
    dof_rows = np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 11, z_prev, 0.01, False, grad, zsum, rows,
                         dof_rows)
    dof_t = torch.full((n,), 5.0)  # overwritten
    sampled_gradient_torch(obj, torch_arrays(obj, "cpu"), torch.from_numpy(y), 11, 0, 1.0,
                           torch.from_numpy(z_prev), 0.01, False, dof_t)
    np.testing.assert_allclose(dof_rows, dof_t.numpy(), rtol=1e-3,
                               atol=1e-5 * np.abs(dof_rows).max())
    assert np.abs(dof_rows).max() > 0


def _separated(n_per=60, seed=0):
    """4 tight, far-apart clusters in 10-D."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20.0, (4, 10))
    X = np.concatenate([c + rng.normal(0, 1.0, (n_per, 10)) for c in centres])
    return X.astype(np.float32)


def _fit_dof(X, **params):
    model = icongraph.ICon(p="perplexity", q="student", estimator="global",
                           q_params={"learn_dof": True}, p_params={"perplexity": 15},
                           n_epochs=300, random_state=0, **params).fit(X)
    return model


def test_learned_dof_moves_on_separated_clusters():
    """From dof 1, learning on 4 far-apart clusters moves ``kernel_.dof`` well away (to lighter
    tails here); at a zero step for it the same fit keeps dof 1, so the move is the learning's."""
    X = _separated()
    model = _fit_dof(X)
    assert model.kernel_.learn_dof and model.kernel_.name == "student"
    assert abs(np.log(model.kernel_.dof)) > 0.5, model.kernel_.dof
    assert np.isfinite(model.embedding_).all()


def test_zero_dof_step_keeps_dof(monkeypatch):
    monkeypatch.setattr(optimize, "DOF_LEARNING_RATE", 0.0)
    model = _fit_dof(_separated(), n_components=2)
    assert model.kernel_.dof == 1.0


def test_learned_dof_on_the_sphere_and_the_torch_engine():
    X = _separated(30)
    model = icongraph.ICon(p="knn", q="student-sphere", estimator="per_anchor", n_components=3,
                           q_params={"learn_dof": True, "learn_temperature": True},
                           n_epochs=100, random_state=0).fit(X)
    assert model.kernel_.dof != 1.0 and model.kernel_.temperature != 0.05
    assert np.abs(np.linalg.norm(model.embedding_, axis=1) - 1).max() < 1e-5
    # the torch engine serves a kernel without a numba code (and CUDA): the same sums
    torch_fit = icongraph.ICon(p="perplexity", q=_TorchStudent(1.0, learn_dof=True),
                               estimator="global", n_epochs=60, random_state=0).fit(X)
    numba_fit = icongraph.ICon(p="perplexity", q=StudentKernel(1.0, learn_dof=True),
                               estimator="global", n_epochs=60, random_state=0).fit(X)
    assert torch_fit.kernel_.dof == pytest.approx(numba_fit.kernel_.dof, rel=0.05)
    assert abs(np.log(torch_fit.kernel_.dof)) > 0.1


class _TorchStudent(StudentKernel):
    """The Student-t kernel without its numba code: fitted by the torch engine on the CPU."""

    code = -1
