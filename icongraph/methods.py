"""The methods table: every named composition of the I-Con objective that icongraph runs.

Each row is a :class:`Method`: its name, the target ``p``, the kernel ``q``, what is learned, the
reference it reproduces, and how to build the configured estimator. ``methods()`` lists the rows,
``method(name, **params)`` returns the estimator (names are case-insensitive; ``_`` and spaces
read as ``-``), and ``icongraph table`` prints them.

A row is listed only when its composition runs end to end; rows that need parts not built yet
are absent, not stubbed. ``encoder=`` works for every row that learns from features: the
embeddings' and the pairs' encoder, the clustering's and the classifier's head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .clustering import Clustering
from .compose import ICon
from .embedding import SNE, TSNE, UMAP
from .pairs import PairedEmbedding
from .prototypes import PrototypeClassifier

__all__ = ["Method", "methods", "method", "methods_markdown"]


@dataclass(frozen=True)
class Method:
    """One row of the table.

    Attributes
    ----------
    name : str
        The row's name as :func:`method` takes it (lower case, hyphenated).
    p, q, learned : str
        The target neighbourhood, the learned neighbourhood's kernel, and what is learned.
    reference : str
        The method this composition reproduces (or approximates), with its source.
    needs : str
        What ``fit`` needs: ``"X"``, ``"X, y"`` (labels; ``-1`` unlabelled), ``"X, X_pair"``
        (two aligned modalities, row ``i`` of each the same item) or ``"graph"`` (``p`` passed
        as a graph: scipy sparse, networkx, a torch-geometric ``Data``, or a precomputed kNN).
    build : callable
        ``build(**params)`` -> the configured, unfitted estimator.

    Parameters
    ----------
    name, p, q, learned, reference, needs, build
        As the attributes.

    Examples
    --------
    >>> import icongraph
    >>> row = icongraph.methods()[1]
    >>> row.name, row.needs
    ('tsne', 'X')
    >>> model = row.build(perplexity=50)  # the same as icongraph.method("tsne", perplexity=50)
    """

    name: str
    p: str
    q: str
    learned: str
    reference: str
    needs: str
    build: Callable = field(repr=False)


def _graph_row(q: str, estimator: str | None):
    """An :class:`~icongraph.compose.ICon` on a user's graph: ``build(graph, **params)``; with
    the cluster kernel (``q="cluster"``) ``n_clusters`` is its ``n_components``, as the other
    clustering rows take it."""
    def build(graph=None, **params):
        if graph is None:
            raise ValueError("this method fits a given graph: method(name, graph=G) with G a "
                             "scipy sparse matrix, a networkx graph, a torch-geometric Data or "
                             "a precomputed kNN.")
        if q == "cluster" and "n_clusters" in params:
            if "n_components" in params:
                raise ValueError("give n_clusters= or n_components=, not both: for this row "
                                 "they are the same number.")
            params["n_components"] = params.pop("n_clusters")
        return ICon(p=graph, q=q, estimator=estimator, **params)
    return build


#: the estimators whose learned module is their ``head``: ``encoder=`` sets it
_HEADED = (Clustering, PrototypeClassifier)


def _preset(cls, **fixed):
    """``build(**params)`` -> ``cls(**fixed, **params)`` (the caller's params win). ``encoder=``
    works for every row: for a clustering or a classifier it is the ``head`` (a name, a tuple
    of hidden widths or a ``torch.nn.Module`` to the logits)."""
    def build(**params):
        if cls in _HEADED and "encoder" in params:
            if "head" in params:
                raise ValueError("give encoder= or head=, not both: for this row they are the "
                                 "same module.")
            params["head"] = params.pop("encoder")
        return cls(**{**fixed, **params})
    return build


_LABELLED = "same-class graph from y mixed with the kNN graph (target_weight=1: labels only)"
_CLUSTER_Q = "cluster kernel sum_c phi(c|i) phi(c|j) / M_c"
_CLASSES_P = "class of i from y, one-hot over the C classes (alpha: label smoothing)"
_PROTOTYPES = "embedding f (linear head) and class prototypes mu"
_COSINE = "cosine exp(cos / tau) on the unit sphere, per anchor"
_SPHERE = "free embedding on the unit sphere (3-D)"
_PAIRS_P = "pair graph: the partner of i in the other modality (alpha: debiasing)"
_ENCODERS = "two encoders f, g (linear heads) into one space on the unit sphere"


def _sphere_preset(q: str, **fixed):
    """An :class:`~icongraph.compose.ICon` with kernel ``q`` on the sphere: uniform kNN ``p``,
    per-anchor normaliser, 3 components (the caller's params win)."""
    return _preset(ICon, p="knn", q=q, estimator="per_anchor", n_components=3, **fixed)


_ROWS = (
    Method("sne", "Gaussian kNN, perplexity-calibrated, conditional", "Gaussian exp(-d^2)",
           "free embedding", "SNE (Hinton & Roweis 2002)", "X", _preset(SNE)),
    Method("tsne", "Gaussian kNN, perplexity-calibrated, symmetrised (joint)",
           "Student-t 1/(1+d^2), joint", "free embedding",
           "t-SNE (van der Maaten & Hinton 2008), openTSNE's schedule", "X", _preset(TSNE)),
    Method("tsne-uniform", "uniform kNN 1/k", "Student-t 1/(1+d^2), joint", "free embedding",
           "t-SNE with uniform kNN affinities, an I-Con composition (Alshammari et al. 2025)", "X",
           _preset(ICon, p="knn", q="student", estimator="fft")),
    Method("graph-sne", "a given graph, row-normalised", "Gaussian exp(-d^2)",
           "free embedding", "SNE of a graph's neighbourhoods (I-Con composition)", "graph",
           _graph_row("gaussian", "per_anchor")),
    Method("graph-tsne", "a given graph", "Student-t 1/(1+d^2), joint", "free embedding",
           "t-SNE of a graph's neighbourhoods (I-Con composition)", "graph",
           _graph_row("student", "fft")),
    Method("umap", "fuzzy simplicial set (kNN, local connectivity)",
           "1/(1 + a d^2b), fixed normaliser (negative sampling)", "free embedding",
           "UMAP (McInnes et al. 2018), umap-learn's defaults", "X", _preset(UMAP)),
    Method("infonce", "uniform kNN 1/k", _COSINE, _SPHERE,
           "InfoNCE / SimCLR's loss on kNN pairs (van den Oord et al. 2018; Chen et al. 2020), "
           "an I-Con composition", "X", _sphere_preset("cosine")),
    Method("t-infonce", "uniform kNN 1/k",
           "Student-t (1 + d^2/tau)^-1 on the unit sphere, per anchor", _SPHERE,
           "InfoNCE on kNN pairs with a heavy-tailed kernel on the sphere (I-Con composition)",
           "X", _sphere_preset("student-sphere")),
    Method("supcon", _LABELLED, _COSINE, _SPHERE,
           "SupCon, supervised contrastive learning (Khosla et al. 2020), on a free embedding",
           "X, y", _sphere_preset("cosine", target_weight=1.0)),
    Method("t-supcon", _LABELLED, "Student-t 1/(1+d^2), joint", "free embedding",
           "SupCon's same-class target (Khosla et al. 2020) with a Student-t kernel (I-Con composition)",
           "X, y", _preset(TSNE, target_weight=1.0)),
    Method("kmeans", "Gaussian kNN, perplexity-calibrated", _CLUSTER_Q,
           "assignments phi (free per-point logits)",
           "k-means-like: Gaussian neighbourhoods to the cluster kernel (I-Con composition)", "X",
           _preset(Clustering, method="kmeans")),
    Method("ncut", "symmetric kNN, row-normalised", _CLUSTER_Q + ", degree-weighted",
           "assignments phi (free per-point logits)",
           "normalised-cuts-like (Shi & Malik 2000), as an I-Con composition",
           "X", _preset(Clustering, method="ncut")),
    Method("spectral", "symmetric kNN, row-normalised", _CLUSTER_Q + ", degree-weighted",
           "assignments phi (free per-point logits) from spectral clustering's partition",
           "spectral clustering (Ng, Jordan & Weiss 2002): k-means on the Laplacian's "
           "eigenvectors, then the normalised-cut objective it relaxes, as an I-Con composition",
           "X", _preset(Clustering, method="ncut", init="spectral")),
    Method("infonce-clustering", "uniform kNN", _CLUSTER_Q, "assignments phi (free per-point logits)",
           "InfoNCE clustering of kNN pairs (I-Con composition)", "X",
           _preset(Clustering, method="infonce")),
    Method("debiased-infonce-clustering", "uniform kNN, 2-step walks, debiased (alpha 0.2)",
           _CLUSTER_Q + ", debiased (q_alpha 0.2)", "assignments phi (free per-point logits)",
           "debiased InfoNCE clustering (Alshammari et al. 2025)", "X",
           _preset(Clustering, method="debiased")),
    Method("graph-clustering", "a given graph, row-normalised", _CLUSTER_Q,
           "assignments phi (free per-point logits)",
           "I-Con clustering of a graph's neighbourhoods, ICon(p=graph, q='cluster')", "graph",
           _graph_row("cluster", None)),
    Method("supervised-clustering", "same-class graph from y (-1: kNN positives)", _CLUSTER_Q,
           "assignments phi (free per-point logits)", "supervised I-Con clustering", "X, y",
           _preset(Clustering, method="supervised")),
    Method("cross-entropy", _CLASSES_P,
           "softmax of dot-product logits f . mu_c + b_c over the class prototypes", _PROTOTYPES,
           "softmax cross-entropy (I-Con composition, Alshammari et al. 2025)", "X, y",
           _preset(PrototypeClassifier, kernel="dot")),
    Method("harmonic", _CLASSES_P,
           "power (Student-t-like) kernel d_c^(-n), d_c the distance from f to prototype mu_c",
           _PROTOTYPES, "harmonic loss (Baek et al. 2025)", "X, y",
           _preset(PrototypeClassifier, kernel="student")),
    Method("clip", _PAIRS_P,
           "cosine exp(cos / tau) over the other modality, both directions", _ENCODERS,
           "CLIP's symmetric contrastive loss (Radford et al. 2021), an I-Con composition",
           "X, X_pair", _preset(PairedEmbedding, kernel="cosine")),
    Method("t-clip", _PAIRS_P,
           "Student-t (1 + d^2/tau)^-1 on the unit sphere over the other modality, both "
           "directions", _ENCODERS,
           "CLIP's pairs with a heavy-tailed kernel on the sphere (I-Con composition)",
           "X, X_pair", _preset(PairedEmbedding, kernel="student-sphere")),
)
_BY_NAME = {row.name: row for row in _ROWS}


def methods() -> list[Method]:
    """Every row of the table, in the order embeddings, clustering, classification, pairs.

    Returns
    -------
    list of Method
        The rows (``icongraph table`` prints them; ``methods_markdown()`` as Markdown).

    Examples
    --------
    >>> import icongraph
    >>> [row.name for row in icongraph.methods()][:3]
    ['sne', 'tsne', 'tsne-uniform']
    >>> [row.name for row in icongraph.methods() if row.needs == "X, y"]
    ['supcon', 't-supcon', 'supervised-clustering', 'cross-entropy', 'harmonic']
    """
    return list(_ROWS)


def _key(name: str) -> str:
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def method(name: str, **params):
    """The estimator of row ``name`` configured with ``params``.

    Parameters
    ----------
    name : str
        A row's name (:func:`methods`); case-insensitive, ``_`` and spaces read as ``-``.
    **params
        The estimator's own parameters; ``graph=`` for the graph rows. ``n_clusters`` is
        required by the clustering rows, as by :class:`~icongraph.clustering.Clustering`.
        ``encoder=`` is the ``head`` of the clustering and classifier rows.

    Returns
    -------
    estimator
        Unfitted: an :class:`~icongraph.ICon` or a preset, a
        :class:`~icongraph.Clustering`, a :class:`~icongraph.PrototypeClassifier` or a
        :class:`~icongraph.PairedEmbedding`.

    Raises
    ------
    ValueError
        An unknown name (the message lists the rows), or a graph row without ``graph=``.

    Examples
    --------
    >>> from icongraph import method
    >>> Y = method("tsne", perplexity=50).fit_transform(X)
    >>> method("t-SupCon", random_state=0).fit(X, y)
    >>> labels = method("debiased_infonce_clustering", n_clusters=10).fit_predict(X)
    >>> method("harmonic", random_state=0).fit(X, y).predict(X_new)
    >>> method("clip", random_state=0).fit(X, X_pair).transform(X_new, X_pair_new)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string; got {type(name).__name__}.")
    row = _BY_NAME.get(_key(name))
    if row is None:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(_BY_NAME)}.")
    return row.build(**params)


def _cell(text: str) -> str:
    """``text`` in a Markdown table cell: a ``|`` (as in ``phi(c|i)``) escaped, not ending it."""
    return text.replace("|", "\\|")


def methods_markdown() -> str:
    """The table as Markdown (``icongraph table --markdown``)."""
    lines = ["| name | p (target) | q (kernel) | learned | fit | reference |",
             "|---|---|---|---|---|---|"]
    lines += [f"| `{r.name}` | {_cell(r.p)} | {_cell(r.q)} | {_cell(r.learned)} | {r.needs} | "
              f"{_cell(r.reference)} |" for r in _ROWS]
    return "\n".join(lines)
