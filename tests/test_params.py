"""Every parameter of every estimator is checked before any work: a wrong type, range or
choice, and impossible combinations, give a ValueError naming the parameter, the value and
what is accepted, before the kNN search (made to fail loudly here)."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import icongraph
from icongraph.clustering import Clustering
from icongraph.knn import exact_knn
from icongraph.pairs import PairedEmbedding
from icongraph.prototypes import PrototypeClassifier

#: a bad value and the message it must give, for the parameters every embedding shares
COMMON_BAD = {
    "n_components": (0, r"n_components must be an integer in \[1, inf\); got 0"),
    "metric": ("manhattan", r"metric must be one of \('euclidean', 'cosine'\); got 'manhattan'"),
    "n_epochs": (2.5, r"n_epochs must be an integer in \[1, inf\); got 2.5"),
    "learning_rate": ("fast", r"learning_rate must be a finite number in \[0, inf\); got 'fast'"),
    "optimizer": ("lbfgs", r"optimizer must be one of \('sgd', 'adam', 'gains'\); got 'lbfgs'"),
    "momentum": (1.0, r"momentum must be in \[0, 1\); got 1.0"),
    "schedule": ("step", r"schedule must be one of .*; got 'step'"),
    "n_negatives": (0.5, r"n_negatives must be an integer in \(-inf, inf\); got 0.5"),
    "edge_sampling": ("yes", r"edge_sampling must be True or False; got 'yes'"),
    "transform_epochs": (-1, r"transform_epochs must be an integer in \[0, inf\); got -1"),
    "init": ("laplacian", r"init must be one of \('pca', 'spectral', 'random', 'coarse'\) or a "
                          r"2-D array .*; got 'laplacian'"),
    "encoder": ("cnn", r"encoder must be None, one of \('linear', 'mlp'\), a tuple of hidden "
                       r"widths .*; got 'cnn'"),
    "alpha": (1.5, r"alpha must be in \[0, 1\); got 1.5"),
    "q_alpha": (1.0, r"q_alpha must be in \[0, 1\); got 1.0"),
    "propagation_steps": (0, r"propagation_steps must be an integer in \[1, inf\); got 0"),
    "target_weight": (1.5, r"target_weight must be in \[0, 1\]; got 1.5"),
    "precomputed_knn": ("graph", r"precomputed_knn must be None, a KNN, a tuple "
                                 r"\(indices, distances\) of \(N, k\) arrays or a sparse "
                                 r"\(N, N\) kNN-distance matrix; got str"),
    "knn_method": ("ball_tree", r"knn_method must be one of \('auto', 'exact', 'nndescent'\); "
                                r"got 'ball_tree'"),
    "knn_cache": (3, r"knn_cache must be None or a directory path; got 3"),
    "random_state": (-1, r"random_state must be None, a non-negative int or a numpy RNG; got -1"),
    "device": ("not-a-device", r"invalid device 'not-a-device'"),
    "n_jobs": (0, r"n_jobs must be a positive integer, or -1 \(or None\) for every core; got 0"),
    "verbose": ("loud", r"verbose must be a bool or an integer >= 0; got 'loud'"),
    "callbacks": (print, r"callbacks must be a list of functions .*wrap it in a list"),
}
OWN_BAD = {
    icongraph.UMAP: {
        "n_neighbors": (5.5, r"n_neighbors must be an integer in \[2, inf\); got 5.5"),
        "min_dist": (-0.1, r"min_dist must be a finite number in \[0, inf\); got -0.1"),
        "spread": (0, r"spread must be a finite number in \(0, inf\); got 0"),
        "negative_sample_rate": (-1, r"negative_sample_rate must be a finite number in "
                                     r"\[0, inf\); got -1"),
        "local_connectivity": ("one", r"local_connectivity must be a finite number in "
                                      r"\[0, inf\); got 'one'"),
        "set_op_mix_ratio": (2, r"set_op_mix_ratio must be in \[0, 1\]; got 2"),
    },
    icongraph.TSNE: {
        "perplexity": (0, r"perplexity must be a finite number in \(0, inf\); got 0"),
        "early_exaggeration": (-1, r"early_exaggeration must be a finite number in \(0, inf\); "
                                   r"got -1"),
        "dof": ("1", r"dof must be a finite number in \(0, inf\); got '1'"),
    },
    icongraph.SNE: {
        "perplexity": (float("nan"), r"perplexity must be a finite number in \(0, inf\); got nan"),
    },
    icongraph.ICon: {
        "p": ("nope", r"unknown target 'nope'"),
        "q": ("laplace", r"unknown kernel 'laplace'"),
        "estimator": ("nope", r"estimator must be one of \('per_anchor', 'global', 'neg', 'fft'\); "
                              r"got 'nope'"),
        "p_params": (3, r"p_params must be None or a dict of keyword arguments; got 3"),
        "q_params": ([1], r"q_params must be None or a dict of keyword arguments; got \[1\]"),
    },
}
CLUSTERING_BAD = {
    "n_clusters": (2.5, r"n_clusters must be an integer in \[1, inf\); got 2.5"),
    "resolution": (0.0, r"resolution must be a finite number in \(0, inf\); got 0.0"),
    "merge_connectivity": (-1, r"merge_connectivity must be a .*number in \(0, inf\); got -1"),
    "method": ("dbscan", r"method must be one of \('debiased', .*\); got 'dbscan'"),
    "n_neighbors": (0, r"n_neighbors must be an integer in \[1, inf\); got 0"),
    "alpha": (1.0, r"alpha must be in \[0, 1\); got 1.0"),
    "q_alpha": (-0.1, r"q_alpha must be in \[0, 1\); got -0.1"),
    "propagation_steps": (0, r"propagation_steps must be an integer in \[1, inf\); got 0"),
    "propagation": ("bfs", r"propagation must be one of \('walk', 'reachable'\); got 'bfs'"),
    "perplexity": (-5, r"perplexity must be a finite number in \(0, inf\); got -5"),
    "head": ("cnn", r"head must be one of \('linear', 'mlp', 'free'\), a tuple of hidden widths or a "
                    r"torch.nn.Module; got 'cnn'"),
    "init": ("centres", r"init must be one of \('auto', 'embedding', 'communities', 'spectral', "
                        r"'kmeans', 'kmeans\+\+', 'random'\); got 'centres'"),
    "hidden": (-1, r"hidden must be an integer in \[1, inf\); got -1"),
    "n_epochs": (0, r"n_epochs must be an integer in \[1, inf\); got 0"),
    "tol": (1.5, r"tol must be in \[0, 1\]; got 1.5"),
    "batch_size": (2.5, r"batch_size must be an integer in \[1, inf\); got 2.5"),
    "learning_rate": ("fast", r"learning_rate must be a finite number in \[0, inf\); got 'fast'"),
    "positives_per_anchor": (0, r"positives_per_anchor must be an integer in \[1, inf\); got 0"),
    "temperature": (0, r"temperature must be a finite number in \(0, inf\); got 0"),
    "n_init": (True, r"n_init must be an integer in \[1, inf\); got True"),
    **{name: COMMON_BAD[name] for name in ("metric", "precomputed_knn", "knn_method",
                                            "knn_cache", "random_state", "device", "n_jobs",
                                            "verbose")},
    "callbacks": (print, r"callbacks must be a list of functions cb\(epoch, loss, "
                         r"probabilities\); got a single object .*: wrap it in a list"),
}
PROTOTYPES_BAD = {
    "kernel": ("cosine", r"kernel must be one of \('dot', 'gaussian', 'student'\); got 'cosine'"),
    "harmonic_exponent": (0, r"harmonic_exponent must be a finite number in \(0, inf\); got 0"),
    "n_components": (0, r"n_components must be an integer in \[1, inf\); got 0"),
    "head": ("free", r"head='free' learns one row per training point and cannot classify new "
                     r"points; use one of \('linear', 'mlp'\)"),
    "alpha": (1.0, r"alpha must be in \[0, 1\); got 1.0"),
    **{name: CLUSTERING_BAD[name] for name in ("hidden", "n_epochs", "batch_size",
                                                "learning_rate", "random_state", "device",
                                                "n_jobs", "verbose", "callbacks")},
}
PAIRS_BAD = {
    "n_components": (0, r"n_components must be an integer in \[1, inf\); got 0"),
    "kernel": ("student", r"kernel must be one of \('cosine', 'student-sphere'\); got 'student'"),
    "temperature": (0, r"temperature must be a finite number in \(0, inf\); got 0"),
    "learn_temperature": ("yes", r"learn_temperature must be True or False; got 'yes'"),
    "encoder": ("free", r"encoder must be one of \('linear', 'mlp'\) or a torch.nn.Module; "
                        r"got 'free'"),
    "pair_encoder": (3, r"pair_encoder must be one of \('linear', 'mlp'\) or a "
                        r"torch.nn.Module; got 3"),
    "hidden": ([64, 0], r"hidden must be an integer in \[1, inf\); got 0"),
    "batch_size": (1, r"batch_size must be an integer in \[2, inf\); got 1"),
    "n_neighbors": (-1, r"n_neighbors must be an integer in \[0, inf\); got -1"),
    "neighbor_weight": (1.0, r"neighbor_weight must be in \[0, 1\); got 1.0"),
    "callbacks": (print, r"callbacks must be a list of functions cb\(epoch, loss, "
                         r"embedding\); got a single object .*: wrap it in a list"),
    **{name: PROTOTYPES_BAD[name] for name in ("alpha", "n_epochs", "learning_rate",
                                                "random_state", "device", "n_jobs",
                                                "verbose")},
}
CASES = [(cls, name, *bad) for cls, own in OWN_BAD.items()
         for name, bad in {**COMMON_BAD, **own}.items()]
CASES += [(Clustering, name, *bad) for name, bad in CLUSTERING_BAD.items()]
CASES += [(PrototypeClassifier, name, *bad) for name, bad in PROTOTYPES_BAD.items()]
CASES += [(PairedEmbedding, name, *bad) for name, bad in PAIRS_BAD.items()]
ESTIMATORS = [*OWN_BAD, Clustering, PrototypeClassifier, PairedEmbedding]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_parameter_has_a_rule_and_a_case(cls):
    """A new parameter without a rule, or without a bad value here, fails this test."""
    names = set(cls._param_defaults())
    rules = set(cls._rules if cls in (Clustering, PrototypeClassifier, PairedEmbedding)
                else cls._param_rules())
    assert rules == names
    cases = {name for c, name, *_ in CASES if c is cls}
    assert cases == names


@pytest.mark.parametrize("cls, name, value, match", CASES,
                         ids=[f"{c.__name__}-{n}" for c, n, *_ in CASES])
def test_bad_parameter_is_refused_before_any_work(cls, name, value, match, no_work):
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    before = X.copy()
    labels = ((np.arange(60) % 3,) if cls is PrototypeClassifier
              else (X[:, :3].copy(),) if cls is PairedEmbedding else ())
    with pytest.raises(ValueError, match=match):
        cls(**{name: value}).fit(X, *labels)
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_verbose_is_a_bool_or_a_level(cls, no_work):
    """umap-learn's levels: a bool, or an integer >= 0 (2 and above: detail lines)."""
    rules = (cls._rules if cls in (Clustering, PrototypeClassifier, PairedEmbedding)
             else cls._param_rules())
    for good in (False, True, 0, 1, 2, np.int64(3)):
        rules["verbose"]("verbose", good)
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    labels = ((np.arange(60) % 3,) if cls is PrototypeClassifier
              else (X[:, :3].copy(),) if cls is PairedEmbedding else ())
    for bad in (-1, "yes", 1.5, None, [1]):
        with pytest.raises(ValueError, match=r"verbose must be a bool or an integer >= 0; got "
                                             + re.escape(repr(bad))):
            cls(verbose=bad).fit(X, *labels)


