"""``icongraph bench``: icongraph presets against umap-learn (and openTSNE when installed) on the
same data, in one run.

Every method runs in a fresh child process (so peak RSS is its own and nothing is warm from
another method), ``--repeats`` times, round robin over the methods; the report gives the median
of each phase (kNN, graph, init, optimisation), the total, peak RSS, umap-learn's numba JIT
warm-up (timed on a tiny input before its measured run), our own cold start (a fresh process
that imports icongraph and embeds digits), and quality: kNN preservation (k=15),
trustworthiness (k=15), 10-NN accuracy.
Writes ``bench.json``, ``bench.md`` and ``bench.png`` into ``--out``.

``icongraph bench --suite real`` (:func:`run_suite`) runs the presets and the peers on every
real dataset of :data:`SUITE` for several seeds and writes ``suite.json`` and ``suite.md``
(mean ± sd over the seeds, and ours minus peer); peer embeddings are cached on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .communities import leiden_labels, leiden_with_k, unweighted_knn_graph
from .progress import peak_rss_bytes
from .runtime import child_env

__all__ = ["run_bench", "run_suite", "suite_quality", "suite_markdown", "add_bench_parser",
           "run_cluster_suite", "cluster_suite_markdown", "ICON_METHODS", "PEER_METHODS",
           "SUITE", "SUITE_METHODS", "CLUSTER_SUITE", "ABLATION"]

ICON_METHODS = {"umap": "UMAP", "tsne": "TSNE", "sne": "SNE"}
PEER_METHODS = ("umap-learn", "opentsne")
#: the pip distribution of each peer (its version keys the peer cache)
PEER_PACKAGES = {"umap-learn": "umap-learn", "opentsne": "openTSNE"}
#: bump when the peers' child pipelines change what they compute or time: keys the peer cache
PEER_CACHE_VERSION = 1


WARMUP_SAMPLES = 5000  # above umap-learn's 4096 cut-over, so its pynndescent path compiles too


def _warmup_data(n_features: int, n_samples: int = WARMUP_SAMPLES) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_samples, n_features)).astype(np.float32)


def _child_icongraph(method: str, X, seed: int, threads: int) -> tuple[np.ndarray, dict]:
    """Our fit after the same kind of warm-up umap-learn gets: pynndescent's JIT (compiled per
    process) and our numba kernels (loaded from numba's on-disk cache) on a small input."""
    import icongraph

    cls = getattr(icongraph, ICON_METHODS[method])
    knn_method = "nndescent" if X.shape[0] > icongraph.knn.EXACT_MAX_SAMPLES else "auto"
    # from SPATIAL_MIN_SAMPLES rows pynndescent starts from our forest's graph, a call its JIT
    # compiles anew (4.5 s): the warm-up takes that path too
    rows = (icongraph.knn.SPATIAL_MIN_SAMPLES if X.shape[0] >= icongraph.knn.SPATIAL_MIN_SAMPLES
            else WARMUP_SAMPLES)
    start = time.perf_counter()
    cls(n_epochs=5, n_jobs=threads, knn_method=knn_method).fit(_warmup_data(X.shape[1], rows))
    warmup = time.perf_counter() - start
    model = cls(random_state=seed, n_jobs=threads)
    Y = model.fit_transform(X)
    return Y, {**model.timings_, "jit_warmup": warmup}


#: below this many rows ``UMAP.fit`` finds the neighbours from all pairwise distances
UMAP_LEARN_SMALL_DATA = 4096


def _umap_learn_knn(X, n_neighbors: int, state, threads: int):
    """umap-learn's kNN as ``UMAP().fit`` finds it: exact from the pairwise distance matrix
    below :data:`UMAP_LEARN_SMALL_DATA` rows, else NN-descent. Returns (indices, distances)."""
    import umap.umap_ as uu

    if X.shape[0] < UMAP_LEARN_SMALL_DATA:
        from sklearn.metrics import pairwise_distances

        idx, dist, _ = uu.nearest_neighbors(pairwise_distances(X), n_neighbors, "precomputed",
                                            {}, False, state)
    else:
        idx, dist, _ = uu.nearest_neighbors(X, n_neighbors, "euclidean", {}, False, state,
                                            n_jobs=threads)
    return idx, dist


def _umap_learn_fit(X, seed: int, threads: int, n_epochs: int | None = None):
    """umap-learn's own pipeline, phase by phase (what ``UMAP().fit`` runs at its defaults:
    the kNN as in :func:`_umap_learn_knn`, the fuzzy graph, the spectral initialisation,
    ``n_epochs`` of SGD, by default 500 up to 10,000 rows and 200 above), on its parallel path
    (what ``UMAP()`` without a ``random_state`` runs: we compare against it at its fastest).
    Returns the embedding and the phase seconds."""
    import umap.umap_ as uu
    from umap.spectral import spectral_layout

    phases = {}
    state = np.random.RandomState(seed)
    n_neighbors = 15
    start = time.perf_counter()
    idx, dist = _umap_learn_knn(X, n_neighbors, state, threads)
    phases["knn"] = time.perf_counter() - start
    start = time.perf_counter()
    graph, _, _ = uu.fuzzy_simplicial_set(X, n_neighbors, state, "euclidean", knn_indices=idx,
                                          knn_dists=dist)
    phases["graph"] = time.perf_counter() - start
    start = time.perf_counter()
    init = spectral_layout(X, graph, 2, state)
    phases["init"] = time.perf_counter() - start
    a, b = uu.find_ab_params(1.0, 0.1)
    n_epochs = n_epochs or (500 if X.shape[0] <= 10_000 else 200)
    start = time.perf_counter()
    Y, _ = uu.simplicial_set_embedding(X, graph, 2, 1.0, a, b, 1.0, 5, n_epochs, init, state,
                                       "euclidean", {}, False, {}, False, parallel=True)
    phases["optimize"] = time.perf_counter() - start
    return Y, phases


def _opentsne_fit(X, seed: int, threads: int, **params):
    """openTSNE's ``TSNE(n_jobs=threads, **params).fit(X)`` (its defaults without
    ``params``), run step by step as ``fit`` runs them so that each phase is timed: the kNN
    index (3 x perplexity neighbours), the affinities on it, the PCA initialisation
    (``prepare_initial``), then the early-exaggeration and the final optimisation. The same
    embedding as ``fit`` for the same ``random_state``. Returns it and the phase seconds."""
    import openTSNE
    from openTSNE.affinity import MultiscaleMixture, get_knn_index

    phases = {}
    tsne = openTSNE.TSNE(n_jobs=threads, random_state=seed, **params)
    start = time.perf_counter()
    index = get_knn_index(X, tsne.neighbors, min(X.shape[0] - 1, int(3 * tsne.perplexity)),
                          tsne.metric, tsne.metric_params, threads, seed, tsne.verbose,
                          tsne.knn_kwargs)
    neighbours = index.build()
    index.build = lambda: neighbours  # the affinities call build(): hand them this result
    phases["knn"] = time.perf_counter() - start
    start = time.perf_counter()
    affinities = MultiscaleMixture(perplexities=tsne.perplexity, n_jobs=threads,
                                   random_state=seed, knn_index=index)
    phases["graph"] = time.perf_counter() - start
    start = time.perf_counter()
    embedding = tsne.prepare_initial(X, affinities)
    phases["init"] = time.perf_counter() - start
    start = time.perf_counter()
    embedding.optimize(n_iter=tsne.early_exaggeration_iter, exaggeration=tsne.early_exaggeration,
                       momentum=tsne.initial_momentum, inplace=True)
    embedding.optimize(n_iter=tsne.n_iter, exaggeration=tsne.exaggeration,
                       momentum=tsne.final_momentum, inplace=True)
    phases["optimize"] = time.perf_counter() - start
    return np.asarray(embedding), phases


def _with_warmup(fit, X, seed: int, threads: int, warmup_rows: int, **short):
    """``fit(X, seed, threads)`` after a warm-up: the same ``fit`` with the ``short``
    settings on random data of ``warmup_rows`` rows (choose them on the same side of the
    method's exact/approximate kNN cut as ``X``, so the warm-up compiles the code the measured
    run uses). Returns the embedding and the phases, the warm-up as ``jit_warmup``."""
    start = time.perf_counter()
    fit(_warmup_data(X.shape[1], warmup_rows), seed, threads, **short)
    warmup = time.perf_counter() - start
    Y, phases = fit(X, seed, threads)
    return Y, {**phases, "jit_warmup": warmup}


def _child(method: str, data_path: str, out_path: str, seed: int, threads: int) -> None:
    X = np.load(data_path, mmap_mode="r")  # as users hand large data: never read whole
    if method in ICON_METHODS:
        Y, phases = _child_icongraph(method, X, seed, threads)
    elif method == "umap-learn":  # min(N, 5000) rows: exact below 4,096 rows as X, else NN-descent
        Y, phases = _with_warmup(_umap_learn_fit, X, seed, threads,
                                 min(X.shape[0], WARMUP_SAMPLES), n_epochs=5)
    elif method == "opentsne":  # min(N, 1500) rows: exact below 1,000 rows as X, else Annoy
        Y, phases = _with_warmup(_opentsne_fit, X, seed, threads, min(X.shape[0], 1500),
                                 n_iter=5, early_exaggeration_iter=5)
    else:
        raise ValueError(f"unknown method {method!r}")
    np.save(out_path + ".npy", np.asarray(Y, np.float32))
    with open(out_path + ".json", "w") as fh:
        json.dump({"phases": phases, "peak_rss": peak_rss_bytes()}, fh)


def _run_child(method: str, data_path: str, stem: str, seed: int,
               threads: int) -> tuple[np.ndarray, dict]:
    """One fit of ``method`` on the saved array ``data_path`` in a fresh child process.

    Parameters
    ----------
    method : str
        A key of :data:`ICON_METHODS` or one of :data:`PEER_METHODS`.
    data_path : str
        ``.npy`` file of the data.
    stem : str
        Path prefix of the child's outputs (``stem.npy``, ``stem.json``).
    seed, threads : int
        Seed of the fit; threads of the child.

    Returns
    -------
    Y : ndarray of float32, shape (N, 2)
    record : dict
        ``phases`` (seconds, with ``jit_warmup``), ``peak_rss`` (bytes) and ``process_wall``
        (seconds of the whole child process).
    """
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "icongraph.bench", method, data_path, stem,
                    str(seed), str(threads)], check=True, env=child_env(threads))
    wall = time.perf_counter() - start
    with open(stem + ".json") as fh:
        record = {**json.load(fh), "process_wall": wall}
    return np.load(stem + ".npy"), record


