"""Saving and loading fitted estimators: ``model.save(path)`` and :func:`load`.

A model file is one NumPy ``.npz`` archive, written atomically
(:func:`~icongraph.files.write_atomic`) and read with ``allow_pickle=False``: never pickled code.
It holds a JSON header (entry ``header``) and the arrays it refers to (``a0``, ``a1``, ...)::

    {"format": "icongraph-model", "format_version": 1, "icongraph": "0.1.0",
     "versions": {"numpy": ..., "scipy": ..., "torch": ..., "python": ...},
     "estimator": "icongraph.embedding.UMAP", "include_data": true,
     "dropped": ["callbacks"], "data_left_out": [],
     "params": {...}, "state": {...}}

``params`` are the estimator's ``get_params()``, ``state`` every fitted attribute (the
embedding, the graph, the kernel with its learned temperature, the standardisation, the
heads and encoders, the loss history, ...), both as JSON values in which an array, a sparse
matrix, a tensor, a tuple, a dict, a random generator, one of icongraph's own targets, kernels,
kNN graphs and data scales, or a torch module is a tagged object (``{"$array": "a3"}``,
``{"$object": "UMAPKernel", "fields": {...}}``, ...). Anything else (a function, a networkx
graph, a user's target class) is refused with the name of the parameter or attribute, before
anything is written.

Torch modules are stored as their ``state_dict`` (arrays) plus a specification. The built-in
heads and encoders (``linear``, ``mlp``, a tuple of widths, the free head: ``Sequential`` of
``Linear``, ``ReLU`` and ``Embedding`` layers) are rebuilt from it; any other module (a user's
``nn.Module``) is stored as weights only and re-supplied when loading,
``load(path, encoder=MyModule())``, as one builds it for ``fit``. Fitted modules load on the CPU.

``callbacks`` are code: they are not saved (a warning says so when there were any), and the
loaded model has ``callbacks=None``. Pickling drops the callbacks that cannot be pickled (a
lambda) with a warning instead of failing.

The training data (``X``, scaled as fitted) is stored only with ``include_data=True`` (the
default). What needs it: ``transform`` of a free embedding (``encoder=None``, which searches
the new points' neighbours among the fitted rows) and ``predict`` of a ``head='free'``
clustering. The other estimators keep no training data, and with an encoder or a head new
points need none. Without it those calls raise an error that names the remedy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import platform
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import torch

from .files import check_output, write_atomic
from .kernels import KERNELS, ClusterKernel
from .knn import KNN, KNNIndex
from .scaling import DataScale
from .targets import TARGETS, Target
from .validation import boolean

__all__ = ["PersistenceMixin", "load", "FORMAT", "FORMAT_VERSION", "MODEL_SUFFIXES",
           "ESTIMATOR_CLASSES"]

#: the ``format`` of the header, and the newest ``format_version`` this code reads and writes
FORMAT, FORMAT_VERSION = "icongraph-model", 1
#: the suffix of a model file (``check_output``'s table)
MODEL_SUFFIXES = {".npz": ("icongraph model (NumPy archive)", ())}
#: icongraph's own classes stored by their dataclass fields and rebuilt by name
DATACLASSES = {cls.__name__: cls for cls in (Target, KNN, KNNIndex, DataScale,
                                             *TARGETS.values(), *KERNELS.values(),
                                             ClusterKernel)}
#: the torch layers a built-in head or encoder is made of, with their constructor arguments
LAYERS = {
    torch.nn.Linear: lambda m: [m.in_features, m.out_features, m.bias is not None],
    torch.nn.ReLU: lambda m: [],
    torch.nn.Embedding: lambda m: [m.num_embeddings, m.embedding_dim],
}
#: numpy's bit generators, by the name a generator's state gives
BIT_GENERATORS = {cls.__name__: cls for cls in (np.random.PCG64, np.random.PCG64DXSM,
                                                np.random.MT19937, np.random.Philox,
                                                np.random.SFC64)}
#: every estimator class by its qualified name, registered by :class:`PersistenceMixin`
ESTIMATOR_CLASSES: dict[str, type] = {}


def _version() -> str:
    """icongraph's installed version (``unknown`` when run from a source tree not installed)."""
    try:
        return metadata.version("icongraph")
    except metadata.PackageNotFoundError:
        return "unknown"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _layer_spec(module: torch.nn.Module):
    """``["Sequential", [...]]`` or ``[layer name, *arguments]`` of a module built of
    :data:`LAYERS` only, else None (a module of the user's)."""
    if type(module) is torch.nn.Sequential:
        children = [_layer_spec(child) for child in module]
        return None if None in children else ["Sequential", children]
    arguments = LAYERS.get(type(module))
    return None if arguments is None else [type(module).__name__, *arguments(module)]


