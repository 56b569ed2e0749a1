"""scanpy-style tools on an AnnData: :func:`embed` and :func:`cluster` (``icongraph.tl``, the
extra ``icongraph[scanpy]``; anndata is never imported here, the object is used as given).

Both follow scanpy's ``tl`` conventions: the data are read from ``adata.obsm[use_rep]``
(``"X"``: ``adata.X``), the result goes into ``adata.obsm[key_added]`` (an embedding) or a
categorical ``adata.obs[key_added]`` of strings (clusters), the call's parameters into
``adata.uns[key_added]["params"]``; ``copy=True`` works on a copy and returns it, else the
object is changed in place and None is returned.

The neighbour graph:

* ``neighbors_key=None``: icongraph's own kNN search on ``use_rep``.
* ``neighbors_key="neighbors"`` (after ``sc.pp.neighbors``, or any key it wrote): scanpy's
  kNN distances ``adata.obsp[adata.uns[key]["distances_key"]]`` become the estimator's
  ``precomputed_knn`` (:func:`~icongraph.knn.sparse_knn_lists`; scanpy keeps
  ``n_neighbors - 1`` neighbours per row, the point itself left out), with ``n_neighbors`` set
  to match its count ``k`` (``k + 1`` for UMAP, whose count includes the point),
  ``perplexity`` to ``k / 3`` (t-SNE's ``3 x perplexity`` neighbours) and ``metric`` to
  scanpy's, unless given. Methods that embed a given graph
  (``graph-sne``, ``graph-tsne``) take its connectivities as ``p``.

The fitted graph is written as ``sc.pp.neighbors`` writes one, so ``sc.tl.leiden(adata,
neighbors_key=...)``, ``sc.tl.paga`` or ``sc.tl.umap`` run on it:
``obsp[f"{graph_key}_connectivities"]`` (``p`` symmetrised, ``(P + P^T) / 2``),
``obsp[f"{graph_key}_distances"]`` (the kNN distances used) and ``uns[graph_key] =
{"connectivities_key", "distances_key", "params"}`` (``params["n_neighbors"]`` counts the
point itself, as scanpy's), where ``graph_key`` is ``key_added``
without a leading ``X_`` for :func:`embed` (``"X_icon"`` -> ``"icon"``) and ``key_added`` for
:func:`cluster` (there ``uns[key_added]`` holds the graph's keys beside the parameters).
"""

from __future__ import annotations

import numpy as np

from .clustering import CLUSTER_METHODS, Clustering
from .compose import ICon
from .embedding import UMAP
from .graph import knn_to_csr, symmetrize
from .knn import METRICS, as_knn
from .methods import _key, methods
from .methods import method as build_method

__all__ = ["embed", "cluster"]


def _check_adata(adata) -> None:
    """Refuse anything but an AnnData (recognised without importing anndata)."""
    if type(adata).__module__.split(".")[0] != "anndata" or not hasattr(adata, "obsm"):
        raise ValueError(f"adata must be an AnnData object; got {type(adata).__name__}. For "
                        "arrays use the estimators (icongraph.UMAP().fit_transform(X), ...).")


def _representation(adata, use_rep: str):
    """``adata.X`` for ``"X"``, else ``adata.obsm[use_rep]`` (N, D); a missing key is refused
    with the keys there are."""
    if use_rep == "X":
        if adata.X is None:
            raise ValueError("use_rep='X' but adata.X is None.")
        return adata.X
    if use_rep not in adata.obsm:
        available = ", ".join(repr(k) for k in adata.obsm) or "none"
        raise ValueError(f"use_rep={use_rep!r} is not in adata.obsm (keys: {available}); run "
                         "sc.pp.pca(adata) for 'X_pca', or pass use_rep='X' for adata.X.")
    return np.asarray(adata.obsm[use_rep])


def _scanpy_neighbors(adata, key: str) -> dict:
    """scanpy's neighbour graph under ``uns[key]``: ``{"distances", "connectivities",
    "distances_key", "params"}`` (scanpy's default obsp names when ``uns`` does not name
    them, as its ``NeighborsView``)."""
    entry = adata.uns.get(key)
    if not hasattr(entry, "get"):
        found = [k for k, v in adata.uns.items() if hasattr(v, "get") and "params" in v
                 and ("distances_key" in v or k == "neighbors")]
        raise ValueError(f"neighbors_key={key!r} is not in adata.uns (neighbour graphs there: "
                         f"{', '.join(map(repr, found)) or 'none'}); run "
                         "sc.pp.neighbors(adata), or pass neighbors_key=None for icongraph's "
                         "own kNN.")
    prefix = "" if key == "neighbors" else f"{key}_"
    dist_key = entry.get("distances_key", f"{prefix}distances")
    conn_key = entry.get("connectivities_key", f"{prefix}connectivities")
    if dist_key not in adata.obsp:
        raise ValueError(f"adata.uns[{key!r}] names the distances adata.obsp[{dist_key!r}], "
                         f"which is missing (obsp keys: {', '.join(map(repr, adata.obsp))}).")
    return {"distances": adata.obsp[dist_key], "distances_key": dist_key,
            "connectivities": adata.obsp.get(conn_key), "params": dict(entry.get("params", {}))}


