"""Guards before and during the optimisation: parameters checked before any work, a
non-finite loss or embedding stops the fit with a clear error, a degenerate init is refused."""

import numpy as np
import pytest

import icongraph
from icongraph import DivergenceError


@pytest.mark.parametrize("params, match", [
    ({"learning_rate": -1}, "learning_rate must be a finite number in \\[0, inf\\); got -1"),
    ({"learning_rate": float("nan")}, "learning_rate must be"),
    ({"learning_rate": "fast"}, "learning_rate must be .* got 'fast'"),
    ({"n_epochs": 2.5}, "n_epochs must be an integer"),
    ({"n_epochs": 0}, "n_epochs must be an integer in \\[1"),
    ({"momentum": 1.0}, "momentum must be in \\[0, 1\\)"),
    ({"callbacks": print}, "wrap it in a list"),
    ({"callbacks": [1]}, "every callback must be callable"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"schedule": "step"}, "schedule must be one of"),
])
@pytest.mark.parametrize("cls", [icongraph.UMAP, icongraph.TSNE])
def test_optimizer_parameters_are_checked_before_any_work(cls, params, match, monkeypatch):
    """The error comes before the kNN search (which is made to fail loudly here)."""
    import icongraph.embedding as embedding

    def no_search(*args, **kwargs):
        raise AssertionError("the kNN search ran before the parameters were checked")

    monkeypatch.setattr(embedding, "knn_search", no_search)
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        cls(**params).fit(X)


@pytest.mark.parametrize("cls, lr", [(icongraph.SNE, 1e3), (icongraph.UMAP, 1e38)])
def test_divergence_stops_with_a_clear_error(cls, lr, digits):
    """Step sizes that blow up (all-NaN output before this guard) raise, naming the remedy."""
    X, _ = digits
    with pytest.raises(DivergenceError, match="Lower learning_rate"):
        cls(learning_rate=lr, random_state=0, n_epochs=30).fit(X[:300])


def test_learning_rate_zero_is_allowed(digits):
    """learning_rate=0 switches the optimiser off (the init is returned): not an error."""
    X, _ = digits
    model = icongraph.UMAP(learning_rate=0, random_state=0, n_epochs=10, init="random")
    start = icongraph.UMAP(learning_rate=0, random_state=0, n_epochs=1, init="random")
    np.testing.assert_array_equal(model.fit_transform(X[:200]), start.fit_transform(X[:200]))


def test_degenerate_init_is_refused():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="same position"):
        icongraph.UMAP(init=np.zeros((50, 2))).fit(X)