def _build(spec) -> torch.nn.Module:
    """The module of a :func:`_layer_spec` (freshly initialised); only :data:`LAYERS` are
    built, whatever a file says."""
    name, *arguments = spec
    if name == "Sequential":
        return torch.nn.Sequential(*map(_build, arguments[0]))
    return {cls.__name__: cls for cls in LAYERS}[name](*arguments)


class _Writer:
    """Encodes values as JSON nodes, collecting their arrays (each array object once)."""

    def __init__(self, model, include_data: bool):
        self.model = model
        self.include_data = include_data
        self.arrays: dict[str, np.ndarray] = {}
        self.keys: dict[int, str] = {}
        self.pinned: list = []  # the arrays keyed by id stay alive while ids are compared

    def array(self, values: np.ndarray, where: str) -> str:
        """The key of ``values`` in the archive, stored once per array object (an object
        array of strings stored as strings)."""
        key = self.keys.get(id(values))
        if key is None:
            stored = values
            if values.dtype == object:
                if not all(isinstance(v, str) for v in values.flat):
                    raise ValueError(f"{where}: an array of Python objects cannot be saved "
                                     "(only numbers and strings).")
                stored = values.astype(str)
            key = self.keys[id(values)] = f"a{len(self.arrays)}"
            self.arrays[key] = stored
            self.pinned.append(values)
        return key

    def estimator(self, model, where: str) -> dict:
        """The node of an estimator (the saved one, or one it holds, such as
        ``ICon.clustering_``): its class, its parameters (``callbacks`` dropped, named in
        ``dropped``) and its fitted attributes (the training data left out, named in
        ``data_left_out``, unless ``include_data``)."""
        params = model.get_params(deep=False)
        dropped = ["callbacks"] if params.get("callbacks") else []
        params = {k: None if k == "callbacks" else v for k, v in params.items()}
        left_out = [] if self.include_data else [
            k for k in model._data_attributes if getattr(model, k, None) is not None]
        state = {k: v for k, v in vars(model).items() if k not in params and k not in left_out}
        prefix = "" if where == "the model" else f"{where}: "
        return {"$estimator": _qualified(type(model)), "dropped": dropped,
                "data_left_out": left_out,
                "params": {k: self.encode(v, f"{prefix}parameter {k!r}")
                           for k, v in params.items()},
                "state": {k: self.encode(v, f"{prefix}attribute {k!r}")
                          for k, v in state.items()}}

    def encode(self, value, where: str):
        """The JSON node of ``value``; ``where`` names it in errors (``parameter 'p'``,
        ``attribute 'target_'.spec``)."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            return {"$scalar": self.array(np.asarray(value), where)}
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, np.ndarray):
            return {"$array": self.array(value, where), "object": value.dtype == object}
        if isinstance(value, torch.Tensor):
            return {"$tensor": self.array(value.detach().cpu().numpy(), where),
                    "requires_grad": value.requires_grad}
        if sp.issparse(value):
            csr = value.tocsr()
            return {"$sparse": value.format, "array": isinstance(value, sp.sparray),
                    "shape": list(csr.shape),
                    **{part: self.array(getattr(csr, part), where)
                       for part in ("data", "indices", "indptr")}}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"$tuple": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise ValueError(f"{where}: a dict with keys other than strings cannot be "
                                 "saved.")
            return {"$dict": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
        if isinstance(value, KNNIndex) and not self.include_data:
            return None  # the training rows themselves
        if DATACLASSES.get(type(value).__name__) is type(value):
            return {"$object": type(value).__name__,
                    "fields": {f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                               for f in dataclasses.fields(value) if f.init}}
        if isinstance(value, torch.nn.Module):
            return self.module(value, where)
        if isinstance(value, PersistenceMixin):
            return self.estimator(value, where)
        if isinstance(value, (np.random.Generator, np.random.RandomState)):
            state = (value.bit_generator.state if isinstance(value, np.random.Generator)
                     else value.get_state(legacy=False))
            return {"$rng": type(value).__name__, "state": self.encode(state, where)}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, os.PathLike):
            return {"$path": os.fspath(value)}
        hint = (" Pass the graph as a scipy sparse matrix or an edge_index tensor to save the "
                "model." if where == "parameter 'p'" else "")
        raise ValueError(f"{where}: a {_qualified(type(value))} cannot be saved: a model file "
                         "holds numbers, strings, arrays, sparse matrices, tensors, torch "
                         "modules and icongraph's own targets and kernels, never code." + hint)

    def module(self, module: torch.nn.Module, where: str) -> dict:
        """The weights of ``module`` and how to rebuild it: its :func:`_layer_spec`, or, for
        a module of the user's, the parameter that re-supplies it when loading."""
        spec = _layer_spec(module)
        if spec is not None and repr(_build(spec)) != repr(module):
            spec = None  # a built-in layer with options of its own (padding_idx, ...)
        node = {"$module": spec, "class": _qualified(type(module)),
                "state": {name: self.array(t.detach().cpu().numpy(), f"{where}.{name}")
                          for name, t in module.state_dict().items()},
                "training": [m.training for m in module.modules()],
                "requires_grad": [p.requires_grad for p in module.parameters()]}
        if spec is None:
            node["parameter"] = self.parameter(module, where)
        return node

    def parameter(self, module: torch.nn.Module, where: str) -> str:
        """The parameter through which a module of the user's is re-supplied at load: the
        module parameter of the same class (``encoder`` for ``encoder_``, ``pair_encoder``
        for ``pair_encoder_`` when both are of one class)."""
        if where.startswith("parameter "):
            return where.split("'")[1]
        params = self.model.get_params()
        names = [n for n, v in params.items() if type(v) is type(module)]
        if not names:
            raise ValueError(f"{where}: a {_qualified(type(module))} that no parameter of "
                             f"{type(self.model).__name__} supplies cannot be saved.")
        attribute = where.split("'")[1]
        return attribute[:-1] if attribute[:-1] in names else names[0]


