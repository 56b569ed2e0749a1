import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    from icongraph.datasets import load_digits

    return load_digits()


@pytest.fixture
def blobs():
    """Small data with structure: 3 separated clusters in 5-D."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 8, (3, 5))
    y = np.repeat(np.arange(3), 30)
    return (centres[y] + rng.normal(0, 1, (90, 5))).astype(np.float32), y