@pytest.mark.parametrize("params, n, match", [
    # combinations and checks against the data, still before the kNN search
    ({"estimator": "nope"}, 60, "estimator must be one of"),
    ({"estimator": "fft", "q": "student", "p": "perplexity", "n_components": 3}, 10_001,
     r"'fft' estimator interpolates on a 1-D or 2-D grid above 10000 points"),
    ({"estimator": "fft"}, 60, "needs a kernel smooth at 0"),
    ({"init": np.zeros((3, 2))}, 60, r"init array has shape \(3, 2\); expected \(60, 2\)"),
    ({"init": np.zeros((60, 2))}, 60, "every point at the same position"),
    ({"init": "coarse"}, 5000, "init='coarse' needs at least 20000 points; got 5000"),
    ({"q_params": {"min_dist": 2.0}}, 60,
     r"q_params=\{'min_dist': 2.0\} do not fit q='umap'.*unexpected keyword argument"),
    ({"p": "knn", "p_params": {"perplexity": 5}}, 60, r"p_params=\{'perplexity': 5\} do not fit"),
    ({"p": "fuzzy", "p_params": {"n_neighbors": 61}}, 60, "Too few points"),
    # learned degrees of freedom (the Student-t kernels' q_params)
    ({"q": "student", "q_params": {"learn_dof": "yes"}}, 60,
     r"learn_dof must be True or False; got 'yes'"),
    ({"q": "student", "q_params": {"dof": 0}}, 60,
     r"degrees of freedom must be a finite number > 0; got 0"),
    ({"q": "student-sphere", "q_params": {"dof": float("inf"), "learn_dof": True}}, 60,
     r"degrees of freedom must be a finite number > 0; got inf"),
    ({"q": "gaussian", "q_params": {"learn_dof": True}}, 60,
     r"q_params=\{'learn_dof': True\} do not fit q='gaussian'"),
    ({"q": "student", "estimator": "fft", "q_params": {"learn_dof": True}}, 60,
     r"learn_dof needs the gradient of the normaliser .* estimator='global'"),
    # the debiasing of q: a KL normaliser only, given once
    ({"q_alpha": 0.2}, 60, r"q_alpha=0.2 debiases a normalised q, but the 'neg' estimator"),
    ({"q": "student", "estimator": "global", "q_params": {"q_alpha": 0.2}, "q_alpha": 0.1}, 60,
     r"q_alpha is given twice"),
    ({"q": "student", "estimator": "global", "q_params": {"q_alpha": True}}, 60,
     r"q_alpha must be a number in \[0, 1\); got True"),
    ({"q": "gaussian", "estimator": "per_anchor", "q_alpha": True}, 60,
     r"q_alpha must be in \[0, 1\); got True"),
    ({"q": "gaussian", "estimator": "per_anchor", "q_alpha": -0.1}, 60,
     r"q_alpha must be in \[0, 1\); got -0.1"),
])
def test_bad_combinations_are_refused_before_any_work(params, n, match, no_work):
    X = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        icongraph.ICon(**params).fit(X)


