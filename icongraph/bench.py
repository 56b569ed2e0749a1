"""``icongraph bench``: icongraph presets against umap-learn (and openTSNE when installed) on the
same data, in one run.

Every method runs in a fresh child process (so peak RSS is its own and nothing is warm from
another method), ``--repeats`` times, round robin over the methods; the report gives the median
of each phase (kNN, graph, init, optimisation), the total, peak RSS, umap-learn's numba JIT
warm-up (timed on a tiny input before its measured run), our own cold start (a fresh process
that imports icongraph and embeds digits), and quality: kNN preservation (k=15),
trustworthiness (k=15), 10-NN accuracy.
Writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["run_bench", "add_bench_parser", "ICON_METHODS", "PEER_METHODS"]

ICON_METHODS = {"umap": "UMAP", "tsne": "TSNE", "sne": "SNE"}
PEER_METHODS = ("umap-learn", "opentsne")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


WARMUP_SAMPLES = 5000  # above umap-learn's 4096 cut-over, so its pynndescent path compiles too


def _warmup_data(n_features: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(WARMUP_SAMPLES, n_features)).astype(np.float32)


def _child_icongraph(method: str, X, seed: int, threads: int) -> tuple[np.ndarray, dict]:
    """Our fit after the same kind of warm-up umap-learn gets: pynndescent's JIT (compiled per
    process) and our numba kernels (loaded from numba's on-disk cache) on a small input."""
    import icongraph

    cls = getattr(icongraph, ICON_METHODS[method])
    knn_method = "nndescent" if X.shape[0] > icongraph.knn.EXACT_MAX_SAMPLES else "auto"
    start = time.perf_counter()
    cls(n_epochs=5, n_jobs=threads, knn_method=knn_method).fit(_warmup_data(X.shape[1]))
    warmup = time.perf_counter() - start
    model = cls(random_state=seed, n_jobs=threads)
    Y = model.fit_transform(X)
    return Y, {**model.timings_, "jit_warmup": warmup}


def _child_umap_learn(X, seed: int, threads: int) -> tuple[np.ndarray, dict]:
    """umap-learn's own pipeline, phase by phase (what ``UMAP().fit`` runs), after a warm-up
    on a tiny input so numba's JIT compilation is timed separately. No ``random_state``:
    umap-learn is only parallel without one, and we compare against it at its fastest."""
    import umap
    import umap.umap_ as uu
    from umap.spectral import spectral_layout

    phases = {}
    start = time.perf_counter()
    umap.UMAP(n_epochs=5, n_jobs=threads).fit(_warmup_data(X.shape[1]))
    phases["jit_warmup"] = time.perf_counter() - start
    state = np.random.RandomState(seed)
    n_neighbors = 15
    start = time.perf_counter()
    idx, dist, _ = uu.nearest_neighbors(X, n_neighbors, "euclidean", {}, False, state,
                                        n_jobs=threads)
    phases["knn"] = time.perf_counter() - start
    start = time.perf_counter()
    graph, _, _ = uu.fuzzy_simplicial_set(X, n_neighbors, state, "euclidean", knn_indices=idx,
                                          knn_dists=dist)
    phases["graph"] = time.perf_counter() - start
    start = time.perf_counter()
    init = spectral_layout(X, graph, 2, state)
    phases["init"] = time.perf_counter() - start
    a, b = uu.find_ab_params(1.0, 0.1)
    n_epochs = 500 if X.shape[0] <= 10_000 else 200
    start = time.perf_counter()
    Y, _ = uu.simplicial_set_embedding(X, graph, 2, 1.0, a, b, 1.0, 5, n_epochs, init, state,
                                       "euclidean", {}, False, {}, False, parallel=True)
    phases["optimize"] = time.perf_counter() - start
    return Y, phases


def _child_opentsne(X, seed: int, threads: int) -> tuple[np.ndarray, dict]:
    import openTSNE

    start = time.perf_counter()
    Y = np.asarray(openTSNE.TSNE(n_jobs=threads, random_state=seed).fit(X))
    return Y, {"optimize": time.perf_counter() - start}


def _child(method: str, data_path: str, out_path: str, seed: int, threads: int) -> None:
    X = np.load(data_path)
    if method in ICON_METHODS:
        Y, phases = _child_icongraph(method, X, seed, threads)
    elif method == "umap-learn":
        Y, phases = _child_umap_learn(X, seed, threads)
    elif method == "opentsne":
        Y, phases = _child_opentsne(X, seed, threads)
    else:
        raise ValueError(f"unknown method {method!r}")
    np.save(out_path + ".npy", np.asarray(Y, np.float32))
    with open(out_path + ".json", "w") as fh:
        json.dump({"phases": phases, "peak_rss": _peak_rss_bytes()}, fh)


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def cold_start_seconds(threads: int) -> float:
    """Wall time of a fresh process that imports icongraph and embeds digits (UMAP preset)."""
    code = ("import icongraph, sklearn.datasets as d; "
            "icongraph.UMAP(random_state=0).fit_transform(d.load_digits().data)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=_child_env(threads))
    return time.perf_counter() - start


def _available(method: str) -> bool:
    if method == "opentsne":
        try:
            import openTSNE  # noqa: F401
        except ImportError:
            return False
    return True


def run_bench(dataset: str = "digits", n_samples: int | None = None,
              methods=("umap", "tsne", "umap-learn"), repeats: int = 1, threads: int | None = None,
              out: str = "bench_out", seed: int = 0, quality_samples: int = 10_000,
              cold_start: bool = True, verbose: bool = True, n_classes: int = 20) -> dict:
    """Run the benchmark and write the report; returns the report as a dict."""
    from . import metrics
    from .datasets import load
    from .plotting import plot_embeddings
    from .progress import progress

    threads = threads or os.cpu_count() or 1
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    X, y = load(dataset, n_samples, seed, n_classes)
    X = np.ascontiguousarray(X, dtype=np.float32)
    report = {"dataset": dataset, "n_samples": int(X.shape[0]), "n_features": int(X.shape[1]),
              "threads": threads, "repeats": repeats, "methods": {}}
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "X.npy")
        np.save(data_path, X)
        runnable = [m for m in methods if _available(m)]
        runs = {m: [] for m in runnable}
        # round robin over the methods, repeat by repeat: a slow spell of a noisy machine then
        # hits every method instead of all the repeats of one
        jobs = [(r, m) for r in range(repeats) for m in runnable]
        for r, method in progress(jobs, "bench", verbose):
            stem = str(Path(tmp) / f"{method}-{r}")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "icongraph.bench", method, data_path,
                            stem, str(seed + r), str(threads)], check=True,
                           env=_child_env(threads))
            wall = time.perf_counter() - start
            with open(stem + ".json") as fh:
                runs[method].append({**json.load(fh), "process_wall": wall})
        for method in methods:
            if method not in runs:
                report["methods"][method] = {"skipped": "not installed"}
                continue
            done = runs[method]
            Y = np.load(str(Path(tmp) / f"{method}-0.npy"))
            phase_names = [k for k in done[0]["phases"]]
            result = {"phases": {k: statistics.median(r["phases"][k] for r in done)
                                 for k in phase_names}}
            result["total"] = statistics.median(
                sum(v for k, v in r["phases"].items() if k != "jit_warmup") for r in done)
            result["peak_rss_mb"] = max(r["peak_rss"] for r in done) / 2**20
            result["knn_preservation"] = metrics.knn_preservation(X, Y, 15, quality_samples, seed)
            result["trustworthiness"] = metrics.trustworthiness(
                X, Y, 15, min(quality_samples, 2_000), seed)
            if y is not None:
                result["knn_accuracy"] = metrics.knn_accuracy(Y, y, 10, quality_samples, seed)
            report["methods"][method] = result
            panels.append((f"{method} ({result['total']:.1f}s)", Y))
    if cold_start and any(m in ICON_METHODS for m in methods):
        report["icongraph_cold_start_digits"] = cold_start_seconds(threads)
    with open(out_dir / "bench.json", "w") as fh:
        json.dump(report, fh, indent=2)
    (out_dir / "bench.md").write_text(markdown_table(report))
    if panels:
        plot_embeddings(panels, out_dir / "bench.png", y)
    return report


