"""The learned module of a clustering: a head that maps a point to its cluster logits (C,).

``linear`` (the paper's choice) and ``mlp`` act on standardised features, so they apply to new
points; ``free`` holds one row of logits per training point.
"""

from __future__ import annotations

import torch

__all__ = ["HEADS", "LEARNING_RATES", "make_head"]

HEADS = ("linear", "mlp", "free")
#: Adam's step per head when ``learning_rate=None``. The MLP's is lower: at 0.05 its first
#: steps on 784 standardised pixels saturated the softmax, every point went to one cluster and
#: the other clusters' masses underflowed to 0 (a NaN loss by epoch 7); at 0.01 it trains
#: (ARI 0.88 on digits upsampled to 28 x 28, 3e-3 and 1e-3 under-train in 300 epochs). On the
#: suite, ARI at K, mean of seeds 0-2, step 0.05 / 0.01 / 0.003: digits 0.821 / 0.757 / 0.748,
#: pbmc68k 0.371 / 0.386 / 0.395, tissue 0.591 / 0.803 / 0.804
LEARNING_RATES = {"linear": 0.05, "free": 0.05, "mlp": 0.01}


def make_head(kind: str, features: torch.Tensor, n_clusters: int, hidden: int, seed: int,
              logits: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.nn.Module:
    """The learned module, initialised from ``seed`` without touching torch's global RNG.

    Parameters
    ----------
    kind : str
        One of :data:`HEADS`.
    features : torch.Tensor
        (N, D) standardised features: their width sizes the linear and MLP heads, their rows
        the free head.
    n_clusters : int
        C, the number of logits per point.
    hidden : int
        Width of the MLP's hidden layer.
    seed : int
        Seed of torch's default initialisation.
    logits : tuple of torch.Tensor, optional
        ``(W, b)``, (C, D) and (C,), of :func:`~icongraph.seeding.seed_logits`: the linear
        head starts as ``x W^T + b``, the free head as ``features W^T + b`` (N, C).

    Returns
    -------
    torch.nn.Module
        Maps (B, D) features (row ids (B,) for the free head) to (B, C) logits.
    """
    n, n_features = features.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            head = torch.nn.Linear(n_features, n_clusters)
            if logits is not None:
                head.weight.data.copy_(logits[0])
                head.bias.data.copy_(logits[1])
            return head
        if kind == "mlp":
            return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, n_clusters))
        head = torch.nn.Embedding(n, n_clusters)
        if logits is not None:
            head.weight.data.copy_(features @ logits[0].T + logits[1])
        else:
            torch.nn.init.normal_(head.weight, std=0.01)
        return head

