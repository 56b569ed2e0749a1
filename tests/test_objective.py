"""The maths: sparse/sampled engines against dense brute force, gradients against autograd and
finite differences, the two engines against each other."""

import numpy as np
import pytest
import torch
from numba import njit

from icongraph import _cpu_engine as cpu
from icongraph._torch_engine import (
    hash_negatives,
    sampled_gradient_torch,
    sampled_gradient_torch_q,
    torch_arrays,
)
from icongraph.kernels import (
    CosineKernel,
    GaussianKernel,
    SphereStudentKernel,
    StudentKernel,
    UMAPKernel,
)
from icongraph.knn import exact_knn
from icongraph.objective import Objective, exact_loss, matched_negatives
from icongraph.targets import FuzzyTarget, PerplexityTarget, debias, with_labels

#: the sphere kernels' formulas hold for any d2 (tests/test_sphere.py tests them on the sphere)
#: the engines' ``dof_rows`` when the degrees of freedom are not learned
NO_DOF = np.zeros(0, np.float32)

KERNELS = [GaussianKernel(1.3), StudentKernel(1.0), StudentKernel(2.5), UMAPKernel(1.6, 0.9),
           CosineKernel(0.4), SphereStudentKernel(2.0, 0.3)]


def _problem(blobs, target_spec, alpha=0.0, seed=0):
    X, _ = blobs
    knn = exact_knn(X, target_spec.n_neighbors_for(len(X)))
    target = target_spec.build(knn)
    if alpha:
        target = debias(target, alpha)
    y = np.random.default_rng(seed).normal(0, 1.0, (len(X), 2)).astype(np.float32)
    return target, y


def _numba_eval(obj, y, z_prev, global_scale=0.0, seed=7, with_loss=True, epoch=0):
    n = len(y)
    grad = np.zeros_like(y)
    zsum = np.zeros(n, np.float32)
    rows = np.zeros(n, np.float32)
    cpu.sampled_gradient(y, obj.engine, epoch, 1.0, seed, z_prev.astype(np.float32),
                         float(global_scale), with_loss, grad, zsum, rows, NO_DOF)
    return grad, zsum, rows


def _exact_eval(obj, y):
    """Exact mode: a first pass for the normalisers of the current y, then the gradient."""
    _, zsum, _ = _numba_eval(obj, y, np.ones(len(y)))
    z_prev, g_scale = obj.normaliser_state(zsum)
    return _numba_eval(obj, y, z_prev, g_scale)


@njit(cache=False)
def _fast_pows(x, p):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = cpu.fast_pow(x[i], p)
    return out