def markdown_table(report: dict) -> str:
    lines = [f"## {report['dataset']}: {report['n_samples']} x {report['n_features']}, "
             f"{report['threads']} threads, median of {report['repeats']}", "",
             "| method | kNN s | graph s | init s | optimise s | total s | JIT s | peak RSS MB | "
             "kNN-pres@15 | trust@15 | 10-NN acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |||||||||| ")
            continue
        cells = {k: f"{r['phases'][k]:.2f}" if k in r["phases"] else "-"
                 for k in ("knn", "graph", "init", "optimize", "jit_warmup")}
        acc = f"{r['knn_accuracy']:.4f}" if "knn_accuracy" in r else "-"
        lines.append(f"| {name} | {cells['knn']} | {cells['graph']} | {cells['init']} | "
                     f"{cells['optimize']} | {r['total']:.2f} | {cells['jit_warmup']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['knn_preservation']:.4f} | "
                     f"{r['trustworthiness']:.4f} | {acc} |")
    if "icongraph_cold_start_digits" in report:
        lines += ["", f"icongraph cold start (fresh process, import + digits UMAP): "
                      f"{report['icongraph_cold_start_digits']:.2f} s"]
    return "\n".join(lines) + "\n"


def leiden_labels(graph, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden (leidenalg on igraph, RB-configuration modularity) on a symmetric weighted graph."""
    import igraph as ig
    import leidenalg

    coo = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([coo.row, coo.col]).tolist())
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition,
                                    weights=coo.data.tolist(), resolution_parameter=resolution,
                                    seed=seed)
    return np.asarray(part.membership)


def leiden_with_k(graph, n_clusters: int, seed: int = 0, max_iter: int = 30):
    """Leiden at the resolution giving ``n_clusters`` clusters (bisection on log resolution);
    returns (labels, resolution) of the closest count found."""
    lo, hi = 1e-3, 1e2
    best = None
    for _ in range(max_iter):
        res = float(np.sqrt(lo * hi))
        labels = leiden_labels(graph, res, seed)
        k = len(np.unique(labels))
        if best is None or abs(k - n_clusters) < abs(best[2] - n_clusters):
            best = (labels, res, k)
        if k == n_clusters:
            break
        if k < n_clusters:
            lo = res
        else:
            hi = res
    return best[0], best[1]


#: the ablation the I-Con paper reports: baseline, + debiasing, + propagation of 1/2/3 steps
ABLATION = [("baseline (InfoNCE)", {"method": "infonce"}),
            ("+ debias a=0.2", {"method": "debiased", "propagation_steps": 1}),
            ("+ debias + walk 2", {"method": "debiased", "propagation_steps": 2}),
            ("+ debias + walk 3", {"method": "debiased", "propagation_steps": 3}),
            ("+ debias + reachable 2", {"method": "debiased", "propagation": "reachable"})]


def run_cluster_bench(dataset: str = "digits", n_samples: int | None = None,
                      n_clusters: int | None = None, out: str = "bench_out", seed: int = 0,
                      threads: int | None = None, leiden: bool = True, ablation: bool = True,
                      n_classes: int = 20) -> dict:
    """icongraph Clustering presets and the ablation against KMeans and Leiden (on the same kNN
    graph: at its default resolution and at the one giving ``n_clusters``), one process.
    ``n_classes``: classes of the generated 'manifolds' data. The peak RSS is recorded after
    the kNN search and after icongraph's default fit (before any baseline runs)."""
    from sklearn.cluster import KMeans

    from . import metrics
    from .clustering import Clustering
    from .datasets import load
    from .graph import symmetrize
    from .knn import knn_search
    from .optimize import threads as use_threads

    X, y = load(dataset, n_samples, seed, n_classes)
    k = n_clusters or len(np.unique(y))
    report = {"dataset": dataset, "n_samples": int(X.shape[0]), "n_clusters": k, "rows": {}}

    def score(name, labels, seconds, **extra):
        report["rows"][name] = {"ari": metrics.adjusted_rand_index(y, labels),
                                "nmi": metrics.normalized_mutual_info(y, labels),
                                "acc": metrics.hungarian_accuracy(y, labels),
                                "seconds": seconds, "n_found": int(len(np.unique(labels))),
                                **extra}

    with use_threads(threads):
        # one kNN search serves every graph method (the ablation's Gaussian p needs 3 x perplexity)
        start = time.perf_counter()
        knn = knn_search(X, min(90 if ablation else 15, X.shape[0] - 1), random_state=seed)
        report["knn_seconds"] = time.perf_counter() - start
        report["rss_after_knn_mb"] = _peak_rss_bytes() / 2**20
        start = time.perf_counter()
        base = Clustering(n_clusters=k, random_state=seed, precomputed_knn=knn).fit(X)
        score("icongraph (default: debiased)", base.labels_, time.perf_counter() - start)
        report["rss_after_fit_mb"] = _peak_rss_bytes() / 2**20
        others = [("icongraph, k-means seed (init='kmeans')", {"init": "kmeans"}),
                  ("icongraph kmeans-like", {"method": "kmeans"}),
                  ("icongraph ncut-like", {"method": "ncut"}),
                  *[(f"ablation: {n}", p) for n, p in ABLATION]] if ablation else []
        for name, params in others:
            start = time.perf_counter()
            model = Clustering(n_clusters=k, random_state=seed, precomputed_knn=knn, **params)
            labels = model.fit_predict(X)
            score(name, labels, time.perf_counter() - start)
        start = time.perf_counter()
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(X)
        score("KMeans (sklearn, n_init=10)", labels, time.perf_counter() - start)
        if leiden:
            graph = symmetrize(base.graph_, "max")
            start = time.perf_counter()
            labels = leiden_labels(graph, 1.0, seed)
            score("Leiden (resolution 1)", labels, time.perf_counter() - start)
            start = time.perf_counter()
            labels, res = leiden_with_k(graph, k, seed)
            score("Leiden (resolution for k)", labels, time.perf_counter() - start,
                  resolution=res)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"cluster_{dataset}.json", "w") as fh:
        json.dump(report, fh, indent=2)
    (out_dir / f"cluster_{dataset}.md").write_text(cluster_table(report))
    return report


