"""Embed scikit-learn's digits with the UMAP-like and t-SNE presets and compare them."""

import icongraph
from icongraph import metrics
from icongraph.datasets import load_digits
from icongraph.plot import plot_embeddings

X, y = load_digits()
panels = []
for model in (icongraph.UMAP(random_state=0), icongraph.TSNE(random_state=0)):
    Y = model.fit_transform(X)
    name = type(model).__name__
    print(f"{name}: 10-NN accuracy {metrics.knn_accuracy(Y, y):.3f}, "
          f"kNN preservation {metrics.knn_preservation(X, Y):.3f}, timings {model.timings_}")
    panels.append((name, Y))
plot_embeddings(panels, y, color_label="digit").savefig("digits_presets.png", dpi=150)
