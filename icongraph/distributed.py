"""The process group a fit runs in: rank, world size, each rank's shard of the rows, and the
collectives the fit needs, all no-ops in a single process.

A fit joins a group only when the caller (or ``torchrun`` through the CLI,
:func:`init_from_env`) has initialised ``torch.distributed`` with more than one rank;
otherwise :func:`current` returns :data:`SINGLE` and nothing is created or exchanged.

Inside a group every rank is given the *whole* data, the same on every rank (an
``np.load(..., mmap_mode="r")`` memmap of one file shares the page cache between the ranks of
a machine, but the fit's checked, scaled and centred float32 copies are each rank's own:
memory per rank is not divided yet), and runs the same fit. The rows are split into
contiguous shards of ``ceil(N / W)`` rows (:meth:`Group.bounds`; the last ones shorter or
empty, so N need not divide by W), and:

* the kNN search: each rank searches its shard's part, the candidates go to the rank that
  owns their rows (an all-to-all), each rank merges its rows, and the rows are all-gathered
  once (:func:`~icongraph.knn.sharded_knn`), so every rank holds the whole graph and builds
  the same target, objective and init;
* every epoch: each rank computes the gradient rows of its own anchors (and their rows of
  the normaliser sums ``zsum``, the loss and the learned degrees of freedom's terms), which
  depend only on the whole embedding, the previous ``zsum`` and the anchor, with negatives
  hashed from ``(seed, epoch, i, t)``: the same rows as one process computes, whatever W.
  They are all-gathered, packed side by side, in one collective of ``N x (d + 2)`` floats;
  then every rank takes the same optimiser step on the whole embedding, so the embeddings
  stay equal on every rank without exchanging them, and equal to one process's (bitwise on
  the CPU engine).

The ``"fft"`` estimator's exact all-pair sums (up to
:data:`~icongraph.objective.EXACT_PAIRS_MAX_SAMPLES` points) are sharded the same way, one
more all-gather of their rows per epoch. Not sharded yet (computed whole on every rank, still
correct): the grid-interpolated sums above that size, the init, an encoder's forward and
backward passes, the clustering.

The collectives are torch.distributed's own (``all_gather_single``, formerly
``all_gather_into_tensor``, and ``all_to_all_single``), on tensors of the group's device (CUDA
for NCCL, the CPU for gloo), padded to equal shards. A rank that dies makes the others' next
collective fail, at the latest after the group's timeout (``init_process_group``'s
``timeout``; the CLI's is :data:`TIMEOUT_SECONDS`), raised as :class:`DistributedError`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Group", "current", "SINGLE", "DistributedError", "launched", "init_from_env",
           "local_jobs", "finish", "TIMEOUT_SECONDS"]

#: the collectives' timeout of a group the CLI initialises (env ``ICONGRAPH_DIST_TIMEOUT``)
TIMEOUT_SECONDS = 300.0


class DistributedError(RuntimeError):
    """A collective failed: another rank died or timed out."""


@dataclass(frozen=True)
class Group:
    """A fit's view of the process group.

    Attributes
    ----------
    rank : int
        This process's rank (0 in a single process).
    world : int
        The number of ranks (1 in a single process).
    device : torch.device
        Where the collectives' tensors live: CUDA for NCCL, else the CPU.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        """Whether there are other ranks to exchange with."""
        return self.world > 1

    def shard(self, n: int) -> int:
        """Rows per shard, ``ceil(n / world)`` (the padded size of every shard)."""
        return -(-n // self.world)

    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """``(lo, hi)``: the rows of ``n`` owned by ``rank`` (default this one); contiguous,
        ``ceil(n / world)`` rows each, the last ranks' shards shorter or empty."""
        rank = self.rank if rank is None else rank
        size = self.shard(n)
        return min(n, rank * size), min(n, (rank + 1) * size)

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The (n, ...) tensor whose rows ``bounds(n, r)`` come from rank ``r``'s ``local``
        (its rows, ``hi - lo`` of them), on every rank. A single process returns ``local``."""
        if not self.active:
            return local
        import torch.distributed as dist

        size = self.shard(n)
        send = local
        if local.shape[0] != size or local.device != self.device:
            send = torch.zeros((size, *local.shape[1:]), dtype=local.dtype, device=self.device)
            send[:local.shape[0]] = local
        out = torch.empty((size * self.world, *local.shape[1:]), dtype=local.dtype,
                          device=self.device)
        _collective(_all_gather(dist), out, send.contiguous())
        return out[:n]

    def gather_numpy_rows(self, arrays: list[np.ndarray], lo: int, hi: int) -> None:
        """Fill every array of ``arrays`` (each (n, ...) float32 with the same n, 1-D or 2-D)
        in place with the rows every rank computed for its shard ``lo:hi``: one all-gather of
        the rows packed side by side. A single process does nothing."""
        if not self.active:
            return
        n = arrays[0].shape[0]
        cols = [a.reshape(n, -1) for a in arrays]
        local = torch.from_numpy(np.concatenate([c[lo:hi] for c in cols], axis=1))
        full = self.gather_rows(local, n).cpu().numpy()
        at = 0
        for c in cols:
            c[:] = full[:, at:at + c.shape[1]]
            at += c.shape[1]

    def exchange_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """All-to-all by destination: ``local`` (n, ...) holds this rank's values for every
        row; returns (world, hi - lo, ...), slice ``s`` rank ``s``'s values for this rank's
        rows ``bounds(n)``. Each rank receives ``world x ceil(n / world)`` rows instead of an
        all-gather's ``world x n``. A single process returns ``local[None]``."""
        if not self.active:
            return local[None]
        import torch.distributed as dist

        size = self.shard(n)
        send = torch.zeros((size * self.world, *local.shape[1:]), dtype=local.dtype,
                           device=self.device)
        send[:n] = local
        out = torch.empty_like(send)
        _collective(dist.all_to_all_single, out, send)
        lo, hi = self.bounds(n)
        return out.view(self.world, size, *local.shape[1:])[:, :hi - lo]

    def stack(self, local: torch.Tensor) -> torch.Tensor:
        """(world, ...) : every rank's ``local`` (the same shape on every rank), in rank
        order, on every rank; ``local[None]`` in a single process."""
        if not self.active:
            return local[None]
        import torch.distributed as dist

        out = torch.empty((self.world * local.shape[0], *local.shape[1:]), dtype=local.dtype,
                          device=self.device)
        _collective(_all_gather(dist), out, local.to(self.device).contiguous())
        return out.view(self.world, *local.shape)


    def check_same(self, what: str, values) -> None:
        """Raise ``ValueError`` unless every rank passes the same ``values`` (integers or
        floats): a fit in a group is collective, every rank calling it with the same data and
        parameters. Nothing to check in a single process."""
        if not self.active:
            return
        local = torch.as_tensor(np.asarray(values, np.float64).ravel())
        every = self.stack(local).cpu()
        if not bool((every == every[0]).all()):
            raise ValueError(f"the ranks of the process group disagree on {what}: "
                             f"{every.tolist()}; every rank must fit the same data with the "
                             "same parameters.")


SINGLE = Group()


def _all_gather(dist):
    """torch's all-gather into one tensor: ``all_gather_single`` (torch >= 2.13, which
    deprecates the older name), else ``all_gather_into_tensor``."""
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _collective(fn, *args) -> None:
    """Run the collective ``fn``; a failure (a dead rank, a timeout) becomes a
    :class:`DistributedError` naming the likely cause."""
    try:
        fn(*args)
    except (RuntimeError, ValueError) as err:  # gloo and NCCL raise RuntimeError subclasses
        raise DistributedError(
            f"a torch.distributed collective ({fn.__name__}) failed: another rank probably "
            f"died or stopped answering within the group's timeout, or the ranks are not "
            f"running the same fit ({err})") from err


def current() -> Group:
    """The group this process fits in: torch.distributed's default group when it is
    initialised (and has more than one rank), else :data:`SINGLE`. Creates nothing."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    world = dist.get_world_size()
    if world <= 1:
        return SINGLE
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    return Group(dist.get_rank(), world, device)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting its
    environment) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device=None) -> bool:
    """Initialise the default group from ``torchrun``'s environment when :func:`launched` and
    not yet initialised: NCCL when ``device`` is CUDA (each rank on ``LOCAL_RANK``'s GPU), else
    gloo (``device`` as the estimators take it: None or ``"auto"`` is CUDA when available),
    with the timeout ``ICONGRAPH_DIST_TIMEOUT`` (seconds, default :data:`TIMEOUT_SECONDS`).
    Returns whether this call created it (then the caller destroys it with :func:`finish`)."""
    import torch.distributed as dist

    from .runtime import resolve_device

    if not launched() or dist.is_initialized():
        return False
    device = resolve_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get("ICONGRAPH_DIST_TIMEOUT",
                                                              TIMEOUT_SECONDS)))
    backend = "gloo"
    if device.type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout)
    return True


def local_jobs() -> int:
    """CPU threads per rank under a launcher: the cores shared by the ranks of this machine
    (``LOCAL_WORLD_SIZE``), at least 1; -1 (all cores) when not :func:`launched`."""
    if not launched():
        return -1
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def finish() -> None:
    """Destroy the default group (after :func:`init_from_env` created it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