def cluster_table(report: dict) -> str:
    lines = [f"## {report['dataset']}: {report['n_samples']} points, k={report['n_clusters']} "
             f"(shared kNN graph: {report['knn_seconds']:.1f} s, not in the rows; peak RSS "
             f"{report['rss_after_knn_mb']:.0f} MB after it, {report['rss_after_fit_mb']:.0f} MB "
             "after icongraph's default fit)",
             "", "| method | ARI | NMI | Hungarian acc | clusters found | seconds |",
             "|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['ari']:.3f} | {r['nmi']:.3f} | {r['acc']:.3f} | "
                     f"{r['n_found']} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmark icongraph against umap-learn")
    bench.add_argument("--task", choices=("embed", "cluster"), default="embed")
    bench.add_argument("--dataset", default="digits", help="digits | pbmc68k | manifolds")
    bench.add_argument("--n-clusters", type=int, help="cluster task: k (default: #classes)")
    bench.add_argument("--n-samples", type=int, help="size (manifolds) or subsample")
    bench.add_argument("--n-classes", type=int, default=20, help="classes of 'manifolds'")
    bench.add_argument("--no-ablation", action="store_true",
                       help="cluster task: only the default preset and the baselines")
    bench.add_argument("--no-leiden", action="store_true", help="cluster task: skip Leiden")
    bench.add_argument("--methods", default="umap,tsne,umap-learn",
                       help="comma list of: " + ", ".join([*ICON_METHODS, *PEER_METHODS]))
    bench.add_argument("--repeats", type=int, default=1)
    bench.add_argument("--threads", type=int, help="threads per method (default: all cores)")
    bench.add_argument("--out", default="bench_out")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--no-cold-start", action="store_true")
    bench.add_argument("-q", "--quiet", action="store_true")

    def run(args) -> int:
        if args.task == "cluster":
            report = run_cluster_bench(args.dataset, args.n_samples, args.n_clusters, args.out,
                                       args.seed, args.threads, leiden=not args.no_leiden,
                                       ablation=not args.no_ablation, n_classes=args.n_classes)
            print(cluster_table(report))
            return 0
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in ICON_METHODS and m not in PEER_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}.")
        report = run_bench(args.dataset, args.n_samples, methods, args.repeats, args.threads,
                           args.out, args.seed, cold_start=not args.no_cold_start,
                           verbose=not args.quiet, n_classes=args.n_classes)
        print(markdown_table(report))
        return 0

    bench.set_defaults(func=run)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
