"""Command line: ``icongraph embed``, ``icongraph cluster``, ``icongraph table`` (and
``icongraph bench``).

Bad input ends with one line ``icongraph: error: ...`` and exit code 2, before any work: the
output paths are checked first (their directory must exist, a suffix must say the format, an
existing file is kept unless ``--force``), then the input is read. Outputs are written under a
temporary name in their directory and renamed, so a file at the output path is always
complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .clustering import CLUSTER_METHODS
from .heads import HEADS
from .seeding import INITS
from .validation import check_data

__all__ = ["main", "read_input", "check_output", "write_atomic", "write_array", "OUTPUT_FORMATS"]

METHODS = {"umap": "UMAP", "tsne": "TSNE", "sne": "SNE"}
#: output suffix -> (format, the modules it needs, any one of which for parquet's engines)
OUTPUT_FORMATS = {
    ".npy": ("numpy array", ()),
    ".csv": ("comma-separated text", ()),
    ".txt": ("space-separated text", ()),
    ".parquet": ("Parquet table", ("pandas", ("pyarrow", "fastparquet"))),
    ".h5ad": ("AnnData file", ("anndata",)),
}


def read_input(path: str):
    """``(X, labels or None)`` from .npy, .npz (arrays 'X' [and 'y'], else the first array;
    a scipy sparse matrix written by ``scipy.sparse.save_npz``),
    .csv (numeric; a non-numeric header row is skipped), .h5ad (AnnData ``X``; needs anndata),
    or a bundled dataset name ('digits', 'pbmc68k').

    Raises
    ------
    ValueError
        Naming the file, when it does not exist, has an unknown suffix, cannot be parsed (a
        corrupt or truncated .npy/.npz/.h5ad, a CSV that is not numeric text), or holds no
        valid data matrix (:func:`~icongraph.validation.check_data`).
    """
    from .datasets import DATASETS, load

    if path in DATASETS and not Path(path).exists():
        return load(path)
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ValueError(f"input file {path!r} {what}.")
    suffix = p.suffix.lower()
    readers = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv, ".h5ad": _read_h5ad}
    if suffix not in readers:
        raise ValueError(f"unsupported input {suffix or path!r}: use .npy, .npz, .csv or .h5ad.")
    try:
        X, labels = readers[suffix](p)
    except ImportError:
        raise
    except Exception as err:  # parsers raise anything on a corrupt or truncated file
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot read {path} as {suffix}: {detail}") from None
    return check_data(X, name=f"the data in {path}"), labels


def _read_npy(p: Path):
    return np.load(p, allow_pickle=False), None


def _read_npz(p: Path):
    with np.load(p, allow_pickle=False) as data:
        if not data.files:
            raise ValueError("it holds no arrays")
        if {"format", "shape", "data"} <= set(data.files):  # scipy.sparse.save_npz's layout
            import scipy.sparse as sp

            return sp.load_npz(p), None
        X = data["X"] if "X" in data.files else data[data.files[0]]
        return X, (data["y"] if "y" in data.files else None)


def _read_csv(p: Path):
    with open(p) as fh:
        first = fh.readline()
    try:
        [float(v) for v in first.strip().split(",") if v != ""]
        skip = 0
    except ValueError:
        skip = 1
    try:
        with warnings.catch_warnings():  # an empty file: check_data says so, in one line
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")
            X = np.loadtxt(p, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"not a numeric CSV: {err}") from None
    return X, None


def _read_h5ad(p: Path):
    import anndata

    return anndata.read_h5ad(p).X, None


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def check_output(path: str, force: bool, what: str = "output",
                 suffixes: dict | None = None) -> Path:
    """Check an output path before any work.

    Parameters
    ----------
    path : str
        Where the file will be written.
    force : bool
        Overwrite an existing file (``--force``).
    what : str
        The option, for messages (``"output"``, ``"--plot"``).
    suffixes : dict, optional
        Accepted suffixes -> (description, modules needed), default :data:`OUTPUT_FORMATS`.

    Returns
    -------
    pathlib.Path
        The path, to write with :func:`write_atomic`.

    Raises
    ------
    ValueError
        For a suffix that names no format this command writes (or whose package is missing),
        a directory that does not exist or cannot be written, a path that is a directory, or an
        existing file without ``force``.
    """
    suffixes = OUTPUT_FORMATS if suffixes is None else suffixes
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{what} {path!r}: the suffix {suffix or '(none)'!r} names no format "
                         f"written here; use one of {', '.join(suffixes)}.")
    for need in suffixes[suffix][1]:
        options = need if isinstance(need, tuple) else (need,)
        if not any(_importable(name) for name in options):
            raise ValueError(f"{what} {path!r}: writing {suffix} needs "
                             f"{' or '.join(options)}: pip install {options[0]}.")
    parent = p.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path!r}: the directory {str(parent)!r} does not exist; "
                         "create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r}: the directory {str(parent)!r} is not writable.")
    if p.is_dir():
        raise ValueError(f"{what} {path!r} is a directory.")
    if p.exists() and not force:
        raise ValueError(f"{what} {path!r} already exists; pass --force to overwrite it.")
    return p


def write_atomic(path: Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary name in ``path``'s directory (same suffix), then
    rename it to ``path``: a reader never sees a partial file, and a failed write leaves
    ``path`` as it was. The file gets the usual permissions (0666 less the umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_array(path: Path, values: np.ndarray, name: str) -> Path:
    """Write ``values`` (an (N, d) embedding or (N,) labels) in the format of ``path``'s
    suffix (:data:`OUTPUT_FORMATS`), atomically. ``name`` names the columns (``umap`` gives
    ``umap1, umap2``; labels one column) and the AnnData slot (``obsm['X_umap']``, or
    ``obs['cluster']``)."""
    suffix = path.suffix.lower()
    labels = values.ndim == 1
    columns = [name] if labels else [f"{name}{i + 1}" for i in range(values.shape[1])]

    def write(tmp: str):
        if suffix == ".npy":
            np.save(tmp, values)
        elif suffix in (".csv", ".txt"):
            np.savetxt(tmp, values, fmt="%d" if labels else "%.9g",
                       delimiter="," if suffix == ".csv" else " ")
        elif suffix == ".parquet":
            import pandas as pd

            frame = pd.DataFrame(values[:, None] if labels else values, columns=columns)
            frame.to_parquet(tmp)
        else:  # .h5ad
            import anndata
            import pandas as pd

            obs = pd.DataFrame(index=[str(i) for i in range(len(values))])
            if labels:
                obs[name] = pd.Categorical(values)
                anndata.AnnData(obs=obs).write_h5ad(tmp)
            else:
                anndata.AnnData(obs=obs, obsm={f"X_{name}": values}).write_h5ad(tmp)

    return write_atomic(path, write)


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


def _embed(args) -> int:
    import icongraph

    from .plotting import plot_embedding

    output, plot = _check_outputs(args, args.n_components)
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
    write_array(output, Y, args.method)
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in model.timings_.items())
    print(f"{METHODS[args.method]}: {X.shape[0]} points -> {output} ({timing})")
    if plot is not None:
        title = f"{METHODS[args.method]} of {Path(args.input).name}"
        write_atomic(plot, lambda tmp: plot_embedding(Y, tmp, labels, title))
        print(f"plot -> {plot}")
    return 0


def _cluster(args) -> int:
    from .clustering import Clustering
    from .plotting import plot_embedding

    output, plot = _check_outputs(args)
    X, truth = read_input(args.input)
    model = Clustering(n_clusters=args.n_clusters, method=args.method, head=args.head,
                       init=args.init, n_neighbors=args.n_neighbors, random_state=args.seed,
                       device=args.device, verbose=not args.quiet, metric=args.metric,
                       n_epochs=args.n_epochs)
    labels = model.fit_predict(X)
    write_array(output, labels, "cluster")
    sizes = np.bincount(labels, minlength=args.n_clusters)
    print(f"{X.shape[0]} points -> {args.n_clusters} clusters ({(sizes > 0).sum()} non-empty) "
          f"-> {output}")
    if truth is not None:
        from . import metrics

        print(f"against the bundled labels: ARI {metrics.adjusted_rand_index(truth, labels):.3f}"
              f", NMI {metrics.normalized_mutual_info(truth, labels):.3f}, "
              f"Hungarian accuracy {metrics.hungarian_accuracy(truth, labels):.3f}")
    if plot is not None:  # a UMAP layout on the same kNN graph, coloured by cluster
        from .embedding import UMAP

        Y = UMAP(n_neighbors=model.knn_.n_neighbors + 1, random_state=args.seed,
                 precomputed_knn=model.knn_).fit_transform(X)  # UMAP counts the point itself
        title = f"clusters of {Path(args.input).name}"
        write_atomic(plot, lambda tmp: plot_embedding(Y, tmp, labels, title))
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
    print("Kernels q:   ", ", ".join(sorted(KERNELS)))
    print("Estimators:  ", ", ".join(sorted(ESTIMATORS)))
    print("Compose any: icongraph.ICon(p=<target>, q=<kernel>, estimator=<estimator>)")
    return 0


_FORMATS_HELP = ", ".join(f"{suffix} ({desc})" for suffix, (desc, _) in OUTPUT_FORMATS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icongraph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="embed a dataset (UMAP-like, t-SNE or SNE)")
    embed.add_argument("input", help=".npy/.npz/.csv/.h5ad file, or 'digits' / 'pbmc68k'")
    embed.add_argument("-o", "--output", required=True,
                       help="the embedding, in the format its suffix names: " + _FORMATS_HELP)
    embed.add_argument("--method", choices=sorted(METHODS), default="umap")
    embed.add_argument("--plot", help="write a scatter plot here (.png, .pdf, .svg, ...)")
    embed.add_argument("-f", "--force", "--overwrite", action="store_true",
                       help="overwrite existing output files")
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
    cluster.add_argument("-o", "--output", required=True,
                         help="the labels, in the format its suffix names: " + _FORMATS_HELP)
    cluster.add_argument("-f", "--force", "--overwrite", action="store_true",
                         help="overwrite existing output files")
    cluster.add_argument("--n-clusters", type=int, required=True)
    cluster.add_argument("--method", default="debiased",
                         choices=[m for m in CLUSTER_METHODS if m != "supervised"])
    cluster.add_argument("--head", default="linear", choices=HEADS)
    cluster.add_argument("--init", default="embedding", choices=INITS,
                         help="seed centres: clusters of a 2-D embedding of the graph, or k-means")
    cluster.add_argument("--n-neighbors", type=int, default=15)
    cluster.add_argument("--n-epochs", type=int, help="training epochs (default: the schedule "
                         "for the data size)")
    cluster.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    cluster.add_argument("--plot", help="write a plot (.png, .pdf, ...): a UMAP layout coloured "
                                        "by cluster")
    cluster.add_argument("--seed", type=int, default=0)
    cluster.add_argument("--device", default="auto")
    cluster.add_argument("-q", "--quiet", action="store_true")
    cluster.set_defaults(func=_cluster)

    table = sub.add_parser("table", help="list the methods (named compositions), targets, "
                           "kernels and estimators")
    table.add_argument("--markdown", action="store_true",
                       help="print the methods table as Markdown")
    table.set_defaults(func=_table)

    from .bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ImportError, OSError) as err:  # bad input, a missing package, a disk
        print(f"icongraph: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
