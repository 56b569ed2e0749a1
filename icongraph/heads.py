"""The learned modules: a head that maps a point to its cluster logits (C,), and an encoder
that maps a point to its embedding (d,).

``linear`` (the paper's choice) and ``mlp`` act on standardised features, so they apply to new
points; ``free`` holds one row of logits per training point. :func:`make_encoder` builds the
``linear`` and ``mlp`` encoders (any hidden widths) or takes a user's ``torch.nn.Module``.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["HEADS", "ENCODERS", "LEARNING_RATES", "make_head", "make_encoder"]

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



#: the built-in encoders of :func:`make_encoder` (a ``torch.nn.Module`` is accepted too)
ENCODERS = ("linear", "mlp")


def make_encoder(encoder, n_features: int, n_components: int, hidden, seed: int
                 ) -> torch.nn.Module:
    """An encoder from features (B, D) to embeddings (B, d), initialised from ``seed`` without
    touching torch's global RNG.

    Parameters
    ----------
    encoder : {"linear", "mlp"} or torch.nn.Module
        ``linear``: ``x W^T + b``; ``mlp``: linear layers of the ``hidden`` widths with ReLU
        between them, then a linear layer to d; a module is deep-copied (the caller's stays
        untouched) and used as it is.
    n_features : int
        D, the width of the features.
    n_components : int
        d, the width of the embedding.
    hidden : int or sequence of int
        The MLP's hidden widths, first layer first (an int: one hidden layer).
    seed : int
        Seed of torch's default initialisation of the built-in encoders.

    Returns
    -------
    torch.nn.Module
        Maps (B, D) to (B, d).
    """
    if isinstance(encoder, torch.nn.Module):
        return copy.deepcopy(encoder)
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if encoder == "linear":
            return torch.nn.Linear(n_features, n_components)
        layers, width = [], n_features
        for size in widths:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, n_components))
