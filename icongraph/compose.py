"""The general I-Con estimator :class:`ICon`: any target ``p`` (:mod:`icongraph.targets`, or a
user's graph) with any kernel ``q`` (:mod:`icongraph.kernels`).

What is learned follows from ``q``. A kernel of a distance learns an embedding: the fit is the
presets' (:mod:`icongraph.embedding`, the normaliser chosen by ``estimator``). The cluster
kernel (``q="cluster"``) learns soft assignments ``phi`` (N, K) to ``K = n_components``
clusters: :class:`ICon` builds ``p`` and hands it to the clustering's fit
(:class:`~icongraph.clustering.Clustering`, its seeding, heads and training loop), so
``ICon(p="knn", q="cluster", n_components=K)`` and ``Clustering(method="infonce",
n_clusters=K)`` are the same fit. This module sits above both estimators for that reason.
"""

from __future__ import annotations

import numpy as np

from .clustering import Clustering
from .embedding import COMMON_PARAMS, SNE, TSNE, UMAP, _Embedding, _shared_docs
from .kernels import KERNELS, ClusterKernel, Kernel, get_kernel
from .objective import ESTIMATORS, check_q_alpha
from .pyg import split_data
from .targets import TARGETS, PrecomputedTarget, get_target
from .validation import check_is_fitted, check_params, choice, mapping

__all__ = ["ICon", "CLUSTER_UNUSED"]

#: ICon's parameters that the cluster kernel's fit has no use for (the clustering's optimiser
#: is Adam on the assignments' logits, seeded by its own ``init``): each must stay None
CLUSTER_UNUSED = ("estimator", "momentum", "schedule", "n_negatives", "edge_sampling",
                  "transform_epochs", "init")


def _p_rule(name, value):
    """A target name (an unknown one gets :func:`~icongraph.targets.get_target`'s message), a
    target object, or a graph (checked when it is built, before any work)."""
    if isinstance(value, str) and value not in TARGETS:
        get_target(value)


def _q_rule(name, value):
    """A kernel name (an unknown one gets :func:`~icongraph.kernels.get_kernel`'s message),
    ``"cluster"``, a :class:`~icongraph.kernels.Kernel` or a
    :class:`~icongraph.kernels.ClusterKernel`."""
    if isinstance(value, str):
        if value not in KERNELS and value != ClusterKernel.name:
            get_kernel(value)
    elif not isinstance(value, (Kernel, ClusterKernel)):
        raise ValueError(f"{name} must be one of {(*KERNELS, ClusterKernel.name)}, a Kernel or a "
                         f"ClusterKernel instance; got {value!r}.")


def _clusters(estimator) -> bool:
    """Whether ``estimator`` (an :class:`ICon`) fits the cluster kernel."""
    return isinstance(estimator.q, ClusterKernel) or estimator.q == ClusterKernel.name


class _with_clusters:
    """A method that exists only on an :class:`ICon` with the cluster kernel: elsewhere the
    attribute raises ``AttributeError`` (so ``hasattr(ICon(), "predict")`` is False, as
    scikit-learn's ``available_if`` gives, without importing scikit-learn at start-up)."""

    def __init__(self, method):
        self.method = method
        self.__doc__ = method.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, estimator, owner=None):
        if estimator is None:
            return self
        if not _clusters(estimator):
            raise AttributeError(f"{type(estimator).__name__}.{self.name} exists only with "
                                 f"q='cluster' (this one has q={estimator.q!r}).")
        return self.method.__get__(estimator, owner)


