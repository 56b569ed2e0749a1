import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    from icongraph.datasets import load_digits

    return load_digits()


def make_blobs(n_clusters: int, per_cluster: int, dim: int, spread: float):
    """Gaussian clusters of unit width around centres drawn with std ``spread`` (seeded)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, spread, (n_clusters, dim))
    y = np.repeat(np.arange(n_clusters), per_cluster)
    return (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


@pytest.fixture
def blobs():
    """Small data with structure: 3 separated clusters in 5-D."""
    return make_blobs(3, 30, 5, 8.0)
