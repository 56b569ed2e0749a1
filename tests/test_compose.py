"""``ICon(q="cluster")``: the cluster kernel from the general composition is the clustering's
fit on the composition's ``p``; what it cannot use is refused before any work."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import digits_subset

import icongraph
from icongraph.clustering import Clustering
from icongraph.kernels import ClusterKernel

FAST = {"n_epochs": 60, "random_state": 0}


@pytest.fixture(scope="module")
def small():
    return digits_subset(300)


@pytest.mark.parametrize("alpha, q_alpha, as_param", [(0.0, 0.0, False), (0.2, 0.2, False),
                                                      (0.2, 0.2, True)])
def test_icon_cluster_equals_clustering_with_the_same_p(small, alpha, q_alpha, as_param):
    """Uniform 15-NN ``p``: ``ICon(q="cluster")`` is ``Clustering(method="infonce")``, to the
    bit (the same graph, seed, sampler and training loop); ``q_alpha`` the parameter is
    ``q_params={"q_alpha": ...}``."""
    X, _ = small
    given = {"q_alpha": q_alpha} if as_param else {"q_params": {"q_alpha": q_alpha}}
    icon = icongraph.ICon(p="knn", q="cluster", n_components=10, alpha=alpha, **given,
                          **FAST).fit(X)
    ref = Clustering(method="infonce", n_clusters=10, alpha=alpha, q_alpha=q_alpha,
                     **FAST).fit(X)
    np.testing.assert_array_equal(icon.probabilities_, ref.probabilities_)
    np.testing.assert_array_equal(icon.labels_, ref.labels_)
    assert icon.loss_ == ref.loss_
    assert icon.kernel_ == ClusterKernel(1.0, q_alpha)


def test_icon_cluster_on_any_target_and_a_user_graph(small):
    X, y = small
    from sklearn.metrics import adjusted_rand_score

    fuzzy = icongraph.ICon(p="fuzzy", q="cluster", n_components=10, **FAST)
    labels = fuzzy.fit_predict(X)
    assert labels.shape == (300,) and fuzzy.probabilities_.shape == (300, 10)
    np.testing.assert_allclose(fuzzy.probabilities_.sum(1), 1.0, rtol=1e-5)
    assert fuzzy.embedding_ is fuzzy.probabilities_
    assert adjusted_rand_score(y, labels) > 0.6
    assert fuzzy.predict(X[:7]).shape == (7,)
    assert fuzzy.transform(X[:7]).shape == (7, 10)
    assert fuzzy.kl_divergence_ is None
    # the same p as a user graph: the same fit as the target built from X
    graph = sp.csr_matrix(fuzzy.graph_)
    given = icongraph.ICon(p=graph, q="cluster", n_components=10, **FAST).fit(X)
    assert adjusted_rand_score(labels, given.labels_) > 0.8
    kernel = icongraph.ICon(p="perplexity", q=ClusterKernel(temperature=0.5), n_components=5,
                            encoder="linear", **FAST).fit(X)
    assert kernel.kernel_.temperature == 0.5 and kernel.predict(X[:3]).shape == (3,)


def test_predict_is_only_on_the_cluster_kernel():
    assert not hasattr(icongraph.ICon(q="student"), "predict")
    assert hasattr(icongraph.ICon(q="cluster"), "predict_proba")


@pytest.mark.parametrize("params, match", [
    ({"estimator": "neg"}, r"estimator='neg' do not apply"),
    ({"estimator": "per_anchor", "init": "pca"}, r"estimator='per_anchor', init='pca' do not"),
    ({"momentum": 0.5}, r"momentum=0.5 do not apply"),
    ({"optimizer": "gains"}, r"trains the assignments with Adam; got optimizer='gains'"),
    ({"q_params": {"dof": 2}}, r"q_params=\{'dof': 2\} do not fit q='cluster'"),
    ({"q_params": {"q_alpha": 1.0}}, r"q_alpha must be a number in \[0, 1\); got 1.0"),
    ({"q_params": {"q_alpha": 0.2}, "q_alpha": 0.2}, r"q_alpha is given twice"),
    ({"q": ClusterKernel(1.0, 0.1), "q_alpha": 0.2}, r"carries its own q_alpha"),
    ({"q_params": {"temperature": 0}}, r"temperature must be a number in \(0, inf\); got 0"),
    ({"n_components": 301}, r"n_clusters=301 exceeds the 300 points"),
])
def test_bad_cluster_combinations_are_refused_before_any_work(params, match, no_work):
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        icongraph.ICon(**{"q": "cluster", **params}).fit(X)


def test_cluster_kernel_refuses_labels_and_a_graph_without_data(no_work):
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"q='cluster' clusters without labels"):
        icongraph.ICon(q="cluster").fit(X, np.arange(60) % 2)
    graph = sp.random(60, 60, density=0.2, format="csr", random_state=0) + sp.eye(60, k=1)
    with pytest.raises(ValueError, match="q='cluster' needs the data X"):
        icongraph.ICon(p=graph, q="cluster").fit(None)


def test_the_embedding_kernels_keep_their_estimator_default(no_work):
    """``estimator=None`` is 'neg' for a kernel of a distance; the cluster kernel is refused
    by the embeddings' estimators."""
    spec, kernel, estimator = icongraph.ICon(q="student")._composition()
    assert estimator == "neg"
    with pytest.raises(ValueError, match="unknown kernel 'clusters'"):
        icongraph.ICon(q="clusters").fit(np.zeros((5, 2)))


def test_q_alpha_on_the_embeddings(small):
    """``q_alpha`` debiases q in the KL embeddings: the parameter and ``q_params`` are the same
    fit, ``kl_divergence_`` is the exact debiased objective, and q_alpha=0 is the plain fit."""
    import torch

    from icongraph.objective import exact_loss

    X, _ = small
    common = {"p": "perplexity", "q": "student", "estimator": "per_anchor", "n_jobs": 1, **FAST}
    by_param = icongraph.ICon(q_alpha=0.2, **common).fit(X)
    by_q_params = icongraph.ICon(q_params={"q_alpha": 0.2}, **common).fit(X)
    np.testing.assert_array_equal(by_param.embedding_, by_q_params.embedding_)
    plain = icongraph.ICon(**common).fit(X)
    assert np.isfinite(by_param.embedding_).all() and np.isfinite(by_param.loss_)
    assert not np.allclose(plain.embedding_, by_param.embedding_)
    with torch.no_grad():
        exact = float(exact_loss(by_param.target_, by_param.kernel_, by_param.embedding_,
                                 "per_anchor", q_alpha=0.2))
    assert by_param.kl_divergence_ == pytest.approx(
        exact / by_param.target_.row_mass.sum(dtype=np.float64), rel=1e-6)
    # the sampled loss estimate tracks the exact one (both the mass times the KL)
    assert by_param.loss_ == pytest.approx(exact, rel=0.1)