def _row_names(kind: str) -> list[str]:
    """The rows of :func:`~icongraph.methods.methods` that :func:`embed` (``kind``
    ``"embedding"``) or :func:`cluster` (``"clustering"``) runs."""
    learned = "free embedding" if kind == "embedding" else "assignments phi (linear head)"
    return [row.name for row in methods() if row.learned == learned]


def _estimator(kind: str, name: str | None, params: dict, neighbors: dict | None,
               n_samples: int):
    """The configured estimator of ``name`` (a row of the methods table, ``"icon"`` for the
    general :class:`~icongraph.compose.ICon`, a :data:`CLUSTER_METHODS` name, or None for
    :class:`~icongraph.clustering.Clustering`'s default), on scanpy's graph of ``n_samples``
    points when ``neighbors`` is given (its kNN lists checked here, before any work)."""
    if name is None and kind == "clustering":
        name = Clustering().method
    names = _row_names(kind)
    allowed = names + (["icon"] if kind == "embedding" else sorted(CLUSTER_METHODS))
    key = _key(name) if isinstance(name, str) else None
    if key not in allowed:
        raise ValueError(f"method={name!r} is not one of the {kind} methods {allowed}.")
    graph_row = any(row.name == key and row.needs == "graph" for row in methods())
    params = dict(params)
    if graph_row:
        if neighbors is None or neighbors["connectivities"] is None:
            raise ValueError(f"method={name!r} embeds a given graph: pass neighbors_key (scanpy's "
                             "connectivities are its p).")
        params["graph"] = neighbors["connectivities"]
    if key == "icon":
        estimator = ICon(**params)
    elif key in CLUSTER_METHODS:
        estimator = Clustering(method=key, **params)
    else:
        estimator = build_method(key, **params)
    if neighbors is not None and not graph_row:
        metric = neighbors["params"].get("metric")
        if "metric" not in params and metric in METRICS:
            estimator.set_params(metric=str(metric))
        knn = as_knn(neighbors["distances"], n_samples, estimator.metric)
        k = knn.n_neighbors
        estimator.set_params(precomputed_knn=knn)
        if "n_neighbors" in estimator.get_params() and "n_neighbors" not in params:
            # UMAP's n_neighbors counts the point itself, as scanpy's; Clustering's does not
            estimator.set_params(n_neighbors=k + 1 if isinstance(estimator, UMAP) else k)
        if "perplexity" in estimator.get_params() and "perplexity" not in params:
            estimator.set_params(perplexity=k / 3.0)  # t-SNE's 3 x perplexity neighbours
    return estimator


def _plain(value):
    """``value`` as something h5ad can store: numbers, strings and bools as they are, anything
    else by its type's name."""
    if isinstance(value, (str, bool, int, float, np.number, np.bool_)):
        return value
    return f"<{type(value).__name__}>"


def _write_graph(adata, graph_key: str, estimator, params: dict,
                 neighbors: dict | None) -> None:
    """The fitted graph in scanpy's ``pp.neighbors`` layout (module docstring); when the fit
    had no kNN graph of its own (a given graph), ``distances_key`` names scanpy's."""
    conn_key = f"{graph_key}_connectivities"
    adata.obsp[conn_key] = symmetrize(estimator.graph_, "mean")
    entry = {"connectivities_key": conn_key, "params": params}
    knn = estimator.knn_
    if knn is not None:
        entry["distances_key"] = f"{graph_key}_distances"
        adata.obsp[entry["distances_key"]] = knn_to_csr(knn.indices, knn.distances)
        params["n_neighbors"] = knn.n_neighbors + 1  # scanpy's count includes the point
    elif neighbors is not None:
        entry["distances_key"] = neighbors["distances_key"]
    adata.uns[graph_key] = {**adata.uns.get(graph_key, {}), **entry}


def _run(kind: str, adata, method: str | None, use_rep: str, neighbors_key: str | None,
         copy: bool, params: dict):
    """Everything :func:`embed` and :func:`cluster` share: checks before any work, the copy,
    the fit. Returns ``(adata, fitted estimator, recorded parameters, scanpy's graph or
    None)``."""
    _check_adata(adata)
    X = _representation(adata, use_rep)
    neighbors = None if neighbors_key is None else _scanpy_neighbors(adata, neighbors_key)
    estimator = _estimator(kind, method, params, neighbors, adata.n_obs)
    if copy:
        adata = adata.copy()
    estimator.fit(X)
    recorded = {"method": method, "use_rep": use_rep, "neighbors_key": neighbors_key,
                **{k: _plain(v) for k, v in params.items()}}
    return adata, estimator, {k: v for k, v in recorded.items() if v is not None}, neighbors


