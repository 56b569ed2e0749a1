"""Plots return a Figure, draw into a given axes, leave matplotlib's backend alone, name the
user's labels in the legend, give more than 20 classes distinct colours, and bin 200k points
in density mode."""

import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from icongraph import plot


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    return rng.normal(size=(120, 2)) + 6 * y[:, None], y


def _legend_texts(fig):
    return [[t.get_text() for t in ax.get_legend().get_texts()]
            for ax in fig.axes if ax.get_legend() is not None]


def test_returns_a_figure_without_touching_the_backend(points, tmp_path):
    Y, y = points
    before = matplotlib.get_backend()
    fig = plot.plot_embedding(Y, y, title="blobs")
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert matplotlib.get_backend() == before
    ax = fig.axes[0]
    assert ax.get_title() == "blobs" and not ax.get_xticks().size and not ax.get_yticks().size


def test_draws_into_the_given_axes(points):
    Y, y = points
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot.plot_embedding(Y, y, ax=right) is fig
    assert len(right.collections) == 1 and not left.collections
    assert plot.plot_loss([(0, 3.0), (1, 2.0)], ax=left) is fig
    assert len(left.lines) == 1


@pytest.mark.parametrize("labels", [
    np.array(["b cell", "T cell", "monocyte"]),
    np.array([10, 2, 7]),
    np.array([True, False, True]),
])
def test_the_legend_names_the_users_labels(points, labels):
    Y, codes = points
    fig = plot.plot_embedding(Y, labels[codes], color_label="type")
    assert _legend_texts(fig) == [[str(v) for v in np.unique(labels)]]  # sorted as values
    assert fig.axes[0].get_legend().get_title().get_text() == "type"


def test_a_pandas_categorical_keeps_its_order(points):
    pd = pytest.importorskip("pandas")
    Y, codes = points
    labels = pd.Categorical(np.array(["low", "mid", "high"])[codes],
                            categories=["low", "mid", "high"])
    assert _legend_texts(plot.plot_embedding(Y, pd.Series(labels))) == [["low", "mid", "high"]]


def test_more_than_20_classes_get_distinct_colours():
    rng = np.random.default_rng(1)
    y = np.arange(600) % 25
    fig = plot.plot_embedding(rng.normal(size=(600, 2)) + y[:, None], y)
    handles = fig.axes[0].get_legend().legend_handles
    colours = {matplotlib.colors.to_hex(h.get_color()) for h in handles}
    assert len(handles) == 25 and len(colours) == 25
    assert fig.axes[0].get_legend()._ncols == 2  # 20 names per column
    palette = plot.categorical_palette(60)
    assert len({tuple(np.round(c, 3)) for c in palette}) == 60
    np.testing.assert_allclose(plot.categorical_palette(25), palette[:25])


def test_many_classes_are_named_at_their_centres_or_noted():
    rng = np.random.default_rng(2)
    y = np.arange(1000) % 60
    fig = plot.plot_embedding(rng.normal(size=(1000, 2)), y)
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(ax.texts) == 60
    fig = plot.plot_embedding(rng.normal(size=(1000, 2)), np.arange(1000) % 200, kind="categorical")
    assert [t.get_text() for t in fig.axes[0].texts] == ["200 categories: no legend"]


def test_continuous_values_get_a_colour_bar(points):
    Y, _ = points
    fig = plot.plot_embedding(Y, Y[:, 0], color_label="x value")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "x value"
    assert fig.axes[0].get_legend() is None
    values = Y[:, 0].copy()
    values[:5] = np.nan  # drawn grey, not left out, and not averaged into a density cell
    fig = plot.plot_embedding(Y, values)
    assert np.ma.count_masked(fig.axes[0].collections[0].get_offsets()) == 0  # all drawn
    image = plot.plot_embedding(Y, values, mode="density").axes[0].images[0].get_array()
    assert np.isfinite(image.compressed()).all()


def test_integers_with_many_values_are_continuous(points):
    Y, _ = points
    counts = np.arange(240) * 7  # e.g. genes per cell: 240 distinct integers
    fig = plot.plot_embedding(np.r_[Y, -Y], counts)
    assert len(fig.axes) == 2  # a colour bar (> CENTRE_LABELS_MAX distinct values)
    assert plot.plot_embedding(Y, counts[:120] % 3, legend=True).axes[0].get_legend()


def test_density_mode_at_200k_points(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200_000)
    Y = rng.normal(size=(200_000, 2)).astype(np.float32) + 4 * y[:, None]
    for color in (None, y, Y[:, 1]):
        fig = plot.plot_embedding(Y, color, mode="density")
        ax = fig.axes[0]
        assert len(ax.images) == 1 and not ax.collections  # one image, no markers
        fig.savefig(tmp_path / "d.png")
    fig = plot.plot_embedding(np.repeat(Y, 2, 0)[:400_001], None)  # auto: density above 200k
    assert len(fig.axes[0].images) == 1


def test_marker_size_and_alpha_shrink_with_n():
    small, large = plot._marker_style(1_000, None, None), plot._marker_style(100_000, None, None)
    assert small[0] > large[0] and small[1] >= large[1] and large[1] >= 0.5


def test_three_dimensions_warn_and_components_choose(points):
    Y, y = points
    Y3 = np.c_[Y, -Y[:, :1]]
    with pytest.warns(UserWarning, match="has 3 dimensions; plotting the first two") as record:
        plot.plot_embedding(Y3, y)
    assert record[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot.plot_embedding(Y3, y, components=(0, 2), basis="UMAP")
    assert fig.axes[0].get_xlabel() == "UMAP 1" and fig.axes[0].get_ylabel() == "UMAP 3"
    with pytest.raises(ValueError, match="a plot needs 2 embedding dimensions"):
        plot.plot_embedding(Y[:, :1])


def test_bad_colour_and_options_are_refused(points):
    Y, y = points
    with pytest.raises(ValueError, match=r"expected one value per point, \(120,\)"):
        plot.plot_embedding(Y, y[:-1])
    with pytest.raises(ValueError, match="mode must be"):
        plot.plot_embedding(Y, y, mode="hexbin")
    with pytest.raises(ValueError, match="not numeric"):
        plot.plot_embedding(Y, np.array(["a"] * 120), kind="continuous")


def test_side_by_side_panels_share_one_legend(points):
    Y, y = points
    fig = plot.plot_embeddings([("a", Y), ("b", -Y)], y)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert _legend_texts(fig) == [["0", "1", "2"]]


def test_loss_curve_from_an_estimator_or_pairs():
    class Fitted:
        loss_history_ = [(0, 100.0), (10, 5.0), (20, 1.0)]

    fig = plot.plot_loss(Fitted(), title="loss", label="run 1")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 10, 20])
    assert plot.plot_loss([(0, 2.0), (1, -1.0)]).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="loss_history_"):
        plot.plot_loss([])
