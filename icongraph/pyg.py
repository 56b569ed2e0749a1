"""PyTorch Geometric interop: a ``torch_geometric.data.Data`` as an estimator's input, and a
fitted graph as a ``Data``.

Input (:func:`split_data`, called first thing in every estimator's ``fit``): ``data.x``
(N, D) is ``X``, ``data.y`` (N,) the labels (for the estimators that take labels), and the
graph (if any), ``data.edge_index`` (2, E) with ``data.edge_weight`` (E,) or a one-column
``data.edge_attr`` ((E,) or (E, 1); unweighted: 1 per edge), is ``p``
(:func:`data_graph`). Edge ``e`` runs from ``edge_index[0, e]`` to ``edge_index[1, e]`` and
becomes ``p[source, target]``: a directed graph stays directed (row ``i`` of ``p`` lists the
out-edges of ``i``; make it symmetric beforehand with ``torch_geometric.utils.to_undirected``
if needed). Duplicate edges are summed (``torch_geometric.utils.coalesce``), self loops
dropped, and a node without out-edges is refused (``p(.|i)`` would be undefined).

How each estimator uses the graph: it replaces the kNN graph the estimator would otherwise
build from ``X``, through the path of :class:`~icongraph.compose.ICon`'s precomputed ``p``
(:class:`~icongraph.targets.PrecomputedTarget`, rows normalised to ``p(.|i)``); the preset's
kernel, normaliser and optimiser are kept. For :class:`~icongraph.clustering.Clustering` the
normalised graph takes the place of the preset's kNN ``p`` (``'ncut'`` symmetrises it, as it
does its kNN graph), propagation and ``alpha`` apply to it, and the ``'embedding'`` seeding
lays it out (:func:`~icongraph.seeding.embedding_partition`). ``X`` is still used for what
needs features (the PCA start of an embedding, a clustering head). A graph given this way
cannot place new points (``transform`` needs a kNN target).

Output: :meth:`GraphOutputMixin.to_pyg` on a fitted estimator returns its ``graph_`` as a
``Data`` (``torch_geometric.utils.from_scipy_sparse_matrix``) with the learned rows as ``x``.

torch-geometric is imported only when a ``Data`` is met or made.
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp

from .graph import as_csr_graph
from .validation import check_is_fitted

__all__ = ["is_data", "data_graph", "split_data", "to_data", "GraphOutputMixin"]


def is_data(obj) -> bool:
    """Whether ``obj`` is a ``torch_geometric.data.Data`` (without importing torch-geometric:
    when it is not loaded, nothing can be one).

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    bool
        True for a ``Data``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from icongraph.pyg import is_data
    >>> is_data(Data(x=torch.zeros(3, 2))), is_data(np.zeros((3, 2)))
    (True, False)
    """
    if "torch_geometric" not in sys.modules:
        return False
    from torch_geometric.data import Data

    return isinstance(obj, Data)


def data_graph(data, n_samples: int | None = None) -> sp.csr_matrix:
    """The graph of ``data`` as validated CSR (:func:`~icongraph.graph.as_csr_graph`).

    Parameters
    ----------
    data : torch_geometric.data.Data
        With ``edge_index`` (2, E) and optionally ``edge_weight`` (E,) or ``edge_attr`` (E,) /
        (E, 1) as the weights (``edge_weight`` wins when both are set).
    n_samples : int, optional
        N, checked against ``data.num_nodes``.

    Returns
    -------
    scipy.sparse.csr_matrix
        (N, N) float32, ``p[source, target]`` summed over duplicate edges, no self loops.

    Raises
    ------
    ValueError
        No ``edge_index``, ``edge_attr`` with several columns, a node count that does not
        match, or what :func:`~icongraph.graph.as_csr_graph` refuses (negative or non-finite
        weights, a node without edges).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from icongraph.pyg import data_graph
    >>> edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    >>> data_graph(Data(edge_index=edges, num_nodes=3)).toarray()
    array([[0., 1., 0.],
           [1., 0., 1.],
           [0., 1., 0.]], dtype=float32)
    """
    if data.edge_index is None:
        raise ValueError("the Data has no edge_index: a graph is needed as p (or pass data.x "
                         "as X to build a kNN graph).")
    weight = data.edge_weight if "edge_weight" in data else None
    if weight is None and data.edge_attr is not None:
        weight = data.edge_attr
        if weight.dim() == 2 and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.dim() != 1:
            raise ValueError(f"the Data's edge_attr has shape {tuple(weight.shape)}; as edge "
                             "weights it must be (E,) or (E, 1) (set data.edge_weight).")
    n = data.num_nodes
    if n_samples is not None and n != n_samples:
        raise ValueError(f"the Data has {n} nodes but X has {n_samples} rows.")
    return as_csr_graph((data.edge_index, weight), n)


def split_data(X, y=None, has_graph: bool = False):
    """``fit``'s arguments with a ``Data`` taken apart: ``(X, y, graph)``.

    Parameters
    ----------
    X : torch_geometric.data.Data or array-like
        A ``Data`` (``x``, ``edge_index``, ``edge_weight``/``edge_attr``, ``y``), or anything
        else, returned as is with ``graph=None``.
    y : array-like, optional
        Labels; with a ``Data`` that also has ``y``, refused as ambiguous.
    has_graph : bool
        The estimator already has a graph (``p``, ``precomputed_knn``): a ``Data`` is refused.

    Returns
    -------
    X : torch.Tensor or None
        ``data.x`` (N, D), or the caller's ``X``.
    y : array-like or None
        ``y``, else ``data.y`` (N,).
    graph : scipy.sparse.csr_matrix or None
        (N, N) :func:`data_graph`; None when ``X`` is not a ``Data`` or has no
        ``edge_index`` (the estimator then builds its kNN graph from ``x``).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from icongraph.pyg import split_data
    >>> data = Data(x=torch.rand(3, 4), edge_index=torch.tensor([[0, 1, 2], [1, 2, 0]]))
    >>> X, y, graph = split_data(data)
    >>> tuple(X.shape), y, graph.shape
    ((3, 4), None, (3, 3))
    """
    if not is_data(X):
        return X, y, None
    if y is not None and X.y is not None:
        raise ValueError("labels given twice: the Data has y and fit got y; pass one.")
    if X.edge_index is None:
        return X.x, X.y if y is None else y, None
    if has_graph:
        raise ValueError("fit got a Data, whose graph is p, while the estimator has a graph "
                         "of its own (p or precomputed_knn): pass one graph.")
    n = None if X.x is None else X.x.shape[0]
    return X.x, X.y if y is None else y, data_graph(X, n)


def to_data(graph: sp.spmatrix, x=None, **attributes):
    """A ``torch_geometric.data.Data`` of ``graph`` (N, N): ``edge_index`` (2, E) int64 and
    ``edge_weight`` (E,) float32 by ``from_scipy_sparse_matrix``, ``x`` (N, d) a float32
    tensor (or None), ``num_nodes`` N, and any further node ``attributes`` (arrays, as
    tensors).

    Parameters
    ----------
    graph : scipy sparse matrix of shape (N, N)
        The edges and their weights.
    x : array-like of shape (N, d) or None, default=None
        Node features.
    **attributes
        Further node attributes (N, ...) by name.

    Returns
    -------
    torch_geometric.data.Data
        The graph as a ``Data``.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from icongraph.pyg import to_data
    >>> data = to_data(sp.eye(4, k=1, format="csr"), x=np.zeros((4, 2)), cluster=np.arange(4))
    >>> data.num_nodes, data.edge_index.shape[1], tuple(data.cluster.shape)
    (4, 3, (4,))
    """
    import torch
    from torch_geometric.data import Data
    from torch_geometric.utils import from_scipy_sparse_matrix

    edge_index, edge_weight = from_scipy_sparse_matrix(sp.coo_matrix(graph))
    tensors = {name: torch.as_tensor(np.asarray(value)) for name, value in attributes.items()}
    return Data(x=None if x is None else torch.as_tensor(np.asarray(x, np.float32)),
                edge_index=edge_index, edge_weight=edge_weight.to(torch.float32),
                num_nodes=graph.shape[0], **tensors)


class GraphOutputMixin:
    """``to_pyg()`` for an estimator with a fitted ``graph_``: the class names the learned
    rows given as ``x`` (``_pyg_x``) and the node attributes added (``_pyg_attributes``,
    Data name -> fitted attribute).

    Attributes
    ----------
    graph_ : scipy.sparse.csr_matrix of shape (N, N)
        Set by the estimator's ``fit``; :meth:`to_pyg` exports it.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> data = icongraph.UMAP(random_state=0).fit(X).to_pyg()  # x: the embedding
    >>> tuple(data.x.shape)
    (1797, 2)
    >>> icongraph.Clustering(n_clusters=10).fit(X).to_pyg().cluster[:5]  # doctest: +SKIP
    """

    _pyg_x: str = "embedding_"
    _pyg_attributes: dict = {}

    def to_pyg(self):
        """The fitted graph ``p`` as a ``torch_geometric.data.Data``.

        Returns
        -------
        torch_geometric.data.Data
            ``edge_index`` (2, E) and ``edge_weight`` (E,) from ``graph_`` (N, N) (row ``i``,
            ``p(.|i)``, as the out-edges of node ``i``), ``x`` the learned rows (N, d): the
            embedding, or a clustering's probabilities (N, C) with its ``labels_`` as
            ``cluster``.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            When the fit used no graph (a clustering of labels alone).
        """
        check_is_fitted(self, "graph_")
        if self.graph_ is None:
            raise ValueError(f"this {type(self).__name__} was fitted without a graph (labels "
                             "alone gave its positives): there is no graph to export.")
        return to_data(self.graph_, getattr(self, self._pyg_x),
                       **{name: getattr(self, attr) for name, attr in self._pyg_attributes.items()})