@_shared_docs
class ICon(_Embedding):
    """The general I-Con estimator: ``p`` (target name, spec object or a graph), ``q`` (kernel
    name or :class:`~icongraph.kernels.Kernel`, or the cluster kernel ``"cluster"``) and, for
    an embedding, the normaliser ``estimator`` ('per_anchor', 'global', 'neg' or 'fft'; None:
    'neg'). ``p_params``/``q_params`` go to the named target/kernel. ``fit(X, y)`` with class
    labels (``-1``: unlabelled) mixes the same-class graph into ``p`` by ``target_weight``
    (0-1, default 0.5; :mod:`icongraph.embedding`), whatever the estimator.

    The kernels on the unit sphere, ``q="cosine"`` (InfoNCE's ``exp(cos / tau)``) and
    ``q="student-sphere"`` (:mod:`icongraph.kernels`), keep every row at norm 1:
    ``embedding_`` (N, n_components) then holds points on the unit sphere (``n_components=2``
    the circle, 3 the sphere; at least 2), and so does ``transform``. Their ``q_params`` are
    ``temperature`` (> 0) and ``learn_temperature`` (fit it with the embedding; the fitted
    value is ``kernel_.temperature``); the ``'fft'`` estimator is planar and refused.

    The Student-t kernels (``q="student"``, ``q="student-sphere"``) take ``dof`` (> 0, default
    1) and ``learn_dof``: fit the degrees of freedom with the embedding, one Adam step on
    ``log dof`` per epoch from the exact gradient of the epoch's sampled objective
    (:class:`~icongraph.optimize.DofLearner`; not with the ``'fft'`` estimator, whose
    normaliser is interpolated); the fitted value is ``kernel_.dof``.

    **Clustering** (``q="cluster"``): soft assignments ``phi(c|i)`` (N, K) to
    ``K = n_components`` clusters under the cluster kernel
    (:class:`~icongraph.kernels.ClusterKernel`)::

        q(j|i) = sum_c phi(c|i) phi(c|j) / M_c,   M_c = sum_k phi(c|k),   phi = softmax(logits / T)
        L = - 1/N sum_i E_{j ~ p~(.|i)} log((1 - a_q) q(j|i) + a_q / N)

    with ``p(.|i)`` the rows of ``p`` normalised (each anchor weighs 1, the clustering's
    convention) and ``p~ = (1 - alpha) p + alpha / N`` (``alpha``, the package's debiasing of
    ``p``; ``propagation_steps`` ``t`` gives ``p = (P + ... + P^t) / t`` by the clustering's
    sampled walks, the same ``p`` the embeddings store as a matrix power). ``q_params``:
    ``temperature`` ``T`` (default 1); ``a_q`` is ``q_alpha`` (the parameter, or in
    ``q_params``, in [0, 1), default 0). The
    normaliser is the K cluster masses, exact: ``estimator`` must stay None.
    The fit is :class:`~icongraph.clustering.Clustering`'s on this ``p`` (its seeding from a
    2-D embedding of the kNN graph, Adam on the logits): ``encoder=None`` learns free
    per-point logits, ``encoder="linear"``, ``"mlp"``, a tuple or a module is the head on the
    standardised features; ``n_epochs`` and ``learning_rate`` (None: the clustering's
    defaults), ``optimizer`` (None or ``'adam'``), the kNN and runtime parameters apply;
    :data:`CLUSTER_UNUSED` must stay None, and labels ``y`` are refused
    (``Clustering(method="supervised")`` clusters with labels). Fitted: ``labels_`` (N,),
    ``probabilities_`` (N, K) (also ``embedding_``), ``n_clusters_``, ``cluster_sizes_``,
    ``empty_clusters_``, ``loss_``, ``loss_history_``, ``hard_loss_``, ``refined_`` (refined on
    the exact hard loss when ``q_params={"q_alpha": a}`` with ``a > 0``, see ``Clustering``),
    ``graph_``, ``kernel_`` and the fitted ``clustering_``; ``predict_proba`` / ``predict``
    (and ``transform``) place new points as ``Clustering`` does, from their rows of ``p`` (a
    kNN target) or the head.

    Parameters
    ----------
    p : str, Target, graph, default="fuzzy"
        The target: ``"fuzzy"`` (UMAP's fuzzy simplicial set), ``"perplexity"`` (t-SNE's
        calibrated Gaussian), ``"knn"`` (uniform over the k nearest neighbours), a target
        object (:class:`~icongraph.targets.PerplexityTarget`, ...), or a graph: a scipy sparse
        (N, N) matrix, a networkx graph, a torch ``edge_index`` with weights.
    q : str or Kernel, default="umap"
        The kernel: ``"gaussian"``, ``"student"``, ``"umap"``, ``"cosine"``,
        ``"student-sphere"``, ``"cluster"``, or a :class:`~icongraph.kernels.Kernel`.
    estimator : {"neg", "global", "per_anchor", "fft"} or None, default=None
        How an embedding's normaliser is estimated: fixed (UMAP's negative sampling), one
        running ``Z`` (t-SNE's joint ``q``), one ``Z_i`` per anchor (InfoNCE, conditional
        ``q``), or all pairs by FFT interpolation (joint ``q``, 1-D and 2-D); None: ``"neg"``
        (and must stay None with ``q="cluster"``). The optimiser's defaults are those of the
        preset using the same estimator.
    p_params : dict or None, default=None
        Keyword arguments of the named target (e.g. ``{"n_neighbors": 15}``,
        ``{"perplexity": 30}``).
    q_params : dict or None, default=None
        Keyword arguments of the named kernel (e.g. ``{"dof": 0.5}``, ``{"learn_dof": True}``,
        ``{"temperature": 0.1, "learn_temperature": True}``). ``{"q_alpha": 0.2}`` is the
        same as the parameter ``q_alpha=0.2`` (give it once), for every kernel.
    {common_parameters_and_attributes}

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> Y = icongraph.ICon(p="perplexity", q="student", estimator="global").fit_transform(X)
    >>> icongraph.ICon(p="knn", q="student", estimator="per_anchor", target_weight=1).fit(X, y)
    ICon(...)
    >>> model = icongraph.ICon(p="knn", q="cosine", estimator="per_anchor", n_components=3)
    >>> model.fit(X).embedding_.shape  # InfoNCE on kNN pairs, points on the sphere
    (1797, 3)
    >>> icongraph.ICon(p="perplexity", q="student", estimator="global",
    ...                q_params={"learn_dof": True}).fit(X).kernel_.dof  # doctest: +SKIP
    >>> icongraph.ICon(p="fuzzy", q="cluster", n_components=10).fit(X).labels_.shape
    (1797,)
    """

    _own_params = {"p": "fuzzy", "q": "umap", "estimator": None, "p_params": None,
                   "q_params": None}
    _own_rules = {"p": _p_rule, "q": _q_rule, "estimator": choice(ESTIMATORS, allow_none=True),
                  "p_params": mapping(), "q_params": mapping()}

    def __sklearn_tags__(self):
        """A transformer; a clusterer with the cluster kernel."""
        tags = super().__sklearn_tags__()
        if _clusters(self):
            tags.estimator_type = "clusterer"
        return tags

    def _q_params(self) -> tuple[dict, float]:
        """``(q_params without q_alpha, q_alpha)``: the debiasing of ``q`` is given once, as
        the parameter ``q_alpha`` or in ``q_params`` (the cluster kernel's own argument)."""
        q_params = dict(self.q_params or {})
        if "q_alpha" not in q_params:
            return q_params, self.q_alpha
        if self.q_alpha:
            raise ValueError(f"q_alpha is given twice (q_alpha={self.q_alpha!r} and "
                             f"q_params={self.q_params!r}); give it once.")
        q_alpha = q_params.pop("q_alpha")
        check_q_alpha(q_alpha, "per_anchor")
        return q_params, q_alpha

    def _q_alpha(self) -> float:
        """The debiasing of ``q``: ``q_alpha``, or ``q_params["q_alpha"]``."""
        return self._q_params()[1]

    def _composition(self):
        p_params = self.p_params or {}
        q_params, q_alpha = self._q_params()
        try:
            if isinstance(self.p, str) or hasattr(self.p, "build"):
                spec = get_target(self.p, **p_params)
            else:
                spec = PrecomputedTarget(self.p, **p_params)
        except TypeError as err:  # a keyword the target does not take
            raise ValueError(f"p_params={p_params!r} do not fit p={self.p!r}: {err}") from None
        try:
            if isinstance(self.q, ClusterKernel):
                if q_alpha:
                    raise ValueError(f"q={self.q!r} carries its own q_alpha; set it there, not "
                                     f"as q_alpha={q_alpha!r}.")
                kernel = self.q
            elif self.q == ClusterKernel.name:
                kernel = ClusterKernel(**q_params, q_alpha=q_alpha)
            else:
                kernel = get_kernel(self.q, **q_params)
        except TypeError as err:
            raise ValueError(f"q_params={q_params!r} do not fit q={self.q!r}: {err}") from None
        if isinstance(kernel, ClusterKernel):
            return spec, kernel, None
        return spec, kernel, "neg" if self.estimator is None else self.estimator

    def _check_params(self):
        """Every parameter and the composition, before any work; with the cluster kernel, the
        parameters it cannot use (:data:`CLUSTER_UNUSED`, an optimiser other than Adam) are
        refused by name."""
        if not _clusters(self):
            return super()._check_params()
        check_params(self, self._param_rules())
        spec, kernel, _ = self._composition()
        unused = [name for name in CLUSTER_UNUSED if getattr(self, name) is not None]
        if unused:
            raise ValueError(f"q='cluster' learns cluster assignments with the clustering's own "
                             f"normaliser (the cluster masses) and optimiser: "
                             f"{', '.join(f'{n}={getattr(self, n)!r}' for n in unused)} do not "
                             "apply; leave them None.")
        if self.optimizer not in (None, "adam"):
            raise ValueError(f"q='cluster' trains the assignments with Adam; got "
                             f"optimizer={self.optimizer!r}: use None or 'adam'.")
        return spec, kernel, None

    def _defaults(self, n_samples, init, estimator=None):
        """The optimiser settings of the preset that uses the same estimator."""
        estimator = estimator or self._composition()[2]
        preset = {"neg": UMAP, "global": TSNE, "fft": TSNE, "per_anchor": SNE}[estimator]
        shared = {k: getattr(self, k) for k in COMMON_PARAMS}
        return {**preset(**shared)._defaults(n_samples, init, estimator), "exaggeration": 1.0,
                "exaggeration_epochs": 0}

    def fit(self, X, y=None):
        """Fit ``X`` (N, D) (see :meth:`~icongraph.embedding._Embedding.fit`); with
        ``q="cluster"`` the clustering of the class docstring: every parameter is checked
        first, labels are refused, then ``p`` is built (a kNN target from ``X``, or the given
        graph) and :class:`~icongraph.clustering.Clustering` fits it."""
        if not _clusters(self):
            return super().fit(X, y)
        spec, kernel, _ = self._check_params()
        if y is not None:
            raise ValueError("q='cluster' clusters without labels: fit(X) (for clusters that "
                             "follow classes use Clustering(method='supervised').fit(X, y)).")
        X, _, graph = split_data(X, None, isinstance(spec, PrecomputedTarget)
                                 or self.precomputed_knn is not None)
        if X is None:
            raise ValueError("q='cluster' needs the data X with the graph p (the seeding and "
                             "a head read the features).")
        given = None
        if graph is not None:
            given = PrecomputedTarget(graph).build(n_samples=len(X)).graph
        elif isinstance(spec, PrecomputedTarget):
            given = spec.build(n_samples=len(X)).graph
        clustering = Clustering(
            n_clusters=self.n_components, method="infonce", alpha=self.alpha,
            q_alpha=kernel.q_alpha, propagation_steps=self.propagation_steps,
            temperature=kernel.temperature,
            head="free" if self.encoder is None else self.encoder, n_epochs=self.n_epochs,
            learning_rate=self.learning_rate, metric=self.metric,
            precomputed_knn=self.precomputed_knn, knn_method=self.knn_method,
            knn_cache=self.knn_cache, random_state=self.random_state, device=self.device,
            n_jobs=self.n_jobs, verbose=self.verbose, callbacks=self.callbacks)
        check_params(clustering, clustering._rules)
        clustering._fit(X, None, given, None if given is not None else spec)
        self.clustering_ = clustering
        for name in ("n_features_in_", "labels_", "probabilities_", "n_clusters_",
                     "cluster_sizes_", "empty_clusters_", "loss_", "loss_history_",
                     "hard_loss_", "partition_source_", "refined_", "n_epochs_", "graph_",
                     "knn_", "kernel_", "timings_", "data_scale_", "_fit_X"):
            setattr(self, name, getattr(clustering, name))
        if hasattr(clustering, "feature_names_in_"):
            self.feature_names_in_ = clustering.feature_names_in_
        else:
            vars(self).pop("feature_names_in_", None)
        self.embedding_ = self.probabilities_
        self._n_features_out = self.n_clusters_
        self._kl_divergence = None
        return self

    @property
    def kl_divergence_(self) -> float | None:
        """As :attr:`~icongraph.embedding._Embedding.kl_divergence_` for an embedding; None for
        the cluster kernel (``loss_`` is its estimate)."""
        check_is_fitted(self, "embedding_")
        return None if _clusters(self) else super().kl_divergence_

    @_with_clusters
    def predict_proba(self, X) -> np.ndarray:
        """(M, K) cluster probabilities of new points ``X`` (M, D)
        (:meth:`~icongraph.clustering.Clustering.predict_proba`; ``q="cluster"`` only)."""
        check_is_fitted(self, "clustering_")
        return self.clustering_.predict_proba(X)

    @_with_clusters
    def predict(self, X) -> np.ndarray:
        """(M,) cluster labels of new points ``X`` (M, D) (``q="cluster"`` only)."""
        return self.predict_proba(X).argmax(1)

    @_with_clusters
    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X, y).labels_`` (``q="cluster"`` only)."""
        return self.fit(X, y).labels_

    def transform(self, X):
        """New points ``X`` (M, D): their embedding (:meth:`~icongraph.embedding._Embedding.
        transform`), or with ``q="cluster"`` their cluster probabilities (M, K)."""
        if not _clusters(self):
            return super().transform(X)
        return self._wrap_output(self.predict_proba(X), X)