class _Reader:
    """Decodes the JSON nodes of :class:`_Writer` with the archive's arrays."""

    def __init__(self, arrays: dict, encoder, path: str):
        self.arrays, self.encoder, self.path = arrays, encoder, path

    def estimator(self, node: dict):
        """The estimator of a node of :meth:`_Writer.estimator`: its class built with the
        saved parameters, the fitted attributes set, the training data left out set to None
        (``transform`` / ``predict`` that need it then name the file)."""
        cls = ESTIMATOR_CLASSES.get(node["$estimator"])
        if cls is None:
            raise ValueError(f"{self.path!r} holds a {node['$estimator']}, a class this "
                             "icongraph does not know (import the module that defines it "
                             "first).")
        values = {k: self.decode(v) for k, v in node["params"].items()}
        state = {k: self.decode(v) for k, v in node["state"].items()}
        unknown = sorted(set(values) - set(cls._param_defaults()))
        if unknown:
            raise ValueError(f"{self.path!r} holds a {cls.__name__} with parameters this "
                             f"icongraph's {cls.__name__} does not have: {unknown}.")
        model = cls(**values)
        vars(model).update(state)
        for attribute in node["data_left_out"]:
            setattr(model, attribute, None)
        if node["data_left_out"]:
            model._data_left_out = self.path
        return model

    def decode(self, node):
        """The value of a JSON node of :meth:`_Writer.encode`."""
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        tag = next(iter(node))
        a = self.arrays
        if tag == "$scalar":
            return a[node[tag]][()]
        if tag == "$array":
            return a[node[tag]].astype(object) if node["object"] else a[node[tag]]
        if tag == "$tensor":
            return torch.from_numpy(a[node[tag]].copy()).requires_grad_(node["requires_grad"])
        if tag == "$sparse":
            csr = sp.csr_array if node["array"] else sp.csr_matrix
            return csr((a[node["data"]], a[node["indices"]], a[node["indptr"]]),
                       shape=tuple(node["shape"])).asformat(node["$sparse"])
        if tag == "$tuple":
            return tuple(self.decode(v) for v in node[tag])
        if tag == "$dict":
            return {k: self.decode(v) for k, v in node[tag].items()}
        if tag == "$object":
            return DATACLASSES[node[tag]](**{k: self.decode(v)
                                             for k, v in node["fields"].items()})
        if tag == "$module":
            return self.module(node)
        if tag == "$estimator":
            return self.estimator(node)
        if tag == "$rng":
            if node[tag] == "Generator":
                state = self.decode(node["state"])
                rng = np.random.Generator(BIT_GENERATORS[state["bit_generator"]]())
                rng.bit_generator.state = state
                return rng
            rng = np.random.RandomState()
            rng.set_state(self.decode(node["state"]))
            return rng
        if tag == "$device":
            return torch.device(node[tag])
        if tag == "$path":
            return Path(node[tag])
        raise KeyError(tag)

    def module(self, node: dict) -> torch.nn.Module:
        """A built-in module rebuilt from its specification, or a copy of the user's module
        for its parameter, with the saved weights, modes and ``requires_grad``."""
        if node["$module"] is not None:
            module = _build(node["$module"])
        else:
            name = node["parameter"]
            given = (self.encoder if isinstance(self.encoder, torch.nn.Module)
                     else (self.encoder or {}).get(name))
            if given is None:
                raise ValueError(
                    f"{self.path!r} holds the weights of a torch module of the user's "
                    f"({node['class']}, parameter {name!r}); the module itself is code and is "
                    f"not saved: pass one of the same architecture, icongraph.load(path, "
                    f"encoder=MyModule()) (a dict {{{name!r}: module}} for several).")
            module = copy.deepcopy(given)
        state = {k: torch.from_numpy(self.arrays[v].copy()) for k, v in node["state"].items()}
        flags = node["training"]
        try:
            module.load_state_dict(state, strict=True, assign=True)
            if len(list(module.modules())) != len(flags):
                raise RuntimeError(f"it has {len(list(module.modules()))} submodules, the "
                                   f"saved one {len(flags)}")
        except RuntimeError as err:
            raise ValueError(f"{self.path!r}: the module given for {node.get('parameter')!r} "
                             f"does not match the saved weights of {node['class']}: "
                             f"{err}") from None
        for m, training in zip(module.modules(), flags):
            m.training = training
        for p, requires_grad in zip(module.parameters(), node["requires_grad"]):
            p.requires_grad_(requires_grad)
        return module


