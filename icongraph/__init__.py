"""icongraph: graph-based dimensionality reduction and clustering from one I-Con objective,
``sum_i KL(p(.|i) || q(.|i))`` between a sparse target neighbourhood ``p`` and a kernel
neighbourhood ``q`` on what is learned."""

from . import pyg, tl
from .clustering import CLUSTER_METHODS, Clustering
from .compose import ICon
from .embedding import SNE, TSNE, UMAP
from .kernels import KERNELS, GaussianKernel, Kernel, StudentKernel, UMAPKernel
from .knn import KNN, knn_search
from .methods import Method, method, methods
from .objective import ESTIMATORS, Objective, exact_loss
from .pairs import PAIR_KERNELS, PairedEmbedding
from .persistence import load
from .prototypes import PROTOTYPE_KERNELS, PrototypeClassifier
from .runtime import DivergenceError
from .targets import (
                      TARGETS,
                      FuzzyTarget,
                      PerplexityTarget,
                      PrecomputedTarget,
                      Target,
                      UniformKNNTarget,
                      debias,
)

__version__ = "0.1.0"

#: submodules reached as attributes (``icongraph.metrics``, ``icongraph.plot``, ...), imported
#: on first use so that ``import icongraph`` does not load matplotlib, pandas or the bench
_SUBMODULES = ("metrics", "plot", "datasets", "files", "communities", "bench")


def __getattr__(name: str):
    """``icongraph.<submodule>`` for the names of ``_SUBMODULES``, imported on first use."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'icongraph' has no attribute {name!r}")

__all__ = ["Clustering", "CLUSTER_METHODS", "PrototypeClassifier", "PROTOTYPE_KERNELS",
           "PairedEmbedding", "PAIR_KERNELS",
           "ICon", "SNE", "TSNE", "UMAP", "Kernel",
           "GaussianKernel", "StudentKernel",
           "UMAPKernel", "KERNELS", "KNN", "knn_search", "Objective", "ESTIMATORS", "exact_loss",
           "Target", "TARGETS", "PerplexityTarget", "UniformKNNTarget", "FuzzyTarget",
           "PrecomputedTarget", "debias", "DivergenceError", "load", "Method", "method", "methods",
           "pyg", "tl", *_SUBMODULES]