def _total_seconds(phases: dict) -> float:
    """End-to-end seconds of a fit: its phases without the JIT warm-up."""
    return sum(v for k, v in phases.items() if k != "jit_warmup")


def cold_start_seconds(threads: int) -> float:
    """Wall time of a fresh process that imports icongraph and embeds digits (UMAP preset)."""
    code = ("import icongraph, sklearn.datasets as d; "
            "icongraph.UMAP(random_state=0).fit_transform(d.load_digits().data)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env(threads))
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
    from .plot import plot_embeddings
    from .progress import progress

    threads = threads or os.cpu_count() or 1
    X, y = load(dataset, n_samples, seed, n_classes)  # an unknown name fails before any mkdir
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    X = np.ascontiguousarray(X, dtype=np.float32)
    report = {"dataset": dataset, "n_samples": int(X.shape[0]), "n_features": int(X.shape[1]),
              "threads": threads, "repeats": repeats, "methods": {}}
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "X.npy")
        np.save(data_path, X)
        runnable = [m for m in methods if _available(m)]
        runs = {m: [] for m in runnable}
        first = {}
        # round robin over the methods, repeat by repeat: a slow spell of a noisy machine then
        # hits every method instead of all the repeats of one
        jobs = [(r, m) for r in range(repeats) for m in runnable]
        for r, method in progress(jobs, "bench", verbose):
            Y, record = _run_child(method, data_path, str(Path(tmp) / f"{method}-{r}"),
                                   seed + r, threads)
            runs[method].append(record)
            first.setdefault(method, Y)
        for method in methods:
            if method not in runs:
                report["methods"][method] = {"skipped": "not installed"}
                continue
            done = runs[method]
            Y = first[method]
            phase_names = [k for k in done[0]["phases"]]
            result = {"phases": {k: statistics.median(r["phases"][k] for r in done)
                                 for k in phase_names}}
            result["total"] = statistics.median(_total_seconds(r["phases"]) for r in done)
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
        plot_embeddings(panels, y, color_label="class").savefig(out_dir / "bench.png", dpi=150)
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


#: the real-data suite: dataset -> points (None: every row; 'manifolds': how many to generate)
SUITE = {"digits": None, "pbmc68k": None, "mnist1d": None, "cells": None, "tissue": None,
         "movies": None, "manifolds": 20_000}
