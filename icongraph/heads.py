"""The learned modules on a point's standardised features: a clustering's head, which maps a
point to its cluster logits (C,), and an embedding's encoder, which maps it to its coordinates
(d,).

Heads: ``linear`` (the paper's choice) and ``mlp`` act on standardised features, so they apply
to new points; ``free`` holds one row of logits per training point; a tuple of hidden widths or
a ``torch.nn.Module`` is an encoder to the logits (:func:`make_encoder`). Encoders
(:func:`make_encoder`): ``linear``, an MLP (``mlp`` or a tuple of hidden widths) or any
``torch.nn.Module`` of the user's.

Standardised features are ``(x - mean) / scale`` (:func:`standardisation`): the mean per
feature and one global scale, the RMS distance of the rows from their mean over ``sqrt(D)``
(so the metric among the features is kept, unlike per-feature z-scores).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import torch

__all__ = ["HEADS", "LEARNING_RATES", "make_head", "head_kind", "head_rule", "head_parameters",
           "ENCODERS", "ENCODER_HIDDEN", "encoder_rule", "make_encoder", "standardisation"]

HEADS = ("linear", "mlp", "free")
#: Adam's step per head when ``learning_rate=None``. The MLP's is lower: at 0.05 its first
#: steps on 784 standardised pixels saturated the softmax, every point went to one cluster and
#: the other clusters' masses underflowed to 0 (a NaN loss by epoch 7); at 0.01 it trains
#: (ARI 0.88 on digits upsampled to 28 x 28, 3e-3 and 1e-3 under-train in 300 epochs). On the
#: suite, ARI at K, mean of seeds 0-2, step 0.05 / 0.01 / 0.003: digits 0.821 / 0.757 / 0.748,
#: pbmc68k 0.371 / 0.386 / 0.395, tissue 0.591 / 0.803 / 0.804
LEARNING_RATES = {"linear": 0.05, "free": 0.05, "mlp": 0.01, "encoder": 0.01}


def head_kind(head) -> str:
    """The name of a head: itself for a name of :data:`HEADS`, ``"encoder"`` for a tuple of
    hidden widths or a ``torch.nn.Module`` (the key of :data:`LEARNING_RATES`)."""
    return head if isinstance(head, str) else "encoder"


def head_rule(names: tuple[str, ...]):
    """A rule for :func:`~icongraph.validation.check_params`: one of ``names``, or an encoder
    to the logits, a tuple of hidden widths or a ``torch.nn.Module`` (:func:`encoder_rule`)."""
    def rule(name, value) -> None:
        if isinstance(value, str) and value in names:
            return
        if value is None or isinstance(value, str):
            raise ValueError(f"{name} must be one of {names}, a tuple of hidden widths or a "
                             f"torch.nn.Module; got {value!r}.")
        encoder_rule(name, value)
    return rule


def head_parameters(head, n_features: int, n_out: int, hidden: int, n_rows: int = 0) -> int:
    """The learned floats of a head from ``n_features`` to ``n_out`` logits: ``free`` holds
    ``n_rows x n_out``; ``mlp`` one hidden layer of ``hidden``; a tuple its hidden widths; a
    module its own parameters."""
    if isinstance(head, torch.nn.Module):
        return sum(p.numel() for p in head.parameters())
    if head == "free":
        return n_rows * n_out
    widths = {"linear": (), "mlp": (hidden,)}.get(head, head)
    sizes = (n_features, *widths, n_out)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def make_head(kind, features: torch.Tensor, n_clusters: int, hidden: int, seed: int,
              logits: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.nn.Module:
    """The learned module, initialised from ``seed`` without touching torch's global RNG.

    Parameters
    ----------
    kind : str, tuple of int or torch.nn.Module
        One of :data:`HEADS`, or an encoder to the ``n_clusters`` logits
        (:func:`make_encoder`: a tuple of hidden widths, or a module, deep-copied).
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
    if not isinstance(kind, str):  # an encoder to the logits
        return make_encoder(kind, n_features, n_clusters, seed)
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



#: the encoders named by a string; a tuple of hidden widths or a ``torch.nn.Module`` also serve
ENCODERS = ("linear", "mlp")
#: hidden widths of ``encoder="mlp"``: on digits as good as (256, 256) at half the work
#: (:data:`~icongraph.embedding.ENCODER_SETTINGS`)
ENCODER_HIDDEN = (128, 128)


def encoder_rule(name, value) -> None:
    """A rule for :func:`~icongraph.validation.check_params`: None (no encoder), a name of
    :data:`ENCODERS`, a tuple of positive integers (an MLP's hidden widths; ``()`` is linear)
    or a ``torch.nn.Module``. Its output width is checked with the data
    (:func:`make_encoder`)."""
    if value is None or isinstance(value, torch.nn.Module) or (
            isinstance(value, str) and value in ENCODERS):
        return
    if isinstance(value, tuple) and all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) and w >= 1
            for w in value):
        return
    raise ValueError(f"{name} must be None, one of {ENCODERS}, a tuple of hidden widths "
                     f"(positive integers) or a torch.nn.Module mapping (B, D) standardised "
                     f"features to (B, n_components); got {value!r}.")


def make_encoder(spec, n_features: int, n_components: int, seed: int) -> torch.nn.Module:
    """The encoder ``f`` of an embedding, ``y = f(x)`` (B, n_components) of standardised
    features ``x`` (B, D), initialised from ``seed`` without touching torch's global RNG.

    Parameters
    ----------
    spec : str, tuple of int or torch.nn.Module
        ``"linear"``; ``"mlp"`` (hidden widths :data:`ENCODER_HIDDEN`); a tuple of hidden
        widths, an MLP ``Linear -> ReLU -> ... -> Linear`` (``()``: linear); or a module of
        the user's, deep-copied (the user's is never trained or moved) and kept as it is.
    n_features : int
        D, the input width.
    n_components : int
        d, the output width a module must have.
    seed : int
        Seed of torch's default initialisation of the built-in encoders.

    Returns
    -------
    torch.nn.Module
        On the CPU, float32.

    Raises
    ------
    ValueError
        ``spec`` is not an encoder (:func:`encoder_rule`), or the module does not map
        (2, D) to (2, n_components) (the check runs it on two zero rows, on the copy).
    """
    encoder_rule("encoder", spec)
    if isinstance(spec, torch.nn.Module):
        module = copy.deepcopy(spec).float()
    else:
        hidden = ENCODER_HIDDEN if spec == "mlp" else () if spec == "linear" else spec
        widths = (n_features, *hidden, n_components)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = []
            for width_in, width_out in zip(widths[:-1], widths[1:]):
                layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
            module = torch.nn.Sequential(*layers[:-1])
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(2, n_features))
    except Exception as err:  # the user's module cannot take (B, D) input
        raise ValueError(f"the encoder must map (B, D) standardised features to (B, "
                         f"n_components); on input of shape (2, {n_features}) it raised "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_components):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the encoder must map (B, D) standardised features to (B, "
                         f"n_components={n_components}); on input of shape (2, {n_features}) "
                         f"it returned {shape}.")
    return module.train()


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """``(mean, scale)`` of the rows of ``X`` (N, D): the mean per feature (D,) float32 and one
    scale, ``sqrt(mean_ij (x_ij - mean_j)^2)`` (1 when the rows are all equal); standardised
    features are ``(x - mean) / scale``."""
    mean = X.mean(0, dtype=np.float64)
    scale = float(np.sqrt(((X - mean) ** 2).mean(dtype=np.float64)))
    return mean.astype(np.float32), np.float32(scale if scale > 0 else 1.0)
