"""New methods are one line: pick a target p, a kernel q and a normaliser estimator."""

import icongraph
from icongraph import metrics
from icongraph.datasets import load_digits

X, y = load_digits()
heavy_tailed_tsne = icongraph.TSNE(dof=0.5, random_state=0)          # heavier tails than t-SNE
uniform_knn_infonce = icongraph.ICon(p="knn", q="student", estimator="per_anchor",
                                     p_params={"n_neighbors": 15}, learning_rate=0.05,
                                     random_state=0)
debiased_umap = icongraph.UMAP(alpha=0.1, random_state=0)            # (1 - a) p + a / N
for name, model in [("t-SNE dof=0.5", heavy_tailed_tsne), ("kNN + InfoNCE", uniform_knn_infonce),
                    ("debiased UMAP", debiased_umap)]:
    Y = model.fit_transform(X)
    print(f"{name:15s} 10-NN accuracy {metrics.knn_accuracy(Y, y):.3f}")
