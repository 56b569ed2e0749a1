"""Kernels on the unit sphere: the gradient through the normalisation and the learned
temperature against autograd on the dense objective, the engines against each other, quality
that the optimiser makes, the InfoNCE / SupCon rows, clear errors, determinism."""

import numpy as np
import pytest
import torch
from conftest import digits_subset
from sklearn.neighbors import KNeighborsClassifier

import icongraph
from icongraph import _cpu_engine as cpu
from icongraph._torch_engine import sampled_gradient_torch, torch_arrays
from icongraph.kernels import CosineKernel, SphereStudentKernel
from icongraph.knn import exact_knn
from icongraph.metrics import knn_accuracy_cv, knn_preservation
from icongraph.objective import Objective, exact_loss
from icongraph.sphere import sphere_gradient_, temperature_gradient
from icongraph.targets import PerplexityTarget, debias

#: the engines' ``dof_rows`` when the degrees of freedom are not learned
NO_DOF = np.zeros(0, np.float32)

KERNELS = [CosineKernel(0.3), SphereStudentKernel(1.0, 0.4), SphereStudentKernel(3.0, 0.2)]


def _ids(kernel):
    return f"{kernel.name}{kernel.params[0]:.1f}"


def _problem(alpha=0.0, n=30, seed=0):
    """30 points, a conditional perplexity target, rows ``z`` of uneven norms in 3-D."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 5)).astype(np.float32)
    target = PerplexityTarget(5, symmetric=False).build(exact_knn(X, 15))
    if alpha:
        target = debias(target, alpha)
    z = rng.normal(0, 1, (n, 3)) * rng.uniform(0.5, 2.0, (n, 1))
    return target, z


def _exact_gradient(obj, y):
    """The numba engine in exact mode at unit rows ``y``: ``(dL/dy, loss)`` (a first pass
    for the normalisers of the current y, as tests/test_objective.py)."""
    y = np.ascontiguousarray(y, np.float32)
    n = len(y)
    grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, np.ones(n, np.float32), 0.0, False, grad,
                         zsum, rows, NO_DOF)
    z_prev = zsum.copy()
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, z_prev, 0.0, True, grad, zsum, rows, NO_DOF)
    loss = obj.constant() + rows.astype(np.float64).sum() + obj.normaliser_terms(zsum)
    return grad, loss


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_gradient_through_the_normalisation_matches_autograd(kernel, alpha):
    """Exact mode: the loss at ``y = z / |z|`` and ``dL/dz`` (the engine's ``dL/dy`` through
    :func:`sphere_gradient_`) equal the dense KL and its autograd gradient in ``z``."""
    target, z = _problem(alpha)
    obj = Objective(target, kernel, "per_anchor", n_negatives=0)
    y = z / np.linalg.norm(z, axis=1, keepdims=True)
    grad_y, loss = _exact_gradient(obj, y)
    grad_z = sphere_gradient_(torch.tensor(z), torch.tensor(grad_y, dtype=torch.float64))
    zt = torch.tensor(z, requires_grad=True)
    dense = exact_loss(target, kernel, zt / zt.norm(dim=1, keepdim=True))
    dense.backward()
    assert loss == pytest.approx(dense.item(), rel=1e-4)
    np.testing.assert_allclose(grad_z.numpy(), zt.grad.numpy(), rtol=2e-3,
                               atol=2e-4 * np.abs(zt.grad.numpy()).max())


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
def test_temperature_gradient_matches_autograd(kernel):
    """``dL/dlog tau = -1/2 sum_i <y_i, dL/dy_i>`` from the engine's gradient equals
    ``tau dL/dtau`` by autograd on the dense objective."""
    target, z = _problem(0.2)
    y = z / np.linalg.norm(z, axis=1, keepdims=True)
    grad_y, _ = _exact_gradient(Objective(target, kernel, "per_anchor", n_negatives=0), y)
    tau = torch.tensor(float(kernel.temperature), dtype=torch.float64, requires_grad=True)
    dense = exact_loss(target, kernel.with_temperature(tau), torch.tensor(y))
    dense.backward()
    engine = float(temperature_gradient(torch.tensor(y), torch.tensor(grad_y)))
    assert engine == pytest.approx(float(tau.detach() * tau.grad), rel=2e-3)
    assert abs(engine) > 1e-2  # not trivially zero at this point


@pytest.mark.parametrize("kernel", KERNELS, ids=_ids)
def test_numba_and_torch_engines_agree_on_the_sphere(kernel):
    target, z = _problem()
    y = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    obj = Objective(target, kernel, "per_anchor", n_negatives=5)
    n = len(y)
    z_prev = np.full(n, 3.0, np.float32)
    grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 11, z_prev, 0.0, True, grad, zsum, rows, NO_DOF)
    grad_t, zsum_t, rows_t = sampled_gradient_torch(
        obj, torch_arrays(obj, "cpu"), torch.from_numpy(y), 11, 0, 1.0,
        torch.from_numpy(z_prev), 0.0, True)
    np.testing.assert_allclose(grad, grad_t.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(zsum, zsum_t.numpy(), rtol=1e-5)
    np.testing.assert_allclose(rows, rows_t.numpy(), rtol=1e-4, atol=1e-5)


def _on_sphere(Y):
    return np.abs(np.linalg.norm(Y, axis=1) - 1).max() < 1e-5


@pytest.mark.quality
@pytest.mark.parametrize("name", ["infonce", "t-infonce"])
def test_sphere_rows_preserve_neighbourhoods(name):
    # 600 digits, seed 0: the normalised PCA start scores 10-NN accuracy ~0.70 and kNN
    # preservation ~0.22 (optimiser off); InfoNCE ~0.95 / 0.45, t-InfoNCE ~0.97 / 0.55
    X, y = digits_subset(600)
    model = icongraph.method(name, random_state=0).fit(X)
    Y = model.embedding_
    assert Y.shape == (600, 3) and _on_sphere(Y)
    assert knn_accuracy_cv(Y, y) > 0.9
    assert knn_preservation(X, Y) > 0.35


@pytest.mark.quality
def test_supcon_separates_classes_and_places_new_points():
    # fit on 500 digits with their labels: 5-fold 10-NN accuracy of the fitted sphere 0.716
    # with the optimiser off, 1.0 on; a 10-NN classifier on it applied to 300 held-out digits
    # placed by transform (kNN rows, no labels): 0.713 off, 0.897 on
    X, y = digits_subset(800, seed=1)
    model = icongraph.method("supcon", random_state=0).fit(X[:500], y[:500])
    assert _on_sphere(model.embedding_)
    assert knn_accuracy_cv(model.embedding_, y[:500]) > 0.99
    new = model.transform(X[500:])
    assert _on_sphere(new)
    classifier = KNeighborsClassifier(10).fit(model.embedding_, y[:500])
    assert classifier.score(new, y[500:]) > 0.85
    # a point alone lands where it lands in the batch
    np.testing.assert_array_equal(model.transform(X[500:503]), new[:3])


def test_learned_temperature_moves_and_is_recorded():
    X, _ = digits_subset(300)
    model = icongraph.ICon(p="knn", q="cosine", estimator="per_anchor", n_components=3,
                           q_params={"temperature": 1.0, "learn_temperature": True},
                           n_epochs=100, random_state=0).fit(X)
    assert model.kernel_.learn_temperature and model.kernel_.temperature < 0.5
    assert _on_sphere(model.embedding_)
    again = icongraph.ICon(**model.get_params()).fit(X)
    assert again.kernel_.temperature == model.kernel_.temperature
    np.testing.assert_array_equal(again.embedding_, model.embedding_)


def test_fits_are_deterministic_and_two_dimensions_is_the_circle():
    X, _ = digits_subset(200)
    make = lambda: icongraph.method("infonce", n_components=2, n_epochs=50,  # noqa: E731
                                    random_state=3)
    a, b = make().fit(X).embedding_, make().fit(X).embedding_
    np.testing.assert_array_equal(a, b)
    assert a.shape == (200, 2) and _on_sphere(a)


@pytest.mark.parametrize("params, message", [
    ({"q_params": {"temperature": 0}}, r"temperature must be a finite number > 0; got 0"),
    ({"q_params": {"temperature": -0.1}}, r"temperature must be a finite number > 0"),
    ({"q_params": {"temperature": float("inf")}}, r"temperature must be a finite number > 0"),
    ({"q_params": {"learn_temperature": "yes"}}, r"learn_temperature must be True or False"),
    ({"estimator": "fft"}, r"'fft' estimator .* cannot serve the 'cosine' kernel on the sphere"),
    ({"n_components": 1}, r"needs n_components >= 2 .*; got 1"),
])
def test_bad_sphere_settings_are_refused_before_any_work(params, message, no_work):
    X, _ = digits_subset(100)
    settings = {"p": "knn", "q": "cosine", "estimator": "per_anchor", "n_components": 3,
                **params}
    with pytest.raises(ValueError, match=message):
        icongraph.ICon(**settings).fit(X)


def test_sphere_kernels_are_the_planar_kernels_of_the_normalised_points():
    """``cosine`` is ``exp(cos / tau)`` up to a constant factor, ``student-sphere`` the
    Student-t of ``d2 / tau``; both registered by name."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 3))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    cos = y @ y.T
    d2 = ((y[:, None] - y[None]) ** 2).sum(-1)
    log_k = icongraph.kernels.get_kernel("cosine", temperature=0.2).log_k(d2)
    np.testing.assert_allclose(log_k, cos / 0.2 - 1 / 0.2, atol=1e-12)
    student = icongraph.kernels.get_kernel("student-sphere", dof=2.0, temperature=0.5)
    np.testing.assert_allclose(student.log_k(d2), -1.5 * np.log1p(d2 / 1.0), atol=1e-12)


def test_a_zero_start_row_ends_on_the_sphere():
    # a zero row divided by its float32 norm took steps of 1e29 and stayed at the origin
    X, _ = digits_subset(200)
    init = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    init[0] = 0
    model = icongraph.ICon(p="knn", q="cosine", estimator="per_anchor", n_components=3, init=init,
                 n_epochs=20, random_state=0, n_jobs=1).fit(X)
    np.testing.assert_allclose(np.linalg.norm(model.embedding_, axis=1), 1.0, rtol=1e-5)
