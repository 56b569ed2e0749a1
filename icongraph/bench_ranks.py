"""``icongraph bench --task ranks``: one process against ``W`` torch.distributed ranks on one
machine, on the same data and kNN graph (the scaling model's check, ``docs/scaling.md``).

The data are ``make_manifolds(n_samples)`` (200,000 points by default); their kNN graph is
computed once and handed to every fit as ``precomputed_knn``, so the runs compare the part the
ranks share out (graph, init, optimisation) and not the kNN search's JIT. Each fit runs in a
fresh child: one process with all the threads, then ``torchrun --standalone --nproc-per-node
W`` with ``threads / W`` threads per rank, alternating over the repeats (round robin: a slow
spell of the machine hits both). Inside the ranks' child, after the fit, the per-epoch
collective the engine makes (:meth:`icongraph.distributed.Group.gather_rows` of ``N x (d + 2)``
float32) is timed over 50 repeats; the model of the communication is then ``n_epochs`` times
that, and the verdict compares it with the measured difference of the optimisation phases:

    optimise(W ranks) - optimise(1 process)   against   n_epochs x t_gather

Reported: the phases (median over the repeats), the peak RSS of each process, the embeddings'
10-NN accuracy and kNN preservation, and the largest difference between the two embeddings
(0 on the CPU engine: the ranks compute the single process's rows).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["run_ranks_bench", "ranks_markdown"]

#: repeats of the timed all-gather in the ranks' child
GATHER_REPEATS = 50


def _child(data_dir: str, out_stem: str, threads: int, seed: int) -> None:
    """One fit in this process (or in this rank of a ``torchrun`` group): writes the
    embedding, the phases, the peak RSS and, in a group, the timed all-gather (rank 0)."""
    import torch

    import icongraph
    from icongraph import distributed
    from icongraph.progress import peak_rss_bytes

    ranked = distributed.init_from_env()
    X = np.load(Path(data_dir) / "X.npy", mmap_mode="r")
    knn = np.load(Path(data_dir) / "knn.npz")
    model = icongraph.UMAP(random_state=seed, n_jobs=threads,
                           precomputed_knn=(knn["indices"], knn["distances"])).fit(X)
    group = distributed.current()
    record = {"world": group.world, "phases": dict(model.timings_),
              "n_epochs": int(model._settings(X.shape[0], "pca")["n_epochs"])}
    if group.active:  # the engine's per-epoch collective: N x (d + 2) float32 rows
        n, d = model.embedding_.shape
        lo, hi = group.bounds(n)
        local = torch.ones((hi - lo, d + 2), dtype=torch.float32)
        for _ in range(3):
            group.gather_rows(local, n)
        start = time.perf_counter()
        for _ in range(GATHER_REPEATS):
            group.gather_rows(local, n)
        record["gather_seconds"] = (time.perf_counter() - start) / GATHER_REPEATS
        record["gather_bytes"] = n * (d + 2) * 4
    record["peak_rss"] = peak_rss_bytes()
    if group.rank == 0:
        np.save(out_stem + ".npy", model.embedding_)
        with open(out_stem + ".json", "w") as fh:
            json.dump(record, fh)
    if ranked:
        distributed.finish()


def _run(world: int, data_dir: str, stem: str, threads: int, seed: int) -> tuple[np.ndarray, dict]:
    """A fresh child with ``world`` ranks (1: a plain process) and ``threads`` in all."""
    from .runtime import child_env

    per_rank = max(1, threads // world)
    args = ["-m", "icongraph.bench_ranks", data_dir, stem, str(per_rank), str(seed)]
    command = [sys.executable] + args if world == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={world}"] + args
    start = time.perf_counter()
    subprocess.run(command, check=True, env=child_env(per_rank))
    wall = time.perf_counter() - start
    with open(stem + ".json") as fh:
        record = {**json.load(fh), "process_wall": wall}
    return np.load(stem + ".npy"), record


def run_ranks_bench(n_samples: int = 200_000, world: int = 2, repeats: int = 2,
                    threads: int | None = None, out: str = "bench_out", seed: int = 0,
                    verbose: bool = True) -> dict:
    """Compare one process with ``world`` ranks on ``make_manifolds(n_samples)``; writes
    ``ranks.json`` and ``ranks.md`` under ``out`` and returns the report.

    Parameters
    ----------
    n_samples : int, default=200_000
        Points of the generator's data (50 features, 20 manifolds).
    world : int, default=2
        Ranks of the distributed runs (gloo on the CPU).
    repeats : int, default=2
        Runs of each configuration, alternating; the phases are their medians.
    threads : int, optional
        Threads in all (default: every core); each rank gets ``threads / world``.
    out : str, default="bench_out"
        Directory of the report.
    seed : int, default=0
        Seed of the data, the kNN search and the fits.
    verbose : bool, default=True
        Progress bars.
    """
    from . import metrics
    from .datasets import load
    from .knn import knn_search
    from .progress import progress

    if world < 2:
        raise ValueError(f"world must be >= 2 ranks to compare with one process; got {world}.")
    threads = threads or os.cpu_count() or 1
    X, y = load("manifolds", n_samples, seed)
    X = np.ascontiguousarray(X, dtype=np.float32)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"n_samples": int(X.shape[0]), "n_features": int(X.shape[1]), "world": world,
              "threads": threads, "repeats": repeats, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "X.npy", X)
        start = time.perf_counter()
        knn = knn_search(X, 14, random_state=seed)
        report["knn_seconds"] = time.perf_counter() - start
        np.savez(Path(tmp) / "knn.npz", indices=knn.indices, distances=knn.distances)
        records = {1: [], world: []}
        embeddings = {}
        jobs = [(r, w) for r in range(repeats) for w in (1, world)]
        for r, w in progress(jobs, "bench ranks", verbose):
            Y, record = _run(w, tmp, str(Path(tmp) / f"w{w}-{r}"), threads, seed)
            records[w].append(record)
            embeddings.setdefault(w, Y)
    for w, runs in records.items():
        phases = {key: statistics.median(r["phases"][key] for r in runs)
                  for key in runs[0]["phases"]}
        Y = embeddings[w]
        row = {"phases": phases, "peak_rss_mb": max(r["peak_rss"] for r in runs) / 2**20,
               "optimise_range": [min(r["phases"]["optimize"] for r in runs),
                                  max(r["phases"]["optimize"] for r in runs)],
               "knn_accuracy": metrics.knn_accuracy(Y, y, 10, 10_000, seed),
               "knn_preservation": metrics.knn_preservation(X, Y, 15, 2_000, seed)}
        if w > 1:
            row["gather_seconds"] = statistics.median(r["gather_seconds"] for r in runs)
            row["gather_bytes"] = runs[0]["gather_bytes"]
            row["n_epochs"] = runs[0]["n_epochs"]
        report["runs"][str(w)] = row
    ranked = report["runs"][str(world)]
    single = report["runs"]["1"]
    report["max_abs_difference"] = float(np.abs(embeddings[world] - embeddings[1]).max())
    report["communication_modelled"] = ranked["n_epochs"] * ranked["gather_seconds"]
    report["optimise_difference"] = ranked["phases"]["optimize"] - single["phases"]["optimize"]
    report["within_model"] = report["optimise_difference"] <= report["communication_modelled"]
    with open(out_dir / "ranks.json", "w") as fh:
        json.dump(report, fh, indent=2)
    (out_dir / "ranks.md").write_text(ranks_markdown(report))
    return report


def ranks_markdown(report: dict) -> str:
    """The report of :func:`run_ranks_bench` as Markdown."""
    world = report["world"]
    lines = [f"## 1 process against {world} ranks: {report['n_samples']} x "
             f"{report['n_features']} manifolds, {report['threads']} threads in all, "
             f"{report['repeats']} repeats (median)", "",
             f"kNN graph computed once ({report['knn_seconds']:.1f} s) and given to every fit.",
             "", "| run | graph s | init s | optimise s (range) | peak RSS MB | 10-NN accuracy "
             "| kNN preservation |", "|---|---|---|---|---|---|---|"]
    for w, row in report["runs"].items():
        p = row["phases"]
        lo, hi = row["optimise_range"]
        name = "1 process" if w == "1" else f"{w} ranks"
        lines.append(f"| {name} | {p.get('graph', 0):.2f} | {p.get('init', 0):.2f} | "
                     f"{p['optimize']:.2f} ({lo:.2f}-{hi:.2f}) | {row['peak_rss_mb']:.0f} | "
                     f"{row['knn_accuracy']:.4f} | {row['knn_preservation']:.4f} |")
    ranked = report["runs"][str(world)]
    verdict = "within" if report["within_model"] else "NOT within"
    lines += ["", f"* Largest difference between the embeddings: "
              f"{report['max_abs_difference']:.3g}.",
              f"* All-gather of {ranked['gather_bytes'] / 1e6:.1f} MB per epoch: "
              f"{ranked['gather_seconds'] * 1e3:.2f} ms; x {ranked['n_epochs']} epochs = "
              f"{report['communication_modelled']:.2f} s modelled communication.",
              f"* Optimisation, {world} ranks minus 1 process: "
              f"{report['optimise_difference']:+.2f} s, {verdict} the modelled communication."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the child of one run: data_dir out_stem threads seed
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
