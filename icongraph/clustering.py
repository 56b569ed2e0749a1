"""I-Con clustering: the cluster kernel fitted to a (debiased, propagated) neighbourhood ``p``.

With soft assignments ``phi(c|i)`` (N, C) and cluster masses ``M_c = sum_k w_k phi(c|k)``::

    q(j|i) = sum_c phi(c|i) w_j phi(c|j) / M_c          (rows sum to 1; w = 1, or degrees)
    q~(j|i) = (1 - alpha) q(j|i) + alpha / N             (debiasing on q)
    L = - 1/N sum_i E_{j ~ p~(.|i)} log q~(j|i)          (the KL up to the constant entropy of p)

The normaliser is the cluster mass, C numbers, computed exactly over the whole dataset every
step (full batch): no negatives are needed. Positives ``j ~ p~(.|i)`` are *sampled*: an edge of
``p`` by weight, ``propagation_steps`` of random walk on it (neighbour propagation,
``p = (P + ... + P^t) / t``, never a matrix power), a uniform point with probability ``alpha``
(debiasing on p), or a same-class point (supervised). What is learned is a head on the
standardised features (``linear``, the paper's choice, or ``mlp``), which is what ``predict``
applies to new points, or free per-point logits (``free``).

Presets (``method=``), each a composition of p, the kernel's weights and alpha:

==============  =======================================  =========  ======
method          p                                        weights w  alpha
==============  =======================================  =========  ======
debiased        uniform kNN, 2-step walks                1          0.2
infonce         uniform kNN                              1          0
kmeans          Gaussian (perplexity) kNN                1          0
ncut            symmetric kNN, row-normalised            degree     0
supervised      same-class (labels passed to ``fit``)    1          0
==============  =======================================  =========  ======
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .graph import symmetrize
from .knn import as_knn, exact_knn, knn_search
from .optimize import resolve_device, threads
from .params import ParamsMixin
from .progress import progress
from .targets import PerplexityTarget, UniformKNNTarget
from .validation import check_data, check_labels, check_random_state

__all__ = ["Clustering", "CLUSTER_METHODS", "cluster_kernel", "PositiveSampler"]

CLUSTER_METHODS = {
    "debiased": {"target": "knn", "weights": "uniform", "alpha": 0.2, "steps": 2},
    "infonce": {"target": "knn", "weights": "uniform", "alpha": 0.0, "steps": 1},
    "kmeans": {"target": "gaussian", "weights": "uniform", "alpha": 0.0, "steps": 1},
    "ncut": {"target": "symmetric", "weights": "degree", "alpha": 0.0, "steps": 1},
    "supervised": {"target": "labels", "weights": "uniform", "alpha": 0.0, "steps": 1},
}
HEADS = ("linear", "mlp", "free")


def cluster_kernel(phi: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Dense ``q(j|i) = sum_c phi_ic w_j phi_jc / sum_k w_k phi_kc`` (N, N): small N and tests."""
    w = torch.ones(phi.shape[0], dtype=phi.dtype) if weights is None else weights
    mass = (w[:, None] * phi).sum(0)
    return (phi / mass) @ (w[:, None] * phi).T


