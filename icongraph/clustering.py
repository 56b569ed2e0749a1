"""I-Con clustering: the cluster kernel fitted to a (debiased, propagated) neighbourhood ``p``.

With soft assignments ``phi(c|i)`` (N, C) and cluster masses ``M_c = sum_k w_k phi(c|k)``::

    q(j|i) = sum_c phi(c|i) w_j phi(c|j) / M_c          (rows sum to 1; w = 1, or degrees)
    p~(j|i) = (1 - alpha) p(j|i) + alpha m_i / N         (debiasing on p: ``alpha``)
    q~(j|i) = (1 - a_q) q(j|i) + a_q / N                 (debiasing on q: ``q_alpha``)

``alpha`` is the package's one debiasing of ``p`` (:mod:`icongraph.targets`): a uniform part
on the support of ``q(.|i)``, here all N points (``q(i|i) > 0`` for the cluster kernel); the
clustering targets are row-stochastic (``m_i = 1``), so this is the paper's ``alpha / N``.
``q_alpha`` applies the same mixture to ``q``.
    L = - 1/N sum_i E_{j ~ p~(.|i)} log q~(j|i)          (the KL up to the constant entropy of p)

The normaliser is the cluster mass, C numbers: no negatives are needed. On data up to a few
hundred thousand points it is exact over the whole dataset every step (full batch); above, the
fit runs in mini-batches and the masses are a running estimate (see ``Clustering._fit_head``).
Positives ``j ~ p~(.|i)`` are *sampled* (:mod:`icongraph.positives`): an edge of ``p`` by
weight, then neighbour propagation over ``propagation_steps`` hops, never a matrix power: random
walks (``propagation='walk'``, ``p = (P + ... + P^t) / t``) or a uniform draw from the points
reachable in 1..t hops (``propagation='reachable'``); a uniform point with probability
``alpha`` (debiasing on p); or a same-class point (supervised). What is learned is, by default,
free per-point logits (``head='free'``): membership optimised directly on the graph, as Leiden
optimises it, and ``predict`` places a new point by the target row ``p(.|new)`` over the fitted
points. Or a head (:mod:`icongraph.heads`) on the standardised features (``linear``, the paper's
choice, or ``mlp``), which is what ``predict`` applies to new points. On the clustering suite
(3 seeds at K) the free logits scored ARI 0.883 / 0.810 / 0.091 / 0.980 on digits / tissue /
mnist1d / manifolds against the linear head's 0.877 / 0.803 / 0.077 / 0.980, and 0.377 against
0.387 on pbmc68k (where the labels' partition has a higher loss than both). The linear and free
heads start as a Gaussian-mixture posterior around seed centres (``init``,
:func:`~icongraph.seeding.seed_logits`): at a given ``n_clusters``, by default, the
feature means of the clusters of a 2-D UMAP-preset embedding of the same kNN graph
(``'embedding'``; with ``n_clusters=None`` the communities that chose the number,
``'communities'``), which reaches a lower (or equal) loss than Lloyd's k-means centres
(``'kmeans'``) on every dataset of the benchmark. Restarts (``n_init``) are compared by their
loss on one shared sample of about a million (anchor, positive) pairs.

Presets (``method=``), each a composition of p, the kernel's weights and alpha:

==============  ===========================================  =========  ======  =======
method          p                                            weights w  alpha   q_alpha
==============  ===========================================  =========  ======  =======
debiased        uniform kNN, 2-step walks                    1          0.2     0.2
infonce         uniform kNN                                  1          0       0
kmeans          Gaussian (perplexity) kNN                    1          0       0
ncut            symmetric kNN, row-normalised                degree     0       0
supervised      same-class (``fit(X, y)``; ``y = -1``: kNN)  1          0       0
==============  ===========================================  =========  ======  =======

``alpha`` and ``q_alpha`` override the method's values.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from .communities import MERGE_CONNECTIVITY, leiden_labels, merge_connected, unweighted_knn_graph
from .graph import row_normalize, symmetrize
from .heads import (
    HEADS,
    LEARNING_RATES,
    head_kind,
    head_parameters,
    head_rule,
    make_head,
    standardisation,
)
from .kernels import ClusterKernel, cluster_mass
from .knn import KNN, KNN_RULES, KNNIndex, knn_search, precomputed_knn
from .loop import FULL_BATCH_FLOATS, Callbacks, Converged, FiniteGuard, schedule, train
from .memory import check_memory
from .optimize import RowAdam
from .params import ParamsMixin
from .persistence import PersistenceMixin
from .positives import PROPAGATIONS, REACHABLE_CHUNK, REACHABLE_STORE_MAX, PositiveSampler
from .progress import phase
from .pyg import GraphOutputMixin, split_data
from .refine import (
    REFINE_MAX_EDGES,
    HardLoss,
    local_moving,
    refine,
    target_edges,
    walk_target,
)
from .runtime import RUNTIME_RULES, DivergenceError, resolve_device, threads
from .seeding import INITS, SEED_SAMPLE, seed_logits
from .targets import PerplexityTarget, UniformKNNTarget, new_lists
from .validation import (
    MappedFile,
    callbacks_rule,
    check_data,
    check_feature_names,
    check_is_fitted,
    check_n_features,
    check_n_neighbors,
    check_new_data,
    check_params,
    check_random_state,
    choice,
    encode_labels,
    number,
)

__all__ = ["Clustering", "CLUSTER_METHODS"]

CLUSTER_METHODS = {
    "debiased": {"target": "knn", "weights": "uniform", "alpha": 0.2, "q_alpha": 0.2, "steps": 2},
    "infonce": {"target": "knn", "weights": "uniform", "alpha": 0.0, "q_alpha": 0.0, "steps": 1},
    "kmeans": {"target": "gaussian", "weights": "uniform", "alpha": 0.0, "q_alpha": 0.0,
               "steps": 1},
    "ncut": {"target": "symmetric", "weights": "degree", "alpha": 0.0, "q_alpha": 0.0,
             "steps": 1},
    "supervised": {"target": "labels", "weights": "uniform", "alpha": 0.0, "q_alpha": 0.0,
                   "steps": 1},
}
#: running average of the mini-batch cluster masses; rows per chunk when evaluating all points
#: (and the most anchors of the final loss's evaluation sample)
MASS_MOMENTUM = 0.9
EVAL_CHUNK = 65536
#: (anchor, positive) pairs of the one sample on which every restart's final loss is taken
EVAL_PAIRS = 1 << 20
#: training stops once at most this fraction of the points changed cluster over the last
#: CONVERGENCE_EVERY epochs (checked from CONVERGENCE_MIN_EPOCHS on)
CONVERGENCE_TOL, CONVERGENCE_EVERY, CONVERGENCE_MIN_EPOCHS = 3e-3, 10, 150
#: leidenalg takes seeds below 2**31 - 1
LEIDEN_SEEDS = (1 << 31) - 1


class Clustering(PersistenceMixin, GraphOutputMixin, ParamsMixin):
    """I-Con clustering with the scikit-learn API (``fit``, ``fit_predict``, ``predict``,
    ``predict_proba``). See the module docstring for the objective and the presets.

    ``n_clusters`` lies in ``[1, N]``; with 1 every point is in the one cluster with probability
    1 (nothing is seeded or trained). ``n_clusters=None`` chooses the number: the number of
    communities that maximise modularity at ``resolution`` (default 1) on the unweighted
    symmetric kNN graph (leidenalg, the number users get from Leiden on the same graph), less
    the merges of communities joined by at least ``merge_connectivity`` (default 0.8) of the
    edges the configuration model expects between them, which undo modularity's cuts through
    homogeneous groups (:mod:`icongraph.communities`; ``float('inf')`` keeps Leiden's number);
    the I-Con fit then runs at that number (``n_clusters_``), seeded (``init='auto'``) from
    those communities' feature means (on the clustering suite, 3 seeds, mean ARI 0.604
    against 0.592 from the UMAP seed, without the seed's embedding); the communities are a
    candidate partition beside the fit's argmax (``partition_source_``): the soft fit lowers
    its soft loss by moving away from a hard partition of lower hard loss (tissue 4.338
    against 4.328, pbmc68k 5.686 against 5.674, seed 0), and sharpening it by annealing the
    temperature did not close the gap;
    ``method='supervised'`` takes the number of classes. The I-Con objective itself
    does not pick a number: with q's debiasing as a resolution, no one value served the
    benchmark's datasets, and greedily merging an over-clustered fit by the objective was
    fragile (it collapsed mnist1d and never merged the manifolds' sheets; see the README).

    The partition kept is refined on the exact loss of hard partitions
    (:mod:`icongraph.refine`: local moves as Leiden's, then re-bisection of neighbouring
    cluster pairs; ``hard_loss_``, ``refined_``): with the free head, uniform weights,
    ``q_alpha > 0`` (the default method's 0.2) and a target of at most
    ``refine.REFINE_MAX_EDGES`` edges (about 80,000 points at the defaults; above, the argmax
    of the soft fit is kept). On the clustering suite it lowered
    the hard loss on every dataset and seed, made the result the same for every seed on
    digits, pbmc68k and the manifolds, and raised the mean ARI at K on pbmc68k from 0.375 to
    0.399 and on the manifolds from 0.985 to 1.000 (a seed whose two clusters each held half
    of the same two sheets, which no single move undoes). The candidate of lower loss after
    local moving is the one re-bisected.

    Training stops before ``n_epochs`` once the assignments settle: when at most ``tol``
    (default 0.003) of the points changed cluster over the last 10 epochs, from epoch 150 on
    (``tol=None`` runs every epoch; ``n_epochs_`` is the number run). On the suite at K this
    halved the epochs on digits and the manifolds (which settle by 150) with ARI within 0.002
    of the 300 epochs' on every dataset; mnist1d and the many-cluster set never settle that
    far and run all 300.

    ``fit`` records ``n_features_in_`` and, for a DataFrame with string column names,
    ``feature_names_in_``; ``predict`` and ``predict_proba`` check new data against them.

    Reproducibility: on the CPU, a fit with a given ``random_state`` is bit-identical from run
    to run at the same thread count (the positives' gradients are added in index order, not
    with atomics). Across thread counts torch may split its matrix products and sums
    differently, so ``probabilities_`` agree to within 1e-6 and ``labels_`` are equal (tested
    at 1 and 2 threads, where they have been identical). On CUDA the scatters use atomics and
    a fit is not bit-reproducible.

    Parameters
    ----------
    n_clusters : int or None, default=None
        C, the number of clusters, in ``[1, N]``; None: chosen from the kNN graph (Leiden's
        count at ``resolution``, less the merges above ``merge_connectivity``; the number
        used is ``n_clusters_``).
    resolution : float, default=1.0
        Used with ``n_clusters=None``: the modularity resolution of the Leiden count.
    merge_connectivity : float, default=0.8
        Used with ``n_clusters=None``: communities joined by at least this fraction of the
        edges the configuration model expects between them are merged (``float("inf")``
        keeps Leiden's number).
    method : {"debiased", "infonce", "kmeans", "ncut", "supervised"}, default="debiased"
        The preset: the target ``p``, the kernel's weights and the debiasing (module
        docstring's table). ``"supervised"`` takes ``fit(X, y)``.
    n_neighbors : int, default=15
        Neighbours of the kNN graph.
    alpha : float in [0, 1) or None, default=None
        Debiasing of ``p``: ``p~ = (1 - alpha) p + alpha / N``; None: the method's (0.2 for
        ``"debiased"``, else 0).
    q_alpha : float in [0, 1) or None, default=None
        The same mixture applied to ``q``; None: the method's.
    propagation_steps : int or None, default=None
        Hops of neighbour propagation of the positives (1: the kNN edges only); None: the
        method's (2 for ``"debiased"``, else 1).
    propagation : {"walk", "reachable"}, default="walk"
        Random walks (``p = (P + ... + P^t) / t``) or a uniform draw from the points
        reachable in 1..t hops.
    perplexity : float, default=30.0
        Of the Gaussian target of ``method="kmeans"``.
    head : {"free", "linear", "mlp"}, tuple of int or torch.nn.Module, default="free"
        What is learned: free per-point logits (``predict`` places a new point by its kNN
        row), or a head on the standardised features mapping them to the C logits (a tuple:
        an MLP's hidden widths; a module is copied).
    init : {"auto", "embedding", "communities", "spectral", "kmeans", "kmeans++", "random"}, \
default="auto"
        The seed centres of the logits (:func:`~icongraph.seeding.seed_logits`): the clusters
        of a 2-D UMAP-preset embedding of the same graph, the communities that
        ``n_clusters=None`` counted, of spectral clustering of the graph, Lloyd's k-means on
        the features (best of 10), or its k-means++ draw alone; ``"random"``: no seed, the
        head's own random start. ``"auto"``: ``"communities"`` with ``n_clusters=None``, else
        ``"embedding"``.
    hidden : int, default=256
        Width of the ``"mlp"`` head's hidden layer.
    n_epochs, batch_size : int or None, default=None
        None: full batch and at most 300 epochs while ``N x positives x C`` fits in 2^24
        floats; above, mini-batches of 8,192 anchors and 600 Adam steps.
    tol : float in [0, 1] or None, default=0.003
        Training stops once at most this fraction of the points changed cluster over the
        last 10 epochs (checked from epoch 150); None runs every epoch.
    learning_rate : float or None, default=None
        Adam's step (None: the head's default); 0 switches the optimiser off.
    positives_per_anchor : int, default=4
        Positives sampled from ``p~`` per anchor and step.
    temperature : float, default=1.0
        ``phi = softmax(logits / temperature)``.
    n_init : int, default=1
        Restarts from seeds ``random_state + r``; the lowest loss is kept.
    metric, precomputed_knn, knn_method, knn_cache
        As for the embeddings (:class:`~icongraph.UMAP`): the kNN search's distance, a given
        kNN graph, the search method and a cache folder.
    random_state, device, n_jobs, verbose
        As for the embeddings (:class:`~icongraph.UMAP`): the seed, where the fit runs, the
        CPU threads and progress output.
    callbacks : list of callable or None, default=None
        Each called as ``cb(epoch, loss, probabilities)`` after every epoch; returning True
        stops the fit.

    Attributes
    ----------
    labels_ : ndarray of int, shape (N,)
        The cluster of each training point, ``argmax`` of ``probabilities_``.
    probabilities_ : ndarray of float32, shape (N, C)
        The soft assignments ``phi(c|i)``.
    n_clusters_ : int
        The number of clusters used (chosen with ``n_clusters=None``).
    cluster_sizes_ : ndarray of int, shape (C,)
        Points per cluster.
    empty_clusters_ : ndarray of int
        Clusters without a point (a warning names them).
    loss_ : float
        The loss on one shared sample of about a million (anchor, positive) pairs.
    loss_history_ : list of (int, float)
        ``(epoch, loss)`` of every epoch run.
    n_epochs_ : int
        The epochs run (fewer than ``n_epochs`` when the assignments settled, ``tol``).
    hard_loss_ : float
        The loss of ``labels_`` as a hard partition (one-hot assignments): exact when
        ``refined_``, else on the same pairs as ``loss_``.
    partition_source_ : {"fit", "communities"}
        Where ``labels_`` start from: the fit's argmax, or, with ``n_clusters=None``, the
        communities it started from when their (refined) hard loss is lower.
    refined_ : bool
        Whether ``labels_`` were refined on the exact hard loss (free head, uniform weights,
        ``q_alpha > 0``, a target of at most ``refine.REFINE_MAX_EDGES`` edges: about 80,000
        points at 15 neighbours and 2-step walks); when they differ from the fit's argmax,
        ``probabilities_`` are their one-hot.
    kernel_ : ClusterKernel
        The cluster kernel (temperature, ``q_alpha``).
    head_ : torch.nn.Module
        The learned logits (free, linear or MLP).
    graph_ : scipy.sparse.csr_matrix, shape (N, N) or None
        The target ``p`` before propagation and debiasing (None when labels alone gave the
        positives).
    knn_ : KNN or None
        The kNN graph searched or given.
    timings_ : dict of str to float
        Seconds of each phase.
    n_features_in_, feature_names_in_
        As scikit-learn's.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph import metrics
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> model = icongraph.Clustering(n_clusters=10, random_state=0).fit(X)
    >>> metrics.adjusted_rand_index(y, model.labels_) > 0.8
    True
    >>> model.predict(X[:3]).shape, model.predict_proba(X[:3]).shape
    ((3,), (3, 10))
    >>> icongraph.Clustering(n_clusters=None, random_state=0).fit(X).n_clusters_  # doctest: +SKIP
    12
    """

    _pyg_x, _pyg_attributes = "probabilities_", {"cluster": "labels_"}

    def __sklearn_tags__(self):
        """A clusterer of dense data (``y`` is used only by ``method='supervised'``)."""
        tags = super().__sklearn_tags__()
        tags.estimator_type = "clusterer"
        return tags

    @classmethod
    def _param_defaults(cls) -> dict:
        return {"n_clusters": None, "resolution": 1.0, "merge_connectivity": MERGE_CONNECTIVITY,
                "method": "debiased", "n_neighbors": 15,
                "alpha": None,
                "q_alpha": None, "propagation_steps": None, "propagation": "walk",
                "perplexity": 30.0,
                "head": "free", "init": "auto", "hidden": 256, "n_epochs": None,
                "tol": CONVERGENCE_TOL, "batch_size": None, "learning_rate": None,
                "positives_per_anchor": 4,
                "temperature": 1.0, "n_init": 1, "metric": "euclidean",
                "precomputed_knn": None, "knn_method": "auto", "knn_cache": None,
                "random_state": None,
                "device": "auto", "n_jobs": -1, "verbose": False, "callbacks": None}

    #: the rule of every parameter (:func:`~icongraph.validation.check_params`); callbacks are
    #: a list, as for the embeddings
    _rules = {
        "n_clusters": number(1, integer=True, allow_none=True),
        "resolution": number(0.0, low_open=True),
        "merge_connectivity": number(0.0, low_open=True), "method": choice(CLUSTER_METHODS),
        "n_neighbors": number(1, integer=True),
        "alpha": number(0.0, 1.0, high_open=True, allow_none=True),
        "q_alpha": number(0.0, 1.0, high_open=True, allow_none=True),
        "propagation_steps": number(1, integer=True, allow_none=True),
        "propagation": choice(PROPAGATIONS), "perplexity": number(0.0, low_open=True),
        "head": head_rule(HEADS), "init": choice(INITS), "hidden": number(1, integer=True),
        "n_epochs": number(1, integer=True, allow_none=True),
        "tol": number(0.0, 1.0, allow_none=True),
        "batch_size": number(1, integer=True, allow_none=True),
        "learning_rate": number(0.0, allow_none=True),  # 0 switches the optimiser off
        "positives_per_anchor": number(1, integer=True),
        "temperature": number(0.0, low_open=True), "n_init": number(1, integer=True),
        "callbacks": callbacks_rule("cb(epoch, loss, probabilities)"),
        **KNN_RULES, **RUNTIME_RULES,
    }

    # -- fitting ---------------------------------------------------------------------------
    def _preset(self) -> dict:
        """The method's composition with ``alpha``, ``q_alpha`` and ``propagation_steps``
        applied."""
        preset = dict(CLUSTER_METHODS[self.method])
        for name in ("alpha", "q_alpha"):
            if getattr(self, name) is not None:
                preset[name] = float(getattr(self, name))
        if self.propagation_steps is not None:
            preset["steps"] = int(self.propagation_steps)
        return preset

    def _spec(self, preset):
        """The target spec of the preset's kNN-based ``p``."""
        if preset["target"] == "gaussian":
            return PerplexityTarget(self.perplexity, symmetric=False)
        return UniformKNNTarget(self.n_neighbors)

    def _init(self) -> str:
        """``init`` with ``'auto'`` resolved: ``'communities'`` when the number of clusters is
        chosen on the graph (``n_clusters=None``, not ``method='supervised'``), else
        ``'embedding'``."""
        if self.init != "auto":
            return self.init
        chosen = self.n_clusters is None and self.method != "supervised"
        return "communities" if chosen else "embedding"

    def _seeded(self) -> bool:
        """Whether the heads start from seed centres (:func:`~icongraph.seeding.seed_logits`)."""
        return head_kind(self.head) in ("linear", "free") and self._init() != "random"

    def _prepare(self, X, preset, spec, with_knn: bool, n_clusters: int | None,
                 given=None) -> KNN | None:
        """The checks that need the data, before any work; returns the checked precomputed
        kNN graph (or None); ``with_knn`` False: the fit needs no kNN graph (every point
        labelled, ``method='supervised'``, or a ``given`` graph (N, N), whose mean degree
        counts as ``k`` in the memory estimate). Refused here: more clusters than points, or
        than the rows the seeding clusters; too few points for the neighbours; a kNN graph
        that does not match; ``init='spectral'`` without a graph; a fit that will not fit in
        memory (:meth:`_memory_estimate`; with ``n_clusters`` None, the number chosen later,
        for one cluster: :meth:`_choose_n_clusters` checks the chosen number)."""
        n = X.shape[0]
        if n_clusters is not None:
            self._check_count(n, n_clusters)
        if self.init == "spectral" and not with_knn and given is None:
            raise ValueError("init='spectral' clusters the kNN graph, and this fit has none "
                             "(every point labelled, method='supervised'); use "
                             "init='embedding' or 'kmeans'.")
        if self._init() == "communities" and (self.n_clusters is not None
                                               or self.method == "supervised"):
            raise ValueError("init='communities' seeds from the communities that "
                             "n_clusters=None counts on the graph; with a given n_clusters or "
                             "method='supervised' use init='auto', 'embedding' or 'kmeans'.")
        knn, k = None, 0 if given is None else -(-given.nnz // n)
        if with_knn:
            k = check_n_neighbors(spec.n_neighbors_for(n), n)
            if self.precomputed_knn is not None:
                knn = precomputed_knn(self.precomputed_knn, k, n, self.metric,
                                      spec.neighbors_reason)
                k = knn.n_neighbors
        self._check_fits(X, k, preset, n_clusters)
        return knn

    def _check_fits(self, X, k: int, preset: dict, n_clusters: int | None) -> None:
        """Refuses a fit on ``X`` (N, D) with ``k`` neighbours into ``n_clusters`` clusters
        (None: not chosen yet, the graph's part alone) that would not fit in memory
        (:meth:`_memory_estimate`)."""
        n = X.shape[0]
        parts = self._memory_estimate(X, k, preset, n_clusters or 1)
        what = (f"Clustering into {n_clusters} clusters on {n} x {X.shape[1]}" if n_clusters
                else f"the kNN graph of {n} x {X.shape[1]} before the number of clusters is "
                     "chosen")
        check_memory(what, parts,
                     "Lower n_clusters (or resolution, batch_size, positives_per_anchor, "
                     "propagation_steps), use head='linear' rather than 'free', or "
                     "propagation='walk' rather than 'reachable'.")

    def _check_count(self, n: int, n_clusters: int) -> None:
        """Refuses ``n_clusters`` above the ``n`` points or the seeding's rows."""
        if n_clusters > n:
            raise ValueError(f"n_clusters={n_clusters} exceeds the {n} points of X; "
                             "n_clusters must be an integer in [1, N] or None.")
        if self._seeded() and n_clusters > SEED_SAMPLE:
            raise ValueError(
                f"n_clusters={n_clusters} is more than the {SEED_SAMPLE} rows that "
                f"init={self._init()!r} seeds the centres from (k-means needs a row per centre); "
                f"use n_clusters <= {SEED_SAMPLE}, or init='random' or head='mlp', which start "
                "without seed centres.")

    def _memory_estimate(self, X, k: int, preset: dict, n_clusters: int) -> dict:
        """The peak bytes of a fit on ``X`` (N, D) with ``k`` neighbours into ``n_clusters``
        clusters, by item: what stays
        (the kNN lists, ``p``, the positive sampler's arrays and reachable lists, the
        standardised features, the head's parameters with their gradients and Adam's two
        moments) plus the largest of what comes and goes (the seeding's distances to the
        centres, one training step's ``N x C`` tensors and their gradients, the final
        probabilities, a chunk of reachable lists). Measured peaks were 5-90% above these
        figures (a free head, 2,000 clusters on 10k points: 1.31 GB measured, 1.24 GB
        estimated; 3,000 clusters on 30k points: 1.21 vs 1.10 GB; reachable lists of 5 steps:
        446 vs 336 MB), so a refusal means the fit would not fit."""
        n, d = X.shape
        c, ppa, f32 = n_clusters, self.positives_per_anchor, 4
        edges = n * k * (2 if preset["target"] == "symmetric" else 1)
        parts = {"kNN lists": 8 * n * k, "graph p and its sampler": 24 * edges + 40 * n,
                 "features": 2 * f32 * n * d}
        params = head_parameters(self.head, d, c, self.hidden, n)
        parts["head (weights, gradients, Adam state)"] = 4 * f32 * params
        transient = {}
        if self._seeded():
            sample = min(n, SEED_SAMPLE)
            transient["seeding"] = f32 * sample * c + (f32 * n * c if self.head == "free" else 0)
        batch, _ = self._schedule(n, n_clusters)
        rows = n if batch >= n else batch * (1 + ppa)  # rows of phi in one step
        transient["training step (N x C tensors)"] = f32 * c * (2 * rows + ppa * batch)
        # the probabilities on the device and as numpy, their argmax's one-hot for hard_loss_
        # (and the communities' one-hot with n_clusters=None)
        transient["final probabilities"] = 4 * f32 * n * c
        if self.propagation == "reachable" and preset["target"] != "labels":
            width = sum(k ** s for s in range(1, preset["steps"] + 1))
            entries = max(min(REACHABLE_CHUNK, n * width), width)
            transient["reachable lists"] = 80 * entries  # int64 hops, sort, ranks: ~10 copies
            if n * width <= REACHABLE_STORE_MAX:
                parts["stored reachable lists"] = f32 * n * width
        name, peak = max(transient.items(), key=lambda kv: kv[1])
        parts[name] = peak
        return parts

    def _graph(self, preset, spec, knn, given=None):
        """The graph p (CSR) of the target ``spec`` on ``knn``; ``given`` a ``Data``'s graph
        (N, N), normalised in place of the kNN graph (``knn`` None then)."""
        graph = row_normalize(given) if given is not None else spec.build(knn).graph
        if preset["target"] == "symmetric":
            graph = symmetrize(graph, "max")
        return graph

    def fit(self, X, y=None):
        """Cluster ``X`` (N, D); ``y`` (labels) is required by ``method='supervised'``: numbers
        (``-1`` for an unlabelled point, whose positives come from the uniform kNN graph) or
        strings, with at least 2 classes. ``X`` may also be a ``torch_geometric.data.Data``:
        its ``x`` is ``X``, its ``y`` the labels, its graph replaces the kNN graph as ``p``
        (:mod:`icongraph.pyg`).

        Every parameter is checked first, then what depends on the data (sizes, the seeding,
        a precomputed kNN graph, the memory the fit needs): bad input is refused before any
        work, and the caller's data is never modified."""
        check_params(self, self._rules)
        X, y, given = split_data(X, y, self.precomputed_knn is not None)
        return self._fit(X, y, given)

    def _fit(self, X, y, given, spec=None):
        """:meth:`fit` after its parameter check, on ``X`` (N, D), labels ``y`` (or None) and a
        ``given`` graph (N, N) (or None); ``spec`` a target (:mod:`icongraph.targets`) whose
        graph, built from the kNN graph, replaces the method's ``p`` (how
        :class:`~icongraph.compose.ICon` fits ``q="cluster"`` with any ``p``)."""
        preset = self._preset()
        spec = self._spec(preset) if spec is None else spec
        check_feature_names(self, X, reset=True)
        source = MappedFile.of(X)
        X, data_scale = check_data(X, allow_sparse=False, min_samples=2, scaling=self.metric)
        check_n_features(self, X.shape[1], reset=True)
        n = X.shape[0]
        seed = check_random_state(self.random_state)
        device = resolve_device(self.device)
        timings, verbose = {}, self.verbose
        with threads(self.n_jobs), phase("Clustering", verbose,
                                           whole_fit=True) as whole:
            labels = None
            if preset["target"] == "labels":
                if y is None:
                    raise ValueError("method='supervised' needs labels: fit(X, y).")
                labels = encode_labels(y, n, "y")
            with_knn = labels is None or bool((labels < 0).any())
            n_clusters = self.n_clusters
            if n_clusters is None and labels is not None:  # supervised: one per class
                n_clusters = len(np.unique(labels[labels >= 0]))
            knn = self._prepare(X, preset, spec, with_knn and given is None, n_clusters, given)
            if with_knn and given is None and knn is None:
                k = spec.n_neighbors_for(n)
                with phase("kNN search", verbose, f"{n} points, k={k}") as timed:
                    knn = knn_search(X, k, self.metric, method=self.knn_method, device=device,
                                     random_state=seed, n_jobs=self.n_jobs, verbose=verbose,
                                     cache_dir=self.knn_cache)
                timings["knn"] = timed.elapsed
            about = ("the labels" if not with_knn else "a given graph" if given is not None
                     else f"{preset['target']}, {knn.n_neighbors} neighbours per point")
            with phase("graph", verbose, about) as timed:
                if labels is not None:  # unlabelled points (-1) take kNN positives
                    graph = self._graph(preset, spec, knn, given) if with_knn else None
                    sampler = PositiveSampler(graph, n, device, labels=labels)
                else:
                    graph = self._graph(preset, spec, knn, given)
                    sampler = PositiveSampler(graph, n, device, preset["steps"],
                                              preset["alpha"], propagation=self.propagation)
            timings["graph"] = timed.elapsed
            communities = None
            if n_clusters is None:
                with phase("Leiden", verbose, f"resolution {self.resolution}") as timed:
                    n_clusters, communities = self._choose_n_clusters(X, knn, graph, seed,
                                                                      preset)
                    timed.note = f"{n_clusters} clusters"
                timings["n_clusters"] = timed.elapsed
            self.n_clusters_ = n_clusters
            start = time.perf_counter()
            self.mean_, self.scale_ = standardisation(X)
            features = self._standardise(X).to(device)
            batch, epochs = self._schedule(n, n_clusters)
            weights = None
            if preset["weights"] == "degree":
                degree = np.asarray(graph.sum(axis=0), dtype=np.float32).ravel()
                weights = torch.as_tensor(degree / degree.mean(), device=device)
            evaluation = self._evaluation_pairs(sampler, n, seed, device)
            # restart r seeds from seed + r (re-hashed past 2**32, where the RNGs stop)
            kernel = ClusterKernel(self.temperature, preset["q_alpha"])
            runs = [self._fit_head(features, sampler, weights, kernel, batch, epochs,
                                   seed=check_random_state(seed + r), knn=knn,
                                   evaluation=evaluation, data=X, partition=communities,
                                   run=f"restart {r + 1} of {self.n_init}, " if self.n_init > 1
                                   else "")
                    for r in range(self.n_init)]
            best = min(runs, key=lambda run: run["loss_"])  # as KMeans: keep the lowest loss
            if n_clusters > 1 and len(best["empty_clusters_"]) == n_clusters - 1:
                raise DivergenceError(
                    f"every point went to one cluster of the {n_clusters} asked for: the "
                    "optimisation collapsed. Lower learning_rate, use head='linear' (seeded "
                    "centres), or check that the data has structure at this scale.")
            best = self._kept_partition(best, communities, graph, weights, kernel, evaluation,
                                        seed)
            source.check("the fit")
            for name, value in best.items():
                setattr(self, name, value)
            timings["optimize"] = time.perf_counter() - start
            whole.note = f"{n} points, {n_clusters} clusters"
        if len(self.empty_clusters_):
            warnings.warn(f"{len(self.empty_clusters_)} of {self.n_clusters_} clusters are empty "
                          "at the end of training (see empty_clusters_); the data may support "
                          "fewer clusters.", stacklevel=2)
        self.graph_ = graph
        self.knn_ = knn
        self.kernel_ = kernel
        self.target_spec_ = spec
        self.timings_ = timings
        self._fit_X = X
        self.data_scale_ = data_scale
        return self

    def _schedule(self, n: int, n_clusters: int | None = None) -> tuple[int, int]:
        """(batch size, epochs) of :func:`~icongraph.loop.schedule` for ``n_clusters``
        (default ``self.n_clusters``): full batch and 300 epochs while ``N x positives x C`` is
        below ``FULL_BATCH_FLOATS``; otherwise mini-batches of 8192 anchors and enough epochs
        for 600 Adam steps (at least 2 passes over the data)."""
        n_clusters = self.n_clusters if n_clusters is None else n_clusters
        return schedule(n, self.positives_per_anchor * n_clusters, self.batch_size,
                        self.n_epochs)

    def _choose_n_clusters(self, X, knn: KNN | None, graph, seed: int,
                           preset: dict) -> tuple[int, np.ndarray]:
        """The number of clusters for ``n_clusters=None`` and the communities (N,) counted
        (what ``init='communities'`` seeds from): the communities of the unweighted
        symmetric kNN graph (of the edges of a given ``graph`` (N, N) when there is no kNN)
        that maximise modularity at ``resolution``
        (:func:`~icongraph.communities.leiden_labels`), less the merges of communities joined
        by at least ``merge_connectivity`` of the configuration model's edges
        (:func:`~icongraph.communities.merge_connected`), checked as a given ``n_clusters`` is.
        One community (no structure at this resolution) is kept with a warning."""
        if knn is not None:
            edges, k = unweighted_knn_graph(knn), knn.n_neighbors
        else:
            edges = symmetrize((graph > 0).astype(np.float32), "max")
            k = -(-graph.nnz // graph.shape[0])
        communities = leiden_labels(edges, self.resolution, seed % LEIDEN_SEEDS)
        communities = merge_connected(edges, communities, self.merge_connectivity)
        n_clusters = int(communities.max()) + 1
        if n_clusters == 1:
            warnings.warn(f"n_clusters=None found one community at resolution="
                          f"{self.resolution} (merge_connectivity={self.merge_connectivity}): "
                          "every point is in one cluster. Raise resolution or "
                          "merge_connectivity, or give n_clusters.", stacklevel=3)
        self._check_count(X.shape[0], n_clusters)
        self._check_fits(X, k, preset, n_clusters)
        return n_clusters, communities

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((X - self.mean_) / self.scale_)

    def _evaluation_pairs(self, sampler, n: int, seed: int, device):
        """The (anchor, positive) pairs every restart's final loss is taken on, drawn once per
        fit from ``random_state`` (common random numbers: restarts differ by their fit, not by
        their sample): all anchors up to ``EVAL_CHUNK`` points (else a uniform subset), each
        with ``EVAL_PAIRS / anchors`` positives (at least ``positives_per_anchor``). Returns
        anchors (B,) and positives (R, B)."""
        gen = torch.Generator(device=device).manual_seed(seed + (1 << 32))
        anchors = torch.arange(n, device=device) if n <= EVAL_CHUNK else torch.randperm(
            n, generator=gen, device=device)[:EVAL_CHUNK]
        repeats = max(self.positives_per_anchor, EVAL_PAIRS // len(anchors))
        return anchors, sampler.sample(anchors, gen, repeats).view(repeats, -1)

    def _evaluation_loss(self, probabilities, weights, kernel, evaluation) -> float:
        """The loss of assignments ``probabilities`` (N, C) (exact cluster masses) on the
        ``evaluation`` pairs, in chunks of anchors of at most ``FULL_BATCH_FLOATS`` floats."""
        anchors, positives = evaluation
        n, repeats = probabilities.shape[0], positives.shape[0]
        mass = cluster_mass(probabilities, weights)
        step = max(1, FULL_BATCH_FLOATS // (repeats * probabilities.shape[1]))
        total = torch.zeros((), dtype=torch.float64, device=probabilities.device)
        for lo in range(0, len(anchors), step):
            cols = positives[:, lo:lo + step].reshape(-1)
            w_p = None if weights is None else weights[cols]
            chunk = kernel.pair_loss(probabilities[anchors[lo:lo + step]], probabilities[cols],
                                     mass, w_p, n)
            total += chunk.double() * cols.numel()
        return float(total) / positives.numel()

    def _kept_partition(self, best: dict, communities, graph, weights, kernel, evaluation,
                        seed: int) -> dict:
        """The fitted attributes ``best`` with the partition kept, ``hard_loss_`` and
        ``partition_source_``. The candidates are the fit's argmax and, with
        ``init='communities'`` and the free head, the communities (N,) it started from (on the
        clustering suite the soft fit's argmax had a higher hard loss than its communities on 5
        of 6 datasets: the soft optimum's argmax is not the hard optimum). With the free head,
        uniform weights and ``learning_rate != 0``, while the explicit target fits
        ``REFINE_MAX_EDGES``, each candidate is moved locally on the exact hard loss
        (:func:`~icongraph.refine.local_moving`) and the lowest is then re-bisected
        (:func:`~icongraph.refine.refine`); ``hard_loss_`` is then exact, else taken on the
        shared ``evaluation`` pairs. The lowest is kept; when it is not the argmax of
        ``probabilities_`` those become its one-hot, which ``predict`` averages over the
        neighbours of new points (a head's ``predict`` would disagree with refined labels, so
        heads keep their argmax)."""
        n_clusters, device = self.n_clusters_, evaluation[0].device
        candidates = {"fit": np.asarray(best["labels_"])}
        # learning_rate=0 switches every optimiser off, the refinement's too
        free = self.head == "free" and n_clusters > 1 and self.learning_rate != 0
        if free and communities is not None:
            candidates["communities"] = np.asarray(communities)
        exact = self._exact_hard_loss(graph, weights) if free else None
        if exact is not None:
            with phase("refine", self.verbose, f"{len(candidates)} partition(s), "
                                               f"{exact.pairs.nnz} target edges") as timed:
                # every candidate moved locally, the lowest then re-bisected (the costly part)
                scored = {name: local_moving(exact, labels, n_clusters, seed)
                          for name, labels in candidates.items()}
                source = min(scored, key=lambda name: scored[name][1])
                scored = {source: refine(exact, graph, scored[source][0], n_clusters, seed,
                                         moved=True)}
                timed.note = f"{source}: loss {scored[source][1]:.6g}"
        else:
            def hard_loss(labels: np.ndarray) -> float:
                onehot = torch.nn.functional.one_hot(
                    torch.as_tensor(labels, device=device).long(), n_clusters).float()
                return self._evaluation_loss(onehot, weights, kernel, evaluation)

            scored = {name: (labels, hard_loss(labels)) for name, labels in candidates.items()}
        source = min(scored, key=lambda name: scored[name][1])  # "fit" first on a tie
        labels, value = scored[source]
        kept = {**best, "hard_loss_": value, "partition_source_": source,
                "refined_": exact is not None}
        if (labels == best["labels_"]).all():
            return kept
        sizes = np.bincount(labels, minlength=n_clusters)
        probabilities = np.eye(n_clusters, dtype=best["probabilities_"].dtype)[labels]
        return {**kept, "labels_": labels, "probabilities_": probabilities,
                "cluster_sizes_": sizes, "empty_clusters_": np.flatnonzero(sizes == 0)}

    def _exact_hard_loss(self, graph, weights) -> HardLoss | None:
        """The exact hard loss (:class:`~icongraph.refine.HardLoss`) on the method's target
        built from ``graph`` (N, N), or None: with degree weights (``method='ncut'``), labels
        as the target, ``q_alpha = 0`` (a pair across clusters then costs ``-log eps``, a
        constant of the implementation: on the suite's ablation, refining on it merged toward
        one giant cluster where ``alpha > 0``, mnist1d ARI 0.088 -> 0.009), or a target of more
        than ``REFINE_MAX_EDGES`` stored edges (bounded before it is built)."""
        preset = self._preset()
        if (weights is not None or preset["target"] == "labels" or graph is None
                or preset["q_alpha"] == 0):
            return None
        if target_edges(graph, preset["steps"]) > REFINE_MAX_EDGES:
            return None
        return HardLoss(walk_target(graph, preset["steps"], self.propagation), preset["alpha"],
                        preset["q_alpha"])

    def _fit_head(self, features, sampler, weights, kernel, batch, epochs, seed, knn,
                  evaluation, data, partition=None, run: str = "") -> dict:
        """One training run from ``seed`` on standardised ``features`` (N, D) (row ids for the
        free head; ``data`` the raw rows, for the embedding seed) with the cluster ``kernel``
        (:class:`~icongraph.kernels.ClusterKernel`) and its weights ``w`` (None: uniform);
        returns the fitted attributes, ``loss_`` taken on the shared ``evaluation`` pairs
        (:meth:`_evaluation_pairs`); ``partition`` (N,) the communities that
        ``init='communities'`` seeds from. Each restart seeds afresh (for ``init='embedding'``
        a new embedding of the graph from its own seed; the communities are counted once per
        fit, so their restarts differ by their sampled positives).

        Full batch (``batch >= N``): the cluster masses are exact every step. Mini-batches of
        ``batch`` anchors: the masses are a running (exponential) average of the batch
        estimates ``N / B sum_{k in batch} w_k phi_k``, and their gradient is the current
        batch's, unbiased for the full-data gradient (straight-through: value from the average,
        gradient from the batch). Memory is O(batch x positives x C), never O(N x C) tensors
        with gradients. The epochs run on :func:`~icongraph.loop.train`, the loss read every
        epoch; callbacks get the probabilities of the last batch. The seeding and the epochs are
        the phases ``"seed"`` and ``"training"``, their start lines beginning with ``run``."""
        n, device = features.shape[0], features.device
        # one cluster: every probability is 1 whatever the head, so nothing is seeded or trained
        n_clusters = self.n_clusters_
        single = n_clusters == 1
        logits = None  # the mlp head and init='random' start from torch's default init
        if self._seeded() and not single:
            with phase("seed", self.verbose, f"{run}init={self._init()!r}, "
                                             f"{n_clusters} centres"):
                logits = seed_logits(features, n_clusters, seed, self._init(), knn=knn,
                                     metric=self.metric, n_jobs=self.n_jobs, data=data,
                                     graph=sampler.graph, partition=partition)
        head = make_head(self.head, features, n_clusters, self.hidden, seed, logits)
        head = head.to(device)
        inputs = torch.arange(n, device=device) if self.head == "free" else features
        lr = (LEARNING_RATES[head_kind(self.head)] if self.learning_rate is None
              else self.learning_rate)
        full = batch >= n
        # a mini-batch touches B (1 + R) of the N rows of free logits: Adam on those rows only
        # (RowAdam), not a dense N x C update per step (1 s a step at 1M points, 100 clusters);
        # on CUDA, finding the distinct rows (torch.unique) waits for the device once a step
        rows_adam = RowAdam(head.weight.data, lr) if (
            self.head == "free" and not full and lr > 0) else None
        opt = None if rows_adam else torch.optim.Adam(head.parameters(), lr=lr)
        gen = torch.Generator(device=device).manual_seed(seed)
        ppa = self.positives_per_anchor
        running = phi = None

        def step(epoch: int, with_loss: bool) -> float | None:
            """One pass over the anchors (one Adam step per batch); the last batch's loss."""
            nonlocal running, phi
            order = torch.arange(n, device=device) if full else torch.randperm(
                n, generator=gen, device=device)
            for lo in range(0, n, batch):
                anchors = order[lo:lo + batch]
                positives = sampler.sample(anchors, gen, ppa)
                if full:
                    phi = kernel.assignments(head(inputs))
                    mass = cluster_mass(phi, weights)
                    # index_select: its backward adds the positives' gradients in index
                    # order (index_add_); phi[positives] adds them with atomics across CPU
                    # threads, in an order that changes from run to run
                    phi_a, phi_p = phi, phi.index_select(0, positives)
                else:
                    ids = torch.cat([anchors, positives])
                    if rows_adam:  # the touched rows as a leaf; index_select adds in order
                        touched, where = torch.unique(ids, return_inverse=True)
                        leaf = head.weight.detach().index_select(0, touched).requires_grad_()
                        phi = kernel.assignments(leaf.index_select(0, where))
                    else:
                        phi = kernel.assignments(head(inputs[ids]))
                    phi_a, phi_p = phi[:len(anchors)], phi[len(anchors):]
                    w_a = None if weights is None else weights[anchors]
                    estimate = cluster_mass(phi_a, w_a) * (n / len(anchors))
                    value = estimate.detach()
                    running = value if running is None else (
                        MASS_MOMENTUM * running + (1 - MASS_MOMENTUM) * value)
                    mass = running + (estimate - value)
                w_p = None if weights is None else weights[positives]
                loss = kernel.pair_loss(phi_a, phi_p, mass, w_p, n)
                if rows_adam:
                    loss.backward()
                    rows_adam.step(touched, leaf.grad)
                else:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            return float(loss.detach()) if with_loss else None

        watched = evaluation[0]  # all points up to EVAL_CHUNK, else a fixed sample

        def labels() -> torch.Tensor:
            with torch.no_grad():  # the temperature is positive: the logits' argmax is phi's
                return head(inputs[watched]).argmax(1)

        converged = Converged(labels, self.tol, CONVERGENCE_EVERY, CONVERGENCE_MIN_EPOCHS)
        hooks = [FiniteGuard(remedy=" or raise temperature"), Callbacks(self.callbacks),
                 converged]
        with phase("training", self.verbose, f"{run}{n_clusters} clusters, at most {epochs} "
                                             f"epochs, batch {min(batch, n)}") as timed:
            state = train(step, 0 if single else epochs, hooks=hooks, loss_every=1,
                          lr_at=lambda epoch: lr, view=lambda: phi.detach(), desc="cluster",
                          verbose=self.verbose)
            if state.losses:
                timed.note = f"{state.epoch + 1} epochs, loss {state.losses[-1][1]:.6g}"
        with torch.no_grad():
            probabilities = torch.cat([kernel.assignments(head(inputs[lo:lo + EVAL_CHUNK]))
                                       for lo in range(0, n, EVAL_CHUNK)])
            final = self._evaluation_loss(probabilities, weights, kernel, evaluation)
        probabilities = probabilities.cpu().numpy()
        labels = probabilities.argmax(1)
        sizes = np.bincount(labels, minlength=n_clusters)
        empty = np.flatnonzero(sizes == 0)
        return {"head_": head, "probabilities_": probabilities, "labels_": labels,
                "loss_history_": state.losses, "loss_": final,
                "n_epochs_": state.epoch + 1, "cluster_sizes_": sizes,
                "empty_clusters_": empty}

    def fit_predict(self, X, y=None):
        return self.fit(X, y).labels_

    def predict_proba(self, X):
        """Cluster probabilities of new points: the head on their standardised features (for
        ``head='free'``, ``sum_j p(j|a) phi(.|j) / sum_j p(j|a)`` over the training points,
        with ``p(.|a)`` the method's target rows of new points,
        :meth:`~icongraph.targets.PerplexityTarget.to_new` or
        :meth:`~icongraph.targets.UniformKNNTarget.to_new`: the mean over the
        ``n_neighbors`` nearest for the kNN methods)."""
        check_is_fitted(self, "head_")
        X = check_new_data(self, X)
        if self.head == "free":
            data = self._training_data("predict with head='free'")
            spec = self.target_spec_
            if isinstance(spec, UniformKNNTarget):  # a supervised fit may have < k + 1 rows
                spec = replace(spec, n_neighbors=min(spec.n_neighbors, len(data)))
            rows = spec.to_new(KNNIndex(data, self.metric), X)
            neighbours, weights = new_lists(rows)
            w = weights.astype(np.float64)
            w /= w.sum(axis=1, keepdims=True)
            return np.einsum("nk,nkc->nc", w, self.probabilities_[neighbours]).astype(
                self.probabilities_.dtype)
        device = next(self.head_.parameters()).device
        with torch.no_grad():
            logits = self.head_(self._standardise(X).to(device))
            return ClusterKernel(self.temperature).assignments(logits).cpu().numpy()

    def predict(self, X):
        return self.predict_proba(X).argmax(1)
