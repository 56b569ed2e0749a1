"""The public API is documented in numpydoc: every estimator's class docstring has a Parameters
section naming each of its constructor parameters (``get_params()``), an Attributes and an
Examples section; every public function and class of ``icongraph.__all__``, ``icongraph.tl``,
``icongraph.plot``, ``icongraph.metrics``, ``icongraph.datasets``, ``icongraph.pyg`` and
``icongraph.files`` has Parameters (naming each argument of its signature), Returns (functions)
or Attributes (classes), and Examples."""

import importlib
import inspect
import re

import pytest

import icongraph

#: the modules whose ``__all__`` is the public API, besides the package itself
MODULES = ("tl", "plot", "metrics", "datasets", "pyg", "files")
#: the estimators: constructed with these arguments to read ``get_params()``
ESTIMATORS = {"ICon": {}, "SNE": {}, "TSNE": {}, "UMAP": {}, "Clustering": {"n_clusters": 2},
              "PrototypeClassifier": {}, "PairedEmbedding": {}}
_NAME = r"\*{0,2}[A-Za-z_]\w*"
_ENTRY = re.compile(rf"^({_NAME}(?:\s*,\s*{_NAME})*)\s*(?::.*)?$")


def sections(doc: str) -> dict[str, list[str]]:
    """The numpydoc sections of ``doc`` (a cleaned docstring): title -> its lines."""
    lines = doc.splitlines()
    found, current, underline = {}, None, -1
    for i, line in enumerate(lines):
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and not line.startswith(" ") and following and set(following) == {"-"}:
            current, underline = line.strip(), i + 1
            found[current] = []
        elif current is not None and i != underline:
            found[current].append(line)
    return found


def documented_names(lines: list[str]) -> set[str]:
    """The names an items section (Parameters, Attributes) documents: ``a, b : type`` lines at
    the section's left margin."""
    names = set()
    for line in lines:
        if line and not line.startswith(" "):
            match = _ENTRY.match(line.strip())
            if match:
                names.update(name.strip().lstrip("*") for name in match.group(1).split(","))
    return names


def public_objects():
    """``(qualified name, object)`` of every public function and class."""
    found = {}
    for name in icongraph.__all__:
        obj = getattr(icongraph, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            found[f"icongraph.{name}"] = obj
    for module_name in MODULES:
        module = importlib.import_module(f"icongraph.{module_name}")
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"icongraph.{module_name}.{name}"] = obj
    return sorted(found.items())


def signature_names(obj) -> set[str]:
    """The arguments a caller passes: the function's, or the class's constructor's (an
    estimator's ``__signature__`` lists its parameters)."""
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # an exception class: no signature of its own
        return set()
    return {p.name for p in parameters if p.name not in ("self", "cls")}


PUBLIC = public_objects()


def test_the_api_is_found():
    names = dict(PUBLIC)
    assert len(PUBLIC) > 50
    assert {"icongraph.UMAP", "icongraph.tl.embed", "icongraph.plot.plot_embedding",
            "icongraph.metrics.knn_accuracy", "icongraph.datasets.make_manifolds"} <= set(names)


def test_the_section_parser():
    doc = inspect.cleandoc("""Summary.

    Parameters
    ----------
    a, b : int
        Two.
    **kwargs
        More.

    Returns
    -------
    float
        A value.
    """)
    found = sections(doc)
    assert set(found) == {"Parameters", "Returns"}
    assert documented_names(found["Parameters"]) == {"a", "b", "kwargs"}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_documents_every_constructor_parameter(name):
    cls = getattr(icongraph, name)
    doc = sections(inspect.getdoc(cls))
    assert {"Parameters", "Attributes", "Examples"} <= set(doc), f"{name}: {sorted(doc)}"
    params = set(cls(**ESTIMATORS[name]).get_params())
    missing = params - documented_names(doc["Parameters"])
    assert not missing, f"{name} does not document {sorted(missing)}"
    unknown = documented_names(doc["Parameters"]) - params
    assert not unknown, f"{name} documents {sorted(unknown)}, which it does not take"


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_object_has_numpydoc_sections(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    found = sections(doc)
    wanted = {"Examples"}
    if not (inspect.isclass(obj) and issubclass(obj, BaseException)):  # an error has neither
        wanted.add("Attributes" if inspect.isclass(obj) else "Returns")
    arguments = signature_names(obj)
    if arguments:
        wanted.add("Parameters")
    assert wanted <= set(found), f"{name} lacks {sorted(wanted - set(found))}"
    if arguments:
        missing = arguments - documented_names(found["Parameters"])
        assert not missing, f"{name} does not document {sorted(missing)}"
    assert any(line.lstrip().startswith(">>>") for line in found["Examples"]), name
