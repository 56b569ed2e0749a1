"""I-Con on paired data (CLIP): two aligned matrices embedded into one space on the unit sphere.

Row ``i`` of ``X`` (N, D) and row ``i`` of ``X_pair`` (N, D') describe the same item in two
modalities (RNA and protein of a cell, an image and its caption). Two encoders ``f`` and ``g``
(:func:`~icongraph.heads.make_encoder`, on the standardised features of their modality) map
them to unit vectors ``u_i = f(x_i) / |f(x_i)|`` and ``v_j = g(x'_j) / |g(x'_j)|`` (d,). The
target of item ``i`` is its partner in the other modality (the pair graph), and the learned
neighbourhood is normalised over the other modality's N items::

    p(j|i)   = [j = i]                                  (the pair graph)
    p~(j|i)  = (1 - alpha) p(j|i) + alpha / N
    q(j|i)   = k(u_i, v_j) / sum_l k(u_i, v_l)          (X -> X_pair)
    q'(i|j)  = k(u_i, v_j) / sum_l k(u_l, v_j)          (X_pair -> X)
    L = 1/2 ( 1/N sum_i KL(p~(.|i) || q(.|i)) + 1/N sum_j KL(p~(.|j) || q'(.|j)) )

the symmetric loss of CLIP (Radford et al. 2021), which is this objective at ``alpha = 0`` with
the cosine kernel. ``alpha`` is the package's debiasing of ``p`` (:mod:`icongraph.targets`): a
uniform part on the support of ``q(.|i)``, here the other modality's N items. The entropy of
``p~`` is included, so the loss is the KL itself (0 for a perfect fit at ``alpha = 0``).

Kernels (``kernel=``, the classes of :mod:`icongraph.kernels`), with ``d2 = |u - v|^2 =
2 - 2 cos(u, v)`` and temperature ``tau``:

==============  ======================================  =========================================
kernel          k(u, v)                                 method
==============  ======================================  =========================================
cosine          ``exp((cos - 1) / tau)``                CLIP (``exp(cos / tau)`` up to a constant
                                                        that cancels in ``q``)
student-sphere  ``(1 + d2 / tau)^(-1)``                 t-CLIP: a heavy-tailed kernel on the sphere
==============  ======================================  =========================================

Both depend on ``d2 / tau`` only, so each is evaluated as the kernel at ``tau = 1`` on
``d2 / tau``; with ``learn_temperature`` the temperature is a parameter of the fit (CLIP's
learned logit scale ``1 / tau``), optimised as ``log tau`` and kept at ``tau >= 0.01`` as CLIP
caps the scale at 100.

The normaliser. While a step over all N pairs fits in memory (the N x N kernel matrix, up to
about 2,000 pairs by default) every step is exact. Above, each epoch shuffles the pairs into
batches of ``B`` to ``2B - 1`` and the loss of a batch is the loss above on the batch alone
(CLIP's in-batch normaliser): for anchor ``i`` the sum runs over its partner and the ``B - 1``
other items of the batch, a uniform sample without replacement of the ``N - 1`` others, so
``(N - 1) / (B - 1)`` times the batch's negative part is an unbiased estimate of the full
normaliser's negative part. Where the negatives dominate the normaliser, the batch loss thus
estimates the full loss minus the constant ``log((N - 1) / (B - 1))`` (the constant has no
gradient); it reads the log of a sampled sum, biased low by Jensen's inequality, a bias that
shrinks as B grows. The uniform part of ``p~`` lies on the batch (``alpha / B``). Memory is
bounded by the batch, never N x N.

A softened target (``n_neighbors = k > 0``, ``neighbor_weight = w``): items near ``i`` in its
own modality are likely to match near its partner, so ``p`` also gives weight to the partners
of ``i``'s k nearest neighbours ``kNN(i)`` (in ``X`` for the direction ``X -> X_pair``, in
``X_pair`` for the other)::

    p(j|i) = (1 - w) [j = i] + w / k sum_{m in kNN(i)} [j = m]

the pair graph composed with the kNN graph (``w = 0`` is the plain pair graph). With a
sampled normaliser ``p(.|i)`` is restricted to the batch and renormalised (the neighbours'
partners outside the batch drop out), then debiased by ``alpha / B``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .heads import ENCODERS, LEARNING_RATES, make_encoder, standardisation
from .kernels import KERNELS, Kernel
from .knn import knn_search
from .loop import FULL_BATCH_FLOATS, Callbacks, FiniteGuard, schedule, train
from .memory import check_memory
from .params import ParamsMixin
from .persistence import PersistenceMixin
from .progress import phase
from .runtime import RUNTIME_RULES, resolve_device, threads
from .validation import (
    boolean,
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
    number,
)

__all__ = ["PairedEmbedding", "PAIR_KERNELS", "pair_log_kernel", "target_kl", "paired_kl"]

PAIR_KERNELS = ("cosine", "student-sphere")
#: the smallest learned temperature: CLIP caps its logit scale ``1 / tau`` at 100
MIN_TEMPERATURE = 0.01
#: rows per chunk when encoding (transform)
ENCODE_ROWS = 65536


def pair_log_kernel(u: torch.Tensor, v: torch.Tensor, kernel: Kernel,
                    temperature) -> torch.Tensor:
    """``log k(u_i, v_j)`` (B, B') of unit rows ``u`` (B, d) and ``v`` (B', d).

    Parameters
    ----------
    u, v : torch.Tensor
        Rows of norm 1.
    kernel : Kernel
        A sphere kernel of :mod:`icongraph.kernels` at temperature 1.
    temperature : float or torch.Tensor
        ``tau`` (a 0-d tensor when it is learned): the kernel is evaluated on
        ``d2 / tau`` with ``d2 = 2 - 2 u_i . v_j`` (floored at 0).
    """
    d2 = (2.0 - 2.0 * (u @ v.T)).clamp_min(0.0)
    return kernel.log_k_torch(d2 / temperature)


def target_kl(logits: torch.Tensor, neighbours: torch.Tensor, weight: float,
              alpha: float) -> torch.Tensor:
    """``mean_i KL(p~(.|i) || q(.|i))`` with ``q(.|i) = softmax(logits_i)`` over the B columns
    and the pair target of the module docstring, softened by the neighbours' partners.

    Parameters
    ----------
    logits : torch.Tensor
        (B, B) log-kernels, row ``i`` an anchor, column ``i`` its partner.
    neighbours : torch.Tensor
        (B, k) int64 columns of the partners of the anchor's k nearest neighbours in its own
        modality, -1 for one outside the columns (a batch); k may be 0.
    weight : float
        ``w`` in ``[0, 1)``: ``p(.|i)`` puts ``1 - w`` on the partner and ``w / k`` on each
        neighbour's partner, then is renormalised over the columns present.
    alpha : float
        Debiasing in ``[0, 1)``: ``p~ = (1 - alpha) p + alpha / B``.

    Returns
    -------
    torch.Tensor
        The scalar mean KL: the cross-entropy ``-sum_j p~(j|i) log q(j|i)`` minus the entropy
        of ``p~(.|i)``, both in closed form per row.
    """
    n_columns, k = logits.shape[1], neighbours.shape[1]
    log_q = torch.log_softmax(logits, dim=1)
    rows = torch.arange(len(logits), device=logits.device)
    valid = neighbours >= 0
    n_valid = valid.sum(1).to(log_q.dtype)
    mass = (1 - weight) + weight / max(k, 1) * n_valid
    on_partner, on_neighbour = (1 - weight) / mass, weight / max(k, 1) / mass
    near = (log_q.gather(1, neighbours.clamp_min(0)) * valid).sum(1)
    cross = -(1 - alpha) * (on_partner * log_q[rows, rows] + on_neighbour * near)
    uniform = torch.tensor(alpha / n_columns, dtype=log_q.dtype, device=log_q.device)
    if alpha > 0:
        cross = cross - uniform * log_q.sum(1)
    entropy = -(torch.xlogy((1 - alpha) * on_partner + uniform, (1 - alpha) * on_partner + uniform)
                + n_valid * torch.xlogy((1 - alpha) * on_neighbour + uniform,
                                        (1 - alpha) * on_neighbour + uniform)
                + (n_columns - 1 - n_valid) * torch.xlogy(uniform, uniform))
    return (cross - entropy).mean()


def paired_kl(u: torch.Tensor, v: torch.Tensor, kernel: Kernel, temperature, alpha: float,
              neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
              weight: float = 0.0) -> torch.Tensor:
    """The symmetric loss of the module docstring on the pairs ``(u_i, v_i)``, exact over
    them: ``1/2`` the sum of the mean KL of each direction (:func:`target_kl`, scalar).

    Parameters
    ----------
    u, v : torch.Tensor
        (B, d) unit rows, row ``i`` of each a pair.
    kernel, temperature
        As :func:`pair_log_kernel`.
    alpha : float
        Debiasing in ``[0, 1)``: ``p~(j|i) = (1 - alpha) p(j|i) + alpha / B``.
    neighbours : tuple of torch.Tensor, optional
        (B, k) neighbour columns of the ``X`` side and of the ``X_pair`` side
        (:func:`target_kl`); None: the plain pair graph.
    weight : float
        ``w`` of :func:`target_kl`.
    """
    logits = pair_log_kernel(u, v, kernel, temperature)
    if neighbours is None:
        none = torch.zeros((len(u), 0), dtype=torch.int64, device=u.device)
        neighbours, weight = (none, none), 0.0
    return 0.5 * (target_kl(logits, neighbours[0], weight, alpha)
                  + target_kl(logits.T, neighbours[1], weight, alpha))


def _encoder_rule(name, value):
    """``linear``, ``mlp`` or a ``torch.nn.Module`` (``None`` too for ``pair_encoder``: the
    same as ``encoder``)."""
    if isinstance(value, torch.nn.Module) or (value is None and name == "pair_encoder"):
        return
    if not (isinstance(value, str) and value in ENCODERS):
        raise ValueError(f"{name} must be one of {ENCODERS} or a torch.nn.Module; got "
                         f"{value!r}.")


def _hidden_rule(name, value):
    """A positive integer, or a non-empty sequence of them (the MLP's hidden widths)."""
    widths = (value,) if not isinstance(value, (list, tuple)) else value
    if len(widths) == 0:
        raise ValueError(f"{name} must be a positive integer or a non-empty list of them; "
                         f"got {value!r}.")
    for width in widths:
        number(1, integer=True)(name, width)


def _widths(hidden) -> tuple[int, ...]:
    return (int(hidden),) if not isinstance(hidden, (list, tuple)) else tuple(map(int, hidden))


class PairedEmbedding(PersistenceMixin, ParamsMixin):
    """Two aligned modalities embedded into one space on the unit sphere: CLIP and t-CLIP as
    I-Con compositions (see the module docstring for the objective, the kernels and the
    normaliser).

    Parameters
    ----------
    n_components : int, default=32
        d, the dimension of the shared space (the embeddings are unit vectors in it).
    kernel : {"cosine", "student-sphere"}, default="cosine"
        ``exp((cos - 1) / tau)`` (CLIP) or ``(1 + d2 / tau)^(-1)`` (t-CLIP).
    temperature : float or None, default=None
        ``tau`` (the starting value with ``learn_temperature``); None: the kernel's default
        (:class:`~icongraph.kernels.CosineKernel` 0.1,
        :class:`~icongraph.kernels.SphereStudentKernel` 0.05).
    learn_temperature : bool, default=False
        Learn ``log tau`` with the encoders (CLIP's learned logit scale), ``tau >= 0.01``.
    encoder : {"linear", "mlp"} or torch.nn.Module, default="linear"
        ``f`` on the standardised ``X`` (:func:`~icongraph.heads.make_encoder`): a module maps
        (B, D) to (B, n_components) and is deep-copied (yours is left untouched).
    pair_encoder : {"linear", "mlp"}, torch.nn.Module or None, default=None
        ``g`` on the standardised ``X_pair``; None: as ``encoder`` (a module is copied again).
    hidden : int or list of int, default=256
        The hidden widths of the ``mlp`` encoders.
    alpha : float in [0, 1), default=0.0
        Debiasing of ``p``: ``p~ = (1 - alpha) [partner] + alpha / N``, uniform over the other
        modality's items (over the batch's when the normaliser is sampled).
    n_neighbors : int, default=0
        0: the plain pair graph. ``k > 0`` softens ``p``: each anchor also gives weight to the
        partners of its k nearest neighbours in its own modality (the standardised features,
        :func:`~icongraph.knn.knn_search`), ``p(j|i) = (1 - w) [j = i] + w/k sum_{m in
        kNN(i)} [j = m]``, in each direction with that side's neighbours (module docstring).
    neighbor_weight : float in [0, 1), default=0.5
        ``w``, the mass on the neighbours' partners (used with ``n_neighbors > 0``).
    n_epochs, batch_size : int or None, default=None
        None: exact steps over all N pairs and 300 epochs (one Adam step each) while the
        N x N step fits in ``FULL_BATCH_FLOATS`` (2^24 floats, about 2,000 pairs); above,
        batches of about 2,000 pairs (the in-batch normaliser) and 600 Adam steps
        (:func:`~icongraph.loop.schedule`). ``batch_size >= N`` is exact; each epoch has
        ``N // batch_size`` batches of ``batch_size`` to ``2 batch_size - 1`` pairs.
    learning_rate : float or None, default=None
        Adam's step (None: :data:`~icongraph.heads.LEARNING_RATES` of the encoder, the
        ``mlp``'s for a module); 0 switches the optimiser off.
    random_state, device, n_jobs, verbose
        As for every estimator (:data:`~icongraph.runtime.RUNTIME_RULES`).
    callbacks : list of callable or None
        Each called as ``cb(epoch, loss, embedding)`` after every epoch, with the ``X`` side
        ``u`` (B, d) of the last batch; returning True stops the fit.

    Attributes
    ----------
    embedding_ : ndarray of shape (N, d)
        ``u_i``, the unit embedding of the rows of ``X`` (float32), as :meth:`transform` gives.
    pair_embedding_ : ndarray of shape (N, d)
        ``v_i``, that of the rows of ``X_pair``.
    encoder_, pair_encoder_ : torch.nn.Module
        ``f`` and ``g`` (before the normalisation), in eval mode.
    temperature_ : float
        The temperature at the end of the fit.
    kernel_ : Kernel
        The kernel at ``temperature_``.
    loss_ : float
        The final loss: exact (the symmetric mean KL over all N pairs) when the steps are
        exact, else the mean batch loss of the last epoch.
    loss_history_ : list of (int, float)
        ``(epoch, loss)`` of every epoch, taken before that epoch's steps (the mean over its
        batches with a sampled normaliser).
    neighbors_, pair_neighbors_ : ndarray of shape (N, k) or None
        The kNN of each row of ``X`` / ``X_pair`` among the others (``n_neighbors > 0``).
    n_features_in_, n_pair_features_in_ : int
        D and D'; ``feature_names_in_`` as scikit-learn's for ``X``.

    Reproducibility: a fit with a given ``random_state`` gives identical embeddings from run
    to run on the CPU at the same thread count.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph import metrics
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> left, right = X.reshape(-1, 8, 8)[:, :, :4], X.reshape(-1, 8, 8)[:, :, 4:]
    >>> left, right = left.reshape(-1, 32), right.reshape(-1, 32)  # two "modalities"
    >>> model = icongraph.PairedEmbedding(kernel="cosine", random_state=0)
    >>> u, v = model.fit_transform(left[:1200], right[:1200])
    >>> u.shape, v.shape
    ((1200, 32), (1200, 32))
    >>> metrics.retrieval_accuracy(*model.transform(left[1200:], right[1200:]), k=10)  # doctest: +SKIP
    0.42
    """

    @classmethod
    def _param_defaults(cls) -> dict:
        return {"n_components": 32, "kernel": "cosine", "temperature": None,
                "learn_temperature": False, "encoder": "linear", "pair_encoder": None,
                "hidden": 256, "alpha": 0.0, "n_neighbors": 0, "neighbor_weight": 0.5,
                "n_epochs": None, "batch_size": None,
                "learning_rate": None, "random_state": None, "device": "auto", "n_jobs": -1,
                "verbose": False, "callbacks": None}

    #: the rule of every parameter (:func:`~icongraph.validation.check_params`)
    _rules = {
        "n_components": number(1, integer=True),
        "kernel": choice(PAIR_KERNELS),
        "temperature": number(0.0, low_open=True, allow_none=True),
        "learn_temperature": boolean(),
        "encoder": _encoder_rule, "pair_encoder": _encoder_rule, "hidden": _hidden_rule,
        "alpha": number(0.0, 1.0, high_open=True),
        "n_neighbors": number(0, integer=True),
        "neighbor_weight": number(0.0, 1.0, high_open=True),
        "n_epochs": number(1, integer=True, allow_none=True),
        "batch_size": number(2, integer=True, allow_none=True),
        "learning_rate": number(0.0, allow_none=True),  # 0 switches the optimiser off
        "callbacks": callbacks_rule("cb(epoch, loss, embedding)"),
        **RUNTIME_RULES,
    }

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, X_pair):
        """Fit the two encoders to the pairs ``(X[i], X_pair[i])``: ``X`` (N, D) and
        ``X_pair`` (N, D'), dense, at least 2 pairs.

        Every parameter, both matrices (NaN, shapes, the same N), the encoders' output width
        and the memory the fit needs are checked before any work; the caller's data is never
        modified."""
        check_params(self, self._rules)
        check_feature_names(self, X, reset=True)
        X, data_scale = check_data(X, allow_sparse=False, min_samples=2, scaling="euclidean")
        X_pair, pair_data_scale = check_data(X_pair, name="X_pair", allow_sparse=False,
                                             min_samples=2, scaling="euclidean")
        if X.shape[0] != X_pair.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but X_pair has {X_pair.shape[0]}: row i "
                             "of each must describe the same item.")
        check_n_features(self, X.shape[1], reset=True)
        self.n_pair_features_in_ = X_pair.shape[1]
        if self.n_neighbors:
            check_n_neighbors(self.n_neighbors, X.shape[0])
        mean, scale = standardisation(X)
        pair_mean, pair_scale = standardisation(X_pair)
        n, dim = X.shape[0], self.n_components
        seed = check_random_state(self.random_state)
        encoders = self._make_encoders(X.shape[1], X_pair.shape[1], seed)
        batch, epochs = schedule(n, self._row_floats(self._batch(n)), self._batch(n),
                                 self.n_epochs)
        check_memory(f"PairedEmbedding on {n} x ({X.shape[1]} + {X_pair.shape[1]})",
                     self._memory_estimate(X, X_pair, encoders, batch),
                     "Lower batch_size or n_components, or use encoder='linear'.")
        device = resolve_device(self.device)
        self.data_scale_, self.pair_data_scale_ = data_scale, pair_data_scale
        self.mean_, self.scale_, self.pair_mean_, self.pair_scale_ = (mean, scale, pair_mean,
                                                                      pair_scale)
        self._n_features_out = dim
        with threads(self.n_jobs), phase("PairedEmbedding", self.verbose,
                                           whole_fit=True) as whole:
            features = (torch.as_tensor((X - self.mean_) / self.scale_),
                        torch.as_tensor((X_pair - self.pair_mean_) / self.pair_scale_))
            self.neighbors_, self.pair_neighbors_ = (self._neighbours(part, seed, name)
                                                     for part, name in zip(features,
                                                                           ("X", "X_pair")))
            self._train(tuple(part.to(device) for part in features), encoders, batch, epochs,
                        seed)
            whole.note = f"{n} pairs"
        return self

    def _neighbours(self, features: torch.Tensor, seed: int, name: str) -> np.ndarray | None:
        """The (N, k) int32 nearest neighbours of each row among the others
        (:func:`~icongraph.knn.knn_search` on the standardised features ``name``, the phase
        ``"kNN search"``), None when ``n_neighbors=0``."""
        if not self.n_neighbors:
            return None
        with phase("kNN search", self.verbose,
                   f"{name}, {len(features)} points, k={self.n_neighbors}"):
            return knn_search(features.numpy(), self.n_neighbors, random_state=seed,
                              n_jobs=self.n_jobs, verbose=self.verbose).indices

    def fit_transform(self, X, X_pair):
        """:meth:`fit`, then ``(embedding_, pair_embedding_)``, both (N, d)."""
        self.fit(X, X_pair)
        return self.embedding_, self.pair_embedding_

    def _make_encoders(self, n_features: int, n_pair_features: int, seed: int):
        """``(f, g)`` from seeds ``seed`` and ``seed + 1``, each checked by
        :func:`~icongraph.heads.make_encoder` to map its modality's width to
        ``n_components``."""
        pair_spec = self.encoder if self.pair_encoder is None else self.pair_encoder
        pair_seed = (seed + 1) % (1 << 32)
        encoders = []
        for name, spec, width, s in (("encoder", self.encoder, n_features, seed),
                                     ("pair_encoder", pair_spec, n_pair_features, pair_seed)):
            try:
                module = make_encoder(_widths(self.hidden) if spec == "mlp" else spec, width,
                                      self.n_components, s)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
            encoders.append(module.train())
        return encoders

    def _batch(self, n: int) -> int:
        """The pairs per step: ``batch_size``, else all ``n`` while the step fits in
        ``FULL_BATCH_FLOATS``, else the largest batch that does."""
        if self.batch_size is not None:
            return min(self.batch_size, n)
        if n * self._row_floats(n) <= FULL_BATCH_FLOATS:
            return n
        width = self._row_floats(0)  # solve 4 B^2 + width B = FULL_BATCH_FLOATS
        return int((-width + math.sqrt(width**2 + 16 * FULL_BATCH_FLOATS)) / 8)

    def _row_floats(self, batch: int) -> int:
        """Floats per pair of a step of ``batch`` pairs: the log-kernel row, the log-softmax
        of each direction and the gradient (4 B), and both encoders' activations and their
        gradients."""
        hidden = sum(_widths(self.hidden)) if "mlp" in (self.encoder, self.pair_encoder) else 0
        return 4 * batch + 4 * (self.n_components + hidden)

    def _memory_estimate(self, X, X_pair, encoders, batch: int) -> dict:
        """Peak bytes by item: the features (the checked copies and the standardised ones),
        the encoders' parameters with their gradients and Adam's two moments, one step."""
        params = sum(p.numel() for module in encoders for p in module.parameters())
        return {"features": 2 * 4 * X.shape[0] * (X.shape[1] + X_pair.shape[1]),
                "encoders (weights, gradients, Adam state)": 4 * 4 * params,
                "training step": 4 * batch * self._row_floats(batch)}

    def _train(self, features, encoders, batch: int, epochs: int, seed: int) -> None:
        """Adam on both encoders (and ``log tau`` with ``learn_temperature``) from ``seed``,
        on :func:`~icongraph.loop.train`; sets the fitted attributes."""
        x, x_pair = features
        n, device = x.shape[0], x.device
        f, g = (module.to(device) for module in encoders)
        unit = KERNELS[self.kernel](temperature=1.0)
        start = (KERNELS[self.kernel]().temperature if self.temperature is None
                 else float(self.temperature))
        log_tau = torch.tensor(math.log(start), dtype=torch.float32, device=device,
                               requires_grad=bool(self.learn_temperature))
        params = [*f.parameters(), *g.parameters()] + ([log_tau] if self.learn_temperature
                                                       else [])
        lr = self._learning_rate()
        opt = torch.optim.Adam(params, lr=lr)
        order_gen = torch.Generator(device=device).manual_seed(seed)
        exact = batch >= n
        n_batches = max(1, n // batch)
        knn = (None if self.neighbors_ is None else
               tuple(torch.as_tensor(nb, dtype=torch.int64, device=device)
                     for nb in (self.neighbors_, self.pair_neighbors_)))
        position = torch.full((n,), -1, dtype=torch.int64, device=device)
        u = None

        def batch_neighbours(rows):
            """The neighbour columns of the batch ``rows`` (-1 outside it), None for none."""
            if knn is None or exact:
                return knn
            position[rows] = torch.arange(len(rows), device=device)
            columns = tuple(position[nb[rows]] for nb in knn)
            position[rows] = -1
            return columns

        def temperature():
            return log_tau.exp().clamp_min(MIN_TEMPERATURE)

        def step(epoch: int, with_loss: bool) -> float | None:
            """One pass over the pairs (one Adam step per batch); the mean batch loss."""
            nonlocal u
            chunks = ([None] if exact else
                      torch.tensor_split(torch.randperm(n, generator=order_gen, device=device),
                                         n_batches))
            total = torch.zeros((), device=device)
            for rows in chunks:
                u = _unit(f(x if exact else x[rows]))
                v = _unit(g(x_pair if exact else x_pair[rows]))
                loss = paired_kl(u, v, unit, temperature(), self.alpha, batch_neighbours(rows),
                                 self.neighbor_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach()
            return float(total) / len(chunks) if with_loss else None

        hooks = [FiniteGuard(remedy=" or raise temperature"), Callbacks(self.callbacks)]
        with phase("training", self.verbose, f"{n} pairs, {epochs} epochs, batch {batch}") as timed:
            state = train(step, epochs, hooks=hooks, loss_every=1, lr_at=lambda epoch: lr,
                          view=lambda: u.detach(), desc="pairs", verbose=self.verbose)
            if state.losses:
                timed.note = f"loss {state.losses[-1][1]:.6g}"
        self.encoder_ = f.requires_grad_(False).eval()
        self.pair_encoder_ = g.requires_grad_(False).eval()
        self.temperature_ = float(temperature().detach())
        self.kernel_ = KERNELS[self.kernel](temperature=self.temperature_)
        self.loss_history_ = state.losses
        self.embedding_ = self._encode(self.encoder_, x)
        self.pair_embedding_ = self._encode(self.pair_encoder_, x_pair)
        if exact:
            self.loss_ = float(paired_kl(torch.as_tensor(self.embedding_, dtype=torch.float64),
                                         torch.as_tensor(self.pair_embedding_,
                                                         dtype=torch.float64),
                                         unit, self.temperature_, self.alpha,
                                         None if knn is None else tuple(nb.cpu() for nb in knn),
                                         self.neighbor_weight))
        else:
            self.loss_ = state.losses[-1][1] if state.losses else math.nan

    def _learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return LEARNING_RATES[self.encoder if isinstance(self.encoder, str) else "mlp"]

    # -- applying --------------------------------------------------------------------------
    @staticmethod
    def _encode(module: torch.nn.Module, features: torch.Tensor) -> np.ndarray:
        """Unit embeddings (n, d) float32 of standardised ``features`` (n, D), in chunks."""
        device = next(iter(module.parameters()), features).device
        with torch.no_grad():
            return np.concatenate([
                _unit(module(features[lo:lo + ENCODE_ROWS].to(device))).cpu().numpy()
                for lo in range(0, len(features), ENCODE_ROWS)]).astype(np.float32)

    def transform(self, X=None, X_pair=None):
        """The unit embeddings of new items of either or both modalities.

        Parameters
        ----------
        X : array-like of shape (n, D) or None
            Items of the first modality.
        X_pair : array-like of shape (n', D') or None
            Items of the second; need not be paired with ``X``.

        Returns
        -------
        ndarray of shape (n, d), or a tuple of them
            ``E_X`` for ``X`` alone, ``E_pair`` for ``X_pair`` alone (``X=None``),
            ``(E_X, E_pair)`` for both; float32 rows of norm 1 in the shared space.
        """
        check_is_fitted(self, "encoder_")
        if X is None and X_pair is None:
            raise ValueError("transform needs X, X_pair or both; got neither.")
        out = []
        if X is not None:
            X = check_new_data(self, X)
            out.append(self._encode(self.encoder_,
                                    torch.as_tensor((X - self.mean_) / self.scale_)))
        if X_pair is not None:
            values = check_data(X_pair, name="X_pair", allow_sparse=False)
            if values.shape[1] != self.n_pair_features_in_:
                raise ValueError(f"X_pair has {values.shape[1]} features, but PairedEmbedding "
                                 f"is expecting {self.n_pair_features_in_} features as input.")
            if not self.pair_data_scale_.identity:
                values = check_data(X_pair, name="X_pair", allow_sparse=False,
                                    scaling=self.pair_data_scale_)[0]
            X_pair = values
            out.append(self._encode(self.pair_encoder_,
                                    torch.as_tensor((X_pair - self.pair_mean_)
                                                    / self.pair_scale_)))
        return out[0] if len(out) == 1 else tuple(out)


def _unit(z: torch.Tensor) -> torch.Tensor:
    """The rows of ``z`` (B, d) at norm 1 (a zero row stays zero)."""
    return torch.nn.functional.normalize(z, dim=1)


