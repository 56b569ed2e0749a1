"""The generators: shapes, labels, determinism, and the overlap knob doing what it says."""

import numpy as np
import pytest

from icongraph.datasets import load, make_many_clusters


def test_many_clusters_shapes_labels_and_determinism():
    X, y = make_many_clusters(3000, n_classes=300, dim=20, seed=1)
    assert X.shape == (3000, 20) and X.dtype == np.float32 and y.shape == (3000,)
    assert set(np.unique(y)) == set(range(300))  # every class present, even the small ones
    X2, y2 = make_many_clusters(3000, n_classes=300, dim=20, seed=1)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = load("many", 3000, seed=2, n_classes=300)
    assert X3.shape == (3000, 50) and not np.array_equal(X3[:, :20], X)


def test_many_clusters_overlap_mixes_neighbouring_classes():
    """Nearest-centre classification of the points: almost perfect at a small overlap, clearly
    worse at a large one (the classes then mix at their edges)."""
    def nearest_centre_accuracy(overlap):
        X, y = make_many_clusters(4000, n_classes=40, dim=20, overlap=overlap, seed=0)
        centres = np.stack([X[y == c].mean(0) for c in range(40)])
        d2 = ((X[:, None, :] - centres[None]) ** 2).sum(-1)
        return float((d2.argmin(1) == y).mean())

    assert nearest_centre_accuracy(0.3) > 0.99
    assert nearest_centre_accuracy(2.0) < 0.9


@pytest.mark.parametrize("kwargs", [{"n_samples": 10, "n_classes": 20}, {"n_classes": 1},
                                    {"overlap": 0.0}])
def test_many_clusters_refuses_bad_settings(kwargs):
    params = {"n_samples": 100, "n_classes": 10, **kwargs}
    with pytest.raises(ValueError):
        make_many_clusters(**params)