@njit(cache=False)
def _fast_log2s(x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = cpu.fast_log2(x[i])
    return out


def test_fast_log2_matches_numpy():
    x = np.logspace(-37, 38, 20001).astype(np.float32)
    # the polynomial's 2.1e-6, plus float32 rounding of results up to |126|
    np.testing.assert_allclose(_fast_log2s(x), np.log2(x.astype(np.float64)), rtol=1e-7, atol=3e-6)


@pytest.mark.parametrize("p", [0.3, 0.895, 1.0, 1.9, -1.0, -1.5])
def test_fast_pow_matches_numpy(p):
    x = np.logspace(-30, 30, 20001).astype(np.float32)
    exact = x.astype(np.float64) ** p
    fast = _fast_pows(x, np.float32(p))
    normal = (exact > 1e-37) & (exact < 1e37)
    assert np.abs(fast[normal] / exact[normal] - 1).max() < 2e-5
    # out of float32's normal range it stays finite and positive instead of inf / 0 / garbage
    extremes = _fast_pows(np.array([0.0, 1e-45, 3e38], np.float32), np.float32(p))
    assert np.isfinite(extremes).all() and (extremes > 0).all()


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{k.params[0]:.1f}")
@pytest.mark.parametrize("estimator", ["per_anchor", "global"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_exact_mode_matches_dense_kl_and_autograd(blobs, kernel, estimator, alpha):
    spec = PerplexityTarget(10, symmetric=estimator == "global")
    target, y = _problem(blobs, spec, alpha)
    obj = Objective(target, kernel, estimator, n_negatives=0)
    grad, zsum, rows = _exact_eval(obj, y)
    sparse_loss = obj.constant() + rows.astype(np.float64).sum() + obj.normaliser_terms(zsum)
    yt = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    dense = exact_loss(target, kernel, yt, estimator)
    dense.backward()
    assert sparse_loss == pytest.approx(dense.item(), rel=1e-4)
    np.testing.assert_allclose(grad, yt.grad.numpy(), rtol=2e-3, atol=2e-4 * np.abs(grad).max())
    if estimator == "global" or kernel.name != "gaussian":
        assert dense.item() > 0  # a KL (times the mass) is positive away from the optimum


@pytest.mark.parametrize("kernel", [GaussianKernel(1.0), StudentKernel(1.0)], ids=lambda k: k.name)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_neg_estimator_matches_its_dense_expectation(blobs, kernel, alpha):
    target, y = _problem(blobs, FuzzyTarget(10), alpha)
    obj = Objective(target, kernel, "neg", n_negatives=0, negative_sample_rate=5.0)
    grad, _, rows = _numba_eval(obj, y, np.ones(len(y)))
    yt = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    dense = exact_loss(target, kernel, yt, "neg", negative_sample_rate=5.0)
    dense.backward()
    np.testing.assert_allclose(grad, yt.grad.numpy(), rtol=2e-3, atol=1e-3 * np.abs(grad).max())
    assert rows.astype(np.float64).sum() == pytest.approx(float(dense), rel=1e-4)


def test_matched_negatives_count_umap_learns_draws(blobs):
    """n_negatives=None for 'neg': the mean number of negatives umap-learn draws per point and
    epoch, counted edge by edge (each directed edge (i, j) is w_ij / w_max updates of i per
    epoch, each drawing negative_sample_rate negatives)."""
    target, _ = _problem(blobs, FuzzyTarget(10))
    graph = target.graph.tocoo()
    draws = np.zeros(graph.shape[0])
    for i, w in zip(graph.row, graph.data):
        draws[i] += 7.0 * w / graph.data.max()
    assert matched_negatives(7.0, target) == int(np.ceil(draws.mean()))
    obj = Objective(target, StudentKernel(1.0), "neg", n_negatives=None, negative_sample_rate=7.0)
    assert obj.m == int(np.ceil(draws.mean())) > 7
    with pytest.raises(ValueError, match="n_negatives"):
        Objective(target, StudentKernel(1.0), "global", n_negatives=None)


def test_sampled_estimate_is_close_to_exact_on_average(blobs):
    """Many negatives per anchor: the global estimator's loss approaches the exact KL."""
    target, y = _problem(blobs, PerplexityTarget(10))
    kernel = StudentKernel(1.0)
    obj = Objective(target, kernel, "global", n_negatives=400)
    estimates = []
    for seed in range(5):
        _, zsum, rows = _numba_eval(obj, y, np.ones(len(y)), 1.0, seed=seed)
        estimates.append(obj.constant() + rows.sum() + obj.normaliser_terms(zsum))
    exact = float(exact_loss(target, kernel, torch.tensor(y, dtype=torch.float64), "global"))
    assert np.mean(estimates) == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{k.params[0]:.1f}")
@pytest.mark.parametrize("estimator", ["per_anchor", "global", "neg"])
@pytest.mark.parametrize("edge_sampling", [False, True])
def test_numba_and_torch_engines_agree(blobs, kernel, estimator, edge_sampling):
    target, y = _problem(blobs, PerplexityTarget(5), alpha=0.2)
    obj = Objective(target, kernel, estimator, n_negatives=6, clip=4.0,
                    edge_sampling=edge_sampling)
    z_prev = np.random.default_rng(1).uniform(5, 10, len(y)).astype(np.float32)
    g_numba, z_numba, rows_numba = _numba_eval(obj, y, z_prev, 0.37, seed=11, epoch=3)
    arrays = torch_arrays(obj, "cpu", chunk_edges=97)  # several chunks
    g_torch, z_torch, rows_torch = sampled_gradient_torch(
        obj, arrays, torch.tensor(y), 11, 3, 1.0, torch.tensor(z_prev), 0.37, with_loss=True)
    np.testing.assert_allclose(z_numba, z_torch.numpy(), rtol=1e-4)
    np.testing.assert_allclose(g_numba, g_torch.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(rows_numba, rows_torch.numpy(), rtol=1e-3, atol=1e-4)


def test_edge_schedule_is_unbiased_over_epochs(blobs):
    """Averaged over epochs, the scheduled gradient equals the full one (same y, same negatives)."""
    target, y = _problem(blobs, PerplexityTarget(5))
    full = Objective(target, StudentKernel(1.0), "neg", n_negatives=1)
    sampled = Objective(target, StudentKernel(1.0), "neg", n_negatives=1, edge_sampling=True)
    assert (sampled.edge_rate < 1).mean() > 0.5  # most edges are skipped in most epochs
    ones = np.ones(len(y))
    g_full = _numba_eval(full, y, ones, seed=5)[0]
    g_avg = np.mean([_numba_eval(sampled, y, ones, seed=5, epoch=t)[0] for t in range(400)], 0)
    np.testing.assert_allclose(g_avg, g_full, rtol=0.05, atol=0.02 * np.abs(g_full).max())


def test_hash_negatives_uniform_and_never_self():
    n = 50
    anchors = torch.arange(n)
    negs = hash_negatives(anchors, 2000, seed=3, n=n)
    assert not (negs == anchors[:, None]).any()
    counts = torch.bincount(negs.ravel(), minlength=n).double()
    expected = n * 2000 / (n - 1)
    # every j gets about its share (chi-square-like bound, generous)
    assert ((counts - expected).abs() / expected).max() < 0.1


def test_pooled_negatives_are_uniform_and_never_self():
    """Each epoch's pool holds uniform rows and their coordinates; a pooled negative is never
    the anchor itself and, over the pools, uniform on the other points (2,000 pools of 16
    rows from 20 points, 5 draws per anchor and pool: ~526 per ordered pair)."""
    n, size, pools = 20, 16, 2000
    y = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    pool_rows, pool_y = np.zeros(size, np.int64), np.zeros((size, 2), np.float32)
    cpu.fill_pool(y, 3, pool_rows, pool_y)
    np.testing.assert_array_equal(pool_y, y[pool_rows])
    counts, distinct = _pooled_draws(y, pools, size, 5)
    assert distinct
    assert not np.diag(counts).any()
    expected = pools * 5 / (n - 1)
    off = counts[~np.eye(n, dtype=bool)]
    assert off.sum() == pools * 5 * n
    assert np.abs(off - expected).mean() / expected < 0.08  # measured 0.039
    assert np.abs(off - expected).max() / expected < 0.3  # measured 0.14
    received = counts.sum(0)
    assert np.abs(received - received.mean()).max() / received.mean() < 0.15  # 0.057


@njit(cache=False)
def _pooled_draws(y, pools, size, draws):
    """``counts[i, j]``: how often anchor ``i`` drew ``j`` over ``pools`` epochs, and whether
    every pool's first two rows differed and every draw's difference was its row's."""
    n = y.shape[0]
    counts = np.zeros((n, n))
    pool_rows, pool_y = np.zeros(size, np.int64), np.zeros((size, y.shape[1]), np.float32)
    rows, diffs = np.zeros(draws, np.int64), np.zeros((y.shape[1], draws), np.float32)
    distinct = True
    for epoch in range(pools):
        cpu.fill_pool(y, epoch, pool_rows, pool_y)
        distinct = distinct and pool_rows[0] != pool_rows[1]
        for i in range(n):
            base = cpu.hash32(epoch ^ cpu.hash32(i))
            cpu.gather_pool_run(y, i, base, draws, pool_rows, pool_y, rows, diffs, 0, True)
            for t in range(draws):
                for c in range(y.shape[1]):
                    distinct = distinct and diffs[c, t] == y[i, c] - y[rows[t], c]
                counts[i, rows[t]] += 1
    return counts, distinct


@pytest.mark.parametrize("estimator", ["per_anchor", "neg"])
def test_pooled_gradient_is_unbiased(blobs, estimator):
    """Averaged over epochs (a new pool each), the gradient with pooled negatives is the
    exact-mode gradient (every other point), as the uniform draws' average is. The per-anchor
    normaliser is read as ``z_prev``, the sum over the anchor's draws: the exact mode's is
    ``(N - 1) / m`` times larger."""
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(10)
    target, y = _problem(blobs, spec, alpha=0.2)
    kernel = UMAPKernel(1.6, 0.9) if estimator == "neg" else StudentKernel(1.0)
    exact = Objective(target, kernel, estimator, n_negatives=0, negative_sample_rate=5.0)
    sampled = Objective(target, kernel, estimator, n_negatives=8, negative_sample_rate=5.0)
    z_prev = np.full(len(y), 2.0, np.float32)
    expected, _, _ = _numba_eval(exact, y, z_prev * np.float32((len(y) - 1) / 8))
    pool_rows, pool_y = np.zeros(32, np.int64), np.zeros((32, 2), np.float32)
    means = {}
    for pooled in (False, True):
        total = np.zeros_like(y, np.float64)
        for epoch in range(300):
            grad, zsum = np.zeros_like(y), np.zeros(len(y), np.float32)
            rows = np.zeros(len(y), np.float32)
            if pooled:
                cpu.fill_pool(y, epoch, pool_rows, pool_y)
                cpu.sampled_gradient(y, sampled.engine, 0, 1.0, epoch, z_prev, 0.0, False, grad,
                                     zsum, rows, NO_DOF, 0, -1, pool_rows, pool_y)
            else:
                cpu.sampled_gradient(y, sampled.engine, 0, 1.0, epoch, z_prev, 0.0, False, grad,
                                     zsum, rows, NO_DOF)
            total += grad
        means[pooled] = total / 300
    # unbiased: the mean's error is one epoch's over sqrt(300) (0.06 of it, measured on 200
    # blob points, with either draw), and the pool adds no error of its own
    one_epoch = np.abs(grad - expected).mean()
    errors = {pooled: np.abs(mean - expected).mean() for pooled, mean in means.items()}
    assert errors[False] < 0.1 * one_epoch
    assert errors[True] < 0.1 * one_epoch
    assert errors[True] < 1.5 * errors[False]


@pytest.mark.parametrize("estimator,pooled", [("neg", False), ("neg", True),
                                               ("per_anchor", True), ("global", False)])
def test_rows_do_not_depend_on_the_block(estimator, pooled):
    """``sampled_gradient`` evaluates a block of anchors' pairs together (vectorised loops
    over the block): every row, its gradient, normaliser and loss, is still bit for bit the
    same when the anchors are split into shards at odd offsets, which moves every block's
    boundaries and each pair's place in the buffers (2,000 points, several blocks; the uniform
    part of a debiased p and the loss included)."""
    n = 2000
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(10)
    target = debias(spec.build(exact_knn(X, spec.n_neighbors_for(n))), 0.2)
    kernel = UMAPKernel(1.6, 0.9) if estimator == "neg" else StudentKernel(1.0)
    obj = Objective(target, kernel, estimator, n_negatives=10, negative_sample_rate=5.0)
    y = rng.normal(size=(n, 2)).astype(np.float32)
    z_prev = rng.uniform(1.0, 3.0, n).astype(np.float32)
    pool_rows, pool_y = np.zeros(64, np.int64), np.zeros((64, 2), np.float32)
    if pooled:
        cpu.fill_pool(y, 5, pool_rows, pool_y)
    else:
        pool_rows, pool_y = cpu.NO_POOL, cpu.NO_POOL_Y

    def rows(bounds):
        out = np.zeros_like(y), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for lo, hi in bounds:
            cpu.sampled_gradient(y, obj.engine, 0, 1.0, 5, z_prev, 0.37, True, *out, NO_DOF,
                                 lo, hi, pool_rows, pool_y)
        return out

    whole = rows([(0, n)])
    assert np.abs(whole[0]).max() > 0
    for split, part in zip(whole, rows([(0, 1), (1, 997), (997, 1499), (1499, n)])):
        np.testing.assert_array_equal(part, split)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}{k.params[0]:.1f}")
def test_kernel_slope_matches_finite_differences(kernel):
    d2 = torch.tensor([0.01, 0.3, 1.0, 4.0, 25.0], dtype=torch.float64)
    h = 1e-6
    fd = (kernel.log_k_torch(d2 + h) - kernel.log_k_torch(d2 - h)) / (2 * h)
    np.testing.assert_allclose(kernel.slope_torch(d2).numpy(), fd.numpy(), rtol=1e-5)
    for value in d2.tolist():  # the numba form gives the same k and slope (to fast_pow's 2e-5)
        k, g = cpu.kernel_and_slope(kernel.code, value, *kernel.params)
        exact = torch.tensor(value, dtype=torch.float64)
        assert k == pytest.approx(float(torch.exp(kernel.log_k_torch(exact))), rel=2e-5)
        assert g == pytest.approx(float(kernel.slope_torch(exact)), rel=2e-5)


def test_embedding_gradient_matches_finite_differences(blobs):
    """d L / d y by central differences on the dense objective vs the engine's exact gradient."""
    target, y = _problem(blobs, PerplexityTarget(10))
    kernel = StudentKernel(1.0)
    obj = Objective(target, kernel, "global", n_negatives=0)
    grad, _, _ = _exact_eval(obj, y)
    y64 = y.astype(np.float64)
    h = 1e-5
    for i, c in [(0, 0), (17, 1), (55, 0), (89, 1)]:
        plus, minus = y64.copy(), y64.copy()
        plus[i, c] += h
        minus[i, c] -= h
        fd = (float(exact_loss(target, kernel, plus, "global"))
              - float(exact_loss(target, kernel, minus, "global"))) / (2 * h)
        assert grad[i, c] == pytest.approx(fd, rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("kind, momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_stepper_matches_torch_optim(kind, momentum):
    from icongraph.optimize import Stepper

    rng = np.random.default_rng(0)
    y = torch.tensor(rng.normal(size=(20, 2)), dtype=torch.float64)
    ref = torch.nn.Parameter(y.clone())
    opt = (torch.optim.SGD([ref], lr=0.1, momentum=momentum) if kind == "sgd"
           else torch.optim.Adam([ref], lr=0.1))
    stepper = Stepper(y, kind, momentum)
    for _ in range(5):
        grad = torch.tensor(rng.normal(size=(20, 2)))
        ref.grad = grad.clone()
        opt.step()
        stepper.step(grad, 0.1)
    np.testing.assert_allclose(y.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)


# -- the debiasing of q (q_alpha) --------------------------------------------------------------
def _q_eval(obj, y, z_prev, s_prev, level, g_scale, seed=7, epoch=0, engine="numba", arrays=None):
    """One evaluation of the q-debiased engine: ``(grad, zsum, s_rows, loss_rows)``."""
    n = len(y)
    if engine == "torch":
        out = sampled_gradient_torch_q(obj, arrays, torch.tensor(y), seed, epoch, 1.0,
                                       torch.as_tensor(z_prev, dtype=torch.float32),
                                       torch.as_tensor(s_prev, dtype=torch.float32), level,
                                       g_scale, with_loss=True)
        return tuple(t.numpy() for t in out)
    grad, zsum, s_rows, rows = (np.zeros_like(y), np.zeros(n, np.float32),
                                np.zeros(n, np.float32), np.zeros(n, np.float32))
    cpu.sampled_gradient_q(y, obj.engine, epoch, 1.0, seed, np.asarray(z_prev, np.float32),
                           np.asarray(s_prev, np.float32), float(level), float(g_scale), True,
                           grad, zsum, s_rows, rows, NO_DOF)
    return grad, zsum, s_rows, rows


def _q_exact_eval(obj, y, engine):
    """Exact mode: Z of the current y, then S with that Z, then the gradient (as ``optimize``
    seeds its lagged estimates)."""
    arrays = torch_arrays(obj, "cpu", chunk_edges=97) if engine == "torch" else None
    _, z, _, _ = _q_eval(obj, y, np.ones(len(y)), obj.row_mass, 1.0, 1.0, engine=engine,
                         arrays=arrays)
    s_prev, level, g_scale = obj.q_state(z, obj.row_mass)
    _, z, s, _ = _q_eval(obj, y, z, s_prev, level, g_scale, engine=engine, arrays=arrays)
    s_prev, level, g_scale = obj.q_state(z, s)
    return _q_eval(obj, y, z, s_prev, level, g_scale, engine=engine, arrays=arrays)


@pytest.mark.parametrize("engine", ["numba", "torch"])
@pytest.mark.parametrize("kernel", [GaussianKernel(1.3), StudentKernel(1.0), StudentKernel(2.5)],
                         ids=lambda k: f"{k.name}{k.params[0]:.1f}")
@pytest.mark.parametrize("estimator", ["per_anchor", "global"])
@pytest.mark.parametrize("alpha, labelled", [(0.0, False), (0.3, False), (0.2, True)])
def test_q_alpha_gradient_and_loss_match_dense_autograd(blobs, engine, kernel, estimator,
                                                         alpha, labelled):
    """With q~ = (1 - a_q) q + a_q U the engines' exact-mode gradient is the autograd gradient
    of the dense -sum p~ log q~ (debiased p, labels' same-class part), and their loss its
    value."""
    spec = PerplexityTarget(10, symmetric=estimator == "global")
    target, y = _problem(blobs, spec, alpha)
    if labelled:
        target = with_labels(target, np.repeat(np.arange(3), 30) * (np.arange(90) % 4 > 0)
                             - (np.arange(90) % 4 == 0), 0.5)
    obj = Objective(target, kernel, estimator, n_negatives=0, q_alpha=0.3)
    grad, zsum, _, rows = _q_exact_eval(obj, y, engine)
    sparse_loss = obj.constant() + rows.astype(np.float64).sum() + obj.normaliser_terms(zsum)
    yt = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    dense = exact_loss(target, kernel, yt, estimator, q_alpha=0.3)
    dense.backward()
    if not labelled:  # the same-class partners are sampled: only the gradient's expectation
        assert sparse_loss == pytest.approx(dense.item(), rel=1e-4)
        np.testing.assert_allclose(grad, yt.grad.numpy(), rtol=2e-3,
                                   atol=2e-4 * np.abs(grad).max())
    plain = exact_loss(target, kernel, torch.tensor(y, dtype=torch.float64), estimator)
    assert dense.item() != pytest.approx(plain.item(), rel=1e-3)  # q_alpha changes the loss


@pytest.mark.parametrize("estimator", ["per_anchor", "global"])
def test_q_alpha_label_gradient_expectation_is_the_dense_gradient(blobs, estimator):
    """The same-class partners are drawn: averaged over seeds the gradient with q_alpha is
    the dense one (the label part included)."""
    spec = PerplexityTarget(10, symmetric=estimator == "global")
    target, y = _problem(blobs, spec, 0.2)
    labels = np.repeat(np.arange(3), 30)
    labels[::4] = -1
    target = with_labels(target, labels, 0.5)
    obj = Objective(target, StudentKernel(1.0), estimator, n_negatives=0, n_label_partners=5,
                    q_alpha=0.3)
    _, z, _, _ = _q_eval(obj, y, np.ones(len(y)), obj.row_mass, 1.0, 1.0)
    s_prev, level, g_scale = obj.q_state(z, obj.row_mass)
    _, z, s, _ = _q_eval(obj, y, z, s_prev, level, g_scale)
    grads = []
    for seed in range(300):  # S_i is a sum over sampled partners: average it too
        _, _, s, _ = _q_eval(obj, y, z, s_prev, level, g_scale, seed=seed)
        grads.append(s)
    s_prev, level, g_scale = obj.q_state(z, np.mean(grads, 0).astype(np.float32))
    g = np.mean([_q_eval(obj, y, z, s_prev, level, g_scale, seed=seed)[0]
                 for seed in range(300)], 0)
    yt = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    exact_loss(target, StudentKernel(1.0), yt, estimator, q_alpha=0.3).backward()
    dense = yt.grad.numpy()
    np.testing.assert_allclose(g, dense, rtol=0.05, atol=0.03 * np.abs(dense).max())


@pytest.mark.parametrize("estimator", ["per_anchor", "global"])
@pytest.mark.parametrize("edge_sampling", [False, True])
def test_q_alpha_numba_and_torch_engines_agree(blobs, estimator, edge_sampling):
    """Sampled negatives, labels, alpha, clipping and the edge schedule: the two engines draw
    the same pairs and give the same gradient, normalisers, S and loss rows."""
    target, y = _problem(blobs, PerplexityTarget(5), alpha=0.2)
    labels = np.repeat(np.arange(3), 30)
    labels[::5] = -1
    target = with_labels(target, labels, 0.4)
    obj = Objective(target, StudentKernel(1.0), estimator, n_negatives=6, clip=4.0,
                    edge_sampling=edge_sampling, q_alpha=0.2)
    rng = np.random.default_rng(1)
    z_prev = rng.uniform(5, 10, len(y)).astype(np.float32)
    s_prev = rng.uniform(0.5, 1.0, len(y)).astype(np.float32)
    numba = _q_eval(obj, y, z_prev, s_prev, 0.8, 0.37, seed=11, epoch=3)
    arrays = torch_arrays(obj, "cpu", chunk_edges=97)
    torch_ = _q_eval(obj, y, z_prev, s_prev, 0.8, 0.37, seed=11, epoch=3, engine="torch",
                     arrays=arrays)
    for a, b in zip(numba, torch_):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(a).max()))


def test_q_alpha_zero_is_todays_engine_and_bad_values_are_refused(blobs):
    """q_alpha=0 keeps today's engine (no edge shares, the plain kernel); a bad q_alpha or one
    the estimator cannot take is a ValueError when the objective is made."""
    target, _ = _problem(blobs, PerplexityTarget(5))
    plain = Objective(target, StudentKernel(1.0), "per_anchor")
    assert plain.q_alpha == 0.0 and plain.edge_share.shape == (0,)
    for bad in (-0.1, 1.0, True, "0.2", float("nan")):
        with pytest.raises(ValueError, match=r"q_alpha must be a number in \[0, 1\)"):
            Objective(target, StudentKernel(1.0), "per_anchor", q_alpha=bad)
    with pytest.raises(ValueError, match="'neg' estimator .* has no normaliser"):
        Objective(target, StudentKernel(1.0), "neg", q_alpha=0.2)
    with pytest.raises(ValueError, match="has no normaliser"):
        exact_loss(target, StudentKernel(1.0), np.zeros((90, 2)), "neg", q_alpha=0.2)


@pytest.mark.parametrize("estimator, q_alpha", [("neg", 0.0), ("global", 0.0), ("global", 0.3)])
def test_symmetric_target_is_stored_as_twice_p_without_a_transpose(blobs, estimator, q_alpha):
    """A target flagged symmetric gives the objective p's own structure and 2 p's weights:
    the arrays equal those built from p + p^T, and the edge structure is p's (no copy)."""
    from dataclasses import replace

    X, _ = blobs
    target = FuzzyTarget(10).build(exact_knn(X, 9))
    assert target.symmetric
    kernel = UMAPKernel() if estimator == "neg" else StudentKernel(1.0)
    lean = Objective(target, kernel, estimator, 5, q_alpha=q_alpha)
    full = Objective(replace(target, symmetric=False), kernel, estimator, 5, q_alpha=q_alpha)
    assert np.shares_memory(lean.indices, target.graph.indices)
    assert not np.shares_memory(full.indices, target.graph.indices)
    np.testing.assert_array_equal(lean.indptr, full.indptr)
    np.testing.assert_array_equal(lean.indices, full.indices)
    np.testing.assert_array_equal(lean.weights, full.weights)
    np.testing.assert_array_equal(lean.edge_share, full.edge_share)
    y = np.random.default_rng(0).normal(size=(len(X), 2)).astype(np.float32)
    ones = np.ones(len(y))
    for got, expected in zip(_numba_eval(lean, y, ones), _numba_eval(full, y, ones)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("estimator, evaluations", [("neg", 4), ("per_anchor", 5)])
def test_only_a_lagged_normaliser_costs_a_seed_evaluation(monkeypatch, estimator, evaluations):
    """The per-anchor and global estimators read the previous evaluation's normalisers, so a
    run starts with one extra evaluation; NEG's normaliser is fixed, so it does not."""
    from icongraph.optimize import optimize

    X = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    kernel = UMAPKernel(1.6, 0.9) if estimator == "neg" else StudentKernel(1.0)
    spec = FuzzyTarget(10) if estimator == "neg" else PerplexityTarget(5)
    obj = Objective(spec.build(exact_knn(X, spec.n_neighbors_for(len(X)))), kernel, estimator,
                    n_negatives=5)
    calls = []
    original = cpu.sampled_gradient

    def counted(*args):
        calls.append(args[2])  # the epoch
        return original(*args)

    monkeypatch.setattr(cpu, "sampled_gradient", counted)
    y0 = np.random.default_rng(1).normal(size=(len(X), 2)).astype(np.float32)
    optimize(obj, y0, n_epochs=4, learning_rate=0.1)
    assert len(calls) == evaluations and calls[-4:] == [0, 1, 2, 3]