SUITE_METHODS = ("umap", "tsne", "umap-learn", "opentsne")
#: our preset -> its peer, for the "ours minus peer" tables
PEER_OF = {"tsne": "opentsne", "umap": "umap-learn"}
#: sample size of the quality metrics (the within-sample readings and the all-points queries)
QUALITY_SAMPLES = 5_000
QUALITY_COLUMNS = {"pres_sample": "kNN-pres@15 (5k sample)",
                   "pres_all": "kNN-pres@15 (5k queries, all N)",
                   "trust": "trust@15 (5k sample)", "acc_cv5": "10-NN acc (5-fold)",
                   "acc_loo": "10-NN acc (LOO)"}
TIME_COLUMNS = {"knn": "kNN s", "graph": "graph s", "init": "init s", "optimize": "optimise s",
                "total": "total s", "jit_warmup": "JIT warm-up s", "peak_rss_mb": "peak RSS MB"}


def _suite_data(name: str, cap: int | None = None, sizes: dict | None = None):
    """The data of suite dataset ``name`` as the suite runs it: float32, C-contiguous, at
    most ``cap`` rows (a fixed random subsample, seed 0), at the size ``sizes`` (default
    :data:`SUITE`) gives it. Raises ImportError when the package that ships the data is
    missing."""
    from .datasets import load

    size = (SUITE if sizes is None else sizes)[name]
    if cap is not None:
        size = cap if size is None else min(size, cap)
    X, y = load(name, size, seed=0)
    return np.ascontiguousarray(X, dtype=np.float32), y


def _peer_cache_stem(method: str, dataset: str, X: np.ndarray, seed: int, threads: int) -> str:
    """Path prefix under which a peer's fit of ``X`` is cached: keyed by the dataset, its
    size, the method, the peer package's version, the seed, the threads, a digest of the data
    (so a changed recipe is never served a stale embedding) and :data:`PEER_CACHE_VERSION`."""
    from importlib.metadata import version

    from .datasets import cache_dir

    digest = hashlib.sha1(X.tobytes()).hexdigest()[:12]
    return str(cache_dir("peers") / (f"{dataset}-{X.shape[0]}x{X.shape[1]}-{method}-"
                                     f"{version(PEER_PACKAGES[method])}-seed{seed}-"
                                     f"t{threads}-{digest}-v{PEER_CACHE_VERSION}"))


def _run_cached(method: str, data_path: str, stem: str, seed: int, threads: int,
                cache_stem: str | None) -> tuple[np.ndarray, dict]:
    """:func:`_run_child`, served from ``cache_stem`` when it holds this fit (the record then
    says ``cached``) and stored there after a run; no cache when ``cache_stem`` is None."""
    if cache_stem is not None and Path(cache_stem + ".json").exists():
        with open(cache_stem + ".json") as fh:
            return np.load(cache_stem + ".npy"), {**json.load(fh), "cached": True}
    Y, record = _run_child(method, data_path, stem, seed, threads)
    if cache_stem is not None:
        np.save(cache_stem + ".npy", Y)
        with open(cache_stem + ".json", "w") as fh:  # written last: marks the entry complete
            json.dump(record, fh)
    return Y, record


def suite_quality(X, Y, y, seed: int, n_samples: int = QUALITY_SAMPLES) -> dict:
    """The suite's quality metrics of one embedding.

    Parameters
    ----------
    X : ndarray, shape (N, D)
        Data.
    Y : ndarray, shape (N, 2)
        Its embedding.
    y : ndarray of shape (N,) or None
        Labels; None skips the accuracies.
    seed : int
        Seed of the samples and of the 5-fold split (runs of one seed share them).
    n_samples : int
        Sample size of the preservation and trustworthiness readings.

    Returns
    -------
    dict
        ``pres_sample``: kNN preservation@15 within a random sample of ``n_samples`` points;
        ``pres_all``: the same for ``n_samples`` queries against all N points; ``trust``:
        trustworthiness@15 within the sample; with labels, ``acc_cv5``: 5-fold (stratified,
        shuffled) accuracy of a 10-NN classifier and ``acc_loo``: its leave-one-out accuracy
        over all points.
    """
    from . import metrics

    quality = {"pres_sample": metrics.knn_preservation_within_sample(X, Y, 15, n_samples, seed),
               "pres_all": metrics.knn_preservation(X, Y, 15, n_samples, seed),
               "trust": metrics.trustworthiness_within_sample(X, Y, 15, n_samples, seed)}
    if y is not None:
        quality["acc_cv5"] = metrics.knn_accuracy_cv(Y, y, 10, 5, seed)
        quality["acc_loo"] = metrics.knn_accuracy(Y, y, 10, n_samples=None)
    return quality


def _run_values(record: dict, quality: dict) -> dict:
    """One run's numbers in one flat dict: quality, phase seconds, total, peak RSS (MB)."""
    return {**quality, **record["phases"], "total": _total_seconds(record["phases"]),
            "peak_rss_mb": record["peak_rss"] / 2**20}


def _mean_sd(runs: list[dict]) -> dict:
    """``{name: {"mean", "sd"}}`` over the runs of every number they all have (sd with
    ddof=1, 0 for a single run)."""
    names = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: {"mean": float(np.mean([r[k] for r in runs])),
                "sd": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0}
            for k in names}


def _run_suite_dataset(name: str, X, y, methods, seeds, threads: int, use_cache: bool,
                       verbose: bool) -> dict:
    """Every method on one dataset for every seed (round robin over the methods within a
    seed, each fit in a fresh child process, peers from the cache when allowed); returns the
    dataset's report: per-run values and their mean and sd over the seeds."""
    from .progress import progress

    report = {"n_samples": int(X.shape[0]), "n_features": int(X.shape[1]),
              "labelled": y is not None, "methods": {}}
    runnable = [m for m in methods if _available(m)]
    runs = {m: [] for m in runnable}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(Path(tmp) / "X.npy")
        np.save(data_path, X)
        jobs = [(seed, m) for seed in seeds for m in runnable]
        for seed, method in progress(jobs, f"suite {name}", verbose):
            cache_stem = (_peer_cache_stem(method, name, X, seed, threads)
                          if use_cache and method in PEER_METHODS else None)
            Y, record = _run_cached(method, data_path, str(Path(tmp) / f"{method}-{seed}"),
                                    seed, threads, cache_stem)
            runs[method].append({"seed": seed, "cached": record.get("cached", False),
                                 "values": _run_values(record, suite_quality(X, Y, y, seed))})
    for method in methods:
        if method not in runs:
            report["methods"][method] = {"skipped": "not installed"}
            continue
        report["methods"][method] = {"runs": runs[method],
                                     "summary": _mean_sd([r["values"] for r in runs[method]])}
    return report