def embed(adata, method: str = "umap", use_rep: str = "X_pca", neighbors_key: str | None = None,
          key_added: str = "X_icon", copy: bool = False, random_state=0, **params):
    """Embed the cells of ``adata`` with an icongraph method, scanpy style.

    Parameters
    ----------
    adata : anndata.AnnData
        N observations; read from ``obsm[use_rep]`` (or ``X``) and, with ``neighbors_key``,
        ``uns``/``obsp``.
    method : str
        A row of :func:`icongraph.methods` that learns a free embedding (``"umap"``,
        ``"tsne"``, ``"sne"``, ``"tsne-uniform"``, ``"graph-tsne"``, ...) or ``"icon"`` for the
        general :class:`~icongraph.compose.ICon` (``p=``, ``q=``, ``estimator=`` in
        ``params``).
    use_rep : str
        The key of ``adata.obsm`` to embed, (N, D); ``"X"`` for ``adata.X``.
    neighbors_key : str, optional
        None: icongraph's own kNN graph of ``use_rep``. A key of ``sc.pp.neighbors``
        (``"neighbors"`` by default there): its kNN distances as ``precomputed_knn`` (the graph
        rows: its connectivities as ``p``; module docstring).
    key_added : str
        The embedding goes to ``obsm[key_added]`` (N, n_components) float32, the parameters to
        ``uns[key_added]["params"]``, the fitted graph under the key ``key_added`` without a
        leading ``"X_"`` (module docstring).
    copy : bool
        Work on a copy of ``adata`` and return it.
    random_state : int, optional
        The estimator's seed (scanpy's default 0: reproducible).
    **params
        The estimator's own parameters (``n_neighbors``, ``min_dist``, ``perplexity``,
        ``n_epochs``, ...).

    Returns
    -------
    anndata.AnnData or None
        The copy with ``copy=True``, else None (``adata`` is changed).

    Raises
    ------
    ValueError
        Before any work: ``use_rep`` missing from ``obsm`` (the message lists its keys), a
        ``neighbors_key`` not in ``uns`` or whose distances are missing, a method that is not
        an embedding, or what the estimator refuses.

    Examples
    --------
    >>> import scanpy as sc, icongraph
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> icongraph.tl.embed(adata, method="tsne", neighbors_key="neighbors")
    >>> sc.tl.leiden(adata, neighbors_key="icon")
    """
    adata_out, estimator, recorded, neighbors = _run(
        "embedding", adata, method, use_rep, neighbors_key, copy,
        {**params, "random_state": random_state})
    adata_out.obsm[key_added] = estimator.embedding_
    adata_out.uns[key_added] = {"params": dict(recorded)}
    graph_key = key_added[2:] if key_added.startswith("X_") else key_added
    _write_graph(adata_out, graph_key, estimator, recorded, neighbors)
    return adata_out if copy else None


def cluster(adata, n_clusters: int | None = None, method: str | None = None,
            key_added: str = "icon_cluster", use_rep: str = "X_pca",
            neighbors_key: str | None = None, copy: bool = False, random_state=0, **params):
    """Cluster the cells of ``adata`` with :class:`~icongraph.clustering.Clustering`, scanpy
    style (as ``sc.tl.leiden``: a categorical column of strings).

    Parameters
    ----------
    adata : anndata.AnnData
        N observations; read from ``obsm[use_rep]`` (or ``X``) and, with ``neighbors_key``,
        ``uns``/``obsp``.
    n_clusters : int, optional
        Clusters asked for; None: :class:`~icongraph.clustering.Clustering`'s default.
    method : str, optional
        A clustering row of :func:`icongraph.methods` (``"kmeans"``, ``"ncut"``,
        ``"debiased-infonce-clustering"``, ...) or a name of
        :data:`~icongraph.clustering.CLUSTER_METHODS` (``"debiased"``, ``"infonce"``, ...);
        None: :class:`~icongraph.clustering.Clustering`'s default.
    key_added : str
        Labels go to ``obs[key_added]`` (categorical, categories ``"0"``, ``"1"``, ... in
        numeric order), the parameters and the fitted graph's keys to ``uns[key_added]``.
    use_rep, neighbors_key, copy, random_state, **params
        As in :func:`embed`; ``params`` are :class:`~icongraph.clustering.Clustering`'s.

    Returns
    -------
    anndata.AnnData or None
        The copy with ``copy=True``, else None.

    Raises
    ------
    ValueError
        As :func:`embed`, before any work.

    Examples
    --------
    >>> icongraph.tl.cluster(adata, n_clusters=10, neighbors_key="neighbors")
    >>> adata.obs["icon_cluster"].value_counts()
    """
    import pandas as pd

    params = {**params, "random_state": random_state}
    if n_clusters is not None:
        params["n_clusters"] = n_clusters
    adata_out, estimator, recorded, neighbors = _run("clustering", adata, method, use_rep,
                                                     neighbors_key, copy, params)
    labels = estimator.labels_
    categories = [str(c) for c in np.unique(labels)]
    adata_out.obs[key_added] = pd.Categorical(labels.astype(str), categories=categories)
    _write_graph(adata_out, key_added, estimator, recorded, neighbors)
    return adata_out if copy else None
