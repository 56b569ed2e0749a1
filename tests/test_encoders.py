"""Encoders for the embeddings: ``y = f_theta(x)`` learned through the same sampled gradient as
the free embedding (the chain rule against autograd of the dense KL), ``transform`` through
``f``, the user's module left alone, bad encoders refused before any work, determinism, and
held-out quality that an untrained encoder does not reach."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import digits_subset
from sklearn.base import clone
from sklearn.neighbors import KNeighborsClassifier

import icongraph
from icongraph import _cpu_engine as cpu
from icongraph.heads import make_encoder, standardisation
from icongraph.kernels import CosineKernel, StudentKernel, UMAPKernel
from icongraph.knn import exact_knn
from icongraph.objective import Objective, exact_loss
from icongraph.optimize import EncoderStepper
from icongraph.runtime import DivergenceError
from icongraph.targets import PerplexityTarget

#: the engines' ``dof_rows`` when the degrees of freedom are not learned
NO_DOF = np.zeros(0, np.float32)

def _features(X):
    mean, scale = standardisation(X)
    return torch.as_tensor((X - mean) / scale)


def _exact_gradient(obj, y):
    """dL/dy in exact mode: one pass for the normalisers of ``y``, then the gradient."""
    n = len(y)
    grad, zsum, rows = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, np.ones(n, np.float32), 1.0, False, grad,
                         zsum, rows, NO_DOF)
    z_prev, g_scale = obj.normaliser_state(zsum)
    cpu.sampled_gradient(y, obj.engine, 0, 1.0, 7, z_prev, float(g_scale), False, grad, zsum,
                         rows, NO_DOF)
    return grad


@pytest.mark.parametrize("kernel", [StudentKernel(1.0), UMAPKernel(1.6, 0.9), CosineKernel(0.5)],
                         ids=lambda k: k.name)
def test_chain_rule_matches_autograd_of_the_dense_kl(blobs, kernel):
    """Exact mode (every negative), per-anchor normaliser: the encoder's parameter gradient from
    the engine's dL/dy equals autograd of the dense KL(p || q) of f(X) (on the sphere f/|f|)."""
    X = blobs[0][:40]
    target = PerplexityTarget(8, symmetric=False).build(exact_knn(X, 24))
    obj = Objective(target, kernel, "per_anchor", n_negatives=0)
    module = make_encoder((16,), X.shape[1], 3, seed=0)
    features = _features(X)
    y = torch.zeros(len(X), 3)
    stepper = EncoderStepper(module, features, y, "adam", sphere=kernel.sphere)
    stepper.backward(torch.from_numpy(_exact_gradient(obj, y.numpy())))
    chained = [p.grad.clone() for p in stepper.params]
    for p in stepper.params:
        p.grad = None
    out = module(features).double()
    if kernel.sphere:
        out = out / out.norm(dim=1, keepdim=True)
    exact_loss(target, kernel, out, "per_anchor").backward()
    # the last bias's gradient is 0 up to rounding (L is translation invariant off the sphere):
    # the tolerance is relative to the largest gradient of all
    scale = max(float(p.grad.abs().max()) for p in stepper.params)
    for mine, dense in zip(chained, stepper.params):
        np.testing.assert_allclose(mine.numpy(), dense.grad.numpy(), rtol=2e-3, atol=2e-4 * scale)


def _held_out_accuracy(model, X, y, n_train):
    """10-NN accuracy of transform(test) against the embedding of the training points."""
    model.fit(X[:n_train])
    test = model.transform(X[n_train:])
    return KNeighborsClassifier(10).fit(model.embedding_, y[:n_train]).score(test, y[n_train:])


@pytest.mark.quality
def test_umap_encoder_places_held_out_digits():
    # 600 digits, 300 held out: the untrained encoder scores 0.27, the trained one 0.80
    X, y = digits_subset(900)
    model = icongraph.UMAP(encoder="mlp", n_epochs=200, random_state=0)
    assert _held_out_accuracy(model, X, y, 600) > 0.7