def _suite_datasets(datasets, known: dict, what: str) -> list[str]:
    """``datasets`` as a list (None: every one ``known``), refused with a ValueError naming the
    unknown ones before any work."""
    datasets = list(known) if datasets is None else list(datasets)
    unknown = [d for d in datasets if d not in known]
    if unknown:
        raise ValueError(f"unknown {what} dataset(s) {unknown}; choose from {list(known)}.")
    return datasets


def run_suite(datasets=None, methods=SUITE_METHODS, seeds=(0, 1, 2), threads: int | None = None,
              out: str = "bench_out", n_samples: int | None = None, use_cache: bool = True,
              verbose: bool = True) -> dict:
    """The real-data suite: our presets and the peers side by side on every dataset.

    Parameters
    ----------
    datasets : sequence of str, optional
        Keys of :data:`SUITE` (default: all). A dataset whose package is missing is skipped
        with a printed reason.
    methods : sequence of str
        Our presets (:data:`ICON_METHODS`) and peers (:data:`PEER_METHODS`).
    seeds : sequence of int
        One fit of every method per seed; the report gives mean ± sd over the seeds.
    threads : int, optional
        Threads of every fit (default: all cores).
    out : str
        Directory of ``suite.json`` and ``suite.md`` (rewritten after every dataset).
    n_samples : int, optional
        Cap on the rows of every dataset (a fixed random subsample) for quick runs.
    use_cache : bool
        Serve peer fits from the on-disk cache (``~/.cache/icongraph/peers``) and store new
        ones there.
    verbose : bool
        Progress bars and skip messages.

    Returns
    -------
    dict
        The report written to ``suite.json``.
    """
    threads = threads or os.cpu_count() or 1
    datasets = _suite_datasets(datasets, SUITE, "suite")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"suite": "real", "threads": threads, "seeds": list(seeds), "methods": list(methods),
              "n_samples_cap": n_samples, "quality_samples": QUALITY_SAMPLES, "datasets": {}}
    for name in datasets:
        try:
            X, y = _suite_data(name, n_samples)
        except ImportError as err:
            print(f"suite: skipping {name}: {err}")
            report["datasets"][name] = {"skipped": str(err)}
            continue
        report["datasets"][name] = _run_suite_dataset(name, X, y, methods, seeds, threads,
                                                      use_cache, verbose)
        _write_suite(report, out_dir)  # after every dataset: a long run keeps what it has done
    _write_suite(report, out_dir)
    return report


def _write_suite(report: dict, out_dir: Path) -> None:
    _write_report(report, out_dir, suite_markdown)


