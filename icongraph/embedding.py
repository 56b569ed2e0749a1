"""scikit-learn estimators for embeddings: the presets :class:`SNE`, :class:`TSNE` and
:class:`UMAP` (named compositions of a target, a kernel and an estimator of the normaliser) and
their shared fit; the general composition :class:`~icongraph.compose.ICon` builds on it.

Parameters shared by every estimator are declared once in :data:`COMMON_PARAMS`; a preset adds
only its own (``perplexity``, ``min_dist``, ...) and says how they compose in ``_composition``.
``None`` for a shared parameter means "the preset's default" (``_defaults``).

Every estimator is supervised or semi-supervised through ``fit(X, y)``: ``y`` (N,) class
labels (numbers with ``-1`` for an unlabelled point, or strings) mix a same-class graph into
``p`` with umap-learn's ``target_weight`` (0: the data graph only, 1: the label graph only;
default 0.5). With ``w_i = target_weight`` for a labelled point of a class of at least 2
members (else 0) and ``n_c`` its class's size::

    p~(j|i) = (1 - alpha) [(1 - w_i) p(j|i) + w_i m_i [y_j = y_i] / (n_c - 1)] + alpha m_i / (N - 1)

so each row keeps its mass ``m_i``; the same-class part is sampled (a few uniform class members
per labelled anchor and epoch), never stored as ``n_c^2`` edges
(:func:`~icongraph.targets.with_labels`). umap-learn instead takes a fuzzy intersection: it
only reweights the kNN edges, multiplying a between-class edge by ``exp(-far_dist)`` with
``far_dist = 2.5 / (1 - target_weight)`` and an edge to an unlabelled point by ``exp(-1)``, so
no pair outside the kNN graph ever attracts. Here the two graphs are a mixture (a sum): every
kNN edge of a labelled row keeps ``1 - w`` of its weight, whatever the classes, and the class's
other members share ``w`` of the row's mass, so ``target_weight=1`` is SupCon-like (a labelled
row attracts only its class) and unlabelled rows keep their kNN edges.

``propagation_steps`` ``t`` (default 1: ``p`` as built) replaces the graph by the mean of the
walks of 1..t steps on it, ``(P + ... + P^t) / t`` of the row-stochastic ``P = D^-1 G`` with each
row keeping its mass and symmetric targets symmetrised again
(:func:`~icongraph.targets.propagate`), before labels and ``alpha``. It is an explicit sparse
matrix power (up to ``N x min(N, k^t)`` edges, checked against the memory before any work): a
fit's work per epoch grows with those edges. ``transform`` places new points from their
one-step rows. :class:`~icongraph.clustering.Clustering` takes the same parameter and draws
the same walks instead of storing them.

What is learned is the free embedding (``encoder=None``, an (N, d) table) or an encoder
``y = f_theta(x)`` of the standardised features ``x = (X - mean) / scale``
(:func:`~icongraph.heads.standardisation`): ``encoder="linear"``, ``"mlp"``, a tuple of an
MLP's hidden widths, or any ``torch.nn.Module`` mapping (B, D) to (B, n_components) (deep-copied;
the fitted copy is ``encoder_``). The objective and its sampled gradient ``dL/dy`` are the
free embedding's; each epoch steps ``theta`` along ``(dy/dtheta)^T dL/dy`` with Adam
(:class:`~icongraph.optimize.EncoderStepper`; on the sphere ``y = f / |f|``), so
``transform`` of new points is ``f`` of their features, no optimisation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch

from ._transform_engine import partial_arrays, point_keys
from .heads import encoder_rule, make_encoder, standardisation
from .init import (
    INITS,
    PCA_BLOCK_ROWS,
    check_init_array,
    initialize,
    interpolate_from_sample,
    pca_init,
    rescale,
)
from .kernels import Kernel, StudentKernel, UMAPKernel, get_kernel
from .knn import (
    KNN,
    KNN_RULES,
    KNNIndex,
    _resolve_method,
    knn_search,
    nndescent_schedule,
    precomputed_knn,
)
from .memory import check_memory
from .objective import Objective, check_composition, exact_loss
from .optimize import OPTIMIZER_RULES, encode, optimize, optimize_new
from .params import ParamsMixin, TransformerOutputMixin
from .persistence import PersistenceMixin
from .progress import phase
from .pyg import GraphOutputMixin, split_data
from .runtime import RUNTIME_RULES, resolve_device, threads
from .scaling import DataScale
from .sphere import normalise_
from .targets import (
    FuzzyTarget,
    PerplexityTarget,
    PrecomputedTarget,
    Target,
    debias,
    new_lists,
    propagate,
    propagation_bytes,
    with_labels,
)
from .validation import (
    MappedFile,
    boolean,
    check_data,
    check_feature_names,
    check_is_fitted,
    check_n_features,
    check_new_data,
    check_params,
    check_random_state,
    encode_labels,
    number,
    release_mapped_pages,
)

__all__ = ["SNE", "TSNE", "UMAP", "COMMON_PARAMS"]

#: Shared parameters and their defaults (None: the preset decides, see ``_defaults``).
COMMON_PARAMS = {
    "n_components": 2,
    "metric": "euclidean",
    "n_epochs": None,
    "learning_rate": None,
    "optimizer": None,
    "momentum": None,
    "schedule": None,
    "n_negatives": None,
    "edge_sampling": None,
    "transform_epochs": None,
    "init": None,
    "encoder": None,
    "alpha": 0.0,
    "q_alpha": 0.0,
    "propagation_steps": 1,
    "target_weight": 0.5,
    "precomputed_knn": None,
    "knn_method": "auto",
    "knn_cache": None,
    "random_state": None,
    "device": "auto",
    "n_jobs": -1,
    "verbose": False,
    "callbacks": None,
}


def _init_rule(name, value):
    """None, a name of :data:`EMBEDDING_INITS`, or a 2-D array (its shape is checked against
    the data in ``fit``)."""
    if value is None or (isinstance(value, str) and value in EMBEDDING_INITS):
        return
    if isinstance(value, str) or np.ndim(value) != 2:
        got = repr(value) if isinstance(value, str) else (
            f"{type(value).__name__} of shape {np.shape(value)}")
        raise ValueError(f"{name} must be one of {EMBEDDING_INITS} or a 2-D array "
                         f"(n_samples, n_components); got {got}.")


#: the rule of every shared parameter (:func:`~icongraph.validation.check_params`); a preset
#: adds its own in ``_own_rules``. Callbacks are a list: a bare function is refused with the
#: remedy (``callbacks=[f]``), as Keras and Lightning take lists.
COMMON_RULES = {
    "n_components": number(1, integer=True),
    **OPTIMIZER_RULES,
    "n_negatives": number(integer=True, allow_none=True),  # <= 0: exact mode
    "edge_sampling": boolean(allow_none=True),
    "transform_epochs": number(0, integer=True, allow_none=True),
    "init": _init_rule,
    "encoder": encoder_rule,
    "alpha": number(0.0, 1.0, high_open=True),
    "q_alpha": number(0.0, 1.0, high_open=True),
    "propagation_steps": number(1, integer=True),
    "target_weight": number(0.0, 1.0),
    **KNN_RULES,
    **RUNTIME_RULES,
}
#: ``kl_divergence_`` (dense, computed on first access) is available up to this many points.
EXACT_LOSS_MAX_SAMPLES = 2000
#: the optimiser settings a fit with an encoder replaces (before the user's own apply): Adam
#: on the encoder's parameters, in its own units; the preset's epochs, schedule and
#: exaggeration stay. Held-out 10-NN accuracy (digits, train 1300 / test 497, seed 0; MLP
#: (256, 256) / (128, 128)) at Adam's step 1e-3 / 1e-2 / 3e-2: UMAP 0.891 / 0.920 / 0.936 and
#: - / 0.913 / 0.936; TSNE - / 0.938 / 0.893 and - / 0.944 / 0.913 (t-SNE's constant schedule;
#: linear decay did not help it: 0.871 at 3e-2). More epochs overfit the 1,300 points (UMAP
#: (128, 128) at 3e-3: 0.901 in 500 epochs, 0.871 in 1,000); regressing the PCA start first
#: (300 Adam steps) did not help (0.926 vs 0.936).
ENCODER_SETTINGS = {"optimizer": "adam", "learning_rate": 1e-2, "momentum": 0.0,
                    "max_step": np.inf, "recentre": False}
#: ``init='coarse'``: the sample is 1 / COARSE_FACTOR of the data and at least COARSE_MIN_SAMPLE
#: points. Opt-in: on real tables it keeps less local structure than PCA and 200 epochs
#: (see ``UMAP``).
COARSE_FACTOR = 20
COARSE_MIN_SAMPLE = 1000
EMBEDDING_INITS = INITS + ("coarse",)


#: numpydoc of the parameters every embedding shares (:data:`COMMON_PARAMS`), put at the end
#: of each estimator's Parameters section (:func:`_shared_docs`)
COMMON_PARAMETERS_DOC = """\
    n_components : int, default=2
        Dimension of the embedding (at least 2 for the kernels on the sphere).
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance of the kNN search on ``X``.
    n_epochs : int or None, default=None
        Epochs of the optimisation; None: the preset's (UMAP 500 up to 10,000 points, 300 up
        to 100,000, 200 above, 120 after ``init="coarse"``; t-SNE 750 with the exaggerated
        ones; SNE 500 up to 10,000, 200 above).
    learning_rate : float or None, default=None
        The step; None: the preset's. With ``optimizer="gains"`` (t-SNE) it is in openTSNE's
        and scikit-learn's units and None is openTSNE's ``"auto"`` (``N / exaggeration``).
        0 switches the optimiser off.
    optimizer : {"sgd", "adam", "gains"} or None, default=None
        The step rule: SGD with momentum, Adam, or t-SNE's per-coordinate gains; None: the
        preset's (with an encoder: Adam).
    momentum : float in [0, 1) or None, default=None
        Momentum of ``"sgd"`` and ``"gains"``; None: the preset's.
    schedule : {"linear", "constant", "cosine"} or None, default=None
        Decay of the learning rate over the epochs; None: the preset's.
    n_negatives : int or None, default=None
        Negatives sampled per anchor and epoch for the normaliser and the repulsion; 0 or
        less enumerates every other point (exact, small data only); None: the preset's (UMAP
        20 up to 10,000 points, umap-learn's own count up to 100,000, 10 above).
    edge_sampling : bool or None, default=None
        Visit an edge in ``w_e / max w`` of the epochs with weight ``max w`` (umap-learn's
        edge sampling) instead of every epoch with weight ``w_e``; None: the preset's.
    transform_epochs : int or None, default=None
        Epochs of :meth:`transform`'s optimisation of new points against the frozen
        embedding (None: ``TRANSFORM_EPOCHS``, 250, openTSNE's; 0: the ``p``-weighted mean of
        their neighbours' positions).
    init : {"pca", "spectral", "random", "coarse"}, array of shape (N, n_components) or None, \
default=None
        The start of a free embedding; None: the preset's (PCA with data, the spectral
        layout of a graph without ``X``; UMAP coarse from ``UMAP.COARSE_DEFAULT_SAMPLES``,
        2M, points). ``"coarse"``: fit a twentieth of the rows (at least 20,000 points
        needed), spread the layout through ``p``, refine briefly.
    encoder : {"linear", "mlp"}, tuple of int, torch.nn.Module or None, default=None
        None: a free embedding (an (N, d) table). Otherwise a parametric embedding ``y = f(x)``
        of the standardised features: a linear map, an MLP (hidden 128, 128), an MLP with
        these hidden widths, or any module mapping (B, D) to (B, n_components) (copied; the
        trained copy is ``encoder_``); :meth:`transform` is then ``f`` of new points.
    alpha : float in [0, 1), default=0.0
        Debiasing of ``p``: ``p~(.|i) = (1 - alpha) p(.|i) + alpha m_i U_i``, ``m_i`` the
        row's mass and ``U_i`` uniform on the other points.
    q_alpha : float in [0, 1), default=0.0
        Debiasing of ``q``, the same mixture: ``q~(.|i) = (1 - q_alpha) q(.|i) + q_alpha U_i``
        (per-anchor normaliser; with a global one ``q~ = (1 - q_alpha) q + q_alpha U``, ``U``
        uniform on the pairs), and the loss is ``KL(p~ || q~)``. Each attracting pair is
        weighted by ``rho = (1 - q_alpha) q / q~`` and the normaliser by ``S_i = sum_j p~_ij
        rho_ij``: attraction fades where ``q`` is already below the uniform floor. With a KL
        normaliser only (``"per_anchor"``, ``"global"`` and ``"fft"``, whose sums over all
        pairs then carry ``rho`` at the current ``Z``): SNE, TSNE and ``ICon``; refused by
        UMAP's ``"neg"``, which has no normaliser. :meth:`transform` places new points
        without it.
    propagation_steps : int, default=1
        Neighbour propagation of ``p`` before the debiasing:
        ``P_t = (P + ... + P^t) / t`` of the row-normalised target, its diagonal dropped, each
        row keeping its mass (symmetrised again for a symmetric target;
        :func:`~icongraph.targets.propagate`); an explicit sparse power, refused before any
        work when it would not fit in memory. 1: ``p`` as built.
    target_weight : float in [0, 1], default=0.5
        Used by ``fit(X, y)`` only: the share of a labelled row's mass given to its class
        (0: the data graph only, 1: the label graph only; umap-learn's name and range).
    precomputed_knn : tuple (indices, distances), KNN, sparse matrix or None, default=None
        A kNN graph of ``X`` to use instead of searching: ``(indices, distances)`` arrays
        (N, k), a fitted ``knn_``, :func:`~icongraph.knn.knn_search`'s result, or a sparse
        kNN-distance matrix such as scanpy's ``obsp["distances"]``. Fewer neighbours than the
        target needs are used with a warning.
    knn_method : {"auto", "exact", "nndescent"}, default="auto"
        The kNN search: exact blocked search (below 20,000 points, or on CUDA) or
        pynndescent.
    knn_cache : str, path or None, default=None
        A folder where the kNN graph is stored, keyed by a fingerprint of the data, the
        metric and the search, and read back by a later fit of the same data.
    random_state : int, numpy RandomState or Generator, or None, default=None
        Seed of every random draw; a given seed gives the same embedding on any number of
        CPU threads. None: a fresh seed.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the optimisation runs; ``"auto"``: CUDA when available.
    n_jobs : int, default=-1
        CPU threads of numba and torch (-1: all cores).
    verbose : bool, default=False
        Progress output during the fit.
    callbacks : list of callable or None, default=None
        Each called as ``cb(epoch, loss, embedding)`` after every epoch; returning True
        stops the fit. A bare function is refused: pass ``[f]``.
"""

#: numpydoc of the fitted attributes every embedding shares, the Attributes section after the
#: parameters (:func:`_shared_docs`)
COMMON_ATTRIBUTES_DOC = """\

    Attributes
    ----------
    embedding_ : ndarray of float32, shape (N, n_components)
        The embedding of the training points (unit rows for the kernels on the sphere).
    graph_ : scipy.sparse.csr_matrix, shape (N, N)
        The target ``p`` as fitted (row ``i`` is ``p(.|i)``, labels and debiasing aside).
    knn_ : KNN or None
        The kNN graph searched or given (None when ``p`` was a given graph).
    kernel_ : Kernel
        The kernel ``q`` as fitted (a learned temperature holds its fitted value).
    target_ : Target
        The fitted target, with the labels' mixture and the debiasing.
    loss_ : float
        The sampled objective ``L`` at the last epoch.
    loss_history_ : list of (int, float)
        ``(epoch, loss)`` pairs of the fit.
    kl_divergence_ : float or None
        The exact objective over the target's mass (for t-SNE openTSNE's ``KL(P || Q)``),
        computed on first access, up to ``EXACT_LOSS_MAX_SAMPLES`` points (None above).
    timings_ : dict of str to float
        Seconds of each phase: ``"knn"``, ``"graph"``, ``"init"``, ``"optimize"``.
    peak_memory_ : dict of str to int or None
        The process's peak resident memory (bytes) at the end of each timed phase (a phase's
        own peak where it exceeds the earlier ones'); None where the platform does not say.
    encoder_ : torch.nn.Module or None
        The trained encoder (None for a free embedding).
    n_features_in_ : int
        Features of ``X`` seen by ``fit``.
    feature_names_in_ : ndarray of str
        Column names of a DataFrame ``X`` with string column names (absent otherwise).