@pytest.mark.quality
def test_sphere_encoder_places_held_out_digits():
    # InfoNCE on the kNN graph, cosine kernel on the 3-D sphere, 600 digits, 300 held out:
    # the untrained encoder scores 0.29, the trained one 0.84
    X, y = digits_subset(900)
    model = icongraph.ICon(p="knn", q="cosine", estimator="per_anchor", n_components=3,
                           encoder="mlp", n_epochs=200, random_state=0)
    accuracy = _held_out_accuracy(model, X, y, 600)
    np.testing.assert_allclose(np.linalg.norm(model.transform(X[600:]), axis=1), 1, rtol=1e-5)
    assert accuracy > 0.75


def test_transform_is_the_encoder_and_a_batch_agrees_with_its_points(blobs):
    X, _ = blobs
    model = icongraph.TSNE(encoder="mlp", n_epochs=30, random_state=0).fit(X)
    np.testing.assert_array_equal(model.transform(X), model.embedding_)
    batch = model.transform(X[:20])
    one_by_one = np.concatenate([model.transform(X[i:i + 1]) for i in range(20)])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-5, atol=1e-6)
    assert batch.dtype == np.float32 and batch.shape == (20, 2)


def test_the_users_module_is_copied_not_trained(blobs):
    X, _ = blobs
    module = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    model = icongraph.UMAP(encoder=module, n_epochs=20, random_state=0).fit(X)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
    assert model.encoder_ is not module
    assert not torch.equal(model.encoder_[0].weight, module[0].weight)  # the copy was trained
    assert clone(model).get_params()["encoder"] is not module  # sklearn's clone copies it too


def test_fits_are_deterministic(blobs):
    X, _ = blobs
    fit = [icongraph.UMAP(encoder="mlp", n_epochs=20, random_state=seed).fit(X).embedding_
           for seed in (3, 3, 4)]
    np.testing.assert_array_equal(fit[0], fit[1])
    assert not np.array_equal(fit[0], fit[2])


def test_a_learned_temperature_trains_with_an_encoder(blobs):
    X, _ = blobs
    model = icongraph.ICon(p="knn", q="cosine", estimator="per_anchor", encoder="linear",
                           q_params={"temperature": 0.5, "learn_temperature": True},
                           n_epochs=20, random_state=0).fit(X)
    assert model.kernel_.temperature != 0.5
    np.testing.assert_allclose(np.linalg.norm(model.embedding_, axis=1), 1, rtol=1e-5)


def test_the_default_is_the_free_embedding(blobs):
    X, _ = blobs
    model = icongraph.UMAP(n_epochs=20, random_state=0).fit(X)
    assert model.encoder_ is None


class _Wide(torch.nn.Module):
    def forward(self, x):
        return x[:, :3]


@pytest.mark.parametrize("params, sparse, match", [
    ({"encoder": "cnn"}, False, r"encoder must be None, one of \('linear', 'mlp'\)"),
    ({"encoder": (64, 0)}, False, "a tuple of hidden widths"),
    ({"encoder": _Wide()}, False, r"n_components=2\); on input of shape \(2, 5\) it returned "
                                  r"\(2, 3\)"),
    ({"encoder": torch.nn.Linear(7, 2)}, False, r"on input of shape \(2, 5\) it raised"),
    ({"encoder": "mlp", "optimizer": "gains"}, False, "optimizer='gains' is t-SNE's"),
    ({"encoder": "mlp", "init": "pca"}, False, "leave init=None"),
    ({"encoder": "mlp"}, True, "it needs dense X"),
])
def test_bad_encoders_are_refused_before_any_work(params, sparse, match, no_work):
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        icongraph.UMAP(**params).fit(sp.csr_matrix(X) if sparse else X)


def test_a_precomputed_graph_without_features_is_refused(no_work):
    graph = sp.random(30, 30, density=0.2, random_state=0, format="csr")
    with pytest.raises(ValueError, match="it needs dense X"):
        icongraph.ICon(p=graph + graph.T, encoder="mlp").fit(None)


def test_a_non_finite_encoder_raises(blobs):
    X, _ = blobs
    module = torch.nn.Linear(5, 2)
    torch.nn.init.constant_(module.weight, float("nan"))
    with pytest.raises(DivergenceError, match="non-finite at epoch 0"):
        icongraph.UMAP(encoder=module, n_epochs=20, random_state=0).fit(X)
