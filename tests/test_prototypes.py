"""PrototypeClassifier: the loss against a dense computation of mean KL(p~ || q) for every
kernel, held-out accuracy on digits that fails with the optimiser off, labels as given, and
errors before any work (a bad value of each parameter: tests/test_params.py; the scikit-learn
checks: tests/test_sklearn.py)."""

import numpy as np
import pytest
import torch

import icongraph.prototypes as prototypes
from icongraph import DivergenceError, PrototypeClassifier

FAST = {"random_state": 0, "n_jobs": 1}
KERNELS = ("dot", "gaussian", "student")


def tiny(seed: int = 0):
    """12 points in 3 classes in 4-D, two of them unlabelled (-1)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 4)
    X = (rng.normal(size=(12, 4)) + 2.0 * y[:, None]).astype(np.float32)
    y[[3, 7]] = -1
    return X, y


def dense_kl(model, X, y, alpha):
    """mean over labelled i of sum_c p~(c|i) log(p~(c|i) / q(c|i)), in float64, from the
    fitted embedding, prototypes and bias alone."""
    lab = y >= 0
    f = model.transform(X[lab]).astype(np.float64)
    mu = model.prototypes_.astype(np.float64)
    n_classes = len(mu)
    dist = np.linalg.norm(f[:, None, :] - mu[None], axis=-1)
    k = {"dot": np.exp(f @ mu.T + model.bias_),
         "gaussian": np.exp(-dist**2),
         "student": dist ** -model.harmonic_exponent}[model.kernel]
    q = k / k.sum(1, keepdims=True)
    p = np.full((lab.sum(), n_classes), alpha / n_classes)
    p[np.arange(lab.sum()), y[lab]] += 1 - alpha
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0)
    return terms.sum(1).mean()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_loss_is_the_dense_mean_kl(kernel, alpha):
    """On 12 points, 3 classes, d=2: the loss the optimiser sees (learning_rate=0, one epoch)
    and the final loss_ after training both equal the dense KL, smoothing included."""
    X, y = tiny()
    still = PrototypeClassifier(kernel=kernel, alpha=alpha, n_components=2, n_epochs=1,
                                learning_rate=0.0, **FAST).fit(X, y)
    expected = dense_kl(still, X, y, alpha)
    assert still.loss_history_[0][1] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert still.loss_ == pytest.approx(expected, rel=1e-5, abs=1e-6)
    trained = PrototypeClassifier(kernel=kernel, alpha=alpha, n_components=2, n_epochs=30,
                                  **FAST).fit(X, y)
    assert trained.loss_ == pytest.approx(dense_kl(trained, X, y, alpha), rel=1e-5, abs=1e-6)
    assert trained.loss_ < still.loss_
    assert trained.predict_proba(X).shape == (12, 3) and trained.transform(X).shape == (12, 2)


def test_smoothed_kl_matches_the_formula():
    """p~ = (1 - alpha) onehot + alpha / C: the KL is zero where q equals it, and the
    closed-form entropy gives the dense sum elsewhere."""
    alpha, n_classes = 0.3, 4
    codes = torch.tensor([0, 3, 1])
    target = torch.full((3, n_classes), alpha / n_classes)
    target[torch.arange(3), codes] += 1 - alpha
    assert float(prototypes.smoothed_kl(target.log(), codes, alpha)) == pytest.approx(0, abs=1e-6)
    logits = torch.randn(3, n_classes, generator=torch.Generator().manual_seed(0))
    q = torch.softmax(logits.double(), 1)
    dense = (target.double() * (target.double() / q).log()).sum(1).mean()
    assert float(prototypes.smoothed_kl(logits, codes, alpha)) == pytest.approx(float(dense),
                                                                               rel=1e-5)


@pytest.mark.quality
@pytest.mark.parametrize("kernel", KERNELS)
def test_held_out_digits_accuracy(kernel, digits):
    """Held-out accuracy on a 70/30 split of digits. Trained: dot 0.963, gaussian 0.959,
    student 0.963 (scikit-learn's LogisticRegression: 0.961 on the raw pixels, 0.972
    standardised). Optimiser off (learning_rate=0, random prototypes): 0.07-0.09."""
    from sklearn.model_selection import train_test_split

    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    trained = PrototypeClassifier(kernel=kernel, **FAST).fit(Xtr, ytr)
    assert trained.score(Xte, yte) >= 0.94
    untrained = PrototypeClassifier(kernel=kernel, learning_rate=0.0, **FAST).fit(Xtr, ytr)
    assert untrained.score(Xte, yte) < 0.5


@pytest.mark.quality
def test_mini_batches_and_the_mlp_head_learn(digits):
    """Mini-batches of 256 rows (the bounded-memory path) and the MLP head both reach the
    linear full batch's accuracy on held-out digits (0.963 and 0.974; off: 0.094 and 0.085)."""
    from sklearn.model_selection import train_test_split

    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    batches = PrototypeClassifier(batch_size=256, n_epochs=30, **FAST).fit(Xtr, ytr)
    assert batches.score(Xte, yte) >= 0.94
    mlp = PrototypeClassifier(head="mlp", hidden=64, n_epochs=100, **FAST).fit(Xtr, ytr)
    assert mlp.score(Xte, yte) >= 0.94