"""


def _shared_docs(cls):
    """Put :data:`COMMON_PARAMETERS_DOC` and :data:`COMMON_ATTRIBUTES_DOC` into the class
    docstring at its placeholder ``{common_parameters_and_attributes}``: one text for what
    the estimators share."""
    cls.__doc__ = cls.__doc__.replace("    {common_parameters_and_attributes}\n",
                                      COMMON_PARAMETERS_DOC + COMMON_ATTRIBUTES_DOC)
    return cls


class _Embedding(PersistenceMixin, GraphOutputMixin, TransformerOutputMixin, ParamsMixin):
    """Fit logic shared by every embedding estimator. Subclasses declare ``_own_params``
    (name -> default) and implement ``_composition() -> (target_spec, kernel, estimator)``."""

    _own_params: dict = {}
    _own_rules: dict = {}

    @classmethod
    def _param_defaults(cls) -> dict:
        return {**cls._own_params, **COMMON_PARAMS}

    @classmethod
    def _param_rules(cls) -> dict:
        """The rule of every parameter (:func:`~icongraph.validation.check_params`)."""
        return {**cls._own_rules, **COMMON_RULES}

    def __sklearn_tags__(self):
        """A transformer of dense or sparse data whose output is always float32."""
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        tags.input_tags.sparse = True
        return tags

    # -- what subclasses define -------------------------------------------------------------
    def _composition(self):
        raise NotImplementedError

    def _q_alpha(self) -> float:
        """The debiasing of ``q`` as fitted."""
        return self.q_alpha

    def _auto_init(self, n_samples: int | None, has_data: bool, own_graph: bool) -> str:
        """The init used when ``init=None`` on ``n_samples`` points: PCA with data, the
        spectral layout without; ``own_graph`` tells whether the estimator builds ``p`` from
        the data itself (not a given graph), for presets whose choice depends on it."""
        return "pca" if has_data else "spectral"

    def _resolve_init(self, n_samples: int | None, has_data: bool, own_graph: bool = True):
        """``init`` as fitted: the preset's choice for None (:meth:`_auto_init`), a name, or
        the array checked against the layout's shape (when ``n_samples`` is known); without
        data PCA becomes spectral and coarse is an error, as is coarse on fewer than
        ``COARSE_FACTOR * COARSE_MIN_SAMPLE`` points."""
        if self.init is None:
            return self._auto_init(n_samples, has_data, own_graph)
        if not isinstance(self.init, str):
            if n_samples is None:  # a precomputed graph without X: checked once it is built
                return self.init
            return check_init_array(self.init, n_samples, self.n_components)
        if self.init == "coarse":
            if not has_data:
                raise ValueError("init='coarse' needs the data X (it fits a sample).")
            if n_samples < COARSE_FACTOR * COARSE_MIN_SAMPLE:
                raise ValueError(f"init='coarse' needs at least "
                                 f"{COARSE_FACTOR * COARSE_MIN_SAMPLE} points; got {n_samples}. "
                                 "Use init='pca'.")
        return "spectral" if not has_data and self.init == "pca" else self.init

    def _defaults(self, n_samples: int, init: str, estimator: str | None = None) -> dict:
        """Optimiser defaults of this composition for the (resolved) ``init`` and the
        normaliser ``estimator`` (None: the preset's own); overridden by non-None shared
        params."""
        return {"n_epochs": 500 if n_samples <= 10_000 else 200, "learning_rate": 1.0,
                "optimizer": "sgd", "momentum": 0.0, "schedule": "linear", "n_negatives": 10,
                "init_scale": 10.0, "exaggeration": 1.0, "exaggeration_epochs": 0,
                "clip": np.inf, "negative_sample_rate": 5.0, "edge_sampling": False,
                "max_step": np.inf, "recentre": False}

    def _step_sizes(self, settings: dict, objective: Objective) -> tuple[float, float | None]:
        """``(learning_rate, exaggeration_learning_rate)`` handed to the optimiser (None: the
        same in both phases). With the ``"gains"`` optimiser the learning rate is in openTSNE's
        and scikit-learn's units, a step on ``d KL(P/M || Q) / dy / 4`` (None: openTSNE's
        ``"auto"``, ``N / exaggeration`` in each phase), converted here to a step on this
        objective's gradient ``dL/dy = 4 M d KL / dy`` (``M = sum p``, the target's mass)."""
        if settings["optimizer"] != "gains":
            return settings["learning_rate"], None
        n, scale = objective.n, 1.0 / (4.0 * objective.total_mass)
        if settings["learning_rate"] is not None:
            return settings["learning_rate"] * scale, None
        return n * scale, n / settings["exaggeration"] * scale

    # -- fitting -------------------------------------------------------------------------------
    def _settings(self, n_samples: int, init) -> dict:
        settings = self._defaults(n_samples, init if isinstance(init, str) else "array")
        if self.encoder is not None:
            settings.update(ENCODER_SETTINGS)
        for key in ("n_epochs", "learning_rate", "optimizer", "momentum", "schedule",
                    "n_negatives", "edge_sampling"):
            if getattr(self, key) is not None:
                settings[key] = getattr(self, key)
        return settings

    def _check_params(self):
        """Every parameter and the composition, before any work: ``(spec, kernel,
        estimator)``."""
        check_params(self, self._param_rules())
        spec, kernel, estimator = self._composition()
        check_composition(estimator, kernel, n_components=self.n_components,
                          q_alpha=self._q_alpha())
        if self.encoder is not None:
            if self.optimizer == "gains":
                raise ValueError("optimizer='gains' is t-SNE's per-coordinate rule for a free "
                                 "embedding; an encoder's parameters take 'adam' (the "
                                 "default) or 'sgd'.")
            if self.init is not None:
                raise ValueError("init places a free embedding; with an encoder the start is "
                                 "the encoder's own initialisation: leave init=None.")
        return spec, kernel, estimator

    def _prepare(self, X, spec, kernel, estimator) -> tuple[KNN | None, object]:
        """The checks that need the data, before any work: ``(precomputed kNN or None, init)``.
        Too few points for the neighbours, a precomputed kNN graph that does not match ``X``,
        an init that does not match, ``'fft'`` in 3-D on many points, and a fit that will not
        fit in memory (:meth:`_memory_estimate`) are refused here."""
        if self.encoder is not None and (X is None or sp.issparse(X)):
            raise ValueError("an encoder maps the features X to the embedding: it needs dense "
                             "X (reduce sparse data first, e.g. with PCA or TruncatedSVD).")
        if isinstance(spec, PrecomputedTarget):
            n = None if X is None else X.shape[0]
            return None, self._resolve_init(n, X is not None, own_graph=False)
        if X is None:
            raise ValueError("X is None; only a precomputed graph p can be fitted without data.")
        n = X.shape[0]
        k = spec.n_neighbors_for(n)
        knn = None
        if self.precomputed_knn is not None:
            knn = precomputed_knn(self.precomputed_knn, k, n, self.metric,
                                  getattr(spec, "neighbors_reason", "the target"))
        init = self._resolve_init(n, True)
        check_composition(estimator, kernel, n, self.n_components, self._q_alpha())
        k = knn.n_neighbors if knn is not None else k
        parts = self._memory_estimate(X, k, init, estimator, kernel)
        parts["propagated p"] = propagation_bytes(n, k, self.propagation_steps)
        check_memory(f"{type(self).__name__} on {n} x {X.shape[1]}", parts,
                     "Lower n_neighbors (or perplexity: t-SNE keeps 3 x perplexity "
                     "neighbours) or propagation_steps, or embed a subsample and place the "
                     "rest with transform().")
        return knn, init

    def _memory_estimate(self, X, k: int, init, estimator: str, kernel: Kernel) -> dict:
        """The peak bytes of a fit on ``X`` with ``k`` neighbours, by item (the arrays that
        grow with ``N x k`` and ``N x D``, measured at 57-62 bytes per kNN edge on 10k points
        with 900 neighbours; counted here at 48): the kNN lists (8 bytes an edge), the graph
        ``p`` (up to 2 edges per kNN edge, 8 bytes each), the objective's copy of it (and the
        torch engine's int64 copy off the numba engine, or the edge-sampling rates), plus the
        largest transient: the graph's construction (8), the exact kNN search's centred copy
        of ``X``, pynndescent's ordered copy of ``X``, candidate lists and heap, or the PCA
        start's float64 blocks and projection; with an encoder, its float32 copy of the
        standardised features (its activations are bounded by
        :data:`~icongraph.optimize.ENCODER_CHUNK` rows)."""
        n, d = X.shape
        edges = n * k
        objective = 16 * edges
        if estimator != "fft" and self.edge_sampling:
            objective += 16 * edges
        if kernel.code < 0 or resolve_device(self.device).type != "cpu":
            objective += 32 * edges
        transient = {"building p": 8 * edges}
        if self.precomputed_knn is None:
            method = _resolve_method(self.knn_method, X, resolve_device(self.device))
            if method == "exact":
                transient["kNN search"] = 4 * n * d
            else:  # the spatially ordered copy, the candidate lists and the heap
                candidates = nndescent_schedule(n)[2]
                copy = 0 if sp.issparse(X) else 4 * n * d
                transient["kNN search"] = copy + 16 * n * candidates + 9 * n * (k + 1)
        if isinstance(init, str) and init == "pca" and not sp.issparse(X):
            transient["PCA init"] = 16 * min(n, PCA_BLOCK_ROWS) * d + 16 * n * self.n_components
        name, peak = max(transient.items(), key=lambda kv: kv[1])
        parts = {"kNN lists": 8 * edges, "graph p": 16 * edges, "objective edges": objective,
                 name: peak}
        if self.encoder is not None:
            parts["encoder's standardised features"] = 4 * n * d
        return parts

    def fit(self, X, y=None):
        """Fit the embedding of ``X`` (N, D): numpy, torch, scipy sparse or pandas; ``X`` may
        be None when ``p`` is a precomputed graph (init then falls back to spectral). ``y``
        (N,) class labels, optional: numbers (``-1`` unlabelled) or strings, mixed into ``p``
        with ``target_weight`` (see the module docstring). Records
        ``n_features_in_`` (None without ``X``) and, for a DataFrame with string column names,
        ``feature_names_in_``; ``transform`` checks new data against them.

        ``X`` may also be a ``torch_geometric.data.Data``: its ``x`` is ``X``, its ``y`` the
        labels, and its graph replaces the kNN graph as ``p`` (:mod:`icongraph.pyg`).

        Every parameter is checked first, then what depends on the data (sizes, a
        precomputed kNN graph, the init array, the memory the fit needs): bad input is refused
        before any work, and the caller's data is never modified."""
        spec, kernel, estimator = self._check_params()
        X, y, graph = split_data(X, y, isinstance(spec, PrecomputedTarget)
                                 or self.precomputed_knn is not None)
        if graph is not None:
            spec = PrecomputedTarget(graph)
        return self._fit(X, y, spec, kernel, estimator)

    def _fit_graph(self, X, graph):
        """:meth:`fit` of ``X`` (N, D) with ``graph`` (N, N) as ``p`` in place of the
        estimator's own target, as a ``Data``'s graph is (:mod:`icongraph.pyg`); the
        clustering's seed lays out a given graph this way
        (:func:`~icongraph.seeding.embedding_partition`)."""
        _, kernel, estimator = self._check_params()
        return self._fit(X, None, PrecomputedTarget(graph), kernel, estimator)

    def _fit(self, X, y, spec, kernel, estimator):
        """:meth:`fit` after the parameter check, with the target ``spec``."""
        seed = check_random_state(self.random_state)
        device = resolve_device(self.device)
        timings, memory = {}, {}
        with threads(self.n_jobs), phase(type(self).__name__, self.verbose,
                                           whole_fit=True) as whole:
            data_scale = DataScale()
            if X is None:  # a precomputed graph alone: no features
                self.n_features_in_ = None
                vars(self).pop("feature_names_in_", None)
            source = MappedFile.of(X)
            if X is not None:
                check_feature_names(self, X, reset=True)
                X, data_scale = check_data(X, min_samples=2, scaling=self.metric)
                check_n_features(self, X.shape[1], reset=True)
            labels = None if y is None or X is None else encode_labels(y, X.shape[0])
            knn, init = self._prepare(X, spec, kernel, estimator)
            encoder = None
            if self.encoder is not None:
                mean, scale = standardisation(X)
                module = make_encoder(self.encoder, X.shape[1], self.n_components, seed)
                encoder = (module.to(device), torch.as_tensor((X - mean) / scale, device=device))
            verbose, precomputed = self.verbose, isinstance(spec, PrecomputedTarget)
            if not precomputed:
                timings["knn"] = 0.0
                if knn is None:
                    k = spec.n_neighbors_for(X.shape[0])
                    method = _resolve_method(self.knn_method, X, device)
                    with phase("kNN search", verbose,
                               f"{method}, {X.shape[0]} points, k={k}") as timed:
                        knn = knn_search(X, k, self.metric, method=self.knn_method,
                                         device=device, random_state=seed, n_jobs=self.n_jobs,
                                         verbose=verbose, cache_dir=self.knn_cache)
                    timings["knn"] = timed.elapsed
                    memory["knn"] = timed.peak_rss
                    source.check("the kNN search")
            about = ("precomputed p" if precomputed
                     else f"{type(spec).__name__}, {knn.n_neighbors} neighbours per point")
            with phase("graph", verbose, about) as timed:
                if precomputed:
                    target = spec.build(n_samples=None if X is None else X.shape[0])
                    if not isinstance(init, str):
                        init = check_init_array(init, target.n_samples, self.n_components)
                else:
                    target = spec.build(knn)
                target = propagate(target, self.propagation_steps)
                if self.alpha:
                    target = debias(target, self.alpha)
                if y is not None:
                    if labels is None:  # a precomputed graph without X: N is known only now
                        labels = encode_labels(y, target.n_samples)
                    target = with_labels(target, labels, self.target_weight)
                target = replace(target, spec=spec,
                                 index=None if X is None else KNNIndex(X, self.metric))
                timed.note = f"{target.graph.nnz} edges"
            timings["graph"] = timed.elapsed
            memory["graph"] = timed.peak_rss
            n = target.n_samples
            settings = self._settings(n, init)
            objective = Objective(target, kernel, estimator, settings["n_negatives"],
                                  settings["negative_sample_rate"], settings["clip"],
                                  settings["edge_sampling"], q_alpha=self._q_alpha())
            coarse = encoder is None and isinstance(init, str) and init == "coarse"
            how = ("encoder" if encoder is not None
                   else f"1/{COARSE_FACTOR} of the points" if coarse
                   else init if isinstance(init, str) else "given array")
            with phase("coarse sample" if coarse else "init", verbose, how) as timed:
                if encoder is not None:
                    y0 = encode(*encoder, sphere=False)
                elif coarse:
                    y0 = self._coarse_init(X, target, seed, labels)
                else:
                    y0 = initialize(init, X, target.graph, self.n_components, seed,
                                    settings["init_scale"])
            timings["init"] = timed.elapsed
            memory["init"] = timed.peak_rss
            release_mapped_pages(X)  # the optimisation never reads X
            with phase("refinement" if coarse else "optimisation", verbose,
                       f"{n} points, {settings['n_epochs']} epochs, {settings['optimizer']}"
                       ) as timed:
                learning_rate, exaggeration_learning_rate = self._step_sizes(settings,
                                                                             objective)
                embedding, losses = optimize(
                    objective, y0, n_epochs=settings["n_epochs"], learning_rate=learning_rate,
                    exaggeration_learning_rate=exaggeration_learning_rate,
                    optimizer=settings["optimizer"], momentum=settings["momentum"],
                    schedule=settings["schedule"], exaggeration=settings["exaggeration"],
                    exaggeration_epochs=settings["exaggeration_epochs"],
                    max_step=settings["max_step"], recentre=settings["recentre"], seed=seed,
                    device=device, callbacks=self.callbacks or (), verbose=verbose,
                    encoder=encoder, restore_objective=False)  # the fit reads its scalars only
                if encoder is not None:
                    embedding = encode(*encoder, sphere=objective.kernel.sphere)
                if losses:
                    timed.note = f"loss {losses[-1][1]:.6g}"
            timings["optimize"] = timed.elapsed
            memory["optimize"] = timed.peak_rss
            source.check("the fit")
            whole.note = f"{n} points"
        self.encoder_ = None if encoder is None else encoder[0]
        if encoder is None:
            vars(self).pop("feature_mean_", None)
            vars(self).pop("feature_scale_", None)
        else:
            self.feature_mean_, self.feature_scale_ = mean, scale
        self.embedding_ = embedding
        self.graph_ = target.graph
        self.target_ = target
        self.knn_ = knn
        self.kernel_ = objective.kernel  # a learned temperature: its fitted value
        self.loss_history_ = losses
        self.loss_ = losses[-1][1] if losses else float("nan")
        self.timings_ = timings
        self.peak_memory_ = memory
        self._n_features_out = embedding.shape[1]
        self._fit_X = X
        self.data_scale_ = data_scale
        self._target_spec = spec
        self._loss_spec = (estimator, settings["negative_sample_rate"], objective.q_alpha)
        self._kl_divergence = None
        self._transform_settings = self._new_point_settings(settings, objective, learning_rate,
                                                            seed)
        return self

    @property
    def kl_divergence_(self) -> float | None:
        """The exact objective of the fitted embedding divided by the target's mass
        ``M = sum_ij p_ij``: for t-SNE ``KL(P / M || Q)``, openTSNE's scale (``loss_`` and
        ``loss_history_`` are ``M`` times larger: the sampled estimate of ``L``); for the
        per-anchor estimator the mass-weighted mean of ``KL(p_i || q_i)``; for ``'neg'`` its
        binary cross-entropy per unit mass. Computed densely on first access, only up to
        ``EXACT_LOSS_MAX_SAMPLES`` points (None above)."""
        check_is_fitted(self, "embedding_")
        if self._kl_divergence is None and self.target_.n_samples <= EXACT_LOSS_MAX_SAMPLES:
            estimator, rate, q_alpha = (*self._loss_spec, 0.0)[:3]  # older pickles: 2
            with torch.no_grad():
                value = float(exact_loss(self.target_, self.kernel_, self.embedding_,
                                         estimator, rate, q_alpha))
            self._kl_divergence = value / float(self.target_.row_mass.sum(dtype=np.float64))
        return self._kl_divergence

    def _coarse_init(self, X, target: Target, seed: int, labels: np.ndarray | None = None
                     ) -> np.ndarray:
        """Coarse-to-fine start: this estimator with its default settings fitted on a random
        1/COARSE_FACTOR of the rows (its own kNN graph; with their ``labels`` (N,), -1
        unlabelled, when the fit has labels), spread to every point through ``p``
        (:func:`~icongraph.init.interpolate_from_sample`). The sample settles the global
        layout for a small part of the work, so the full data needs only a short, gentle
        refinement (UMAP: 120 epochs at learning rate 0.02 instead of 200 at 0.05). Points in
        components of ``p`` without a sampled point start at their PCA coordinates, scaled to
        the layout."""
        n = X.shape[0]
        m = n // COARSE_FACTOR
        rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
        params = {**self.get_params(), "init": None, "n_epochs": None, "learning_rate": None,
                  "precomputed_knn": None, "random_state": seed, "callbacks": None}
        sample_labels = None if labels is None else labels[rows]
        if sample_labels is not None and np.unique(sample_labels[sample_labels >= 0]).size < 2:
            sample_labels = None  # fewer than two classes sampled: an unsupervised sample fit
        sample = type(self)(**params).fit(X[rows], sample_labels).embedding_
        y, placed = interpolate_from_sample(target.graph, rows, sample, seed,
                                            symmetric=target.symmetric)
        if not placed.all():
            rest = pca_init(X[~placed], self.n_components, seed)
            y[~placed] = rescale(rest, float(np.abs(sample).max()))
        return y

    def fit_transform(self, X, y=None):
        """Fit and return ``embedding_`` (N, n_components), float32 (a DataFrame after
        ``set_output(transform="pandas")``). This is the optimised layout of the training
        points: ``fit(X).transform(X)`` places them afresh from their neighbours instead."""
        return self._wrap_output(self.fit(X, y).embedding_, X)

    #: ``transform_epochs=None``: epochs of the new points' optimisation (openTSNE's 250).
    #: Held-out 10-NN accuracy (a classifier on ``embedding_`` applied to the transformed
    #: test points; digits, pbmc68k and tissue, 80/20 stratified splits 0 and 1, presets at
    #: their defaults), mean of the 6 splits for 0 / 30 / 100 / 250 epochs: UMAP 0.898 /
    #: 0.912 / 0.909 / 0.915, TSNE 0.901 / 0.917 / 0.913 / 0.919, SNE 0.891 / 0.911 / 0.911 /
    #: 0.914. Beyond 30 epochs the differences are within a test point or two per split.
    TRANSFORM_EPOCHS = 250

    def _new_point_settings(self, settings: dict, objective: Objective, learning_rate: float,
                            seed: int) -> dict:
        """How :meth:`transform` optimises new points: the fit's optimiser, step (the last
        phase's), schedule, clip and negatives (its resolved count: UMAP's matched count is
        taken once, from the fit's graph), with a conditional normaliser per new point
        (``"neg"`` stays NEG; every KL estimator becomes ``"per_anchor"``)."""
        target = objective.target
        return {"estimator": "neg" if objective.estimator == "neg" else "per_anchor",
                "n_negatives": int(objective.n_negatives),
                "negative_sample_rate": settings["negative_sample_rate"],
                "clip": settings["clip"], "optimizer": settings["optimizer"],
                "learning_rate": learning_rate, "momentum": settings["momentum"],
                "schedule": settings["schedule"], "max_step": settings["max_step"],
                "alpha": target.alpha, "seed": seed,
                "w_max": float(target.graph.data.max()) if target.graph.nnz else 1.0}

    def transform(self, X):
        """Embed new points ``X`` (M, D) against the fitted embedding, which stays unchanged.

        With an encoder, ``f(x)`` of their standardised features ``x = (X - feature_mean_) /
        feature_scale_`` (``encoder_`` in eval mode; on the sphere ``f / |f|``), nothing
        optimised: ``transform`` of the training points is ``embedding_``. Without one:

        Each new point ``a`` gets its target row ``p(.|a)`` over the fitted points
        (:meth:`~icongraph.targets.Target.to_new`: for t-SNE and SNE calibrated to the fit's
        perplexity, for UMAP umap-learn's memberships of new points), starts at the
        ``p``-weighted mean of its neighbours' positions, ``y_a = sum_j p(j|a) y_j / sum_j
        p(j|a)``, and then minimises its own objective for ``transform_epochs`` epochs (None:
        ``TRANSFORM_EPOCHS``; 0 returns the weighted mean) with the fitted positions frozen:
        attraction to its row of ``p``, repulsion from negatives drawn uniformly from the
        fitted points, keyed by the point's own values, and a normaliser of its own: NEG's
        for UMAP, a per-point ``Z_a`` (conditional ``q(.|a)``, one KL per point) for the KL
        estimators (see :mod:`icongraph._transform_engine`). The fit's optimiser, step size
        and schedule are reused. A point's result therefore does not depend on the other
        points of the batch: a batch and its points one by one agree.

        openTSNE's ``transform`` differs: new points' affinities at perplexity 5, one
        normaliser summed over the whole batch (so points of a batch interact), its own step
        schedule (250 iterations), and it re-centres the reference. umap-learn's differs in
        its schedule (100 epochs up to 10,000 new points, 30 above, at a quarter of the
        learning rate) and in sampling edges by their weight (weak edges dropped) where this
        takes every edge every epoch with its weight.

        Returns
        -------
        np.ndarray
            (M, n_components) float32 (a DataFrame after ``set_output(transform="pandas")``).

        Raises
        ------
        ValueError
            A precomputed ``p`` or sparse training data cannot place new points.
        """
        check_is_fitted(self, "embedding_")
        if self.encoder_ is not None:
            data, X = X, check_new_data(self, X)
            features = torch.as_tensor((X - self.feature_mean_) / self.feature_scale_,
                                       device=next(self.encoder_.parameters()).device)
            return self._wrap_output(encode(self.encoder_, features, self.kernel_.sphere), data)
        if sp.issparse(self._training_data("transform of a free embedding (encoder=None)")):
            raise ValueError("transform needs dense training data.")
        check_params(self, {"transform_epochs": COMMON_RULES["transform_epochs"]})
        data, X = X, check_new_data(self, X)
        rows = self.target_.to_new(X)
        neighbours, weights = new_lists(rows)
        w = weights.astype(np.float64)
        w /= w.sum(axis=1, keepdims=True)
        Y = np.einsum("nk,nkd->nd", w, self.embedding_[neighbours]).astype(np.float32)
        if self.kernel_.sphere:  # the start projected on the sphere
            Y = normalise_(torch.from_numpy(Y)).numpy()
        epochs = self.TRANSFORM_EPOCHS if self.transform_epochs is None else self.transform_epochs
        if epochs > 0:
            s = self._transform_settings
            arrays = partial_arrays(rows, self.kernel_, s["estimator"], s["n_negatives"],
                                    s["negative_sample_rate"], s["clip"], s["alpha"],
                                    s["w_max"])
            with threads(self.n_jobs), phase("transform", self.verbose,
                                             f"{len(Y)} new points, {epochs} epochs"):
                Y = optimize_new(arrays, self.kernel_, Y, self.embedding_, point_keys(X),
                                 n_epochs=epochs, learning_rate=s["learning_rate"],
                                 optimizer=s["optimizer"], momentum=s["momentum"],
                                 schedule=s["schedule"], max_step=s["max_step"], seed=s["seed"],
                                 device=resolve_device(self.device), verbose=self.verbose)
        return self._wrap_output(Y, data)