def test_q_alpha_where_it_cannot_apply_is_refused_before_any_work(no_work):
    """UMAP's 'neg' estimator has no normaliser, so no normalised q to debias."""
    X = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'neg' estimator \(UMAP's negative sampling\) has "
                                         r"no normaliser"):
        icongraph.UMAP(q_alpha=0.2).fit(X)


def test_min_dist_above_spread_is_refused_before_any_work(no_work):
    X = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"min_dist must lie in \[0, spread=1.0\]; got 2"):
        icongraph.UMAP(min_dist=2).fit(X)


@pytest.mark.parametrize("params, n, match", [
    ({"n_clusters": 61}, 60, "n_clusters=61 exceeds the 60 points of X"),
    ({"n_clusters": 20_001}, 20_002, r"n_clusters=20001 is more than the 20000 rows that "
                                     r"init='embedding' seeds"),
    ({"n_clusters": 20_001, "init": "kmeans"}, 20_002, "init='random' or head='mlp'"),
    ({"n_neighbors": 60}, 60, "Too few points for n_neighbors=60"),
    ({"method": "kmeans", "perplexity": 60}, 60, "Too few points for perplexity=60"),
])
def test_clustering_checks_against_the_data_before_any_work(params, n, match, no_work):
    X = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        Clustering(**{"n_clusters": 3, **params}).fit(X)


