"""Property tests (hypothesis): the closed forms hold for any parameters, not just a few."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icongraph import _cpu_engine as cpu
from icongraph.kernels import GaussianKernel, StudentKernel, UMAPKernel
from icongraph.targets import fuzzy_weights, perplexity_weights

kernels = st.one_of(
    st.builds(GaussianKernel, st.floats(0.2, 5.0)),
    st.builds(StudentKernel, st.floats(0.2, 10.0)),
    st.builds(UMAPKernel, st.floats(0.2, 5.0), st.floats(0.3, 1.5)),
)


@settings(max_examples=60, deadline=None)
@given(kernel=kernels, d2=st.floats(0.01, 50.0))
def test_slope_is_derivative_of_log_kernel(kernel, d2):
    x = torch.tensor([d2], dtype=torch.float64)
    h = 1e-6 * max(1.0, d2)
    fd = (kernel.log_k_torch(x + h) - kernel.log_k_torch(x - h)) / (2 * h)
    assert np.isclose(float(kernel.slope_torch(x)), float(fd), rtol=1e-4, atol=1e-9)
    k32, g32 = cpu.kernel_and_slope(kernel.code, np.float32(d2), np.float32(kernel.params[0]),
                                    np.float32(kernel.params[1]))
    assert np.isclose(k32, float(torch.exp(kernel.log_k_torch(x))), rtol=1e-4)
    assert 0 <= k32 <= 1  # light-tailed kernels may underflow to 0 in float32, never beyond 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), perplexity=st.floats(2.0, 20.0),
       scale=st.floats(1e-3, 1e3))
def test_perplexity_calibration_any_scale(seed, perplexity, scale):
    rng = np.random.default_rng(seed)
    dist = np.sort(rng.gamma(2.0, 1.0, (5, 3 * int(perplexity) + 3)), axis=1) * scale
    p = perplexity_weights(dist, perplexity).astype(np.float64)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(1)
    assert np.allclose(np.exp(entropy), perplexity, rtol=1e-3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(3, 40), scale=st.floats(1e-3, 1e3))
def test_fuzzy_memberships_hit_log2_k(seed, k, scale):
    rng = np.random.default_rng(seed)
    dist = np.sort(rng.gamma(2.0, 1.0, (5, k)), axis=1) * scale
    w = fuzzy_weights(dist).astype(np.float64)
    # a far neighbour's exp(-(d - rho) / sigma) may underflow float32 to 0 (seed 89, k 13:
    # below 1e-45): a membership in [0, 1]
    assert np.all((w >= 0) & (w <= 1))
    assert np.allclose(w[:, 0], 1.0)  # the nearest neighbour is fully connected
    assert np.allclose(w.sum(1), np.log2(k + 1), rtol=1e-3)
