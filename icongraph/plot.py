"""Plots of embeddings and of training: scatter or density maps coloured by categories or by
values, and loss curves.

Every function draws into a given matplotlib ``Axes`` (``ax=``) or makes its own
:class:`~matplotlib.figure.Figure` on an Agg canvas, and returns the figure. Nothing here uses
pyplot or sets the backend, so the plots work headless, in scripts and in notebooks alike, and
leave the caller's matplotlib state as it was.

Categories get a glasbey-like palette (tab10 first, then the colour farthest in CIELAB from
those chosen), so 25 or 60 classes never repeat a colour. Up to :data:`LEGEND_MAX` classes get a
legend outside the axes (one column per 20 names); more classes are named at their centres on
the map, where a name can be found without matching 40 similar hues to a legend, and above
:data:`CENTRE_LABELS_MAX` the names would cover the data, so a note says the legend is left out.
"""

from __future__ import annotations

import sys
import warnings
from functools import lru_cache

import numpy as np

from .validation import check_data

__all__ = ["plot_embedding", "plot_embeddings", "plot_loss", "categorical_palette",
           "DENSITY_ABOVE", "LEGEND_MAX", "CENTRE_LABELS_MAX"]

#: above this many points ``mode='auto'`` draws a density map (a 2-D histogram) instead of
#: markers: a million markers take seconds to draw and merge into an unreadable mass
DENSITY_ABOVE = 200_000
#: up to this many categories a legend is drawn beside the axes
LEGEND_MAX = 40
#: up to this many categories (beyond :data:`LEGEND_MAX`) their names are written at their centres
CENTRE_LABELS_MAX = 150
#: inches of one panel's side
PANEL_INCHES = 4.6
#: names per legend column
LEGEND_ROWS = 20


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) coordinates of sRGB colours ``rgb`` (n, 3) in [0, 1]."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192],
                             [0.1805, 0.0722, 0.9505]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]),
                     200 * (f[:, 1] - f[:, 2])], axis=1)


@lru_cache(maxsize=8)
def _palette(n: int) -> tuple:
    from matplotlib import colormaps

    chosen = [np.array(c) for c in colormaps["tab10"].colors[:n]]
    if n > len(chosen):
        levels = np.linspace(0.0, 1.0, 22)
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        lab = _to_lab(grid)
        keep = (lab[:, 0] > 30) & (lab[:, 0] < 78)  # visible on white, not near-black
        grid, lab = grid[keep], lab[keep]
        nearest = np.min([np.linalg.norm(lab - _to_lab(c[None]), axis=1) for c in chosen], 0)
        while len(chosen) < n:
            pick = int(np.argmax(nearest))
            chosen.append(grid[pick])
            nearest = np.minimum(nearest, np.linalg.norm(lab - lab[pick], axis=1))
    return tuple(tuple(float(v) for v in c) for c in chosen)


def categorical_palette(n: int) -> np.ndarray:
    """``n`` distinct colours: matplotlib's tab10, then greedily the sRGB colour farthest in
    CIELAB from every colour chosen so far (as Glasbey et al. 2007), lightness 30-78.

    Parameters
    ----------
    n : int
        Number of colours, at least 1.

    Returns
    -------
    np.ndarray
        (n, 3) RGB values in [0, 1]; the first ``n`` of ``categorical_palette(m)`` for any
        ``m >= n``.

    Examples
    --------
    >>> from icongraph.plot import categorical_palette
    >>> categorical_palette(25).shape  # tab10, then colours far apart in CIELAB
    (25, 3)
    """
    if n < 1:
        raise ValueError(f"a palette needs at least 1 colour; got {n}.")
    return np.array(_palette(int(n)))