@_shared_docs
class SNE(_Embedding):
    """Stochastic Neighbour Embedding: conditional perplexity ``p``, Gaussian ``q``, per-anchor
    normaliser (Hinton & Roweis 2002). ``fit(X, y)`` with class labels (``-1``: unlabelled)
    mixes the same-class graph into ``p`` by ``target_weight`` (0-1, default 0.5; the module
    docstring).

    Parameters
    ----------
    perplexity : float, default=30.0
        The effective number of neighbours of each point's Gaussian ``p(.|i)``, calibrated
        on its ``3 x perplexity`` nearest neighbours.
    {common_parameters_and_attributes}

    Examples
    --------
    >>> from icongraph import SNE
    >>> from icongraph.datasets import make_manifolds
    >>> X, y = make_manifolds(5000, n_classes=10)
    >>> SNE(perplexity=30, random_state=0).fit_transform(X).shape
    (5000, 2)
    """

    _own_params = {"perplexity": 30.0}
    _own_rules = {"perplexity": number(0.0, low_open=True)}

    def _composition(self):
        return PerplexityTarget(self.perplexity, symmetric=False), get_kernel("gaussian"), \
            "per_anchor"

    def _defaults(self, n_samples, init, estimator=None):
        return {**super()._defaults(n_samples, init, estimator), "learning_rate": 0.05, "momentum": 0.5,
                "n_negatives": 20, "init_scale": 1e-2}


