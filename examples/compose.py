"""New methods are one line: pick a target p, a kernel q and a normaliser estimator.

Writes ``compose.png`` and prints the 10-NN accuracy of each composition on the digits.
Size knob: ``ICONGRAPH_EXAMPLE_SIZE=300`` uses a seeded subsample of 300 digits.
"""

import os

import icongraph
from icongraph import metrics
from icongraph.datasets import load
from icongraph.plot import plot_embeddings

SIZE = int(os.environ.get("ICONGRAPH_EXAMPLE_SIZE", "0")) or None  # None: the full dataset

X, y = load("digits", n_samples=SIZE)
models = {
    # t-SNE's p and normaliser with a heavier-tailed Student-t q (dof 0.5 instead of 1)
    "t-SNE dof=0.5": icongraph.TSNE(dof=0.5, random_state=0),
    # uniform weights on the 15 nearest neighbours, Student-t q, one normaliser per anchor:
    # the InfoNCE loss of contrastive learning
    "kNN + InfoNCE": icongraph.ICon(p="knn", q="student", estimator="per_anchor",
                                    p_params={"n_neighbors": 15}, learning_rate=0.05,
                                    random_state=0),
    # debiasing mixes a little of the uniform distribution into p, (1 - a) p(.|i) + a m_i U_i
    # (U_i uniform on the other points, m_i the row's mass); every estimator takes it:
    # t-SNE's p and q here
    "debiased t-SNE": icongraph.ICon(p="perplexity", q="student", estimator="global",
                                     alpha=0.1, random_state=0),
}
panels = []
for name, model in models.items():
    Y = model.fit_transform(X)
    print(f"{name:15s} 10-NN accuracy {metrics.knn_accuracy(Y, y):.3f}")
    panels.append((name, Y))
plot_embeddings(panels, y, color_label="digit", ncols=3).savefig("compose.png", dpi=150)
print("wrote compose.png")