def test_string_labels_round_trip_and_probabilities(digits):
    X, y = digits
    X, y = X[:300], y[:300]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])[y]
    model = PrototypeClassifier(n_epochs=100, **FAST).fit(X, names)
    assert list(model.classes_) == sorted(set(names))
    predicted = model.predict(X)
    assert predicted.dtype.kind == "U" and set(predicted) <= set(names)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.classes_[proba.argmax(1)], predicted)
    assert model.score(X, names) == pytest.approx(np.mean(predicted == names))
    assert model.score(X, names) > 0.95
    assert model.prototypes_.shape == (10, 10) and model.n_features_in_ == 64


def test_unlabelled_points_are_left_out():
    """A fit with points labelled -1 equals the fit on the labelled points alone."""
    X, y = tiny()
    with_unlabelled = PrototypeClassifier(n_epochs=20, **FAST).fit(X, y)
    lab = y >= 0
    alone = PrototypeClassifier(n_epochs=20, **FAST).fit(X[lab], y[lab])
    assert list(with_unlabelled.classes_) == [0, 1, 2]
    np.testing.assert_array_equal(with_unlabelled.predict_proba(X), alone.predict_proba(X))


def test_same_seed_same_probabilities():
    X, y = tiny()
    fits = [PrototypeClassifier(kernel="student", n_epochs=20, batch_size=4, random_state=s,
                                n_jobs=1).fit(X, y).predict_proba(X) for s in (3, 3, 4)]
    np.testing.assert_array_equal(fits[0], fits[1])
    assert not np.array_equal(fits[0], fits[2])


@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fit started before its input was checked")

    monkeypatch.setattr(prototypes, "make_head", refuse)


@pytest.mark.parametrize("labels, error, match", [
    (np.zeros(12, int), ValueError, r"single class \(0\)"),
    (np.arange(11) % 3, ValueError, "y has length 11 but the data has 12 rows"),
    (None, ValueError, "requires y to be passed"),
    (np.linspace(0, 1, 12), ValueError, "Unknown label type: continuous"),
    (np.full(12, -1), ValueError, "no labelled point"),
    (np.where(np.arange(12) % 2, 1, -1), ValueError, r"single class \(1\) among its labelled "
                                                     r"points \(-1 marks an unlabelled point"),
])
def test_bad_labels_are_refused_before_any_work(labels, error, match, no_work):
    X, _ = tiny()
    with pytest.raises(error, match=match):
        PrototypeClassifier(**FAST).fit(X, labels)


def test_divergence_names_the_epoch():
    X, y = tiny()
    with pytest.raises(DivergenceError, match=r"non-finite at epoch \d+.*Lower learning_rate"):
        PrototypeClassifier(kernel="gaussian", learning_rate=1e30, n_epochs=5, **FAST).fit(X, y)


def test_callbacks_see_the_probabilities_and_can_stop():
    X, y = tiny()
    seen = []

    def stop_at_two(epoch, loss, probabilities):
        seen.append((epoch, probabilities.shape, float(probabilities.sum(1).mean())))
        return epoch == 2

    model = PrototypeClassifier(n_epochs=50, callbacks=[stop_at_two], **FAST).fit(X, y)
    assert [s[0] for s in seen] == [0, 1, 2] and len(model.loss_history_) == 3
    assert seen[0][1] == (10, 3) and seen[0][2] == pytest.approx(1.0)


def test_identical_labelled_rows_are_refused():
    # the rows' features differ from each other (0, 5, 10), which a whole-matrix std missed
    X = np.tile(np.array([[0.0, 5.0, 10.0]], np.float32), (20, 1))
    X = np.vstack([X, np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)])
    y = np.r_[np.arange(20) % 2, -np.ones(20, int)]
    with pytest.raises(ValueError, match="labelled rows of X are identical"):
        PrototypeClassifier(n_jobs=1).fit(X, y)
