"""Scatter plots of embeddings (matplotlib, headless Agg backend)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_embedding", "plot_embeddings"]


def _scatter(ax, Y, labels, title):
    size = float(np.clip(20000 / max(len(Y), 1), 0.05, 8))
    color = labels if labels is not None else "tab:blue"
    ax.scatter(Y[:, 0], Y[:, 1], c=color, s=size, cmap="tab20", linewidths=0, rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def plot_embeddings(panels, path, labels=None, ncols: int | None = None):
    """Side-by-side scatters of several 2-D embeddings: ``panels`` is ``[(title, Y), ...]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = ncols or len(panels)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 4 * nrows), squeeze=False)
    for ax, (title, Y) in zip(axes.ravel(), panels):
        if Y.shape[1] < 2:
            raise ValueError("plotting needs at least 2 embedding dimensions.")
        _scatter(ax, np.asarray(Y), labels, title)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_embedding(Y, path, labels=None, title: str = ""):
    """One scatter of a 2-D embedding coloured by ``labels``, saved to ``path`` (PNG)."""
    return plot_embeddings([(title, Y)], path, labels)