class PositiveSampler:
    """Draws ``j ~ p~(.|i)`` for anchors: by edge weight on a CSR graph, then ``steps - 1``
    further walk steps with a uniform number of steps in 1..steps (``P + ... + P^t``), or a
    uniform point with probability ``alpha``; or a same-class point when ``labels`` is given.
    All vectorised torch ops on ``device`` (a walk step is a ``searchsorted`` over cumulative
    edge weights)."""

    def __init__(self, graph: sp.csr_matrix | None, n: int, device, steps: int = 1,
                 alpha: float = 0.0, labels: np.ndarray | None = None):
        self.n, self.steps, self.alpha, self.device = n, steps, alpha, device
        if labels is not None:
            order = np.argsort(labels, kind="stable")
            _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.members = torch.as_tensor(order, device=device)
            self.start = torch.as_tensor(starts[codes], device=device)
            self.count = torch.as_tensor(counts[codes], device=device)
            self.graph = None
            return
        self.graph = graph
        cum = np.concatenate([[0.0], np.cumsum(graph.data.astype(np.float64))])
        starts, ends = graph.indptr[:-1], graph.indptr[1:]
        self.cum = torch.as_tensor(cum[1:], device=device)
        self.before = torch.as_tensor(cum[starts], device=device)
        self.mass = torch.as_tensor(cum[ends] - cum[starts], device=device)  # same float64 sums
        self.first = torch.as_tensor(starts.astype(np.int64), device=device)
        self.last = torch.as_tensor(np.maximum(ends - 1, starts).astype(np.int64), device=device)
        self.cols = torch.as_tensor(graph.indices.astype(np.int64), device=device)

    def _step(self, nodes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        u = torch.rand(nodes.shape, generator=gen, device=self.device, dtype=torch.float64)
        target = self.before[nodes] + u * self.mass[nodes]
        edge = torch.searchsorted(self.cum, target, right=True)
        edge = torch.minimum(torch.maximum(edge, self.first[nodes]), self.last[nodes])
        return self.cols[edge]

    def sample(self, anchors: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.graph is None:  # supervised: a uniform member of the anchor's class
            u = torch.rand(anchors.shape, generator=gen, device=self.device)
            pick = (u * self.count[anchors]).long().clamp_max(self.count[anchors] - 1)
            return self.members[self.start[anchors] + pick]
        nodes = self._step(anchors, gen)
        if self.steps > 1:
            n_steps = torch.randint(1, self.steps + 1, anchors.shape, generator=gen,
                                    device=self.device)
            for s in range(2, self.steps + 1):
                nodes = torch.where(n_steps >= s, self._step(nodes, gen), nodes)
        if self.alpha > 0:
            uniform = torch.rand(anchors.shape, generator=gen, device=self.device) < self.alpha
            other = torch.randint(0, self.n, anchors.shape, generator=gen, device=self.device)
            nodes = torch.where(uniform, other, nodes)
        return nodes


def _head(kind: str, n_features: int, n: int, n_clusters: int, hidden: int, gen_seed: int):
    """The learned module, initialised from ``gen_seed`` without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen_seed)
        if kind == "linear":
            return torch.nn.Linear(n_features, n_clusters)
        if kind == "mlp":
            return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, n_clusters))
        if kind == "free":
            head = torch.nn.Embedding(n, n_clusters)
            torch.nn.init.normal_(head.weight, std=0.01)
            return head
    raise ValueError(f"head must be one of {HEADS}; got {kind!r}.")


class Clustering(ParamsMixin):
    """I-Con clustering with the scikit-learn API (``fit``, ``fit_predict``, ``predict``,
    ``predict_proba``). See the module docstring for the objective and the presets."""

    @classmethod
    def _param_defaults(cls) -> dict:
        return {"n_clusters": 10, "method": "debiased", "n_neighbors": 15, "alpha": None,
                "propagation_steps": None, "perplexity": 30.0, "head": "linear",
                "hidden": 256, "n_epochs": 300, "learning_rate": 0.05,
                "positives_per_anchor": 4, "temperature": 1.0, "n_init": 1,
                "metric": "euclidean",
                "precomputed_knn": None, "knn_method": "auto", "knn_cache": None,
                "random_state": None,
                "device": "auto", "n_jobs": -1, "verbose": False, "callbacks": None}

    # -- fitting ---------------------------------------------------------------------------
    def _preset(self) -> dict:
        if self.method not in CLUSTER_METHODS:
            raise ValueError(f"method must be one of {sorted(CLUSTER_METHODS)}; got "
                             f"{self.method!r}.")
        preset = dict(CLUSTER_METHODS[self.method])
        if self.alpha is not None:
            if not 0.0 <= self.alpha < 1.0:
                raise ValueError(f"alpha must lie in [0, 1); got {self.alpha}.")
            preset["alpha"] = float(self.alpha)
        if self.propagation_steps is not None:
            if int(self.propagation_steps) < 1:
                raise ValueError("propagation_steps must be >= 1.")
            preset["steps"] = int(self.propagation_steps)
        return preset

    def _graph(self, X, preset, seed, device):
        """(graph p as CSR, kNN) for the preset's target."""
        kind = preset["target"]
        spec = (PerplexityTarget(self.perplexity, symmetric=False) if kind == "gaussian"
                else UniformKNNTarget(self.n_neighbors))
        k = spec.n_neighbors_for(X.shape[0])
        if self.precomputed_knn is not None:
            knn = as_knn(self.precomputed_knn, X.shape[0], self.metric)
            knn = knn.truncate(k) if knn.n_neighbors > k else knn
        else:
            knn = knn_search(X, k, self.metric, method=self.knn_method, device=device,
                             random_state=seed, n_jobs=self.n_jobs, verbose=self.verbose,
                             cache_dir=self.knn_cache)
        graph = spec.build(knn).graph
        if kind == "symmetric":
            graph = symmetrize(graph, "max")
        return graph, knn

    def fit(self, X, y=None):
        """Cluster ``X`` (N, D); ``y`` (labels) is required by ``method='supervised'``."""
        preset = self._preset()
        X = check_data(X, allow_sparse=False, min_samples=2)
        n = X.shape[0]
        if not isinstance(self.n_clusters, (int, np.integer)) or not 2 <= self.n_clusters <= n:
            raise ValueError(f"n_clusters must be an integer in [2, N={n}]; got "
                             f"{self.n_clusters!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}.")
        for name in ("n_init", "positives_per_anchor", "n_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature!r}.")
        seed = check_random_state(self.random_state)
        device = resolve_device(self.device)
        timings = {}
        with threads(self.n_jobs):
            start = time.perf_counter()
            if preset["target"] == "labels":
                if y is None:
                    raise ValueError("method='supervised' needs labels: fit(X, y).")
                labels = check_labels(y, n, "y")
                graph, knn = None, None
                sampler = PositiveSampler(None, n, device, labels=labels)
            else:
                graph, knn = self._graph(X, preset, seed, device)
                sampler = PositiveSampler(graph, n, device, preset["steps"], preset["alpha"])
            timings["graph"] = time.perf_counter() - start
            start = time.perf_counter()
            self.mean_ = X.mean(0)
            self.scale_ = X.std() + 1e-6  # one scale: keeps the relative variance of features
            features = self._standardise(X).to(device)
            weights = None
            if preset["weights"] == "degree":
                degree = np.asarray(graph.sum(axis=0), dtype=np.float32).ravel()
                weights = torch.as_tensor(degree / degree.mean(), device=device)
            runs = [self._fit_head(features, sampler, weights, preset["alpha"], seed + r)
                    for r in range(self.n_init)]
            best = min(runs, key=lambda run: run["loss_"])  # as KMeans: keep the lowest loss
            for name, value in best.items():
                setattr(self, name, value)
            timings["optimize"] = time.perf_counter() - start
        if len(self.empty_clusters_):
            warnings.warn(f"{len(self.empty_clusters_)} of {self.n_clusters} clusters are empty "
                          "at the end of training (see empty_clusters_); the data may support "
                          "fewer clusters.", stacklevel=2)
        self.graph_ = graph
        self.knn_ = knn
        self.timings_ = timings
        self._fit_X = X
        return self

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((X - self.mean_) / self.scale_)

    def _fit_head(self, features, sampler, weights, alpha_q, seed) -> dict:
        """One training run from ``seed`` on standardised ``features`` (N, D) with kernel
        weights ``w`` (None: uniform); returns the fitted attributes."""
        n, device = features.shape[0], features.device
        head = _head(self.head, features.shape[1], n, self.n_clusters, self.hidden, seed)
        head = head.to(device)
        opt = torch.optim.Adam(head.parameters(), lr=self.learning_rate)
        gen = torch.Generator(device=device).manual_seed(seed)
        ids = torch.arange(n, device=device)
        anchors = ids.repeat(self.positives_per_anchor)
        losses = []
        for epoch in progress(range(self.n_epochs), "cluster", self.verbose, unit="epoch"):
            logits = head(ids) if self.head == "free" else head(features)
            phi = torch.softmax(logits / self.temperature, dim=1)
            positives = sampler.sample(anchors, gen)
            loss = self._loss(phi, anchors, positives, weights, alpha_q, n)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch % 10 == 0 or epoch == self.n_epochs - 1:
                losses.append((epoch, float(loss.detach())))
            if self.callbacks and any([bool(cb(epoch, losses[-1][1], phi.detach()))
                                       for cb in self.callbacks]):
                break
        with torch.no_grad():
            logits = head(ids) if self.head == "free" else head(features)
            phi = torch.softmax(logits / self.temperature, dim=1)
            # the final loss on fresh positives: what restarts are compared by
            positives = sampler.sample(anchors, gen)
            final = float(self._loss(phi, anchors, positives, weights, alpha_q, n))
        probabilities = phi.cpu().numpy()
        labels = probabilities.argmax(1)
        sizes = np.bincount(labels, minlength=self.n_clusters)
        empty = np.flatnonzero(sizes == 0)
        return {"head_": head, "probabilities_": probabilities, "labels_": labels,
                "loss_history_": losses, "loss_": final, "cluster_sizes_": sizes,
                "empty_clusters_": empty}

    @staticmethod
    def _loss(phi, anchors, positives, weights, alpha_q, n):
        """``-mean log((1 - a) sum_c phi_ic w_j phi_jc / M_c + a / N)`` over sampled pairs."""
        mass = phi.sum(0) if weights is None else (weights[:, None] * phi).sum(0)
        q = (phi[anchors] * phi[positives] / mass).sum(1)
        if weights is not None:
            q = q * weights[positives]
        return -torch.log((1 - alpha_q) * q + alpha_q / n + 1e-12).mean()

    def fit_predict(self, X, y=None):
        return self.fit(X, y).labels_

    def predict_proba(self, X):
        """Cluster probabilities of new points: the head on their standardised features (for
        ``head='free'``, the mean of their k nearest training points' probabilities)."""
        if not hasattr(self, "head_"):
            raise ValueError("this Clustering is not fitted yet; call fit first.")
        X = check_data(X, allow_sparse=False)
        if X.shape[1] != self._fit_X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features; fitted with {self._fit_X.shape[1]}.")
        if self.head == "free":
            knn = exact_knn(self._fit_X, min(self.n_neighbors, len(self._fit_X)), self.metric,
                            queries=X)
            return self.probabilities_[knn.indices].mean(1)
        device = next(self.head_.parameters()).device
        with torch.no_grad():
            logits = self.head_(self._standardise(X).to(device))
            return torch.softmax(logits / self.temperature, dim=1).cpu().numpy()

    def predict(self, X):
        return self.predict_proba(X).argmax(1)