class _Colour:
    """What the points are coloured by: ``kind`` is 'none', 'categorical' (``codes`` into
    ``names``) or 'continuous' (``values``)."""

    def __init__(self, color, n: int, kind: str):
        self.kind, self.codes, self.names, self.values = "none", None, None, None
        if color is None:
            return
        categories = getattr(color, "cat", color)  # a pandas Series or Categorical
        if kind != "continuous" and hasattr(categories, "categories"):
            self.kind = "categorical"
            self.names = [str(c) for c in categories.categories]
            self.codes = np.asarray(categories.codes)
        else:
            values = np.asarray(color)
            if values.shape != (n,):
                raise ValueError(f"color has shape {values.shape}; expected one value per point, "
                                 f"({n},).")
            if kind == "auto":
                many = values.dtype.kind in "iu" and len(np.unique(values)) > CENTRE_LABELS_MAX
                kind = "continuous" if values.dtype.kind == "f" or many else "categorical"
            if kind == "continuous":
                try:
                    self.values = values.astype(np.float64)
                except (TypeError, ValueError):
                    raise ValueError("color cannot be shown as continuous values: it is not "
                                     "numeric; use kind='categorical'.") from None
                self.kind = kind
                return
            if kind != "categorical":
                raise ValueError(f"kind must be 'auto', 'categorical' or 'continuous'; got "
                                 f"{kind!r}.")
            if values.dtype == object:
                values = values.astype(str)
            classes, self.codes = np.unique(values, return_inverse=True)
            self.names = [str(c) for c in classes]
            self.kind = "categorical"
        if len(self.codes) != n:
            raise ValueError(f"color has {len(self.codes)} values for {n} points.")
        self.palette = categorical_palette(len(self.names))

    def rgb(self) -> np.ndarray:
        """(N, 3) colours of the categorical points (missing category: grey)."""
        rgb = self.palette[np.maximum(self.codes, 0)]
        rgb[self.codes < 0] = 0.6
        return rgb


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _marker_style(n: int, size, alpha) -> tuple[float, float]:
    """Marker area (points^2) and opacity for ``n`` points on a panel: markers cover about a
    tenth of the panel whatever ``n``, and overlapping points darken rather than hide."""
    panel = (PANEL_INCHES * 72) ** 2
    if size is None:
        size = float(np.clip(0.12 * panel / max(n, 1), 0.6, 30.0))
    if alpha is None:
        alpha = float(np.clip((10_000 / max(n, 1)) ** 0.3, 0.5, 1.0))
    return size, alpha


def _density_image(Y: np.ndarray, colour: _Colour, bins: int | None):
    """``Y`` binned on square cells: (image, extent, opacity or None). The image is RGBA for
    categories (the mean colour of a cell, opacity from its log count), else the count or the
    mean of the finite values (with the opacity from the log count), masked where empty."""
    n = len(Y)
    bins = bins or int(np.clip(np.sqrt(n) / 2, 64, 512))
    lo, hi = Y.min(0).astype(np.float64), Y.max(0).astype(np.float64)
    cell = max(float((hi - lo).max()), 1e-12) / bins
    lo -= 2 * cell
    shape = np.ceil((hi - lo) / cell).astype(int) + 2  # (nx, ny)
    ix = np.clip(((Y - lo) / cell).astype(np.int64), 0, shape - 1)
    flat = ix[:, 1] * shape[0] + ix[:, 0]
    size = int(shape[0] * shape[1])
    counts = np.bincount(flat, minlength=size).astype(np.float64)
    extent = (lo[0], lo[0] + shape[0] * cell, lo[1], lo[1] + shape[1] * cell)
    filled = counts > 0
    opacity = np.zeros(size)
    opacity[filled] = 0.5 + 0.5 * np.log1p(counts[filled]) / np.log1p(counts.max())
    if colour.kind == "categorical":
        rgb = colour.rgb()
        image = np.zeros((size, 4))
        for channel in range(3):
            image[filled, channel] = (np.bincount(flat, rgb[:, channel], size)[filled]
                                      / counts[filled])
        image[:, 3] = opacity
        return image.reshape(shape[1], shape[0], 4), extent, None
    if colour.kind == "continuous":
        finite = np.isfinite(colour.values)
        valued = np.bincount(flat[finite], minlength=size)
        mean = (np.bincount(flat[finite], colour.values[finite], size)
                / np.maximum(valued, 1))
        image = np.ma.masked_array(mean, valued == 0)
        return image.reshape(shape[1], shape[0]), extent, opacity.reshape(shape[1], shape[0])
    return np.ma.masked_array(counts, ~filled).reshape(shape[1], shape[0]), extent, None