def _read(path: str) -> tuple[dict, dict]:
    """``(header, arrays)`` of a model file, or a ``ValueError`` naming it: not an archive,
    not ours, corrupt, or of a newer format."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # numpy's reading of arbitrary bytes fails in many ways
        raise ValueError(f"{path!r} is not an icongraph model file, or a truncated one (not "
                         f"a readable NumPy .npz archive: {err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not an icongraph model file: it holds a single array "
                         "(.npy), not a saved model.")
    with archive:
        if "header" not in archive.files:
            raise ValueError(f"{path!r} is not an icongraph model file: the archive has no "
                             f"icongraph header (its entries: {archive.files[:5]}).")
        try:
            header = json.loads(str(archive["header"]))
            arrays = {key: archive[key] for key in archive.files if key != "header"}
        except Exception as err:  # a truncated or altered archive
            raise ValueError(f"{path!r} is corrupt: {type(err).__name__}: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an icongraph model file: its header is not "
                         f"format {FORMAT!r}.")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path!r} was written in model format {version!r} by icongraph "
                         f"{header.get('icongraph')}; this icongraph ({_version()}) reads "
                         f"format {FORMAT_VERSION} and earlier: upgrade icongraph to load it.")
    return header, arrays


def load(path, encoder=None, *, expected: type | None = None):
    """A fitted estimator from a file written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        The model file (``.npz``).
    encoder : torch.nn.Module, dict or None, default=None
        The user's modules the file holds the weights of, as they were passed to the
        estimator (``encoder=``, ``head=``, ``pair_encoder=``): a module, used for each, or a
        dict from the parameter's name to its module. Copies of them get the saved weights
        (the fitted ones, and the parameters' own); the modules given are left as they are.
        Not needed for the built-in heads and encoders.
    expected : type, optional
        The class (or a base class) the file must hold (``UMAP.load(path)`` passes its own).

    Returns
    -------
    estimator
        Of the saved class, with the saved parameters (``callbacks=None``) and fitted
        attributes: ``transform``, ``predict`` and ``predict_proba`` give what they gave before
        saving.

    Raises
    ------
    ValueError
        The file is not a model file, is corrupt, has a newer format, holds a class that is
        not ``expected`` or not known here, or holds a user's module that ``encoder`` does not
        supply (or supplies with other shapes); ``encoder`` is not a module or a dict of them.

    Examples
    --------
    >>> import icongraph
    >>> from icongraph.datasets import load_digits
    >>> X, y = load_digits()
    >>> model = icongraph.UMAP(random_state=0).fit(X)
    >>> path = model.save("umap-digits.npz")  # doctest: +SKIP
    >>> icongraph.load(path).transform(X[:5]).shape  # doctest: +SKIP
    (5, 2)
    >>> icongraph.load("net.npz", encoder=MyNet())  # a module of the user's  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path (str or os.PathLike); got {path!r}.")
    if encoder is not None and not isinstance(encoder, (torch.nn.Module, dict)) or (
            isinstance(encoder, dict) and not all(isinstance(m, torch.nn.Module)
                                                  for m in encoder.values())):
        raise ValueError(f"encoder must be None, a torch.nn.Module or a dict of them by "
                         f"parameter name; got {encoder!r}.")
    path = os.fspath(path)
    header, arrays = _read(path)
    name = header.get("estimator")
    cls = ESTIMATOR_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"{path!r} holds a {name}, a class this icongraph does not know "
                         "(import the module that defines it first).")
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{path!r} holds a {cls.__name__}, not a {expected.__name__}: load "
                         "it with icongraph.load(path).")
    reader = _Reader(arrays, encoder, path)
    try:
        return reader.estimator({"$estimator": name, **{k: header[k] for k in (
            "params", "state", "data_left_out")}})
    except (KeyError, TypeError, IndexError, StopIteration) as err:
        raise ValueError(f"{path!r} is corrupt: a missing or malformed entry "
                         f"({type(err).__name__}: {err}).") from None


