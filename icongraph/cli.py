"""Command line: ``icongraph embed``, ``icongraph cluster``, ``icongraph table`` (and
``icongraph bench``).

Bad input ends with one line ``icongraph: error: ...`` and exit code 2, before any work: the
output paths are checked first (their directory must exist, a suffix must say the format, an
existing file is kept unless ``--force``), then the input is read (:mod:`icongraph.files`),
with the label and colour columns it names. Outputs are written under a temporary name in
their directory and renamed, so a file at the output path is always complete, and the path
printed is the file written.

A fit reports its phases on stderr (:mod:`icongraph.progress`): a line when each starts and
ends, with its seconds, and progress bars on a terminal; ``--quiet`` silences them and each
``-v`` adds detail.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .clustering import CLUSTER_METHODS
from .distributed import DistributedError
from .files import FORMATS, OUTPUT_FORMATS, check_output, read_input, write_atomic, write_result
from .heads import HEADS
from .seeding import INITS

__all__ = ["main", "build_parser"]

METHODS = {"umap": "UMAP", "tsne": "TSNE", "sne": "SNE"}


def _plot_suffixes() -> dict:
    from matplotlib.backend_bases import FigureCanvasBase

    return {f".{ext}": (desc, ()) for ext, desc in
            FigureCanvasBase.get_supported_filetypes().items()}


def _check_outputs(args, n_components: int | None = None) -> tuple[Path, Path | None]:
    """The output and plot paths, checked before any work."""
    output = check_output(args.output, args.force)
    plot = None
    if args.plot:
        if n_components is not None and n_components < 2:
            raise ValueError(f"--plot needs at least 2 embedding dimensions; got "
                             f"--n-components {n_components}.")
        plot = check_output(args.plot, args.force, "--plot", _plot_suffixes())
        if plot.resolve() == output.resolve():
            raise ValueError(f"--plot and the output are the same file {args.plot!r}.")
    return output, plot


def _read(args, command: str):
    """The input with the label and colour columns the options name, read before any fit."""
    special = ("labels", "clusters")
    if args.color_by == "clusters" and command == "embed":
        raise ValueError("--color-by clusters applies to 'icongraph cluster'; embed colours by "
                         "'labels' or a column.")
    data = read_input(args.input, key=args.key, label_column=args.label_column,
                      color_column=None if args.color_by in special else args.color_by,
                      use_rep=args.use_rep, layer=args.layer)
    if args.plot and args.color_by == "labels" and data.labels is None:
        raise ValueError(f"--color-by labels: {args.input} has no labels; name a label column "
                         "with --label-column.")
    return data


def _colour(args, data, clusters=None) -> tuple:
    """What the plot is coloured by, its legend title and kind (labels are categories)."""
    if args.color_by in (None, "clusters") and clusters is not None:
        return clusters, "cluster", "categorical"
    if args.color_by in (None, "labels"):
        return data.labels, "label", "categorical"
    return data.color, args.color_by, "auto"


def _figure(args, Y: np.ndarray, data, title: str, basis: str, clusters=None):
    """The plot of ``Y``, drawn before any output is written."""
    from .plot import plot_embedding

    if Y.shape[1] > 2:
        print(f"plot: the first 2 of {Y.shape[1]} dimensions")
    color, label, kind = _colour(args, data, clusters)
    return plot_embedding(Y, color, title=title, basis=basis, color_label=label, kind=kind,
                          components=(0, 1))


def _write(output: Path, values: np.ndarray, data, plot: Path | None, fig) -> None:
    """The result, then the plot, each atomically."""
    write_result(output, values, data)
    if plot is not None:
        write_atomic(plot, lambda tmp: fig.savefig(tmp, dpi=150))


def _verbose(args) -> int:
    """The estimators' ``verbose``: 0 with ``--quiet``, else 1 (a line when each phase of the
    fit starts and ends, on stderr, and bars on a terminal) plus one per ``-v``."""
    return 0 if args.quiet else 1 + args.verbose


def _embed(args) -> int:
    """``icongraph embed``; under ``torchrun`` with several ranks every rank joins the process
    group (:func:`~icongraph.distributed.init_from_env`), fits its shard, and rank 0 alone
    reports, plots and writes the output."""
    from . import distributed

    created = distributed.init_from_env(args.device)
    try:
        return _embed_in_group(args, distributed.current())
    finally:
        if created:
            distributed.finish()


def _embed_in_group(args, group) -> int:
    import icongraph

    output, plot = _check_outputs(args, args.n_components)
    data = _read(args, "embed")
    params = {"n_components": args.n_components, "random_state": args.seed,
              "device": args.device, "verbose": _verbose(args) if group.rank == 0 else 0,
              "metric": args.metric}
    if group.active:
        from .distributed import local_jobs

        params["n_jobs"] = local_jobs()
    if args.n_epochs is not None:
        params["n_epochs"] = args.n_epochs
    if args.method == "umap":
        params.update(n_neighbors=args.n_neighbors, min_dist=args.min_dist)
    else:
        params.update(perplexity=args.perplexity)
    name = METHODS[args.method]
    model = getattr(icongraph, name)(**params)
    Y = model.fit_transform(data.X)
    if group.rank != 0:  # every rank holds the same embedding; rank 0 writes it
        return 0
    fig = (None if plot is None
           else _figure(args, Y, data, f"{name} of {Path(args.input).name}", name))
    _write(output, Y, data, plot, fig)
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in model.timings_.items())
    print(f"{name}: {data.X.shape[0]} points -> {output} ({timing})")
    if plot is not None:
        print(f"plot -> {plot}")
    return 0


def _n_clusters(text: str) -> int | None:
    """``--n-clusters``: a positive integer, or ``auto`` (None: chosen by the clustering)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)  # the range is Clustering's rule, checked before any work
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto'; got {text!r}") from None