def _draw(ax, Y, colour: _Colour, mode: str, cmap, size, alpha, bins, seed: int):
    """Draw the points of ``Y`` (N, 2) into ``ax``; returns the mappable for a colour bar."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, LogNorm

    if cmap is None and colour.kind == "none":  # counts: light to dark, no near-white cells
        cmap = ListedColormap(colormaps["magma_r"](np.linspace(0.15, 0.95, 256)))
    else:  # NaN values drawn light grey rather than left out
        cmap = colormaps[cmap or "viridis"].with_extremes(bad="0.8")
    if mode == "density":
        image, extent, opacity = _density_image(Y, colour, bins)
        norm = LogNorm() if colour.kind == "none" else None
        kwargs = {"cmap": cmap, "norm": norm} if colour.kind != "categorical" else {}
        return ax.imshow(image, origin="lower", extent=extent, interpolation="nearest",
                         alpha=opacity, **kwargs)
    size, alpha = _marker_style(len(Y), size, alpha)
    order = np.random.default_rng(seed).permutation(len(Y))  # no class drawn over all others
    if colour.kind == "categorical":
        c, kwargs = colour.rgb()[order], {}
    elif colour.kind == "continuous":
        c, kwargs = colour.values[order], {"cmap": cmap, "plotnonfinite": True}
    else:
        c, kwargs = "#1f4e79", {}
    return ax.scatter(Y[order, 0], Y[order, 1], c=c, s=size, alpha=alpha, linewidths=0,
                      rasterized=True, **kwargs)


def _legend_mode(legend, colour: _Colour) -> str | None:
    if colour.kind != "categorical" or legend is None or legend is False:
        return None
    if legend is True:
        return "legend"
    if legend == "auto":
        n = len(colour.names)
        return "legend" if n <= LEGEND_MAX else "centres" if n <= CENTRE_LABELS_MAX else "note"
    if legend not in ("legend", "centres"):
        raise ValueError(f"legend must be 'auto', 'legend', 'centres' or None; got {legend!r}.")
    return legend


def _annotate(fig, ax, Y, colour: _Colour, how, mappable, color_label, mode: str):
    """The legend, the names at the class centres, or the colour bar."""
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    if colour.kind == "continuous" or (colour.kind == "none" and mode == "density"):
        label = color_label if colour.kind == "continuous" else "points per cell"
        fig.colorbar(mappable, ax=ax, shrink=0.75, label=label)
    elif how == "legend":
        handles = [Line2D([], [], ls="", marker="o", markersize=6, markeredgewidth=0, color=c)
                   for c in colour.palette]
        ax.legend(handles, colour.names, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  ncols=-(-len(handles) // LEGEND_ROWS), frameon=False, fontsize=8,
                  title=color_label, title_fontsize=8, handletextpad=0.1, columnspacing=0.8,
                  borderaxespad=0.0)
    elif how == "centres":
        for code, name in enumerate(colour.names):
            members = Y[colour.codes == code]
            if len(members):
                x, y = np.median(members, axis=0)
                ax.text(x, y, name, ha="center", va="center", fontsize=6,
                        path_effects=[withStroke(linewidth=2, foreground="white")])
    elif how == "note":
        ax.text(0.99, 0.01, f"{len(colour.names)} categories: no legend", ha="right",
                va="bottom", fontsize=7, color="0.4", transform=ax.transAxes)


def _caller_level() -> int:
    """The ``stacklevel`` of a warning that names the first frame outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _two_columns(Y, components, name: str = "Y") -> np.ndarray:
    """The two plotted columns of an embedding, with a warning when more exist and none were
    chosen."""
    Y = check_data(Y, name=name, allow_sparse=False)
    if Y.shape[1] < 2:
        raise ValueError(f"{name} has {Y.shape[1]} column; a plot needs 2 embedding dimensions.")
    if components is None:
        if Y.shape[1] > 2:
            warnings.warn(f"{name} has {Y.shape[1]} dimensions; plotting the first two (choose "
                          "others with components=(i, j)).", UserWarning,
                          stacklevel=_caller_level())
        components = (0, 1)
    i, j = components
    return np.ascontiguousarray(Y[:, [i, j]])