class PersistenceMixin:
    """``save``, the class method ``load``, pickling that drops what cannot be pickled, and
    the registry of estimator classes by name (every subclass registers itself)."""

    #: fitted attributes that hold the training data (left out with ``include_data=False``)
    _data_attributes: tuple[str, ...] = ("_fit_X",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ESTIMATOR_CLASSES[_qualified(cls)] = cls

    def save(self, path, include_data: bool = True) -> Path:
        """Write this estimator to a model file (a NumPy ``.npz`` of arrays and a JSON
        header; no pickled code), atomically. See :mod:`icongraph.persistence`.

        Parameters
        ----------
        path : str or os.PathLike
            The file, ending in ``.npz``; its directory must exist. An existing file is
            replaced.
        include_data : bool, default=True
            Store the training data ``X`` (as fitted, scaled), which ``transform`` of a free
            embedding and ``predict`` of a ``head='free'`` clustering need. False leaves it
            out: the file is smaller and holds no rows of ``X``, and those calls raise an
            error after loading.

        Returns
        -------
        pathlib.Path
            The file written.

        Raises
        ------
        ValueError
            A bad ``path`` or ``include_data``, or a parameter or attribute that cannot be
            saved (a networkx graph as ``p``, a target class of the user's, ...), named;
            nothing is written then.
        """
        boolean()("include_data", include_data)
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file path (str or os.PathLike); got {path!r}.")
        target = check_output(os.fspath(path), force=True, what="save path",
                              suffixes=MODEL_SUFFIXES)
        writer = _Writer(self, include_data)
        node = writer.estimator(self, "the model")
        if node["dropped"]:
            warnings.warn("callbacks are code and are not saved: the loaded model has "
                          "callbacks=None (set them again with set_params).", stacklevel=2)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "icongraph": _version(),
                  "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                               "torch": torch.__version__,
                               "python": platform.python_version()},
                  "estimator": node["$estimator"], "include_data": bool(include_data),
                  "dropped": node["dropped"], "data_left_out": node["data_left_out"],
                  "params": node["params"], "state": node["state"]}
        text = json.dumps(header)

        def write(tmp: str):
            with open(tmp, "wb") as f:
                np.savez(f, header=np.array(text), **writer.arrays)

        return write_atomic(target, write)

    @classmethod
    def load(cls, path, encoder=None):
        """An estimator of this class from a file written by :meth:`save`
        (:func:`icongraph.load`, refusing a file that holds another class).

        Parameters
        ----------
        path : str or os.PathLike
            The model file.
        encoder : torch.nn.Module, dict or None, default=None
            The user's modules, as for :func:`icongraph.load`.

        Returns
        -------
        estimator
            The loaded estimator.
        """
        return load(path, encoder, expected=cls)

    def _training_data(self, what: str):
        """The fitted rows ``_fit_X``; a ``ValueError`` naming the remedy when the model was
        loaded from a file saved with ``include_data=False``."""
        source = getattr(self, "_data_left_out", None)
        if source is not None:
            raise ValueError(f"{what} needs the training data, which {source!r} was saved "
                             "without (include_data=False): save the fitted model with "
                             "include_data=True (the default), or fit it again.")
        return self._fit_X

    def __getstate__(self) -> dict:
        """The attributes to pickle, without the callbacks that cannot be pickled (a lambda, a
        local function), with a warning."""
        state = dict(vars(self))
        callbacks = state.get("callbacks")
        if callbacks:
            kept = []
            for cb in callbacks:
                try:
                    pickle.dumps(cb)
                    kept.append(cb)
                except (pickle.PicklingError, AttributeError, TypeError):
                    warnings.warn(f"callback {cb!r} cannot be pickled and is left out of the "
                                  "pickled model.", stacklevel=2)
            state["callbacks"] = kept or None
        return state

    def __deepcopy__(self, memo: dict):
        """A deep copy that keeps every callback (``copy.deepcopy`` shares functions, so the
        pickling rule of :meth:`__getstate__` does not apply)."""
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        vars(twin).update(copy.deepcopy(vars(self), memo))
        return twin
