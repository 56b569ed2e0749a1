"""Digits: icongraph's t-SNE and UMAP against umap-learn, the baseline peer.

Writes ``digits_tsne_umap.png`` (three panels coloured by digit) and prints, per model, the
10-NN accuracy of the embedding, its kNN preservation@15 and the seconds of the fit.

Size knob: ``ICONGRAPH_EXAMPLE_SIZE=300 python examples/digits_tsne_umap.py`` embeds a seeded
subsample of 300 digits (the tests do this); unset, all 1,797. umap-learn compiles its numba
functions on its first call in a process (about 12 s here, not cached on disk), which is
counted in its time below; a second run in the same process is as fast as ours.
"""

import os
import time

import umap

import icongraph
from icongraph import metrics
from icongraph.datasets import load
from icongraph.plot import plot_embeddings

SIZE = int(os.environ.get("ICONGRAPH_EXAMPLE_SIZE", "0")) or None  # None: the full dataset

X, y = load("digits", n_samples=SIZE)
models = {
    "icongraph TSNE": icongraph.TSNE(random_state=0),
    "icongraph UMAP": icongraph.UMAP(random_state=0),
    "umap-learn UMAP": umap.UMAP(random_state=0),  # one thread, as umap-learn does when seeded
}
panels = []
for name, model in models.items():
    start = time.perf_counter()
    Y = model.fit_transform(X)
    seconds = time.perf_counter() - start
    print(f"{name:16s} 10-NN accuracy {metrics.knn_accuracy(Y, y):.3f}, "
          f"kNN preservation {metrics.knn_preservation(X, Y):.3f}, {seconds:.1f} s")
    panels.append((name, Y))
fig = plot_embeddings(panels, y, color_label="digit", ncols=3)
fig.savefig("digits_tsne_umap.png", dpi=150)
print("wrote digits_tsne_umap.png")
