"""icongraph: graph-based dimensionality reduction and clustering from one I-Con objective,
``sum_i KL(p(.|i) || q(.|i))`` between a sparse target neighbourhood ``p`` and a kernel
neighbourhood ``q`` on what is learned."""

from . import pyg, tl
from .clustering import CLUSTER_METHODS, Clustering
from .embedding import SNE, TSNE, UMAP, ICon
from .kernels import KERNELS, GaussianKernel, Kernel, StudentKernel, UMAPKernel
from .knn import KNN, knn_search
from .methods import Method, method, methods
from .objective import ESTIMATORS, Objective, exact_loss
from .pairs import PAIR_KERNELS, PairedEmbedding
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

__all__ = ["Clustering", "CLUSTER_METHODS", "PrototypeClassifier", "PROTOTYPE_KERNELS",
           "PairedEmbedding", "PAIR_KERNELS",
           "ICon", "SNE", "TSNE", "UMAP", "Kernel",
           "GaussianKernel", "StudentKernel",
           "UMAPKernel", "KERNELS", "KNN", "knn_search", "Objective", "ESTIMATORS", "exact_loss",
           "Target", "TARGETS", "PerplexityTarget", "UniformKNNTarget", "FuzzyTarget",
           "PrecomputedTarget", "debias", "DivergenceError", "Method", "method", "methods",
           "pyg", "tl"]
