"""Command line: ``icongraph embed``, ``icongraph table`` (and ``icongraph bench``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .clustering import CLUSTER_METHODS, HEADS, INITS

__all__ = ["main", "read_input"]

METHODS = {"umap": "UMAP", "tsne": "TSNE", "sne": "SNE"}


def read_input(path: str):
    """``(X, labels or None)`` from .npy, .npz (arrays 'X' [and 'y'], else the first array),
    .csv (numeric; a non-numeric header row is skipped), .h5ad (AnnData ``X``; needs anndata),
    or a bundled dataset name ('digits', 'pbmc68k')."""
    from .datasets import DATASETS, load

    if path in DATASETS and not Path(path).exists():
        return load(path)
    p = Path(path)
    if not p.exists():
        raise ValueError(f"input file {path!r} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return np.load(p, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            if not data.files:
                raise ValueError(f"{path} holds no arrays.")
            X = data["X"] if "X" in data.files else data[data.files[0]]
            return X, (data["y"] if "y" in data.files else None)
    if suffix == ".csv":
        with open(p) as fh:
            first = fh.readline()
        try:
            [float(v) for v in first.strip().split(",") if v != ""]
            skip = 0
        except ValueError:
            skip = 1
        try:
            X = np.loadtxt(p, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{path} is not a numeric CSV: {err}") from None
        return X, None
    if suffix == ".h5ad":
        import anndata

        adata = anndata.read_h5ad(p)
        return adata.X, None
    raise ValueError(f"unsupported input {suffix!r}: use .npy, .npz, .csv or .h5ad.")


def _embed(args) -> int:
    import icongraph

    from .plotting import plot_embedding

    X, labels = read_input(args.input)
    params = {"n_components": args.n_components, "random_state": args.seed,
              "device": args.device, "verbose": not args.quiet, "metric": args.metric}
    if args.n_epochs is not None:
        params["n_epochs"] = args.n_epochs
    if args.method == "umap":
        params.update(n_neighbors=args.n_neighbors, min_dist=args.min_dist)
    else:
        params.update(perplexity=args.perplexity)
    model = getattr(icongraph, METHODS[args.method])(**params)
    Y = model.fit_transform(X)
    np.save(args.output, Y)
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in model.timings_.items())
    print(f"{METHODS[args.method]}: {X.shape[0]} points -> {args.output} ({timing})")
    if args.plot:
        plot_embedding(Y, args.plot, labels, f"{METHODS[args.method]} of {Path(args.input).name}")
        print(f"plot -> {args.plot}")
    return 0


def _cluster(args) -> int:
    from .clustering import Clustering
    from .plotting import plot_embedding

    X, truth = read_input(args.input)
    model = Clustering(n_clusters=args.n_clusters, method=args.method, head=args.head,
                       init=args.init, n_neighbors=args.n_neighbors, random_state=args.seed,
                       device=args.device, verbose=not args.quiet, metric=args.metric)
    labels = model.fit_predict(X)
    np.save(args.output, labels)
    sizes = np.bincount(labels, minlength=args.n_clusters)
    print(f"{X.shape[0]} points -> {args.n_clusters} clusters ({(sizes > 0).sum()} non-empty) "
          f"-> {args.output}")
    if truth is not None:
        from . import metrics

        print(f"against the bundled labels: ARI {metrics.adjusted_rand_index(truth, labels):.3f}"
              f", NMI {metrics.normalized_mutual_info(truth, labels):.3f}, "
              f"Hungarian accuracy {metrics.hungarian_accuracy(truth, labels):.3f}")
    if args.plot:  # a UMAP layout on the same kNN graph, coloured by cluster
        from .embedding import UMAP

        Y = UMAP(random_state=args.seed, precomputed_knn=model.knn_).fit_transform(X)
        plot_embedding(Y, args.plot, labels, f"clusters of {Path(args.input).name}")
        print(f"plot -> {args.plot}")
    return 0


def _table(args) -> int:
    from .embedding import SNE, TSNE, UMAP
    from .kernels import KERNELS
    from .objective import ESTIMATORS
    from .targets import TARGETS

    print("Presets (target p | kernel q | normaliser estimator):")
    for cls in (SNE, TSNE, UMAP):
        spec, kernel, est = cls()._composition()
        print(f"  {cls.__name__:6s} {type(spec).__name__:18s} | {kernel.name:8s} | {est}")
    print("Targets p:   ", ", ".join(sorted(TARGETS)))
    print("Kernels q:   ", ", ".join(sorted(KERNELS)))
    print("Estimators:  ", ", ".join(sorted(ESTIMATORS)))
    print("Compose any: icongraph.ICon(p=<target>, q=<kernel>, estimator=<estimator>)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icongraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="embed a dataset (UMAP-like, t-SNE or SNE)")
    embed.add_argument("input", help=".npy/.npz/.csv/.h5ad file, or 'digits' / 'pbmc68k'")
    embed.add_argument("-o", "--output", required=True, help="output .npy of the embedding")
    embed.add_argument("--method", choices=sorted(METHODS), default="umap")
    embed.add_argument("--plot", help="write a PNG scatter plot here")
    embed.add_argument("--n-components", type=int, default=2)
    embed.add_argument("--n-neighbors", type=int, default=15)
    embed.add_argument("--min-dist", type=float, default=0.1)
    embed.add_argument("--perplexity", type=float, default=30.0)
    embed.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    embed.add_argument("--n-epochs", type=int)
    embed.add_argument("--seed", type=int, default=0)
    embed.add_argument("--device", default="auto")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    embed.set_defaults(func=_embed)

    cluster = sub.add_parser("cluster", help="cluster a dataset (I-Con cluster kernel)")
    cluster.add_argument("input", help=".npy/.npz/.csv/.h5ad file, or 'digits' / 'pbmc68k'")
    cluster.add_argument("-o", "--output", required=True, help="output .npy of the labels")
    cluster.add_argument("--n-clusters", type=int, required=True)
    cluster.add_argument("--method", default="debiased",
                         choices=[m for m in CLUSTER_METHODS if m != "supervised"])
    cluster.add_argument("--head", default="linear", choices=HEADS)
    cluster.add_argument("--init", default="embedding", choices=INITS,
                         help="seed centres: clusters of a 2-D embedding of the graph, or k-means")
    cluster.add_argument("--n-neighbors", type=int, default=15)
    cluster.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    cluster.add_argument("--plot", help="write a PNG (UMAP layout coloured by cluster)")
    cluster.add_argument("--seed", type=int, default=0)
    cluster.add_argument("--device", default="auto")
    cluster.add_argument("-q", "--quiet", action="store_true")
    cluster.set_defaults(func=_cluster)

    table = sub.add_parser("table", help="list the targets, kernels, estimators and presets")
    table.set_defaults(func=_table)

    from .bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"icongraph: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