@_shared_docs
class TSNE(_Embedding):
    """t-SNE: symmetric perplexity ``p`` on ``3 x perplexity`` neighbours, Student-t ``q``
    (``dof=1`` is t-SNE; lower is heavier tailed), one global normaliser.

    In 1-D and 2-D the normaliser and the repulsion are summed over all pairs by grid
    interpolation (estimator ``"fft"``, FIt-SNE's method), and the optimisation is openTSNE's:
    PCA start scaled to a standard deviation of 1e-4, ``early_exaggeration`` for 250 epochs,
    then 500 more, gradient descent with momentum 0.8 and per-coordinate gains, each step
    capped at norm 5, the layout re-centred after each step. ``learning_rate`` is in
    openTSNE's and scikit-learn's units (the step on ``KL(P || Q) / 4``); ``None`` is openTSNE's
    ``"auto"``, ``N / exaggeration`` in each phase. ``n_epochs`` counts both phases.
    In 3-D and above the normaliser comes from sampled negatives (estimator ``"global"``).

    ``fit(X, y)`` with class labels (``-1``: unlabelled) mixes the same-class graph into ``p``
    by ``target_weight`` (0-1, default 0.5; the module docstring);
    ``target_weight=1`` gives a SupCon-like t-SNE of the labelled points.

    Parameters
    ----------
    perplexity : float, default=30.0
        The effective number of neighbours of each point's Gaussian ``p(.|i)``, calibrated
        on its ``3 x perplexity`` nearest neighbours, then symmetrised (openTSNE's).
    early_exaggeration : float, default=12.0
        ``p`` is multiplied by this for the first 250 epochs (a third of ``n_epochs`` when
        fewer), openTSNE's ``early_exaggeration``.
    dof : float, default=1.0
        Degrees of freedom of the Student-t kernel ``(1 + d^2 / dof)^(-(dof + 1) / 2)``: 1 is
        t-SNE, lower is heavier tailed (openTSNE's ``dof``).
    {common_parameters_and_attributes}

    Examples
    --------
    >>> import icongraph
    >>> X, y = icongraph.datasets.load("digits")
    >>> model = icongraph.TSNE(perplexity=30, random_state=0)
    >>> Y = model.fit_transform(X)
    >>> icongraph.metrics.knn_accuracy(Y, y) > 0.95
    True
    >>> model.kl_divergence_  # openTSNE's KL(P || Q)  # doctest: +SKIP
    0.742
    """

    _own_params = {"perplexity": 30.0, "early_exaggeration": 12.0, "dof": 1.0}
    _own_rules = {"perplexity": number(0.0, low_open=True),
                  "early_exaggeration": number(0.0, low_open=True),
                  "dof": number(0.0, low_open=True)}
    #: openTSNE's phases: exaggerated epochs and total epochs
    EXAGGERATION_EPOCHS = 250
    N_EPOCHS = 750

    def _composition(self):
        estimator = "fft" if self.n_components <= 2 else "global"
        return PerplexityTarget(self.perplexity), StudentKernel(self.dof), estimator

    def _defaults(self, n_samples, init, estimator=None):
        n_epochs = self.n_epochs or self.N_EPOCHS
        exaggeration_epochs = min(self.EXAGGERATION_EPOCHS, n_epochs // 3)
        settings = {**super()._defaults(n_samples, init, estimator), "n_epochs": n_epochs,
                    "exaggeration": self.early_exaggeration,
                    "exaggeration_epochs": exaggeration_epochs}
        if (estimator or self._composition()[2]) != "fft":  # the sampled global estimator's schedule
            settings.update(learning_rate=0.02, momentum=0.9, schedule="cosine",
                            n_negatives=20, init_scale=1e-2, edge_sampling=True)
            return settings
        settings.update(optimizer="gains", momentum=0.8, schedule="constant",
                        init_scale=5e-4, max_step=5.0,
                        recentre=True, learning_rate=None)
        return settings



@_shared_docs
class UMAP(_Embedding):
    """UMAP-like: fuzzy simplicial set ``p``, kernel ``1/(1 + a d^2b)`` fitted from
    ``min_dist``/``spread``, fixed normaliser (NEG) with ``negative_sample_rate`` negatives per
    edge update; each pair's force is clipped at 4 per coordinate before its sampling weight is
    applied (umap-learn clips each sampled update at 4).

    The default start (``init=None``) is PCA and 200 epochs below
    :attr:`COARSE_DEFAULT_SAMPLES` (2M) points, the coarse start above: ``init="coarse"`` fits
    a twentieth of the rows, spreads that layout through ``p`` and refines every point for 120
    gentle epochs. Below 2M it is opt-in: it is faster from ~100k points and keeps the global
    layout of the generator's curved sheets, but on the suite's real tables it keeps less local
    structure (kNN preservation@15 within a 5,000-point sample, ``UMAP(random_state=0)`` on
    the same 15-NN graph, coarse with 60 epochs vs PCA: mnist1d (70k) 0.167 vs 0.196, movies
    (58k) 0.282 vs 0.319). From millions of points 200 epochs no longer settle a PCA start:
    on ``make_manifolds(10_000_000)`` 10-NN accuracy / kNN preservation@15 0.812 / 0.096 from
    PCA against 0.887 / 0.108 coarse (60 epochs), and on mnist1d generated at 4M points (40
    features; same graph, seed 0) PCA 0.641 / 0.0056 in 146 s of optimisation, coarse with 60
    epochs 0.620 / 0.0049 in 51 s, with 120 epochs 0.635 / 0.0061 in 97 s. At 2M (two
    generated sets, 3 seeds, mean ± sd) PCA 0.627 ± 0.005 / 0.0097 ± 0.0006 in 73 s, coarse
    with 120 epochs 0.626 ± 0.003 / 0.0100 ± 0.0001 in 53 s (the sample's fit included).

    ``fit(X, y)`` with class labels (``-1``: unlabelled) mixes the same-class graph into ``p``
    by ``target_weight`` (umap-learn's name and range, default 0.5), as
    a mixture of the two graphs rather than umap-learn's fuzzy intersection (module docstring).

    Parameters
    ----------
    n_neighbors : int, default=15
        Neighbours of each point's fuzzy set, the point itself counted (umap-learn's).
    min_dist : float, default=0.1
        The kernel's flat core: how tightly points may pack (umap-learn's).
    spread : float, default=1.0
        The kernel's scale, with ``min_dist`` fitted into ``a`` and ``b`` (umap-learn's).
    negative_sample_rate : float, default=5.0
        Negatives per edge update (umap-learn's); the negatives per anchor and epoch follow
        from it (``n_negatives``).
    local_connectivity : float, default=1.0
        Nearest neighbours assumed connected at full strength (umap-learn's).
    set_op_mix_ratio : float in [0, 1], default=1.0
        1: fuzzy union of ``p`` and its transpose, 0: fuzzy intersection (umap-learn's).
    {common_parameters_and_attributes}

    Examples
    --------
    >>> from icongraph import UMAP, metrics
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> model = UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit(X)
    >>> metrics.knn_accuracy(model.embedding_, y) > 0.95
    True
    >>> model.transform(X[:5]).shape  # new points against the fitted embedding
    (5, 2)
    >>> Y = UMAP(target_weight=0.5, random_state=0).fit_transform(X, y)  # with labels
    """

    _own_params = {"n_neighbors": 15, "min_dist": 0.1, "spread": 1.0,
                   "negative_sample_rate": 5.0, "local_connectivity": 1.0,
                   "set_op_mix_ratio": 1.0}
    # umap-learn's ranges; min_dist <= spread is the kernel's check
    _own_rules = {"n_neighbors": number(2, integer=True), "min_dist": number(0.0),
                  "spread": number(0.0, low_open=True), "negative_sample_rate": number(0.0),
                  "local_connectivity": number(0.0), "set_op_mix_ratio": number(0.0, 1.0)}
    #: 500 epochs up to 10k points, 300 up to this many, 200 above
    LONG_SCHEDULE_SAMPLES = 100_000

    #: ``init=None`` starts coarse (a fit of a twentieth of the rows, spread through ``p``, 120
    #: refinement epochs) from this many points; PCA and 200 epochs below (see the class
    #: docstring for the measurements that set it)
    COARSE_DEFAULT_SAMPLES = 2_000_000

    def _auto_init(self, n_samples: int | None, has_data: bool, own_graph: bool) -> str:
        if has_data and own_graph and n_samples >= self.COARSE_DEFAULT_SAMPLES:
            return "coarse"
        return super()._auto_init(n_samples, has_data, own_graph)

    def _composition(self):
        spec = FuzzyTarget(self.n_neighbors, self.local_connectivity, self.set_op_mix_ratio)
        return spec, UMAPKernel.from_min_dist(self.min_dist, self.spread), "neg"

    def _defaults(self, n_samples, init, estimator=None):
        # up to 10k points: a smaller step and 20 negatives per anchor and epoch. Above, the
        # larger step; up to LONG_SCHEDULE_SAMPLES umap-learn's own count of negatives
        # (n_negatives None: about 32, see objective.matched_negatives; fewer, reweighted to
        # the same expected force, leave sampling noise that blurs the finest structure) and
        # 300 epochs (umap-learn runs 200 from 10k), the same number of pair evaluations as
        # 500 epochs with 10 negatives but better on every reading. kNN preservation@15
        # within a 5k sample / for 5k queries against all N, trustworthiness, 5-fold 10-NN
        # accuracy, seed 0 on one 15-NN graph, 10 negatives and 500 epochs vs matched and 300:
        # mnist1d 0.212 / 0.083 / 0.900 / 0.544 vs 0.228 / 0.094 / 0.921 / 0.551 (umap-learn
        # 0.217 / 0.095 / 0.908 / 0.552), movies 0.325 / 0.258 / 0.931 vs 0.331 / 0.281 /
        # 0.933 (0.328 / 0.285 / 0.931). After a coarse fit 120 gentle epochs refine the
        # settled layout: 60 leave local detail unsettled on real tables (mnist1d at 4M, see
        # the class docstring), and a larger step undoes the layout (60 epochs at 0.05: kNN
        # preservation 0.0040 against 0.0049 at 0.02)
        small = n_samples <= 10_000
        settings = {**super()._defaults(n_samples, init, estimator),
                    "learning_rate": 0.02 if small else 0.05, "momentum": 0.9,
                    "n_negatives": 20 if small else 10, "clip": 4.0,
                    "negative_sample_rate": self.negative_sample_rate}
        if n_samples <= self.LONG_SCHEDULE_SAMPLES:
            settings["n_epochs"] = 500 if small else 300
            settings["n_negatives"] = 20 if small else None
        if init == "coarse":
            settings.update(n_epochs=120, learning_rate=0.02)
        return settings
