"""PairedEmbedding (CLIP, t-CLIP): the loss against a dense symmetric KL between the pair graph
(plain or softened by the neighbours' partners) and q for both kernels, held-out retrieval on digits halves that fails with the optimiser off,
round trips, a batch against its items one by one, errors before any work and determinism (a
bad value of each parameter: tests/test_params.py)."""

import numpy as np
import pytest
import torch

import icongraph
from icongraph import DivergenceError, PairedEmbedding
from icongraph.metrics import retrieval_accuracy

FAST = {"random_state": 0, "n_jobs": 1}


def tiny(n: int = 10, dims: tuple[int, int] = (5, 3), noise: float = 0.1, seed: int = 0):
    """``n`` pairs: Gaussian points and a noisy linear image of them (widths ``dims``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dims[0])).astype(np.float32)
    X_pair = X @ rng.normal(size=dims) + noise * rng.normal(size=(n, dims[1]))
    return X, X_pair.astype(np.float32)


def halves(digits):
    """Digits as two modalities: the left and the right 4 columns of each 8 x 8 image."""
    X, _ = digits
    img = X.reshape(-1, 8, 8)
    return img[:, :, :4].reshape(-1, 32), img[:, :, 4:].reshape(-1, 32)


def dense_kl(model):
    """1/2 (mean_i KL(p~(.|i) || q(.|i)) + mean_j KL(p~(.|j) || q'(.|j))) in float64 from the
    fitted unit embeddings, temperature and neighbours alone, with p~ = (1 - alpha) p +
    alpha / N and p = (1 - w) I + w / k A, A the kNN graph of that side (k = 0: p = I)."""
    u = model.embedding_.astype(np.float64)
    v = model.pair_embedding_.astype(np.float64)
    n, tau, alpha, w = len(u), model.temperature_, model.alpha, model.neighbor_weight
    d2 = ((u[:, None, :] - v[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * tau)) if model.kernel == "cosine" else 1.0 / (1.0 + d2 / tau)

    def kl(q, neighbours):
        p = np.eye(n)
        if neighbours is not None:
            graph = np.zeros((n, n))
            np.put_along_axis(graph, neighbours, 1.0 / neighbours.shape[1], axis=1)
            p = (1 - w) * p + w * graph
        p = (1 - alpha) * p + alpha / n
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0).sum(1).mean()

    return 0.5 * (kl(k / k.sum(1, keepdims=True), model.neighbors_)
                  + kl((k / k.sum(0, keepdims=True)).T, model.pair_neighbors_))


@pytest.mark.parametrize("kernel", ["cosine", "student-sphere"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("n_neighbors", [0, 3])
def test_loss_is_the_dense_symmetric_kl(kernel, alpha, n_neighbors):
    """On 10 pairs, d=3: the loss the optimiser sees (learning_rate=0, one epoch) and the final
    loss_ after training (learned temperature included) equal the dense KL, for the plain pair
    graph and the one softened by 3 neighbours' partners."""
    X, X_pair = tiny()
    params = {"kernel": kernel, "alpha": alpha, "n_components": 3, "n_neighbors": n_neighbors,
              "neighbor_weight": 0.4, **FAST}
    still = PairedEmbedding(n_epochs=1, learning_rate=0.0, **params).fit(X, X_pair)
    expected = dense_kl(still)
    assert still.loss_history_[0][1] == pytest.approx(expected, rel=1e-5)
    assert still.loss_ == pytest.approx(expected, rel=1e-6)
    trained = PairedEmbedding(n_epochs=30, learn_temperature=True, **params).fit(X, X_pair)
    assert trained.temperature_ != still.temperature_
    assert trained.loss_ == pytest.approx(dense_kl(trained), rel=1e-6)
    assert trained.loss_ < still.loss_
    assert np.allclose(np.linalg.norm(trained.embedding_, axis=1), 1, atol=1e-6)
    if n_neighbors:
        assert still.neighbors_.shape == still.pair_neighbors_.shape == (10, 3)
        assert not np.array_equal(still.neighbors_, still.pair_neighbors_)


def test_a_batch_target_is_the_full_one_restricted_and_renormalised():
    """target_kl on a batch's columns equals the dense KL of p restricted to the batch,
    renormalised, then debiased by alpha / B."""
    from icongraph.pairs import target_kl

    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(6, 6)))
    columns = torch.tensor([[1, -1], [-1, -1], [3, 4], [5, 0], [-1, 2], [0, 1]])
    w, alpha = 0.4, 0.2
    p = np.eye(6) * (1 - w)
    for i, row in enumerate(columns.numpy()):
        p[i, row[row >= 0]] += w / 2
    p = (1 - alpha) * p / p.sum(1, keepdims=True) + alpha / 6
    q = torch.softmax(logits, 1).numpy()
    expected = (p * np.log(p / q)).sum(1).mean()
    assert float(target_kl(logits, columns, w, alpha)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.quality
def test_held_out_retrieval_of_digits_halves(digits):
    """Fit on 600 left/right halves, retrieve the partners of 500 new ones among them:
    recall@1 0.048, recall@10 0.30; with the optimiser off 0.002 and 0.02, as by chance
    (1 / 500, 10 / 500). The task is hard: digits of one class share their halves (CCA on
    1,200 pairs: 0.048 and 0.39)."""
    left, right = halves(digits)
    model = PairedEmbedding(n_components=16, n_epochs=100, **FAST).fit(left[:600], right[:600])
    E, E_pair = model.transform(left[-500:], right[-500:])
    assert retrieval_accuracy(E, E_pair, k=1) > 0.03
    assert retrieval_accuracy(E, E_pair, k=10) > 0.2


@pytest.mark.quality
@pytest.mark.parametrize("row", ["clip", "t-clip"])
def test_the_clip_rows_map_partners_together(row):
    """200 pairs of 10-D points and a noisy 8-D linear image of them (noise 0.3 of a unit
    signal): recall@1 of the partner in both directions on the training pairs 1.0 / 1.0 (clip)
    and 0.995 / 1.0 (t-clip), on 200 new pairs 0.995 and 1.0; 0.0 with the optimiser off."""
    X, X_pair = tiny(400, (10, 8), 0.3)
    model = icongraph.method(row, n_components=8, n_epochs=100, **FAST).fit(X[:200],
                                                                            X_pair[:200])
    E, E_pair = model.embedding_, model.pair_embedding_
    assert min(retrieval_accuracy(E, E_pair), retrieval_accuracy(E_pair, E)) >= 0.9
    assert retrieval_accuracy(*model.transform(X[200:], X_pair[200:])) >= 0.9


def test_mini_batches_learn_and_batch_size_n_is_exact(digits):
    """A sampled normaliser (batches of 100 of 300 pairs) lowers the loss and retrieves better
    than chance; batch_size >= N is the exact fit; the default batch bounds a step's memory."""
    left, right = halves(digits)
    exact = PairedEmbedding(n_epochs=5, **FAST).fit(left[:300], right[:300])
    same = PairedEmbedding(n_epochs=5, batch_size=300, **FAST).fit(left[:300], right[:300])
    np.testing.assert_array_equal(exact.embedding_, same.embedding_)
    for n_neighbors in (0, 5):
        sampled = PairedEmbedding(n_epochs=20, batch_size=100, n_neighbors=n_neighbors,
                                  **FAST).fit(left[:300], right[:300])
        losses = [loss for _, loss in sampled.loss_history_]
        assert losses[-1] < losses[0] and sampled.loss_ == losses[-1]
        assert retrieval_accuracy(sampled.embedding_, sampled.pair_embedding_, k=10) > 0.2
    model = PairedEmbedding()
    batch = model._batch(1_000_000)
    assert 1000 < batch < 4096 and batch * model._row_floats(batch) <= 1 << 24
    assert model._batch(500) == 500


def test_transform_round_trips_and_a_batch_equals_its_items():
    X, X_pair = tiny(40)
    model = PairedEmbedding(n_components=4, encoder="mlp", hidden=[8, 6], n_epochs=10,
                            **FAST).fit(X, X_pair)
    E, E_pair = model.transform(X, X_pair)
    np.testing.assert_array_equal(E, model.embedding_)
    np.testing.assert_array_equal(E_pair, model.pair_embedding_)
    np.testing.assert_array_equal(model.transform(X), E)
    np.testing.assert_array_equal(model.transform(X_pair=X_pair), E_pair)
    one_by_one = np.vstack([model.transform(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, E, rtol=1e-4, atol=1e-6)
    one_by_one = np.vstack([model.transform(X_pair=X_pair[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, E_pair, rtol=1e-4, atol=1e-6)
    assert E.dtype == np.float32 and E.shape == (40, 4)
    fitted = model.fit_transform(X, X_pair)
    np.testing.assert_array_equal(fitted[0], E)
    np.testing.assert_array_equal(fitted[1], E_pair)


def test_same_seed_same_embedding():
    X, X_pair = tiny(30)
    a = PairedEmbedding(n_epochs=10, batch_size=8, **FAST).fit(X, X_pair)
    b = PairedEmbedding(n_epochs=10, batch_size=8, **FAST).fit(X, X_pair)
    c = PairedEmbedding(n_epochs=10, batch_size=8, random_state=1, n_jobs=1).fit(X, X_pair)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    np.testing.assert_array_equal(a.pair_embedding_, b.pair_embedding_)
    assert a.loss_history_ == b.loss_history_
    assert not np.allclose(a.embedding_, c.embedding_)


def test_a_custom_encoder_is_copied_and_used():
    X, X_pair = tiny(20)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4))
    before = [p.detach().clone() for p in encoder.parameters()]
    model = PairedEmbedding(n_components=4, encoder=encoder, pair_encoder="linear",
                            n_epochs=5, **FAST).fit(X, X_pair)
    assert all(torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert isinstance(model.encoder_, torch.nn.Sequential)
    assert [type(m) for m in model.pair_encoder_.modules()
            if not isinstance(m, torch.nn.Sequential)] == [torch.nn.Linear]
    assert not torch.equal(model.encoder_[0].weight, encoder[0].weight)


@pytest.mark.parametrize("kwargs, data, match", [
    ({}, lambda X, Y: (X, Y[:-1]), "X has 10 rows but X_pair has 9"),
    ({}, lambda X, Y: (X, np.where(np.arange(10)[:, None] == 3, np.nan, Y)),
     "X_pair contains NaN or infinite values in 1 row"),
    ({}, lambda X, Y: (X[:1], Y[:1]), "X has 1 samples; at least 2 needed"),
    ({}, lambda X, Y: (X, np.ones_like(Y)), "all 10 rows of the data are identical"),
    ({"n_neighbors": 10}, lambda X, Y: (X, Y), "Too few points for n_neighbors=10"),
    ({"n_components": 3, "encoder": torch.nn.Linear(5, 4)}, lambda X, Y: (X, Y),
     r"encoder: the encoder must map .* \(B, n_components=3\); on input of shape \(2, 5\) "
     r"it returned \(2, 4\)"),
    ({"pair_encoder": torch.nn.Linear(5, 32)}, lambda X, Y: (X, Y),
     r"pair_encoder: .* on input of shape \(2, 3\) it raised RuntimeError"),
])
def test_bad_data_is_refused_before_any_work(kwargs, data, match, no_work):
    X, X_pair = tiny()
    before = X_pair.copy()
    with pytest.raises(ValueError, match=match):
        PairedEmbedding(**kwargs).fit(*data(X, X_pair))
    np.testing.assert_array_equal(X_pair, before)


def test_transform_checks_its_input():
    X, X_pair = tiny()
    with pytest.raises(ValueError, match="not fitted"):
        PairedEmbedding().transform(X)
    model = PairedEmbedding(n_epochs=2, **FAST).fit(X, X_pair)
    with pytest.raises(ValueError, match="neither"):
        model.transform()
    with pytest.raises(ValueError, match="X has 3 features, but PairedEmbedding is expecting 5"):
        model.transform(X_pair)
    with pytest.raises(ValueError, match="X_pair has 5 features, but PairedEmbedding is "
                                         "expecting 3"):
        model.transform(X, X)


def test_divergence_and_callbacks():
    X, X_pair = tiny()
    with pytest.raises(DivergenceError, match="loss became non-finite at epoch"):
        PairedEmbedding(learning_rate=1e37, n_epochs=20, **FAST).fit(X, X_pair)
    seen = []

    def stop_at_3(epoch, loss, embedding):
        seen.append(tuple(embedding.shape))
        return epoch == 3

    model = PairedEmbedding(n_components=3, n_epochs=50, callbacks=[stop_at_3],
                            **FAST).fit(X, X_pair)
    assert seen == [(10, 3)] * 4 and len(model.loss_history_) == 4


def test_retrieval_accuracy():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(50, 4))
    assert retrieval_accuracy(E, E) == 1.0
    assert retrieval_accuracy(E, E[::-1].copy(), k=1) == 0.0
    assert retrieval_accuracy(np.ones((50, 4)), np.ones((50, 4)), k=49) == 0.0  # ties count
    assert retrieval_accuracy(E, E[::-1].copy(), k=50) == 1.0
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 50\]; got 0"):
        retrieval_accuracy(E, E, k=0)
    with pytest.raises(ValueError, match="rows"):
        retrieval_accuracy(E, E[:-1])


def test_parameters_round_trip_through_sklearn_clone():
    """get_params / set_params / clone as any scikit-learn estimator (the estimator checks of
    tests/test_sklearn.py assume fit(X, y) with labels, so a pair matrix is tested here)."""
    from sklearn.base import clone

    encoder = torch.nn.Linear(5, 4)
    model = PairedEmbedding(n_components=4, encoder=encoder, hidden=[8, 8], alpha=0.1)
    copy = clone(model)
    assert copy.get_params()["alpha"] == 0.1 and copy.hidden == [8, 8]
    assert copy.encoder is not encoder and isinstance(copy.encoder, torch.nn.Linear)
    assert "alpha=0.1" in repr(model.set_params(kernel="student-sphere"))