def _cluster(args) -> int:
    from .clustering import Clustering

    output, plot = _check_outputs(args)
    data = _read(args, "cluster")
    model = Clustering(n_clusters=args.n_clusters, resolution=args.resolution,
                       method=args.method, head=args.head,
                       init=args.init, n_neighbors=args.n_neighbors, random_state=args.seed,
                       device=args.device, verbose=_verbose(args), metric=args.metric,
                       n_epochs=args.n_epochs)
    labels = model.fit_predict(data.X)
    fig = None
    if plot is not None:  # a UMAP layout on the same kNN graph, coloured by cluster
        from .embedding import UMAP

        Y = UMAP(n_neighbors=model.knn_.n_neighbors + 1, random_state=args.seed,
                 precomputed_knn=model.knn_).fit_transform(data.X)  # UMAP counts the point itself
        fig = _figure(args, Y, data, f"clusters of {Path(args.input).name}", "UMAP", labels)
    _write(output, labels, data, plot, fig)
    sizes = np.bincount(labels, minlength=model.n_clusters_)
    print(f"{data.X.shape[0]} points -> {len(sizes)} clusters ({(sizes > 0).sum()} non-empty) "
          f"-> {output}")
    if data.labels is not None:
        from . import metrics

        truth = data.labels
        print(f"against the labels: ARI {metrics.adjusted_rand_index(truth, labels):.3f}"
              f", NMI {metrics.normalized_mutual_info(truth, labels):.3f}, "
              f"Hungarian accuracy {metrics.hungarian_accuracy(truth, labels):.3f}")
    if plot is not None:
        print(f"plot -> {plot}")
    return 0


def _table(args) -> int:
    from .kernels import KERNELS
    from .methods import methods, methods_markdown
    from .objective import ESTIMATORS
    from .targets import TARGETS

    if args.markdown:
        print(methods_markdown())
        return 0
    print("Methods (icongraph.method(name, **params)): target p | kernel q | learned | fit")
    for row in methods():
        print(f"  {row.name:28s} {row.p} | {row.q} | {row.learned} | {row.needs}")
        print(f"  {'':28s} {row.reference}")
    print("Targets p:   ", ", ".join(sorted(TARGETS)))
    print("Kernels q:   ", ", ".join(sorted(KERNELS)), "| cluster (assignments, ICon only)")
    print("Estimators:  ", ", ".join(sorted(ESTIMATORS)))
    print("Compose any: icongraph.ICon(p=<target>, q=<kernel>, estimator=<estimator>)")
    return 0