def test_hidden_zero_is_refused_not_one_cluster(no_work):
    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"hidden must be an integer in \[1, inf\); got 0"):
        Clustering(n_clusters=3, head="mlp", hidden=0).fit(X)


def test_a_smaller_precomputed_knn_is_used_with_a_warning(blobs):
    """UMAP(n_neighbors=30) on a 5-NN graph uses the 5 neighbours and says so, naming both
    numbers; a graph with n_neighbors - 1 columns (scanpy's) is exactly what UMAP asks for."""
    X, _ = blobs
    knn = exact_knn(X, 5)
    with pytest.warns(UserWarning, match=r"precomputed_knn has 5 neighbours per point, fewer "
                                         r"than the 29 that n_neighbors=30"):
        model = icongraph.UMAP(n_neighbors=30, precomputed_knn=knn, n_epochs=5).fit(X)
    assert model.knn_.n_neighbors == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = icongraph.UMAP(n_neighbors=15, precomputed_knn=exact_knn(X, 14),
                               n_epochs=5).fit(X)
    assert model.knn_.n_neighbors == 14
    with pytest.warns(UserWarning, match=r"fewer than the 30 that perplexity=10 \(3 x"):
        icongraph.TSNE(perplexity=10, precomputed_knn=exact_knn(X, 12), n_epochs=5).fit(X)
    with pytest.warns(UserWarning, match="fewer than the 15 that n_neighbors=15"):
        model = Clustering(n_clusters=3, precomputed_knn=knn, n_epochs=5).fit(X)
    assert model.knn_.n_neighbors == 5