def _mean_sd_cell(stat: dict | None, digits: int) -> str:
    return "-" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _dataset_table(name: str, data: dict, threads: int, seeds) -> list[str]:
    """Markdown lines of one dataset: a row per method, ``mean ± sd`` per metric."""
    columns = {**QUALITY_COLUMNS, **TIME_COLUMNS}
    lines = [f"## {name}: {data['n_samples']} x {data['n_features']}, {threads} threads, "
             f"mean ± sd over seeds {', '.join(map(str, seeds))}", "",
             "| method | " + " | ".join(columns.values()) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for method, r in data["methods"].items():
        if "skipped" in r:
            lines.append(f"| {method} | skipped: {r['skipped']} |" + " |" * (len(columns) - 1))
            continue
        cached = " (cached)" if all(run["cached"] for run in r["runs"]) else ""
        cells = [_mean_sd_cell(r["summary"].get(k), 0 if k == "peak_rss_mb" else
                               3 if k in QUALITY_COLUMNS else 2) for k in columns]
        lines.append(f"| {method}{cached} | " + " | ".join(cells) + " |")
    return lines


def _difference_table(data: dict) -> list[str]:
    """Markdown lines of ours minus peer (means over the seeds) for each pair that ran, and
    our total time as a fraction of the peer's."""
    pairs = [(ours, peer) for ours, peer in PEER_OF.items()
             if "summary" in data["methods"].get(ours, {})
             and "summary" in data["methods"].get(peer, {})]
    if not pairs:
        return []
    names = [k for k in QUALITY_COLUMNS
             if all(k in data["methods"][m]["summary"] for pair in pairs for m in pair)]
    lines = ["", "| ours minus peer | " + " | ".join(QUALITY_COLUMNS[k] for k in names)
             + " | total time ours / peer |", "|---" * (len(names) + 2) + "|"]
    for ours, peer in pairs:
        a, b = data["methods"][ours]["summary"], data["methods"][peer]["summary"]
        cells = [f"{a[k]['mean'] - b[k]['mean']:+.3f}" for k in names]
        ratio = a["total"]["mean"] / b["total"]["mean"]
        lines.append(f"| {ours} - {peer} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return lines


def suite_markdown(report: dict) -> str:
    """``suite.md``: per dataset, the table of methods and the ours-minus-peer table."""
    lines = ["# icongraph bench --suite real", "",
             f"Quality on {report['quality_samples']:,} points: kNN preservation@15 within a "
             "random sample and for random queries against all N points; trustworthiness@15 "
             "within the sample; 10-NN accuracy 5-fold (stratified, shuffled) and "
             "leave-one-out. Times exclude the JIT warm-up (its own column); peak RSS of "
             "the fit's child process."]
    for name, data in report["datasets"].items():
        lines.append("")
        if "skipped" in data:
            lines.append(f"## {name}: skipped ({data['skipped']})")
            continue
        lines += _dataset_table(name, data, report["threads"], report["seeds"])
        lines += _difference_table(data)
    return "\n".join(lines) + "\n"


#: the ablation of the I-Con paper, as data: (row, Clustering params). Every row runs at
#: n_clusters=K on the shared kNN graph; a row whose params the installed Clustering refuses
#: (an unknown name, or a value its rule rejects) is 'not available'.
ABLATION = [
    ("baseline (InfoNCE)", {"method": "infonce"}),
    ("+ debias p (alpha=0.2)", {"method": "infonce", "alpha": 0.2}),
    ("+ debias q (q_alpha=0.2)", {"method": "infonce", "q_alpha": 0.2}),
    ("+ debias p and q", {"method": "infonce", "alpha": 0.2, "q_alpha": 0.2}),
    *[(f"+ debias p and q + propagation {t} step{'s' if t > 1 else ''}",
       {"method": "infonce", "alpha": 0.2, "q_alpha": 0.2, "propagation_steps": t})
      for t in (2, 3)],
]


def clustering_refuses(params: dict) -> str | None:
    """Why the installed :class:`~icongraph.clustering.Clustering` refuses ``params`` (an
    unknown parameter, or a value its parameter rule rejects, e.g. ``n_clusters=None``), or
    None when it accepts them. Checked on the class at run time, so a bench run on a newer
    Clustering picks up the parameters it gained."""
    from .clustering import Clustering

    unknown = sorted(set(params) - set(Clustering._param_defaults()))
    if unknown:
        return f"this Clustering has no parameter {', '.join(unknown)}"
    try:
        model = Clustering(**params)
    except (TypeError, ValueError) as err:
        return str(err)
    rules = getattr(model, "_rules", {})
    for name, value in params.items():
        if name in rules:
            try:
                rules[name](name, value)
            except (TypeError, ValueError) as err:
                return str(err)
    return None


def resolve_config(params: dict) -> tuple[dict | None, str]:
    """The params to run for a configuration row: ``(params, '')`` when the installed
    Clustering accepts them, else ``(None, 'not available: <reason>')``."""
    reason = clustering_refuses(params)
    if reason is None:
        return dict(params), ""
    return None, f"not available: {reason}"


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
    from .runtime import threads as use_threads

    X, y = load(dataset, n_samples, seed, n_classes)
    if y is None:
        raise ValueError(f"the cluster benchmark scores against labels; {dataset!r} has none.")
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
        report["rss_after_knn_mb"] = peak_rss_bytes() / 2**20
        start = time.perf_counter()
        base = Clustering(n_clusters=k, random_state=seed, precomputed_knn=knn).fit(X)
        score("icongraph (default: debiased)", base.labels_, time.perf_counter() - start)
        report["rss_after_fit_mb"] = peak_rss_bytes() / 2**20
        others = [("icongraph, k-means seed (init='kmeans')", {"init": "kmeans"}),
                  ("icongraph kmeans-like", {"method": "kmeans"}),
                  ("icongraph ncut-like", {"method": "ncut"}),
                  *[(f"ablation: {n}", p) for n, p in ABLATION]] if ablation else []
        for name, params in others:
            params, note = resolve_config(params)
            if params is None:
                report["rows"][name] = {"skipped": note}
                continue
            start = time.perf_counter()
            model = Clustering(n_clusters=k, random_state=seed, precomputed_knn=knn, **params)
            labels = model.fit_predict(X)
            score(name, labels, time.perf_counter() - start, **({"note": note} if note else {}))
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
        if "skipped" in r:
            lines.append(f"| {name} | {r['skipped']} | | | | |")
            continue
        lines.append(f"| {name} | {r['ari']:.3f} | {r['nmi']:.3f} | {r['acc']:.3f} | "
                     f"{r['n_found']} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


#: the clustering suite: dataset -> points (None: every row; 'manifolds': how many to generate,
#: 20 classes). mnist1d and manifolds are capped at 10,000 so that 3 seeds of every row and the
#: ablation stay within about 15 minutes on 2 cores.
CLUSTER_SUITE = {"digits": None, "pbmc68k": None, "mnist1d": 10_000, "tissue": None,
                 "manifolds": 10_000, "many": 10_000}
#: neighbours of the one kNN graph per dataset that every method of the clustering suite shares
CLUSTER_SUITE_NEIGHBORS = 15
#: our rows, as data: Clustering params over ``n_clusters=K`` (the number of label classes),
#: ``random_state=seed`` and the shared kNN graph; a row the installed Clustering refuses is
#: 'not available'
CLUSTER_OURS = {"ours (K)": {}, "ours (n_clusters=None)": {"n_clusters": None}}
#: the rows compared in the difference table: ours at K against the best of these at K, and
#: ours without K against Leiden at its default resolution
OURS_AT_K, OURS_AUTO = "ours (K)", "ours (n_clusters=None)"
LEIDEN_DEFAULT, LEIDEN_AT_K, KMEANS = ("Leiden (resolution 1)", "Leiden (resolution for K)",
                                       "KMeans (n_init=10)")
#: Leiden's seconds are floored at this in the time ratios (the clustering issue's definition)
LEIDEN_TIME_FLOOR = 0.3
CLUSTER_COLUMNS = {"ari": "ARI", "nmi": "NMI", "acc": "Hungarian acc",
                   "n_found": "clusters found", "seconds": "seconds"}


def cluster_scores(labels_true, labels_pred) -> dict:
    """ARI, NMI (scikit-learn), Hungarian accuracy and the number of clusters found."""
    from . import metrics

    return {"ari": metrics.adjusted_rand_index(labels_true, labels_pred),
            "nmi": metrics.normalized_mutual_info(labels_true, labels_pred),
            "acc": metrics.hungarian_accuracy(labels_true, labels_pred),
            "n_found": int(len(np.unique(labels_pred)))}


def _ours_run(X, y, knn, params: dict, k: int, seed: int, extra: dict) -> dict:
    """One fit of ``Clustering(n_clusters=k, random_state=seed, precomputed_knn=knn, **extra,
    **params)``: its scores, ``seconds`` (the fit without the kNN search: the sum of
    ``timings_`` less any ``knn`` entry), the wall time of ``fit``, and the warnings it gave
    (a non-finite ``loss_`` is one). A fit that raises gives ``error`` instead of scores."""
    import warnings

    from .clustering import Clustering

    run = {"seed": seed}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model = Clustering(**{"n_clusters": k, "random_state": seed, "precomputed_knn": knn,
                                  **extra, **params}).fit(X)
        except Exception as err:  # a failing configuration is a result, not the end of the run
            return {**run, "error": f"{type(err).__name__}: {err}"}
        wall = time.perf_counter() - start
    timings = getattr(model, "timings_", {})
    seconds = sum(v for name, v in timings.items() if name != "knn") if timings else wall
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    loss = getattr(model, "loss_", None)
    if loss is not None and not np.isfinite(loss):
        messages.append(f"non-finite loss_ ({loss})")
    return {**run, "values": {**cluster_scores(y, model.labels_), "seconds": seconds,
                              "wall": wall}, "warnings": messages}


def _leiden_run(knn, y, k: int | None, seed: int) -> dict:
    """Leiden on the unweighted symmetric kNN graph: resolution 1 (``k`` None) or the resolution
    whose cluster count is nearest ``k`` (:func:`leiden_with_k`); ``seconds`` is the graph's
    construction from the kNN lists plus leidenalg (every run of the bisection)."""
    start = time.perf_counter()
    graph = unweighted_knn_graph(knn)
    if k is None:
        labels, resolution = leiden_labels(graph, 1.0, seed), 1.0
    else:
        labels, resolution = leiden_with_k(graph, k, seed)
    seconds = time.perf_counter() - start
    return {"seed": seed, "values": {**cluster_scores(y, labels), "seconds": seconds,
                                     "resolution": float(resolution)}}


def _kmeans_run(X, y, k: int, seed: int) -> dict:
    from sklearn.cluster import KMeans

    start = time.perf_counter()
    labels = KMeans(k, n_init=10, random_state=seed).fit_predict(X)
    seconds = time.perf_counter() - start
    return {"seed": seed, "values": {**cluster_scores(y, labels), "seconds": seconds}}


def _cluster_warmup(extra: dict, leiden: bool) -> float:
    """Seconds of one small run of every timed path before the suite (our fit, whose UMAP seed
    loads numba's cached kernels; KMeans; Leiden), so that no first row pays for loading."""
    from .clustering import Clustering
    from .knn import knn_search

    X = _warmup_data(8, 300)
    y = np.arange(300) % 3
    start = time.perf_counter()
    knn = knn_search(X, CLUSTER_SUITE_NEIGHBORS, random_state=0)
    Clustering(**{"n_clusters": 3, "random_state": 0, "precomputed_knn": knn, "n_epochs": 2,
                  **extra}).fit(X)
    _kmeans_run(X, y, 3, 0)
    if leiden:
        _leiden_run(knn, y, 3, 0)
    return time.perf_counter() - start


def _summarised(row: dict) -> dict:
    """``row`` with ``summary`` (mean ± sd over the runs that gave values) and ``errors``."""
    done = [r["values"] for r in row["runs"] if "values" in r]
    errors = [f"seed {r['seed']}: {r['error']}" for r in row["runs"] if "error" in r]
    return {**row, **({"summary": _mean_sd(done)} if done else {}),
            **({"errors": errors} if errors else {})}


def _run_cluster_dataset(name: str, X, y, seeds, leiden: bool, ablation, extra: dict,
                         verbose: bool) -> dict:
    """Every row of the clustering suite on one dataset: one kNN graph, then for every seed our
    rows (:data:`CLUSTER_OURS`), KMeans, Leiden and the ``ablation`` rows. Returns the
    dataset's report: per-run values and their mean and sd over the seeds."""
    from .knn import knn_search
    from .progress import progress

    k = int(len(np.unique(y)))
    report = {"n_samples": int(X.shape[0]), "n_features": int(X.shape[1]), "n_classes": k}
    start = time.perf_counter()
    knn = knn_search(X, min(CLUSTER_SUITE_NEIGHBORS, X.shape[0] - 1), random_state=0)
    report["knn_seconds"] = time.perf_counter() - start
    report["knn_neighbors"] = int(knn.n_neighbors)
    rows, ablation_rows = {}, {}
    # (row, table, params or None, note, how to run it)
    jobs = []
    for label, params in CLUSTER_OURS.items():
        run_params, note = resolve_config(params)
        jobs.append((label, rows, run_params, note, "ours"))
    jobs.append((KMEANS, rows, {}, "", "kmeans"))
    for label in (LEIDEN_DEFAULT, LEIDEN_AT_K):
        jobs.append((label, rows, {} if leiden else None, "" if leiden else "skipped: --no-leiden",
                     "leiden"))
    for label, params in ablation:
        run_params, note = resolve_config(params)
        jobs.append((label, ablation_rows, run_params, note, "ours"))
    for label, table, run_params, note, _ in jobs:
        table[label] = ({"skipped": note} if run_params is None else
                        {"params": run_params, "runs": [], **({"note": note} if note else {})})
    cache = {}  # identical params at one seed: one fit
    work = [(seed, job) for seed in seeds for job in jobs if job[2] is not None]
    for seed, (label, table, run_params, _, kind) in progress(work, f"cluster {name}", verbose):
        if kind == "kmeans":
            run = _kmeans_run(X, y, k, seed)
        elif kind == "leiden":
            run = _leiden_run(knn, y, None if label == LEIDEN_DEFAULT else k, seed)
        else:
            key = (seed, json.dumps(run_params, sort_keys=True))
            if key not in cache:
                cache[key] = _ours_run(X, y, knn, run_params, k, seed, extra)
            run = cache[key]
        table[label]["runs"].append(run)
    report["methods"] = {n: r if "skipped" in r else _summarised(r) for n, r in rows.items()}
    report["ablation"] = {n: r if "skipped" in r else _summarised(r)
                          for n, r in ablation_rows.items()}
    return report


def run_cluster_suite(datasets=None, seeds=(0, 1, 2), out: str = "bench_out",
                      n_samples: int | None = None, leiden: bool = True, ablation=True,
                      params: dict | None = None, verbose: bool = True) -> dict:
    """The clustering suite: ours against Leiden and KMeans on every dataset of
    :data:`CLUSTER_SUITE`, several seeds, and the I-Con ablation.

    Parameters
    ----------
    datasets : sequence of str, optional
        Keys of :data:`CLUSTER_SUITE` (default: all). A dataset whose package is missing is
        skipped with a printed reason.
    seeds : sequence of int
        Seeds of every clustering (ours, Leiden, KMeans); the report gives mean ± sd over them.
        The kNN graph is one per dataset (seed 0), shared by every row and seed.
    out : str
        Directory of ``suite.json`` and ``suite.md`` (rewritten atomically after every dataset).
    n_samples : int, optional
        Cap on the rows of every dataset (a fixed random subsample) for quick runs.
    leiden : bool
        Run Leiden (leidenalg) at resolution 1 and at the resolution for K.
    ablation : bool or list
        Run the ablation rows (:data:`ABLATION`, or a list in its format).
    params : dict, optional
        Clustering params set in every one of our fits (under each row's own params), e.g.
        ``{"n_jobs": 1}``.
    verbose : bool
        Progress bars and skip messages.

    Returns
    -------
    dict
        The report written to ``suite.json``.
    """
    from .clustering import Clustering

    datasets = _suite_datasets(datasets, CLUSTER_SUITE, "clustering suite")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed.")
    rows = ABLATION if ablation is True else list(ablation or [])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"suite": "cluster", "cpu_count": os.cpu_count(), "seeds": seeds,
              "n_samples_cap": n_samples, "leiden": bool(leiden), "params": params or {},
              "clustering_defaults": {k: repr(v) for k, v in
                                      Clustering._param_defaults().items()},
              "q_alpha": clustering_refuses({"q_alpha": 0.2}) is None,
              "datasets": {}}
    total = time.perf_counter()
    report["warmup_seconds"] = _cluster_warmup(params or {}, leiden)
    for name in datasets:
        try:
            X, y = _suite_data(name, n_samples, CLUSTER_SUITE)
        except ImportError as err:
            if verbose:
                print(f"cluster suite: skipping {name}: {err}")
            report["datasets"][name] = {"skipped": str(err)}
            continue
        start = time.perf_counter()
        report["datasets"][name] = _run_cluster_dataset(name, X, y, seeds, leiden, rows,
                                                        params or {}, verbose)
        report["datasets"][name]["seconds"] = time.perf_counter() - start
        report["seconds"] = time.perf_counter() - total
        _write_report(report, out_dir, cluster_suite_markdown)  # a long run keeps what it has
    report["seconds"] = time.perf_counter() - total
    _write_report(report, out_dir, cluster_suite_markdown)
    return report


def _cell(row: dict, key: str, digits: int = 3) -> str:
    if "skipped" in row:
        return "-"
    stat = row.get("summary", {}).get(key)
    if stat is None:
        return "-"
    if key == "n_found":
        return f"{stat['mean']:.1f} ± {stat['sd']:.1f}"
    return _mean_sd_cell(stat, 2 if key == "seconds" else digits)


def _mean_of(row: dict | None, key: str) -> float | None:
    if not row or "summary" not in row or key not in row["summary"]:
        return None
    return row["summary"][key]["mean"]


def _time_ratio(ours: dict | None, leiden: dict | None) -> str:
    a, b = _mean_of(ours, "seconds"), _mean_of(leiden, "seconds")
    return "-" if a is None or b is None else f"{a / max(b, LEIDEN_TIME_FLOOR):.2f}"


def _cluster_dataset_lines(name: str, data: dict, seeds) -> list[str]:
    """The dataset's table (a row per method, mean ± sd over the seeds) and its difference
    table."""
    rows = data["methods"]
    lines = [f"## {name}: {data['n_samples']} x {data['n_features']}, K = {data['n_classes']} "
             f"classes, mean ± sd over seeds {', '.join(map(str, seeds))}", "",
             f"Shared {data['knn_neighbors']}-NN graph: {data['knn_seconds']:.2f} s (in no "
             "row).", "",
             "| method | " + " | ".join(CLUSTER_COLUMNS.values()) + " |",
             "|---" * (len(CLUSTER_COLUMNS) + 1) + "|"]
    notes = []
    for label, r in rows.items():
        if "skipped" in r:
            lines.append(f"| {label} | {r['skipped']} |" + " |" * (len(CLUSTER_COLUMNS) - 1))
            continue
        if "summary" not in r:
            lines.append(f"| {label} | failed: {'; '.join(r.get('errors', []))} |"
                         + " |" * (len(CLUSTER_COLUMNS) - 1))
            continue
        lines.append(f"| {label} | " + " | ".join(_cell(r, k) for k in CLUSTER_COLUMNS) + " |")
        notes += [f"{label}: {e}" for e in r.get("errors", [])]
        warned = sorted({w for run in r["runs"] for w in run.get("warnings", [])})
        notes += [f"{label}: {w}" for w in warned]
    lines += ["", "| difference (means) | ARI | NMI | time ours / Leiden res. 1 | "
              "time ours / Leiden at K |", "|---|---|---|---|---|"]
    ours = rows.get(OURS_AT_K)
    peers = [p for p in (LEIDEN_AT_K, KMEANS) if _mean_of(rows.get(p), "ari") is not None]
    if _mean_of(ours, "ari") is None or not peers:
        lines.append(f"| {OURS_AT_K} - best of Leiden at K, KMeans | not available | | | |")
    else:
        cells = []
        for key in ("ari", "nmi"):
            best = max(peers, key=lambda p: _mean_of(rows[p], key))
            cells.append(f"{_mean_of(ours, key) - _mean_of(rows[best], key):+.3f} (vs {best})")
        lines.append(f"| {OURS_AT_K} - best of Leiden at K, KMeans | {cells[0]} | {cells[1]} | "
                     f"{_time_ratio(ours, rows.get(LEIDEN_DEFAULT))} | "
                     f"{_time_ratio(ours, rows.get(LEIDEN_AT_K))} |")
    auto, default = rows.get(OURS_AUTO), rows.get(LEIDEN_DEFAULT)
    if _mean_of(auto, "ari") is None or _mean_of(default, "ari") is None:
        why = (auto or {}).get("skipped") or (default or {}).get("skipped") or "failed"
        lines.append(f"| {OURS_AUTO} - {LEIDEN_DEFAULT} | {why} | | | |")
    else:
        cells = [f"{_mean_of(auto, k) - _mean_of(default, k):+.3f}" for k in ("ari", "nmi")]
        lines.append(f"| {OURS_AUTO} - {LEIDEN_DEFAULT} | {cells[0]} | {cells[1]} | "
                     f"{_time_ratio(auto, default)} | {_time_ratio(auto, rows.get(LEIDEN_AT_K))} |")
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    return lines


def _ablation_lines(report: dict) -> list[str]:
    """One table: a row per ablation step, a column per dataset, ``ARI / NMI`` means."""
    names = [n for n, d in report["datasets"].items() if d.get("ablation")]
    if not names:
        return []
    labels = list(report["datasets"][names[0]]["ablation"])
    lines = ["", "## Ablation (ARI / NMI, mean over the seeds; n_clusters = K)", "",
             "| step | params run | " + " | ".join(names) + " |",
             "|---" * (len(names) + 2) + "|"]
    notes = {}
    for label in labels:
        first = report["datasets"][names[0]]["ablation"][label]
        if "skipped" in first:
            lines.append(f"| {label} | {first['skipped']} |" + " - |" * len(names))
            continue
        params = ", ".join(f"{k}={v!r}" for k, v in first["params"].items())
        if "note" in first:
            notes[label] = first["note"]
        cells = []
        for name in names:
            row = report["datasets"][name]["ablation"][label]
            ari, nmi = _mean_of(row, "ari"), _mean_of(row, "nmi")
            cells.append("failed" if ari is None else f"{ari:.3f} / {nmi:.3f}")
        mark = " \\*" if "note" in first else ""
        lines.append(f"| {label}{mark} | {params} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "\\* " + "; ".join(sorted(set(notes.values()))) + " (the params shown)."]
    if not report.get("q_alpha", True):
        lines += ["", "This Clustering has no `q_alpha`: its `alpha` debiases both p and q, so "
                      "'+ debias p (alpha=0.2)' debiases q as well and is the same fit as "
                      "'+ debias p and q'."]
    return lines


def cluster_suite_markdown(report: dict) -> str:
    """``suite.md`` of the clustering suite: per dataset its table and difference table, then
    the ablation."""
    lines = ["# icongraph bench --task cluster --suite real", "",
             "ARI and NMI (scikit-learn), Hungarian accuracy (best one-to-one matching of "
             "clusters to classes), clusters found, seconds. Ours: "
             "`Clustering(n_clusters=K, random_state=seed, precomputed_knn=<the shared graph>)`"
             f"{' with ' + repr(report['params']) if report.get('params') else ''}, seconds = "
             "the fit without the kNN search (`timings_`). Leiden: leidenalg RBConfiguration "
             "on the unweighted symmetric kNN graph, seeded; seconds = the graph's "
             "construction from the kNN lists + leidenalg (at K: every run of the bisection "
             "on the resolution). KMeans: scikit-learn, n_init=10, seeded, on the features. "
             f"Time ratios: ratio of the means, Leiden floored at {LEIDEN_TIME_FLOOR} s."]
    for name, data in report["datasets"].items():
        lines.append("")
        if "skipped" in data:
            lines.append(f"## {name}: skipped ({data['skipped']})")
            continue
        lines += _cluster_dataset_lines(name, data, report["seeds"])
    lines += _ablation_lines(report)
    if "seconds" in report:
        lines += ["", f"Suite time: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name in ``path``'s directory, then rename it to
    ``path``: a reader never sees a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_report(report: dict, out_dir: Path, markdown) -> None:
    """``suite.json`` and ``suite.md`` (``markdown(report)``), each written atomically."""
    _write_text_atomic(out_dir / "suite.json", json.dumps(report, indent=2))
    _write_text_atomic(out_dir / "suite.md", markdown(report))


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_bench_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add the ``bench`` subcommand to the subparsers ``sub`` (its help in
    ``formatter_class``)."""
    from .datasets import DATASETS

    bench = sub.add_parser("bench", help="benchmark icongraph against umap-learn and openTSNE",
                           description="Benchmark icongraph against its peers on one dataset "
                           "or the real-data suite; writes a JSON and Markdown report and a "
                           "plot.", formatter_class=formatter_class)
    bench.add_argument("--task", choices=("embed", "cluster", "ranks"), default="embed",
                       help="what is compared (ranks: one process against --world "
                            "torch.distributed ranks on --n-samples manifolds, default 200,000)")
    bench.add_argument("--world", type=int, default=2, help="ranks task: ranks (gloo)")
    bench.add_argument("--suite", choices=("real",),
                       help="the real-data suite (every dataset, several seeds) -> suite.json, "
                            "suite.md; embed task: peers cached; cluster task: ours, Leiden, "
                            "KMeans and the ablation")
    bench.add_argument("--dataset", default="digits", choices=list(DATASETS),
                       help="the dataset of a single run")
    bench.add_argument("--datasets", help="suite: comma list of " + ", ".join(SUITE)
                       + " (cluster task: " + ", ".join(CLUSTER_SUITE) + "; default: all)")
    bench.add_argument("--seeds", default="0,1,2", help="suite: comma list of seeds")
    bench.add_argument("--no-cache", action="store_true",
                       help="suite: re-run the peers instead of reading their cached fits")
    bench.add_argument("--n-clusters", type=int, help="cluster task: k (default: #classes)")
    bench.add_argument("--n-samples", type=int,
                       help="size (manifolds) or subsample; suite: cap on every dataset")
    bench.add_argument("--n-classes", type=int, default=20, help="classes of 'manifolds'")
    bench.add_argument("--no-ablation", action="store_true",
                       help="cluster task: only the default preset and the baselines")
    bench.add_argument("--no-leiden", action="store_true", help="cluster task: skip Leiden")
    bench.add_argument("--methods", help="comma list of: " + ", ".join([*ICON_METHODS,
                       *PEER_METHODS]) + " (default: umap,tsne,umap-learn; suite: "
                       + ",".join(SUITE_METHODS) + ")")
    bench.add_argument("--repeats", type=int, default=1, help="runs per method (median)")
    bench.add_argument("--threads", type=int, help="threads per method (default: all cores)")
    bench.add_argument("--out", default="bench_out", help="directory of the report")
    bench.add_argument("--seed", type=int, default=0, help="random seed")
    bench.add_argument("--no-cold-start", action="store_true",
                       help="skip timing a fresh process's first fit")
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        if args.task == "ranks":
            from .bench_ranks import ranks_markdown, run_ranks_bench

            report = run_ranks_bench(args.n_samples or 200_000, args.world, args.repeats,
                                     args.threads, args.out, args.seed, not args.quiet)
            print(ranks_markdown(report))
            return 0
        if args.task == "cluster" and args.suite:
            report = run_cluster_suite(_comma_list(args.datasets) if args.datasets else None,
                                       [int(s) for s in _comma_list(args.seeds)], args.out,
                                       args.n_samples, leiden=not args.no_leiden,
                                       ablation=not args.no_ablation, verbose=not args.quiet)
            print(cluster_suite_markdown(report))
            return 0
        if args.task == "cluster":
            report = run_cluster_bench(args.dataset, args.n_samples, args.n_clusters, args.out,
                                       args.seed, args.threads, leiden=not args.no_leiden,
                                       ablation=not args.no_ablation, n_classes=args.n_classes)
            print(cluster_table(report))
            return 0
        default = ",".join(SUITE_METHODS) if args.suite else "umap,tsne,umap-learn"
        methods = _comma_list(args.methods or default)
        unknown = [m for m in methods if m not in ICON_METHODS and m not in PEER_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}.")
        if args.suite:
            report = run_suite(_comma_list(args.datasets) if args.datasets else None, methods,
                               [int(s) for s in _comma_list(args.seeds)], args.threads,
                               args.out, args.n_samples, not args.no_cache, not args.quiet)
            print(suite_markdown(report))
            return 0
        report = run_bench(args.dataset, args.n_samples, methods, args.repeats, args.threads,
                           args.out, args.seed, cold_start=not args.no_cold_start,
                           verbose=not args.quiet, n_classes=args.n_classes)
        print(markdown_table(report))
        return 0

    bench.set_defaults(func=run)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