def _style(ax, title, basis, components):
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if basis:
        i, j = components or (0, 1)
        ax.set_xlabel(f"{basis} {i + 1}", fontsize=8)
        ax.set_ylabel(f"{basis} {j + 1}", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.6")


def plot_embeddings(panels, color=None, *, axes=None, ncols: int | None = None,
                    kind: str = "auto", mode: str = "auto", legend="auto",
                    color_label: str | None = None, basis: str | None = None,
                    components=None, cmap: str | None = None, size: float | None = None,
                    alpha: float | None = None, bins: int | None = None, seed: int = 0):
    """Side-by-side plots of several embeddings of the same points, coloured alike.

    Parameters
    ----------
    panels : list of (str, array-like)
        ``(title, Y)`` per panel, ``Y`` of shape (N, d), d >= 2, the same N throughout.
    color : array-like of shape (N,), optional
        What colours the points: labels (strings, integers, booleans or a pandas
        Categorical, whose category order is kept) or values (floats), as ``kind`` says.
    axes : sequence of matplotlib Axes, optional
        Draw panel ``k`` into ``axes[k]`` (of one figure); default: a new figure.
    ncols : int, optional
        Panels per row of a new figure (default: all in one row).
    kind : {'auto', 'categorical', 'continuous'}
        'auto': floats, and integers with more than :data:`CENTRE_LABELS_MAX` distinct values
        (counts, not classes), are continuous (a colour bar); anything else is categorical.
    mode : {'auto', 'scatter', 'density'}
        Markers, or a 2-D histogram on square cells (log counts; for categories the mean
        colour of a cell, for values the mean value, opacity from the log count). 'auto':
        density above :data:`DENSITY_ABOVE` points.
    legend : {'auto', 'legend', 'centres'}, bool or None
        For categories: a legend beside the last panel, or the names written at the class
        medians. 'auto': a legend up to :data:`LEGEND_MAX` categories, names at the centres up
        to :data:`CENTRE_LABELS_MAX`, else a note that no legend is drawn. True: a legend;
        None or False: neither.
    color_label : str, optional
        Title of the legend or label of the colour bar.
    basis : str, optional
        Axis labels ``'<basis> 1'``, ``'<basis> 2'`` (e.g. ``'UMAP'``); none by default.
    components : (int, int), optional
        The two columns to plot; by default the first two, with a warning when ``Y`` has more.
    cmap : str, optional
        Colour map of values (default 'viridis') and of density counts (default a light to
        dark part of 'magma_r').
    size, alpha : float, optional
        Marker area (points^2) and opacity; by default from N, so that markers cover about the
        same share of a panel at any N.
    bins : int, optional
        Density mode: cells along the longer side (default ``sqrt(N)`` within 64-512).
    seed : int
        The random drawing order of the markers (so no class is always on top).

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (a new one on an Agg canvas when ``axes`` is None).

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> from icongraph.plot import plot_embeddings
    >>> X, y = load_digits()
    >>> panels = [(name, model.fit_transform(X)) for name, model in
    ...           [("UMAP", icongraph.UMAP(random_state=0)), ("t-SNE", icongraph.TSNE(random_state=0))]]
    >>> fig = plot_embeddings(panels, y, color_label="digit")
    >>> fig.savefig("digits.png", dpi=150)
    """
    if not panels:
        raise ValueError("plot_embeddings needs at least one (title, Y) panel.")
    if mode not in ("auto", "scatter", "density"):
        raise ValueError(f"mode must be 'auto', 'scatter' or 'density'; got {mode!r}.")
    arrays = [(title, _two_columns(Y, components, f"the embedding {title!r}" if title else "Y"))
              for title, Y in panels]
    n = len(arrays[0][1])
    if any(len(Y) != n for _, Y in arrays):
        raise ValueError(f"the panels have different numbers of points: "
                         f"{[len(Y) for _, Y in arrays]}.")
    colour = _Colour(color, n, kind)
    how = _legend_mode(legend, colour)
    if mode == "auto":
        mode = "density" if n > DENSITY_ABOVE else "scatter"
    if axes is None:
        ncols = ncols or len(arrays)
        nrows = -(-len(arrays) // ncols)
        side = 0.0
        if how == "legend":
            side = 0.4 + 1.0 * -(-len(colour.names) // LEGEND_ROWS)
        elif colour.kind == "continuous" or (colour.kind == "none" and mode == "density"):
            side = 1.0
        fig = _new_figure(PANEL_INCHES * ncols + side, PANEL_INCHES * nrows + 0.3)
        grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in grid[len(arrays):]:
            ax.set_axis_off()
        axes = grid[:len(arrays)]
    elif len(axes) != len(arrays):
        raise ValueError(f"{len(arrays)} panels need {len(arrays)} axes; got {len(axes)}.")
    fig = axes[0].get_figure()
    for k, (ax, (title, Y)) in enumerate(zip(axes, arrays)):
        mappable = _draw(ax, Y, colour, mode, cmap, size, alpha, bins, seed)
        _style(ax, title, basis, components)
        if k == len(arrays) - 1 or how == "centres":
            _annotate(fig, ax, Y, colour, how if k == len(arrays) - 1 else "centres", mappable,
                      color_label, mode)
    return fig


def plot_embedding(Y, color=None, *, ax=None, title: str | None = None, **kwargs):
    """One embedding, coloured by labels or values.

    Parameters
    ----------
    Y : array-like of shape (N, d)
        The embedding, d >= 2 (``embedding_`` or ``fit_transform``'s result).
    color : array-like of shape (N,), optional
        Labels or values per point (see :func:`plot_embeddings`).
    ax : matplotlib Axes, optional
        Draw into this axes; default: a new figure.
    title : str, optional
        Title of the axes.
    **kwargs
        ``kind``, ``mode``, ``legend``, ``color_label``, ``basis``, ``components``, ``cmap``,
        ``size``, ``alpha``, ``bins``, ``seed`` as in :func:`plot_embeddings`.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``, or a new one on an Agg canvas (save it with ``fig.savefig``).

    Examples
    --------
    >>> import icongraph, icongraph.plot
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> Y = icongraph.UMAP(random_state=0).fit_transform(X)  # doctest: +SKIP
    >>> icongraph.plot.plot_embedding(Y, y, title="digits").savefig("digits.png")  # doctest: +SKIP
    """
    return plot_embeddings([(title, Y)], color, axes=None if ax is None else [ax], **kwargs)


def plot_loss(history, *, ax=None, title: str | None = None, label: str | None = None,
              log: bool | None = None):
    """The training loss against the epoch.

    Parameters
    ----------
    history : estimator or sequence of (int, float)
        A fitted estimator (its ``loss_history_``) or the ``(epoch, loss)`` pairs.
    ax : matplotlib Axes, optional
        Draw into this axes (e.g. to compare runs); default: a new figure.
    title : str, optional
        Title of the axes.
    label : str, optional
        Legend entry of the curve (a legend is drawn when given).
    log : bool, optional
        A logarithmic loss axis; by default when every loss is positive and they span more
        than a factor of 20.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax``, or a new one on an Agg canvas.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.plot import plot_loss
    >>> from icongraph.datasets import load_digits
    >>> X, _ = load_digits()
    >>> fig = plot_loss(icongraph.UMAP(random_state=0).fit(X), label="UMAP")
    >>> plot_loss(icongraph.SNE(random_state=0).fit(X), ax=fig.axes[0], label="SNE")  # same axes
    Figure(500x340)
    >>> fig.savefig("loss.png")
    """
    pairs = getattr(history, "loss_history_", history)
    values = np.asarray(pairs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 2 or len(values) == 0:
        raise ValueError("plot_loss needs a fitted estimator with a loss_history_ or a "
                         f"non-empty sequence of (epoch, loss) pairs; got shape {values.shape}.")
    epochs, losses = values[:, 0], values[:, 1]
    if ax is None:
        fig = _new_figure(5.0, 3.4)
        ax = fig.add_subplot()
    ax.plot(epochs, losses, lw=1.4, marker="o" if len(values) <= 30 else None, ms=3,
            label=label)
    finite = losses[np.isfinite(losses)]
    if log is None:
        log = bool(len(finite)) and finite.min() > 0 and finite.max() > 20 * finite.min()
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    if label:
        ax.legend(frameon=False)
    return ax.get_figure()
