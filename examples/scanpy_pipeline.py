"""A scanpy pipeline on scanpy's bundled ``pbmc68k_reduced`` (700 blood cells, 50 PCs).

``sc.pp.neighbors`` builds the kNN graph; ``icongraph.tl.embed`` uses it as ``p`` for a
UMAP-like embedding (``obsm["X_icon"]``) and writes the fitted graph as ``sc.pp.neighbors``
does (``uns["icon"]``), so ``sc.tl.leiden`` runs on it; ``icongraph.tl.cluster`` adds I-Con
clusters (``obs["icon_cluster"]``). Prints the agreement (ARI) of both clusterings with the
bulk labels and writes ``scanpy_pipeline.png`` (the embedding coloured three ways).

Needs the ``scanpy`` extra (``pip install -e ".[scanpy]"``). Size knob:
``ICONGRAPH_EXAMPLE_SIZE=300`` keeps a seeded subsample of 300 cells.
"""

import os

import scanpy as sc
from matplotlib.figure import Figure

import icongraph
from icongraph import metrics
from icongraph.plot import plot_embedding

SIZE = int(os.environ.get("ICONGRAPH_EXAMPLE_SIZE", "0")) or None  # None: all 700 cells

adata = sc.datasets.pbmc68k_reduced()
if SIZE is not None and SIZE < adata.n_obs:
    sc.pp.subsample(adata, n_obs=SIZE, random_state=0)
sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", random_state=0)

# scanpy's kNN graph as p; the embedding in obsm["X_icon"], our graph in obsp/uns["icon"]
icongraph.tl.embed(adata, method="umap", neighbors_key="neighbors")
# I-Con clustering on the same graph, as many clusters as Leiden finds (n_clusters=None)
icongraph.tl.cluster(adata, n_clusters=None, neighbors_key="neighbors")
# Leiden on the graph icongraph wrote
sc.tl.leiden(adata, neighbors_key="icon", key_added="leiden_icon", flavor="igraph",
             n_iterations=2, directed=False, random_state=0)

truth = adata.obs["bulk_labels"].to_numpy()
for key in ("icon_cluster", "leiden_icon"):
    found = adata.obs[key].to_numpy()
    ari = metrics.adjusted_rand_index(truth, found)
    print(f"{key:13s} {len(set(found)):2d} clusters, ARI {ari:.3f} against the bulk labels")
print(f"embedding     10-NN accuracy {metrics.knn_accuracy(adata.obsm['X_icon'], truth):.3f} "
      "of the bulk labels")

fig = Figure(figsize=(16, 4.8), layout="constrained")
for ax, key in zip(fig.subplots(1, 3), ("bulk_labels", "icon_cluster", "leiden_icon")):
    plot_embedding(adata.obsm["X_icon"], adata.obs[key], ax=ax, title=key, basis="icon")
fig.savefig("scanpy_pipeline.png", dpi=150)
print("wrote scanpy_pipeline.png")