def test_spectral_fallback_says_what_it_uses():
    """The message names the init actually used: PCA with data, random without."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(40, 3)), 100 + rng.normal(size=(40, 3))]).astype(np.float32)
    import icongraph.init as init

    used = []
    pca = init.pca_init

    def spy(*args, **kwargs):
        used.append("pca")
        return pca(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(init, "pca_init", spy)
        with pytest.warns(UserWarning, match="2 connected components; using PCA init instead"):
            model = icongraph.UMAP(n_neighbors=5, init="spectral", n_epochs=5).fit(X)
        assert used == ["pca"]
        graph = sp.csr_matrix(model.graph_)
        with pytest.warns(UserWarning, match=r"using random \(no data X for PCA\) init instead"):
            icongraph.ICon(p=graph, n_epochs=5).fit(None)
        assert used == ["pca"]


@pytest.mark.parametrize("call, match", [
    (lambda m, d: m.save(d / "m.npz", include_data="yes"),
     r"include_data must be True or False; got 'yes'"),
    (lambda m, d: m.save(d / "m.pkl"), r"save path '.*m.pkl': the suffix '.pkl' names no format "
                                       r"written here; use one of .npz"),
    (lambda m, d: m.save(d / "missing" / "m.npz"), r"the directory '.*missing' does not exist"),
    (lambda m, d: m.save(3), r"path must be a file path \(str or os.PathLike\); got 3"),
    (lambda m, d: icongraph.load(None), r"path must be a file path .*; got None"),
    (lambda m, d: icongraph.load(d / "m.npz", encoder=3),
     r"encoder must be None, a torch.nn.Module or a dict of them by parameter name; got 3"),
    (lambda m, d: icongraph.load(d / "m.npz", encoder={"encoder": "mlp"}),
     r"encoder must be None, a torch.nn.Module or a dict of them"),
])
def test_save_and_load_arguments_are_checked_before_any_work(call, match, tmp_path):
    """``save(path, include_data)`` and ``load(path, encoder)`` refuse bad arguments before
    reading or writing anything."""
    with pytest.raises(ValueError, match=match):
        call(icongraph.UMAP(), tmp_path)
    assert not list(tmp_path.iterdir())