DESCRIPTION = """\
Graph-based embedding and clustering from one I-Con objective.

  icongraph embed DATA -o OUT       embed (UMAP-like, t-SNE or SNE) and write the embedding
  icongraph cluster DATA -o OUT     cluster with the I-Con cluster kernel, write the labels
  icongraph table                   list the methods, targets, kernels and estimators
  icongraph bench                   benchmark against umap-learn, openTSNE, Leiden, k-means

DATA is a file (.npy, .npz, .csv, .tsv, .txt, .parquet, .h5ad) or a bundled dataset name
(digits, pbmc68k, ...). The output's suffix names its format. Bad input is refused with one
line naming the file, before any work. 'icongraph COMMAND -h' lists a command's options.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's lines and shows every default except None and False (whose
    meaning the help text says)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _formats(formats: dict) -> str:
    return ", ".join(f"{suffix} ({desc})" for suffix, (desc, _) in formats.items())


def _add_io(parser, what: str, color_default: str) -> None:
    """The options of reading the data and writing the results every command shares."""
    from .datasets import DATASETS

    parser.add_argument("input", help="the data: a file (" + ", ".join(FORMATS) + ") or a "
                        "bundled dataset (" + ", ".join(DATASETS) + ")")
    parser.add_argument("-o", "--output", required=True,
                        help=f"where to write the {what}, in the format its suffix names: "
                        + _formats(OUTPUT_FORMATS) + "; an .h5ad input written to .h5ad keeps "
                        "its content")
    parser.add_argument("-f", "--force", "--overwrite", action="store_true",
                        help="overwrite existing output files")
    group = parser.add_argument_group("reading the input")
    group.add_argument("--key", help=".npz: the array of the data (default: 'X', or the only "
                       "array)")
    group.add_argument("--label-column", help="the labels: a table column (never a feature; "
                       "'0', '1', ... without a header), a .npz array (default: 'y' when "
                       "present) or an .h5ad obs column")
    group.add_argument("--use-rep", help=".h5ad: use obsm[USE_REP] as the data (e.g. X_pca; "
                       "default: X)")
    group.add_argument("--layer", help=".h5ad: use layers[LAYER] as the data")
    group = parser.add_argument_group("plotting")
    group.add_argument("--plot", help="write a plot here (.png, .pdf, .svg, ...)")
    group.add_argument("--color-by", help="colour the plot by 'labels', 'clusters' (cluster "
                       "only) or a column (table column, .npz array or obs column; in a table "
                       f"never a feature); default: {color_default}")


def _add_run(parser) -> None:
    """The options of a fit every command shares, after the command's own."""
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                        help="distance of the kNN graph")
    parser.add_argument("--n-epochs", type=int, help="training epochs (default: the schedule "
                        "for the data size)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="auto", help="torch device ('cpu', 'cuda', ...)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no phase lines or progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail on stderr: the loss about every tenth of the epochs, "
                             "the kNN library's messages")


def build_parser() -> argparse.ArgumentParser:
    """The ``icongraph`` argument parser with its subcommands."""
    from . import __version__
    from .clustering import Clustering

    parser = argparse.ArgumentParser(prog="icongraph", description=DESCRIPTION,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = sub.add_parser("embed", help="embed a dataset (UMAP-like, t-SNE or SNE)",
                           description="Embed a dataset and write the embedding.",
                           formatter_class=HelpFormatter)
    _add_io(embed, "embedding", "labels when the input has them")
    embed.add_argument("--method", choices=sorted(METHODS), default="umap",
                       help="the embedding: UMAP-like, t-SNE or SNE")
    embed.add_argument("--n-components", type=int, default=2, help="embedding dimensions")
    embed.add_argument("--n-neighbors", type=int, default=15, help="umap: neighbours per point")
    embed.add_argument("--min-dist", type=float, default=0.1,
                       help="umap: how tightly points may pack")
    embed.add_argument("--perplexity", type=float, default=30.0,
                       help="tsne, sne: effective number of neighbours")
    _add_run(embed)
    embed.set_defaults(func=_embed)

    defaults = Clustering._param_defaults()
    cluster = sub.add_parser("cluster", help="cluster a dataset (I-Con cluster kernel)",
                             description="Cluster a dataset and write the labels.",
                             formatter_class=HelpFormatter)
    _add_io(cluster, "cluster labels", "clusters")
    cluster.add_argument("--n-clusters", type=_n_clusters, default=defaults["n_clusters"],
                         help="number of clusters, or 'auto': the communities of Leiden "
                              "(modularity at --resolution) less those joined as densely as "
                              "chance (Clustering(n_clusters=None))")
    cluster.add_argument("--resolution", type=float, default=defaults["resolution"],
                         help="modularity resolution of --n-clusters auto")
    cluster.add_argument("--method", default=defaults["method"],
                         choices=[m for m in CLUSTER_METHODS if m != "supervised"],
                         help="the target p of the clustering")
    cluster.add_argument("--head", default=defaults["head"], choices=HEADS,
                         help="what is learned: the map from features to cluster logits")
    cluster.add_argument("--init", default=defaults["init"], choices=INITS,
                         help="seed centres: clusters of a 2-D embedding of the graph, or "
                              "k-means")
    cluster.add_argument("--n-neighbors", type=int, default=defaults["n_neighbors"],
                         help="neighbours per point of the kNN graph")
    _add_run(cluster)
    cluster.set_defaults(func=_cluster)

    table = sub.add_parser("table", help="list the methods (named compositions), targets, "
                           "kernels and estimators", formatter_class=HelpFormatter)
    table.add_argument("--markdown", action="store_true",
                       help="print the methods table as Markdown")
    table.set_defaults(func=_table)

    from .bench import add_bench_parser

    add_bench_parser(sub, HelpFormatter)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ImportError, OSError, DistributedError) as err:  # bad input, a
        # missing package, a disk, another rank that died under torchrun
        print(f"icongraph: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
