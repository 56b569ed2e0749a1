"""scikit-learn conformance: every public estimator passes ``sklearn.utils.estimator_checks``,
the output, feature-name and clustering checks that scikit-learn runs only on its own
estimators, and works in grid search and pipelines (with their HTML repr).

The estimators run with tiny settings (a few epochs, small neighbourhoods, one thread) so the
file stays fast; ``knn_method="exact"`` keeps the sparse checks off pynndescent, whose sparse
functions take 15-25 s to compile in every fresh process (they are fitted on sparse data with
pynndescent in test_bad_input.test_sparse_input_embeds). Clustering's final loss is taken on
2**14 rather than 2**20 sampled pairs (``EVAL_PAIRS``), a third of a small fit's time.
"""

import subprocess
import sys
import warnings
from functools import partial

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

import icongraph

FAST = {"random_state": 0, "n_jobs": 1}


@pytest.fixture(autouse=True)
def _small_evaluation_sample(monkeypatch):
    monkeypatch.setattr(icongraph.clustering, "EVAL_PAIRS", 1 << 14)


EMBEDDINGS = [
    icongraph.UMAP(n_neighbors=5, n_epochs=5, knn_method="exact", **FAST),
    icongraph.TSNE(perplexity=2, n_epochs=6, knn_method="exact", **FAST),
    icongraph.SNE(perplexity=2, n_epochs=5, knn_method="exact", **FAST),
    icongraph.ICon(p_params={"n_neighbors": 5}, n_epochs=5, knn_method="exact", **FAST),
]
CLUSTERING = icongraph.Clustering(n_clusters=2, n_neighbors=5, n_epochs=5, **FAST)
CLASSIFIER = icongraph.PrototypeClassifier(n_epochs=50, **FAST)
ESTIMATORS = [*EMBEDDINGS, CLUSTERING, CLASSIFIER]

#: Both checks compare ``fit_transform(X)`` with ``fit(X).transform(X)`` (to 0.01). For an
#: embedding the first is the optimised layout of the training points and the second places
#: the same points afresh at the weighted mean of their neighbours' positions (what transform
#: does for new points), so they differ. TSNE and SNE pass (XPASS) only because after these
#: few epochs their whole layout is within 0.01 of the origin (openTSNE's tiny start). What
#: else the two checks test is in test_transform_contract.
TRANSDUCTIVE = ("a transductive embedding: fit_transform returns the optimised layout, "
                "fit(X).transform(X) re-places the training points from their neighbours")


#: check_classifiers_classes ends with the binary labels {-1, 1}; string labels, the rest of
#: the check, round-trip in test_prototypes.test_string_labels_round_trip_and_probabilities
UNLABELLED = ("-1 marks an unlabelled point (umap-learn's convention, as for every icongraph "
              "estimator), so the labels {-1, 1} hold one class, refused with that reason")


def expected_failed_checks(estimator):
    """The sklearn checks that cannot apply to ``estimator``, with the reason."""
    if isinstance(estimator, icongraph.PrototypeClassifier):
        return {"check_classifiers_classes": UNLABELLED}
    if isinstance(estimator, icongraph.Clustering):
        return {}
    return {"check_transformer_general": TRANSDUCTIVE,
            "check_transformer_data_not_an_array": TRANSDUCTIVE}


with warnings.catch_warnings():  # they deliberately do not inherit BaseEstimator
    warnings.filterwarnings("ignore", "Estimator .* does not inherit from")
    SKLEARN_CHECKS = parametrize_with_checks(ESTIMATORS,
                                             expected_failed_checks=expected_failed_checks)


@SKLEARN_CHECKS
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# scikit-learn runs these only on its own estimators (and its clustering checks only on
# subclasses of ClusterMixin, which Clustering is not, to keep scikit-learn out of the import);
# the classifier's transform (its embedding) takes the embeddings' output checks
EMBEDDING_CHECKS = ["check_set_output_transform", "check_set_output_transform_pandas",
                    "check_global_output_transform_pandas",
                    "check_dataframe_column_names_consistency",
                    "check_transformer_get_feature_names_out",
                    "check_transformer_get_feature_names_out_pandas",
                    "check_get_feature_names_out_error"]
CLUSTERING_CHECKS = ["check_clustering", partial(estimator_checks.check_clustering,
                                                 readonly_memmap=True),
                     "check_clusterer_compute_labels_predict",
                     "check_dataframe_column_names_consistency"]
EXTRA = [(est, check) for est in [*EMBEDDINGS, CLASSIFIER] for check in EMBEDDING_CHECKS] + [
    (CLUSTERING, check) for check in CLUSTERING_CHECKS]


def _check_id(value):
    if isinstance(value, str):
        return value
    if isinstance(value, partial):
        return f"{value.func.__name__}(readonly_memmap=True)"
    return type(value).__name__


@pytest.mark.parametrize("estimator,check", EXTRA, ids=_check_id)
def test_sklearn_output_and_cluster_checks(estimator, check):
    check = getattr(estimator_checks, check) if isinstance(check, str) else check
    with warnings.catch_warnings():  # the output checks mix DataFrames and arrays on purpose
        warnings.filterwarnings("ignore", "X (does not have valid|has) feature names")
        check(type(estimator).__name__, estimator)


