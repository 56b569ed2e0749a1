"""The embedding's optimiser: one pass of the sampled gradient per epoch, then one in-place
step, run by :func:`~icongraph.loop.train`. What is learned is the free embedding itself or
the parameters of an encoder ``y = f(x)`` (:class:`EncoderStepper`).

The gradient comes from the numba engine on CPU (built-in kernels) or from the torch engine
(CUDA, or kernels without a numba form); the step is SGD with momentum or Adam with a
learning-rate schedule, in place on the tensor both engines read (no copies; on CUDA the only
host syncs are the loss read-outs every ``loss_every`` epochs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import _cpu_engine as cpu
from . import distributed, ordering
from ._torch_engine import (
    edge_forces_torch,
    label_forces_torch,
    sampled_gradient_torch,
    sampled_gradient_torch_q,
    torch_arrays,
)
from ._transform_engine import (
    partial_gradient,
    partial_gradient_torch,
    torch_partial_arrays,
)
from .kernels import Kernel
from .loop import Callbacks, FiniteGuard, train
from .objective import Objective, all_pairs_gradient, check_composition, epoch_seed
from .runtime import resolve_device, torch_threads
from .sphere import TemperatureLearner, normalise_, normalised, sphere_gradient_
from .validation import callbacks_rule, check_number, choice, number

__all__ = ["RowAdam", "optimize", "optimize_new", "check_optimizer_params",
           "OPTIMIZER_RULES",
           "EncoderStepper", "encode", "ENCODER_CHUNK", "DofLearner", "DOF_LEARNING_RATE",
           "DOF_RANGE"]

SCHEDULES = ("linear", "constant", "cosine")
OPTIMIZERS = ("sgd", "adam", "gains")
#: added to every shrinking gain of the ``"gains"`` optimiser (openTSNE's ``min_gain``)
MIN_GAIN = 0.01
#: rows per forward / backward pass of an encoder (its activations stay bounded at any N)
ENCODER_CHUNK = 16384
#: Adam's step on ``log dof`` per epoch (times the schedule's factor), and the range the
#: learned degrees of freedom are kept in (beyond 1e3 the Student-t is a Gaussian to float32)
DOF_LEARNING_RATE = 0.02
DOF_RANGE = (1e-2, 1e3)


#: rules (:func:`~icongraph.validation.check_params`) of the optimisation parameters an
#: estimator passes through; None means "the default applies"
OPTIMIZER_RULES = {
    "n_epochs": number(1, integer=True, allow_none=True),
    "learning_rate": number(0.0, allow_none=True),  # 0 switches the optimiser off
    "momentum": number(0.0, 1.0, high_open=True, allow_none=True),
    "optimizer": choice(OPTIMIZERS, allow_none=True),
    "schedule": choice(SCHEDULES, allow_none=True),
    "callbacks": callbacks_rule("cb(epoch, loss, embedding)"),
}


def check_optimizer_params(*, max_step=None, **params) -> None:
    """Check the optimisation parameters before any work (None: not given, the default
    applies): the names of :data:`OPTIMIZER_RULES`, and ``max_step`` (> 0, ``inf`` for no
    cap). ``learning_rate=0`` is allowed: it switches the optimiser off."""
    for name, value in params.items():
        OPTIMIZER_RULES[name](name, value)
    if max_step is not None and max_step != np.inf:
        check_number("max_step", max_step, 0.0, low_open=True)


def lr_factor(schedule: str, epoch: int, n_epochs: int) -> float:
    """Learning-rate multiplier at ``epoch``: linear decay to 0 (umap-learn), cosine, constant."""
    if schedule == "linear":
        return max(1.0 - epoch / n_epochs, 0.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + float(np.cos(np.pi * min(epoch / n_epochs, 1.0))))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")


class Stepper:
    """In-place SGD with (heavy-ball) momentum, Adam, or t-SNE's momentum with per-coordinate
    gains, on one tensor.

    SGD and Adam are the same updates as ``torch.optim.SGD``/``Adam`` (checked in the tests),
    written out because constructing a ``torch.optim`` optimiser imports ``torch._dynamo``:
    1.3 s of every cold start on this machine, more than a whole digits embedding.

    ``"gains"`` is the delta-bar-delta rule of t-SNE implementations (van der Maaten 2014), as
    openTSNE writes it: ``gain += 0.2`` where the gradient keeps the direction of the last
    update, ``gain = 0.8 gain + MIN_GAIN`` where it flips; ``update = momentum update -
    lr gain grad``. (A floor ``max(0.8 gain, MIN_GAIN)`` instead of the added ``MIN_GAIN`` gave
    lower quality on tissue_gene_expression: 10-NN accuracy 0.921 vs 0.942.) ``max_step`` caps
    each row's update norm (openTSNE's ``max_step_norm``).
    """

    def __init__(self, y: torch.Tensor, kind: str, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 max_step: float = float("inf")):
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {kind!r}.")
        self.y, self.kind, self.momentum, self.betas, self.eps = y, kind, momentum, betas, eps
        self.max_step = max_step
        self.buf = torch.zeros_like(y) if (kind != "sgd" or momentum) else None
        self.sq = torch.zeros_like(y) if kind == "adam" else None
        self.gains = torch.ones_like(y) if kind == "gains" else None
        self.t = 0

    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        if self.kind == "gains":
            keeps = torch.sign(self.buf) != torch.sign(grad)  # the update went along -grad
            self.gains.copy_(torch.where(keeps, self.gains + 0.2, self.gains * 0.8 + MIN_GAIN))
            self.buf.mul_(self.momentum).addcmul_(self.gains, grad, value=-lr)
            if self.max_step < float("inf"):
                norm = self.buf.norm(dim=1, keepdim=True)
                self.buf.mul_((self.max_step / norm.clamp_min(1e-30)).clamp_max(1.0))
            self.y.add_(self.buf)
            return
        if self.kind == "sgd":
            if self.buf is None:
                self.y.add_(grad, alpha=-lr)
                return
            if self.t == 1:
                self.buf.copy_(grad)
            else:
                self.buf.mul_(self.momentum).add_(grad)
            self.y.add_(self.buf, alpha=-lr)
            return
        b1, b2 = self.betas
        self.buf.mul_(b1).add_(grad, alpha=1 - b1)
        self.sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.sq / (1 - b2**self.t)).sqrt_().add_(self.eps)
        self.y.addcdiv_(self.buf, denom, value=-lr / (1 - b1**self.t))


class DofLearner:
    """Adam on ``log dof`` of a Student-t kernel with ``learn_dof``, one step per epoch, from
    the exact gradient of the epoch's sampled objective: ``dL/dnu = 1/4 sum_i dof_rows[i]``
    (the engines' ``dof_rows``, :mod:`icongraph.kernels`), divided by the target's mass ``M``
    (a mean over anchors) and scaled to ``dL/dlog nu = nu dL/dnu``. Adam makes the step
    ``DOF_LEARNING_RATE`` times the schedule's factor whatever the gradient's scale, which
    differs by estimator; ``dof`` stays in :data:`DOF_RANGE`. As for the temperature, a
    clipped force (``clip``) is counted unclipped.

    Parameters
    ----------
    kernel : Kernel
        The starting kernel (its ``dof``).
    total_mass : float
        ``M = sum_ij p_ij``.
    """

    def __init__(self, kernel: Kernel, total_mass: float):
        self.log_dof = torch.tensor([np.log(float(kernel.dof))], dtype=torch.float64)
        self.adam = Stepper(self.log_dof, "adam")
        self.total_mass = float(total_mass)

    def step(self, dof_rows, factor: float) -> float:
        """Step from the anchors' ``dof_rows`` (N,) (numpy or torch; one host read of their
        sum) at ``factor`` times :data:`DOF_LEARNING_RATE`; returns the new ``dof``."""
        total = float(dof_rows.sum(dtype=np.float64 if isinstance(dof_rows, np.ndarray)
                                   else torch.float64))
        dof = float(self.log_dof.exp())
        self.adam.step(torch.tensor([0.25 * total / self.total_mass * dof], dtype=torch.float64),
                       DOF_LEARNING_RATE * factor)
        self.log_dof.clamp_(float(np.log(DOF_RANGE[0])), float(np.log(DOF_RANGE[1])))
        return float(self.log_dof.exp())


class RowAdam:
    """Adam on the rows of a table (N, C) that one step touches: "lazy" Adam, as
    :class:`torch.optim.SparseAdam`, whose moments and parameters move only on those rows, with
    the bias correction of the global step count. For a free head trained in mini-batches
    (B (1 + R) of N rows a step), where a dense Adam step costs O(N C) and SparseAdam's sparse
    tensors (coalesce, sparse_mask) cost several times the dense row operations used here.

    Parameters
    ----------
    table : torch.Tensor
        (N, C), updated in place (a parameter's ``.data``).
    lr : float
        The step size (> 0).
    betas, eps : as torch's Adam.
    """

    def __init__(self, table: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.table, self.lr, (self.b1, self.b2), self.eps = table, lr, betas, eps
        self.m, self.v = torch.zeros_like(table), torch.zeros_like(table)
        self.t = 0

    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """One step on the distinct ``rows`` (U,) with their gradients ``grad`` (U, C)."""
        self.t += 1
        m = self.m.index_select(0, rows).mul_(self.b1).add_(grad, alpha=1 - self.b1)
        v = self.v.index_select(0, rows).mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        correction2 = math.sqrt(1 - self.b2 ** self.t)
        size = self.lr * correction2 / (1 - self.b1 ** self.t)
        # the floor keeps subnormal second moments (tiny gradients squared) out of sqrt, where
        # they cost ~10x a normal float on the CPU; sqrt(1e-30) is far below eps
        update = m.div_(v.clamp_min_(1e-30).sqrt_().add_(self.eps * correction2)).mul_(size)
        self.table.index_copy_(0, rows, self.table.index_select(0, rows).sub_(update))


def take_step(stepper: Stepper, grad: torch.Tensor, lr: float, kernel: Kernel) -> None:
    """One in-place step of ``stepper`` on its tensor ``y`` (N, d) along ``grad`` (N, d).
    For a kernel on the sphere ``grad`` is ``dL/dy`` at unit rows: it is projected on the
    tangent plane (:func:`~icongraph.sphere.sphere_gradient_`, overwriting ``grad``), the step
    is ``lr * tau`` (in units of the kernel's width, so one learning rate suits every
    temperature) and the rows are renormalised after it."""
    if not kernel.sphere:
        stepper.step(grad, lr)
        return
    stepper.step(sphere_gradient_(stepper.y, grad), lr * float(kernel.temperature))
    normalise_(stepper.y)


class EncoderStepper:
    """Steps the parameters ``theta`` of an encoder ``y = f_theta(x)`` along the gradient that
    the engines give for the embedding, by the chain rule::

        dL/dtheta = sum_i (dy_i/dtheta)^T dL/dy_i

    (``y.backward(dL/dy)``), with one :class:`Stepper` (SGD or Adam) per parameter tensor.
    On a kernel on the sphere the encoder's output is normalised, ``y = f / |f|``, so autograd
    carries the gradient through the projection. The embedding ``y`` (N, d), the tensor both
    engines read, is kept equal to ``f_theta(X)`` after every step; forward and backward passes
    run on chunks of :data:`ENCODER_CHUNK` rows, so the activations stay bounded (the output is
    recomputed with the graph for the backward pass).

    Parameters
    ----------
    module : torch.nn.Module
        ``f``, mapping (B, D) features to (B, d), on the features' device; trained in place.
    features : torch.Tensor
        (N, D) float32, the standardised training features.
    y : torch.Tensor
        (N, d) float32 on the same device, overwritten with ``f(X)`` now and after each step.
    kind : str
        ``"sgd"`` or ``"adam"``.
    momentum : float
        SGD's momentum.
    sphere : bool
        Normalise the output rows to norm 1.
    """

    def __init__(self, module: torch.nn.Module, features: torch.Tensor, y: torch.Tensor,
                 kind: str, momentum: float = 0.0, sphere: bool = False):
        if kind == "gains":
            raise ValueError("optimizer='gains' is t-SNE's per-coordinate rule for a free "
                             "embedding; an encoder's parameters take 'adam' or 'sgd'.")
        self.module, self.features, self.y, self.sphere = module.train(), features, y, sphere
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.steppers = [Stepper(p.data, kind, momentum) for p in self.params]
        self.chunks = [slice(lo, lo + ENCODER_CHUNK) for lo in range(0, len(y), ENCODER_CHUNK)]
        self.refresh_()

    def embed(self, rows: slice) -> torch.Tensor:
        """``f(x)`` of the features' ``rows`` (B, d), normalised on the sphere."""
        out = self.module(self.features[rows])
        return normalised(out) if self.sphere else out

    def refresh_(self) -> None:
        """Write ``f(X)`` into ``y``."""
        with torch.no_grad():
            for rows in self.chunks:
                self.y[rows] = self.embed(rows)

    def backward(self, grad: torch.Tensor) -> None:
        """Set every parameter's ``.grad`` to ``dL/dtheta`` from ``grad`` (N, d), ``dL/dy``."""
        for p in self.params:
            p.grad = None
        for rows in self.chunks:
            self.embed(rows).backward(grad[rows])

    def step(self, grad: torch.Tensor, lr: float) -> None:
        """One step of every parameter along ``dL/dtheta`` (``grad`` is ``dL/dy`` (N, d)),
        then ``y = f(X)`` again."""
        self.backward(grad)
        for stepper, p in zip(self.steppers, self.params):
            stepper.step(p.grad, lr)
        self.refresh_()


def encode(module: torch.nn.Module, features: torch.Tensor, sphere: bool) -> np.ndarray:
    """``f(x)`` of every row of ``features`` (M, D) as (M, d) float32, the module in eval mode,
    in chunks of :data:`ENCODER_CHUNK` rows; normalised to norm 1 when ``sphere``. Each row's
    result depends on that row only (for modules without batch statistics in eval mode)."""
    module.eval()
    with torch.no_grad():
        out = torch.cat([module(features[lo:lo + ENCODER_CHUNK])
                         for lo in range(0, len(features), ENCODER_CHUNK)])
    return (normalised(out) if sphere else out).cpu().numpy()


def optimize(objective: Objective, y0: np.ndarray, *, n_epochs: int = 200,
             learning_rate: float = 1.0, optimizer: str = "sgd", momentum: float = 0.0,
             schedule: str = "linear", exaggeration: float = 1.0, exaggeration_epochs: int = 0,
             exaggeration_learning_rate: float | None = None, max_step: float = float("inf"),
             recentre: bool = False, seed: int = 0, device=None, loss_every: int = 10,
             callbacks: Sequence[Callable] = (), verbose: bool | int = False,
             encoder: tuple[torch.nn.Module, torch.Tensor] | None = None,
             restore_objective: bool = True):
    """Minimise ``objective`` from ``y0`` (N, d). Returns ``(y, losses)``: the embedding as a
    float32 numpy array and the loss estimates ``[(epoch, loss), ...]``.

    With ``encoder=(f, X)`` (a module and the (N, D) standardised features on ``device``;
    ``y0`` is then ``f(X)`` at the start, or any (N, d) array: it is overwritten) the embedding
    is ``y = f(X)`` and the steps go to ``f``'s parameters, in place
    (:class:`EncoderStepper`; ``optimizer`` ``"sgd"`` or ``"adam"``; ``max_step`` and
    ``recentre`` do not apply). A learned temperature then steps at the encoder's learning
    rate.

    With a kernel on the sphere (``kernel.sphere``) the rows are normalised at the start and
    every step is projected and renormalised (:func:`take_step`); a learned temperature
    (``kernel.learn_temperature``) takes one step on ``log tau`` per epoch
    (:class:`~icongraph.sphere.TemperatureLearner`), and ``objective.kernel`` holds its final
    value. Learned degrees of freedom (``kernel.learn_dof``, the Student-t kernels) take one
    step on ``log dof`` per epoch outside the exaggerated epochs (:class:`DofLearner`, from the
    engines' ``dof_rows``), and ``objective.kernel.dof`` holds the final value.

    The first ``exaggeration_epochs`` multiply the attraction by ``exaggeration`` and step with
    ``exaggeration_learning_rate`` (default ``learning_rate``); ``max_step`` caps each point's
    step (the ``"gains"`` optimiser); ``recentre`` subtracts the mean after every step.
    Each callback is called as ``cb(epoch, loss, embedding)`` after every epoch (``loss`` is the
    latest estimate, refreshed every ``loss_every`` epochs; ``embedding`` a torch tensor view
    that must not be modified); returning ``True`` stops the optimisation early.

    From :data:`~icongraph.ordering.LOCALITY_MIN_SAMPLES` points (CPU engine, no labels, no
    encoder) the run stores the points in the graph's locality order
    (:mod:`icongraph.ordering`): the same fit statistically, with other negatives drawn;
    the embedding returned and the callbacks' are in the data's order. The objective is
    relabelled back afterwards (even after an error) unless ``restore_objective=False``, for a
    caller that discards it (at 10M points relabelling its edges takes about 4 s). From
    :data:`~icongraph._cpu_engine.POOL_MIN_SAMPLES` points the CPU engine's sampled
    estimators (not ``q_alpha``, not exact negatives) draw each epoch's negatives from a
    cache-resident pool of :data:`~icongraph._cpu_engine.POOL_SIZE` rows
    (:func:`~icongraph._cpu_engine.fill_pool`): each negative stays uniform on the other
    points, and at 10M points a gradient evaluation takes 0.96 s instead of 2.12 s.

    Inside an initialised torch.distributed group (:mod:`icongraph.distributed`) every rank
    calls this with the same arguments: each computes its shard's gradient rows, they are
    all-gathered once per evaluation, and every rank takes the same step, returning the same
    embedding as one process.
    """
    check_optimizer_params(n_epochs=n_epochs, learning_rate=learning_rate, momentum=momentum,
                           optimizer=optimizer, schedule=schedule, max_step=max_step,
                           callbacks=callbacks)
    if exaggeration_learning_rate is not None:
        check_number("exaggeration_learning_rate", exaggeration_learning_rate, 0.0)
    device = resolve_device(device)
    interpolated = objective.estimator == "fft"
    check_composition(objective.estimator, objective.kernel, len(y0), np.shape(y0)[1])
    use_numba = device.type == "cpu" and objective.kernel.code >= 0
    sphere = objective.kernel.sphere
    rank = None
    if (use_numba and encoder is None and not objective.n_label
            and len(y0) >= ordering.LOCALITY_MIN_SAMPLES):  # neighbours stored near each other
        order = ordering.locality_order(objective.indptr, objective.indices)
        rank = torch.empty(len(order), dtype=torch.int64)
        rank[torch.from_numpy(order)] = torch.arange(len(order))
        objective.reorder_(order)
        y0 = np.asarray(y0)[order]
        callbacks = [functools.partial(_in_data_order, cb, rank) for cb in callbacks]
    if encoder is not None and recentre:
        raise ValueError("recentre does not apply to an encoder's output; use recentre=False.")
    if device.type == "cpu":  # numpy's buffer: large arrays get transparent huge pages
        y = torch.from_numpy(np.array(y0, np.float32))
    else:
        y = torch.tensor(np.asarray(y0, np.float32), device=device)
    n = y.shape[0]
    if sphere:
        if recentre:
            raise ValueError("recentre moves points off the sphere; use recentre=False with "
                             f"the {objective.kernel.name!r} kernel.")
        normalise_(y)
    learner = (TemperatureLearner(objective.kernel, objective.total_mass)
               if sphere and objective.kernel.learn_temperature else None)
    learn_dof = objective.kernel.learn_dof
    dof_learner = DofLearner(objective.kernel, objective.total_mass) if learn_dof else None
    if encoder is None:
        stepper = Stepper(y, optimizer, momentum, max_step=max_step)
    else:
        stepper = EncoderStepper(*encoder, y, optimizer, momentum, sphere)
    # in a process group each rank computes its shard's rows of the gradient (and of zsum,
    # the loss and dof rows), all-gathered once per evaluation; the step then runs on the
    # whole embedding on every rank, so all ranks hold the same y (icongraph.distributed)
    group = distributed.current()
    group.check_same("(N, d, n_epochs, seed, learning_rate, edges)",
                     (n, y.shape[1], n_epochs, seed, learning_rate, len(objective.indices)))
    lo, hi = group.bounds(n)
    debias_q = objective.q_alpha > 0 and not interpolated
    pooled = (use_numba and not interpolated and not debias_q and objective.n_negatives > 0
              and n >= cpu.POOL_MIN_SAMPLES)
    if pooled:  # the epoch's negatives from a cache-resident pool (cpu.fill_pool)
        pool_rows = np.zeros(cpu.POOL_SIZE, np.int64)
        pool_y = np.zeros((cpu.POOL_SIZE, y.shape[1]), np.float32)
    else:
        pool_rows, pool_y = cpu.NO_POOL, cpu.NO_POOL_Y
    if use_numba:
        y_np = y.numpy()
        grad_np = np.zeros_like(y_np)
        grad_t = torch.from_numpy(grad_np)
        zsums = [np.ones(n, np.float32), np.ones(n, np.float32)]  # written / read alternately
        s_bufs = [np.zeros(n, np.float32), np.zeros(n, np.float32)]  # the same, S (q_alpha)
        loss_rows = np.zeros(n, np.float32)
        dof_rows = np.zeros(n if learn_dof else 0, np.float32)
    else:
        arrays = torch_arrays(objective, device, rows=(lo, hi))
        zsums = [torch.ones(n, device=device, dtype=y.dtype)]
        dof_rows = torch.zeros(n, device=device, dtype=y.dtype) if learn_dof else None

    # the debiasing of q's lagged state: S of the previous evaluation, the global Z / (N (N-1))
    q_state = {"s_prev": (np.array(objective.row_mass) if use_numba else torch.as_tensor(
        objective.row_mass, device=device, dtype=y.dtype)), "level": 1.0, "s_new": None}

    def evaluate(epoch: int, exag: float, z_prev, g_scale: float, with_loss: bool):
        """``(grad, zsum, loss)``: ``loss`` is None unless ``with_loss``."""
        seed_e = epoch_seed(seed, epoch)
        if interpolated:
            grad, loss = _interpolated(exag, seed_e, with_loss)
            return grad, None, loss
        if debias_q and use_numba:
            zsum, s_new = zsums[epoch % 2], s_bufs[epoch % 2]
            cpu.sampled_gradient_q(y_np, objective.engine, epoch, float(exag), seed_e, z_prev,
                                   q_state["s_prev"], float(q_state["level"]), float(g_scale),
                                   with_loss, grad_np, zsum, s_new, loss_rows, dof_rows)
            grad, rows = grad_t, loss_rows
            q_state["s_new"] = s_new
        elif debias_q:
            with torch.no_grad():
                grad, zsum, s_new, rows = sampled_gradient_torch_q(
                    objective, arrays, y, seed_e, epoch, exag, z_prev, q_state["s_prev"],
                    q_state["level"], g_scale, with_loss, dof_rows)
                if group.active:  # the chunks cover this rank's shard: every row gathered
                    grad, zsum, rows = _gather_torch(group, n, lo, hi, grad, zsum, rows,
                                                     dof_rows)
                    s_new = group.gather_rows(s_new[lo:hi, None], n)[:, 0].to(grad.device)
                q_state["s_new"] = s_new
        elif use_numba:
            zsum = zsums[epoch % 2]
            if pooled:
                cpu.fill_pool(y_np, seed_e, pool_rows, pool_y)
            cpu.sampled_gradient(y_np, objective.engine, epoch, float(exag), seed_e, z_prev,
                                 float(g_scale), with_loss, grad_np, zsum, loss_rows, dof_rows,
                                 lo, hi, pool_rows, pool_y)
            group.gather_numpy_rows([grad_np, zsum, loss_rows, dof_rows]
                                    if learn_dof else [grad_np, zsum, loss_rows], lo, hi)
            grad, rows = grad_t, loss_rows
        else:
            with torch.no_grad():
                grad, zsum, rows = sampled_gradient_torch(objective, arrays, y, seed_e, epoch,
                                                          exag, z_prev, g_scale, with_loss,
                                                          dof_rows)
                if group.active:
                    grad, zsum, rows = _gather_torch(group, n, lo, hi, grad, zsum, rows,
                                                     dof_rows)
        loss = None
        if with_loss:
            loss = (objective.constant() + float(rows.sum())
                    + objective.normaliser_terms(zsum))
        return grad, zsum, loss

    def _interpolated(exag: float, seed_e: int, with_loss: bool):
        """Edge (and same-class) attraction, numba or torch, plus the normaliser over all
        pairs (exact or grid-interpolated)."""
        debias = objective.q_alpha > 0

        def attract(shift):
            if use_numba:
                cpu.edge_gradient(y_np, objective.engine, float(exag), seed_e, with_loss,
                                  grad_np, loss_rows, float(shift), s_bufs[0], lo, hi)
                group.gather_numpy_rows([grad_np, loss_rows] + ([s_bufs[0]] if debias else []),
                                        lo, hi)
                return grad_t, torch.from_numpy(loss_rows), torch.from_numpy(s_bufs[0])
            grad = torch.zeros_like(y)
            rows = torch.zeros(n, device=device, dtype=y.dtype)
            s_rows = torch.zeros(n, device=device, dtype=y.dtype) if debias else None
            debiased = {"shift": shift, "s_rows": s_rows} if debias else {}
            for start, stop, e0, e1 in arrays["chunks"]:
                edge_forces_torch(objective, arrays, y, e0, e1, 0, exag, with_loss, grad, rows,
                                  **debiased)
                label_forces_torch(objective, arrays, y, start, stop, seed_e, exag,
                                   with_loss, grad, rows, **debiased)
            if group.active:  # S's rows ride in the collective's zsum slot
                grad, s_rows, rows = _gather_torch(group, n, lo, hi, grad, s_rows, rows, None)
            return grad, rows, s_rows

        with torch.no_grad():
            return all_pairs_gradient(objective, y, exag, attract, with_loss, grid_cache)

    grid_cache: dict = {}  # the interpolation grid and its kernel transforms, across epochs
    if interpolated:
        z_prev, g_scale = None, 0.0
    elif debias_q:  # a first evaluation for Z, a second for S with that Z (both lag one epoch)
        z_prev = evaluate(-2, 1.0, zsums[-1], 1.0, False)[1]
        q_state["s_prev"], q_state["level"], g_scale = objective.q_state(
            z_prev, q_state["s_prev"])
        z_prev = evaluate(-1, 1.0, z_prev, g_scale, False)[1]
        q_state["s_prev"], q_state["level"], g_scale = objective.q_state(z_prev,
                                                                         q_state["s_new"])
    elif objective.estimator == "neg":  # a fixed normaliser: no estimate to seed
        z_prev, g_scale = zsums[-1], 0.0
    else:  # one evaluation to seed the normaliser estimates (they lag one epoch)
        z_prev, g_scale = objective.normaliser_state(evaluate(-1, 1.0, zsums[0], 1.0, False)[1])

    def lr_at(epoch: int) -> float:
        if epoch < exaggeration_epochs and exaggeration_learning_rate is not None:
            return exaggeration_learning_rate
        return learning_rate

    def step(epoch: int, with_loss: bool) -> float | None:
        """One epoch: the gradient, the normaliser estimates for the next, the update."""
        nonlocal z_prev, g_scale
        exag = exaggeration if epoch < exaggeration_epochs else 1.0
        grad, z_new, loss = evaluate(epoch, exag, z_prev, g_scale, with_loss)
        if debias_q:
            z_prev = z_new
            q_state["s_prev"], q_state["level"], g_scale = objective.q_state(z_new,
                                                                             q_state["s_new"])
        elif not interpolated:
            z_prev, g_scale = objective.normaliser_state(z_new)
        lr = lr_at(epoch) * lr_factor(schedule, epoch, n_epochs)
        learned = learner.step(y, grad, lr) if learner is not None else None
        if encoder is None:
            take_step(stepper, grad, lr, objective.kernel)
        else:
            stepper.step(grad, lr)
        kernel = objective.kernel
        if learned is not None:
            kernel = kernel.with_temperature(learned.temperature)
        if dof_learner is not None and exag == 1.0 and lr > 0:
            kernel = kernel.with_dof(dof_learner.step(dof_rows,
                                                      lr_factor(schedule, epoch, n_epochs)))
        if kernel is not objective.kernel:
            objective.set_kernel(kernel)
        if recentre:
            y.sub_(y.mean(0))
        return loss

    guard = FiniteGuard(watch=lambda: y, remedy=", or check the scale of the data and of a "
                        "user-given init")
    # on CPU the numba engine does the parallel work; torch's small ops run on one thread, as
    # its OpenMP team and numba's contend for the cores between numba's parallel regions
    # (each small op 10x slower measured with both on two threads)
    try:
        with torch_threads(1 if use_numba else None):
            state = train(step, n_epochs, hooks=[guard, Callbacks(callbacks)],
                          loss_every=loss_every, lr_at=lr_at, view=lambda: y, desc="optimise",
                          verbose=verbose)
    finally:  # the caller's objective back in the data's order, even after an error
        if rank is not None and restore_objective:
            objective.reorder_(rank.numpy())
    if rank is not None:
        y = y[rank]
    return y.cpu().numpy(), state.losses


def _in_data_order(callback: Callable, rank: torch.Tensor, epoch: int, loss, embedding):
    """``callback`` of a run in the locality order (:mod:`icongraph.ordering`), given the
    embedding in the data's order (``rank[i]``: the row of point ``i``)."""
    return callback(epoch, loss, embedding[rank])


def _gather_torch(group, n: int, lo: int, hi: int, grad: torch.Tensor, zsum, rows, dof_rows):
    """The torch engine's shard rows ``lo:hi`` of ``grad`` (N, d), ``zsum``, ``rows`` and
    ``dof_rows`` (N,) (each may be None) all-gathered from every rank, packed side by side in
    one collective on the device: ``(grad, zsum, rows)`` whole; ``dof_rows`` in place."""
    parts = [grad] + [v[:, None] for v in (zsum, rows, dof_rows) if v is not None]
    local = torch.cat([p[lo:hi].to(grad.dtype) for p in parts], 1)
    full = group.gather_rows(local, n).to(grad.device)
    d = grad.shape[1]
    grad = full[:, :d].contiguous()
    at, out = d, []
    for v in (zsum, rows, dof_rows):
        if v is None:
            out.append(None)
            continue
        out.append(full[:, at].to(v.dtype).contiguous())
        at += 1
    if dof_rows is not None:
        dof_rows.copy_(out[2])
    return grad, out[0], out[1]


def optimize_new(arrays: cpu.EngineArrays, kernel: Kernel, y0: np.ndarray, reference: np.ndarray,
                 keys: np.ndarray, *, n_epochs: int, learning_rate: float, optimizer: str = "sgd",
                 momentum: float = 0.0, schedule: str = "linear", max_step: float = float("inf"),
                 seed: int = 0, device=None, loss_every: int = 10,
                 verbose: bool | int = False) -> np.ndarray:
    """Optimise new points ``y0`` (M, d) against the frozen ``reference`` (N, d), the fitted
    embedding, which is read and never written: the partial gradient of
    :mod:`icongraph._transform_engine` (numba on CPU for the built-in kernels, else its torch
    twin) and an in-place :class:`Stepper` step per epoch, run by
    :func:`~icongraph.loop.train` with the finite-loss guard.

    Every step is per point (elementwise updates, ``max_step`` per row, no recentring; on the
    sphere the projection and renormalisation of :func:`take_step` are per row too), and a
    point's negatives are keyed by ``keys`` (:func:`~icongraph._transform_engine.point_keys`),
    so a batch and its points one by one give the same result.

    Parameters
    ----------
    arrays : EngineArrays
        The new points' target rows and objective scalars
        (:func:`~icongraph._transform_engine.partial_arrays`).
    kernel : Kernel
        The fitted kernel.
    y0 : np.ndarray
        (M, d) the start.
    reference : np.ndarray
        (N, d) the fitted embedding.
    keys : np.ndarray
        (M,) int64 point keys.
    n_epochs, learning_rate, optimizer, momentum, schedule, max_step
        As :func:`optimize`.
    seed : int
        Hashed with the epoch into the negatives.
    device : str or torch.device, optional
        Where to run.
    loss_every : int
        Epochs between loss read-outs (the guard's checks).
    verbose : bool or int
        A progress bar; from 2, detail lines with the loss (:func:`~icongraph.loop.train`).

    Returns
    -------
    np.ndarray
        (M, d) float32, the optimised points.
    """
    device = resolve_device(device)
    use_numba = device.type == "cpu" and kernel.code >= 0
    y = torch.tensor(np.asarray(y0, np.float32), device=device)
    if kernel.sphere:
        normalise_(y)
    stepper = Stepper(y, optimizer, momentum, max_step=max_step)
    if use_numba:
        y_np, ref_np = y.numpy(), np.ascontiguousarray(reference, np.float32)
        grad_np = np.zeros_like(y_np)
        grad_t = torch.from_numpy(grad_np)
        loss_rows = np.zeros(len(y_np), np.float32)
    else:
        ref_t = torch.as_tensor(np.asarray(reference, np.float32), device=device)
        keys_t = torch.as_tensor(keys, device=device)
        arrays_t = torch_partial_arrays(arrays, device)

    def step(epoch: int, with_loss: bool) -> float | None:
        seed_e = epoch_seed(seed, epoch)
        if use_numba:
            partial_gradient(y_np, ref_np, arrays, keys, seed_e, with_loss, grad_np, loss_rows)
            grad, rows = grad_t, loss_rows
        else:
            with torch.no_grad():
                grad, rows = partial_gradient_torch(arrays_t, kernel, y, ref_t, keys_t, seed_e,
                                                    with_loss)
        take_step(stepper, grad, learning_rate * lr_factor(schedule, epoch, n_epochs), kernel)
        return float(rows.sum()) if with_loss else None

    guard = FiniteGuard(watch=lambda: y, remedy=" (transform_epochs=0 places new points "
                        "without optimising)")
    with torch_threads(1 if use_numba else None):
        train(step, n_epochs, hooks=[guard], loss_every=loss_every, lr_at=lambda e: learning_rate,
              view=lambda: y, desc="transform", verbose=verbose)
    return y.cpu().numpy()
