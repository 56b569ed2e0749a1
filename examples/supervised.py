"""Supervised and semi-supervised embedding, and the classifier row of the methods table.

``fit(X, y)`` mixes a same-class graph into ``p`` by ``target_weight`` (umap-learn's name:
0 the data graph only, 1 the label graph only); a label ``-1`` marks an unlabelled point,
which keeps its kNN edges. The digits are split into training and held-out points; each
embedding places the held-out points with ``transform``, and the 10-NN accuracy of their
labels against the training embedding is printed. ``icongraph.method("cross-entropy")`` (a
:class:`~icongraph.PrototypeClassifier`) is scored on the same split. Writes
``supervised.png``.

Size knob: ``ICONGRAPH_EXAMPLE_SIZE=300`` uses a seeded subsample of 300 digits.
"""

import os

import numpy as np
from matplotlib.figure import Figure
from sklearn.neighbors import KNeighborsClassifier

import icongraph
from icongraph.datasets import load
from icongraph.plot import plot_embedding

SIZE = int(os.environ.get("ICONGRAPH_EXAMPLE_SIZE", "0")) or None  # None: the full dataset

X, y = load("digits", n_samples=SIZE)
rng = np.random.default_rng(0)
order = rng.permutation(len(X))
train, test = order[: int(0.7 * len(X))], order[int(0.7 * len(X)):]

# 10% of the training labels kept, the others -1 (unlabelled)
partial = y[train].copy()
partial[rng.random(len(train)) >= 0.1] = -1

runs = {
    "unsupervised": (icongraph.UMAP(random_state=0), None),
    "10% labels": (icongraph.UMAP(random_state=0), partial),
    "all labels, target_weight=1": (icongraph.UMAP(target_weight=1.0, random_state=0), y[train]),
}
last = list(runs)[-1]
fig = Figure(figsize=(14, 4.8), layout="constrained")
for ax, (name, (model, labels)) in zip(fig.subplots(1, len(runs)), runs.items()):
    Y_train = model.fit_transform(X[train], labels)
    Y_test = model.transform(X[test])
    # each held-out point classified by its 10 nearest training points in the embedding
    held_out = KNeighborsClassifier(10).fit(Y_train, y[train]).score(Y_test, y[test])
    print(f"UMAP, {name:28s} held-out 10-NN accuracy {held_out:.3f}")
    plot_embedding(np.vstack([Y_train, Y_test]), np.concatenate([y[train], y[test]]), ax=ax,
                   title=f"UMAP, {name}", color_label="digit", legend=name == last)

classifier = icongraph.method("cross-entropy", random_state=0).fit(X[train], y[train])
print(f"cross-entropy classifier     held-out accuracy {classifier.score(X[test], y[test]):.3f}")
fig.savefig("supervised.png", dpi=150)
print("wrote supervised.png")