@pytest.mark.parametrize("estimator", EMBEDDINGS, ids=lambda e: type(e).__name__)
def test_transform_contract(estimator):
    """What check_transformer_general and check_transformer_data_not_an_array test besides
    the transductive comparison: list input, repeated fits, the shapes, and a ValueError
    for the wrong number of features."""
    from sklearn.base import clone

    X, _ = make_blobs(30, 3, centers=2, random_state=0)
    first = clone(estimator).fit_transform(X.tolist())
    again = clone(estimator).fit_transform(X)
    np.testing.assert_array_equal(first, again)
    model = clone(estimator).fit(X)
    assert model.transform(X.tolist()).shape == first.shape == (30, 2)
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3"):
        model.transform(X[:, :-1])


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_not_fitted_error(estimator):
    from sklearn.base import clone

    estimator = clone(estimator)
    X, _ = make_blobs(20, 3, random_state=0)
    if isinstance(estimator, icongraph.PrototypeClassifier):
        methods = ["predict", "predict_proba", "transform", "score"]
    elif isinstance(estimator, icongraph.Clustering):
        methods = ["predict", "predict_proba"]
    else:
        methods = ["transform", "get_feature_names_out"]
    for method in methods:
        with pytest.raises(NotFittedError, match="not fitted"):
            args = {"get_feature_names_out": [], "score": [X, np.zeros(len(X))]}
            getattr(estimator, method)(*args.get(method, [X]))
    if not isinstance(estimator, (icongraph.Clustering, icongraph.PrototypeClassifier)):
        assert not hasattr(estimator, "kl_divergence_")  # a NotFittedError is an AttributeError


def test_feature_names_and_pandas_output():
    X, _ = make_blobs(40, 3, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"], index=[f"r{i}" for i in range(40)])
    model = icongraph.UMAP(n_neighbors=5, n_epochs=5, **FAST).set_output(transform="pandas")
    Y = model.fit_transform(frame)
    assert list(Y.columns) == ["umap0", "umap1"] and list(Y.index) == list(frame.index)
    assert list(model.feature_names_in_) == ["a", "b", "c"] and model.n_features_in_ == 3
    np.testing.assert_array_equal(Y.to_numpy(), model.embedding_)
    assert isinstance(model.transform(frame), pd.DataFrame)
    assert isinstance(model.set_output(transform="default").transform(frame), np.ndarray)
    with pytest.raises(ValueError, match="transform must be one of"):
        model.set_output(transform="polars")
    clusters = icongraph.Clustering(n_clusters=2, n_neighbors=5, n_epochs=5, **FAST).fit(frame)
    assert list(clusters.feature_names_in_) == ["a", "b", "c"] and clusters.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names should match"):
        clusters.predict(frame[["c", "b", "a"]])


def test_one_cluster_is_the_trivial_answer():
    X, _ = make_blobs(40, 3, centers=3, random_state=0)
    for head in ("linear", "mlp", "free"):
        model = icongraph.Clustering(n_clusters=1, n_neighbors=5, head=head, **FAST).fit(X)
        np.testing.assert_array_equal(model.probabilities_, np.ones((40, 1), np.float32))
        np.testing.assert_array_equal(model.labels_, 0)
        np.testing.assert_array_equal(model.predict(X + 1.0), 0)
        assert model.loss_history_ == [] and np.isfinite(model.loss_)
        assert model.cluster_sizes_.tolist() == [40] and len(model.empty_clusters_) == 0


def test_grid_search_and_pipeline():
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_blobs(90, 5, centers=3, random_state=0)
    pipe = make_pipeline(StandardScaler(), icongraph.UMAP(n_epochs=20, **FAST),
                         KNeighborsClassifier(5))
    search = GridSearchCV(pipe, {"umap__n_neighbors": [5, 10]}, cv=2).fit(X, y)
    assert search.best_params_["umap__n_neighbors"] in (5, 10) and search.best_score_ > 0.9
    html = search.best_estimator_._repr_html_()
    assert "UMAP" in html and "KNeighborsClassifier" in html
    frame = make_pipeline(StandardScaler(), icongraph.TSNE(perplexity=5, n_epochs=30, **FAST)
                          ).set_output(transform="pandas").fit_transform(X)
    assert list(frame.columns) == ["tsne0", "tsne1"]
    clusters = GridSearchCV(icongraph.Clustering(n_neighbors=10, n_epochs=20, **FAST),
                            {"n_clusters": [2, 3, 4]}, scoring="adjusted_rand_score",
                            cv=2).fit(X, y)
    assert clusters.best_params_ == {"n_clusters": 3}


def test_fit_without_dataframes_does_not_import_sklearn():
    """scikit-learn stays out of the cold start: the tags, errors and feature names import it
    only when asked for."""
    code = ("import sys, numpy as np, icongraph\n"
            "X = np.random.default_rng(0).normal(size=(60, 4))\n"
            "icongraph.UMAP(n_neighbors=5, n_epochs=5, n_jobs=1).fit(X).transform(X[:5])\n"
            "icongraph.Clustering(n_clusters=2, n_neighbors=5, n_epochs=5, init='random', "
            "n_jobs=1).fit(X).predict(X[:5])\n"
            "icongraph.PrototypeClassifier(n_epochs=5, n_jobs=1).fit(X, np.arange(60) % 3)"
            ".predict_proba(X[:5])\n"
            "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
