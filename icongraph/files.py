"""Files of the command line: the data matrix (with its labels and a colour column) read from
.npy, .npz, .csv, .tsv, .txt, .parquet or .h5ad, output paths checked before any work, and
results written atomically in the format their suffix names.

Tables are read by pandas (a header row is detected by whether the first row is all numbers),
Parquet through pandas' pyarrow or fastparquet engine, AnnData files by anndata. Every fault
is a ``ValueError`` naming the file and what is missing (a key, a column, an ``obsm`` entry,
with the ones that exist), raised while reading, so before any fit.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .validation import check_data, check_labels

__all__ = ["Input", "read_input", "check_output", "write_atomic", "write_result", "FORMATS",
           "OUTPUT_FORMATS", "EMBEDDING_KEY", "CLUSTER_KEY"]

#: suffix -> (format, the modules it needs; a tuple names alternatives)
FORMATS = {
    ".npy": ("NumPy array", ()),
    ".npz": ("NumPy archive", ()),
    ".csv": ("comma-separated table", ("pandas",)),
    ".tsv": ("tab-separated table", ("pandas",)),
    ".txt": ("whitespace-separated text", ("pandas",)),
    ".parquet": ("Parquet table", ("pandas", ("pyarrow", "fastparquet"))),
    ".h5ad": ("AnnData file", ("anndata",)),
}
#: the formats results are written in
OUTPUT_FORMATS = {suffix: v for suffix, v in FORMATS.items() if suffix != ".npz"}
#: the AnnData ``obsm`` key of an embedding and the ``obs`` key of clusters (scanpy's style);
#: also the column names of a table (``icon1``, ``icon2``, ... and ``icon_cluster``)
EMBEDDING_KEY, CLUSTER_KEY = "X_icon", "icon_cluster"
_TABLES = {".csv": ",", ".tsv": "\t", ".txt": r"\s+"}


@dataclass
class Input:
    """What the command line read.

    Attributes
    ----------
    X : ndarray or scipy sparse matrix
        (N, D) float32 data.
    labels : ndarray or None
        (N,) labels (the label column, the .npz array ``y``, a bundled dataset's classes).
    color : ndarray or None
        (N,) values of the requested colour column.
    h5ad : pathlib.Path or None
        The .h5ad file read, which results are written back into: a copy of it with the
        result added (:func:`write_result`).

    Parameters
    ----------
    X, labels, color, h5ad
        As the attributes (:func:`read_input` builds it).

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph.files import Input
    >>> source = Input(np.zeros((3, 2), np.float32), labels=np.array([0, 1, 1]))
    >>> source.X.shape, source.h5ad
    ((3, 2), None)
    """

    X: object
    labels: np.ndarray | None = None
    color: np.ndarray | None = None
    h5ad: Path | None = field(default=None, repr=False)


def _missing_modules(suffix: str, formats: dict) -> str | None:
    """``'pyarrow or fastparquet'`` when the modules a format needs are missing, else None."""
    for need in formats[suffix][1]:
        options = need if isinstance(need, tuple) else (need,)
        if not any(importlib.util.find_spec(name) for name in options):
            return " or ".join(options)
    return None


def _listing(names) -> str:
    names = [repr(str(n)) for n in names]
    shown = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return shown or "none"


def _option_faults(suffix: str, key, label_column, color_column, use_rep, layer) -> list[str]:
    faults = []
    if key is not None and suffix != ".npz":
        faults.append("--key applies to .npz inputs")
    if (use_rep is not None or layer is not None) and suffix != ".h5ad":
        faults.append("--use-rep and --layer apply to .h5ad inputs")
    if use_rep is not None and layer is not None:
        faults.append("give --use-rep or --layer, not both")
    if suffix in ("", ".npy") and (label_column is not None or color_column is not None):
        faults.append("--label-column and a --color-by column need an input with columns "
                      "(a table, .npz or .h5ad)")
    return faults


def read_input(path: str, *, key: str | None = None, label_column: str | None = None,
               color_column: str | None = None, use_rep: str | None = None,
               layer: str | None = None) -> Input:
    """Read the data of the command line.

    Parameters
    ----------
    path : str
        A file (suffix from :data:`FORMATS`) or a bundled dataset name ('digits', 'pbmc68k',
        ... of :data:`icongraph.datasets.DATASETS`).
    key : str, optional
        .npz: the array of the data (default 'X', or the only array; a ``scipy.sparse.save_npz``
        file is read as its matrix).
    label_column : str, optional
        The labels: a column of a table (never a feature), an array of a .npz (default 'y'
        when present), a column of an .h5ad's ``obs``. A table without a header names its
        columns '0', '1', ...
    color_column : str, optional
        A column (array, ``obs`` key) of values to colour a plot by; in a table never a
        feature either.
    use_rep : str, optional
        .h5ad: the ``obsm`` entry to use as data (e.g. 'X_pca'; 'X' is ``adata.X``).
    layer : str, optional
        .h5ad: the ``layers`` entry to use as data.

    Returns
    -------
    Input
        The validated float32 data, the labels, the colour column, and the AnnData object.

    Raises
    ------
    ValueError
        Naming the file, when it does not exist, has an unknown suffix, needs a missing
        package, cannot be parsed, lacks the requested key, column or representation (the
        message lists those it has), has non-numeric feature columns, or holds no valid data
        matrix (:func:`~icongraph.validation.check_data`); also for options that do not apply
        to the file's format.

    Examples
    --------
    >>> from icongraph.files import read_input
    >>> source = read_input("cells.h5ad", use_rep="X_pca", label_column="cell_type")  # doctest: +SKIP
    >>> source = read_input("table.csv", label_column="species")  # doctest: +SKIP
    >>> source.X.shape, source.labels[:3]  # doctest: +SKIP
    """
    from .datasets import DATASETS, load

    p = Path(path)
    if path in DATASETS and not p.exists():
        faults = _option_faults("", key, label_column, color_column, use_rep, layer)
        if faults:
            raise ValueError(f"{path} is a bundled dataset: {'; '.join(faults)}.")
        X, labels = load(path)
        return Input(check_data(X, name=f"the dataset {path}"), labels)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise ValueError(f"input file {path!r} {what}.")
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"input {path!r}: the suffix {suffix or '(none)'!r} names no format "
                         f"read here; use one of {', '.join(FORMATS)}.")
    faults = _option_faults(suffix, key, label_column, color_column, use_rep, layer)
    if faults:
        raise ValueError(f"input {path!r}: {'; '.join(faults)}.")
    missing = _missing_modules(suffix, FORMATS)
    if missing:
        raise ValueError(f"input {path!r}: reading {suffix} needs {missing}: "
                         f"pip install {missing.split()[0]}.")
    try:
        if suffix == ".npy":
            found = Input(np.load(p, mmap_mode="r", allow_pickle=False))  # never copied whole
        elif suffix == ".npz":
            found = _read_npz(p, key, label_column, color_column)
        elif suffix == ".h5ad":
            found = _read_h5ad(p, use_rep, layer, label_column, color_column)
        else:
            found = _read_table(p, suffix, label_column, color_column)
    except Exception as err:  # parsers raise anything on a corrupt or truncated file
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot read {path} as {suffix}: {detail}") from None
    found.X = check_data(found.X, name=f"the data in {path}")
    n = found.X.shape[0]
    if found.labels is not None:
        found.labels = check_labels(found.labels, n, f"the labels in {path}")
    if found.color is not None:
        found.color = check_labels(found.color, n, f"the colour column in {path}")
    return found


def _read_npz(p: Path, key, label_column, color_column) -> Input:
    with np.load(p, allow_pickle=False) as data:
        names = data.files
        if not names:
            raise ValueError("it holds no arrays")
        if key is None and {"format", "shape", "data"} <= set(names):  # scipy.sparse.save_npz
            import scipy.sparse as sp

            return Input(sp.load_npz(p))
        if key is None:
            key = "X" if "X" in names or len(names) != 1 else names[0]
        label_column = label_column or ("y" if "y" in names and key != "y" else None)
        for option, name in (("--key", key), ("--label-column", label_column),
                             ("--color-by", color_column)):
            if name is not None and name not in names:
                raise ValueError(f"it has no array {name!r} ({option}); its arrays are "
                                 f"{_listing(names)}")
        return Input(data[key], None if label_column is None else data[label_column],
                     None if color_column is None else data[color_column])


def _read_h5ad(p: Path, use_rep, layer, label_column, color_column) -> Input:
    """The features of an AnnData file (``X``, ``obsm[use_rep]`` or ``layers[layer]``) and its
    ``obs`` columns, read with h5py and anndata's ``read_elem``, never the whole object: a dense,
    uncompressed, unchunked matrix (anndata's default for dense arrays) is memory-mapped
    (:func:`_mapped`), as an ``.npy`` is, so a large file is not held in memory twice."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(p, "r") as f:
        keys = {group: list(f[group].keys()) if group in f else [] for group in ("obsm", "layers")}
        if use_rep not in (None, "X") and use_rep not in keys["obsm"]:
            raise ValueError(f"it has no obsm[{use_rep!r}] (--use-rep); its obsm keys are "
                             f"{_listing(keys['obsm'])}")
        if layer is not None and layer not in keys["layers"]:
            raise ValueError(f"it has no layers[{layer!r}] (--layer); its layers are "
                             f"{_listing(keys['layers'])}")
        # obs (its index of N names included) is read only when a column of it is asked for
        obs = read_elem(f["obs"]) if label_column or color_column else None
        columns = {}
        for option, name in (("--label-column", label_column), ("--color-by", color_column)):
            if name is not None and name not in obs:
                raise ValueError(f"it has no obs[{name!r}] ({option}); its obs columns are "
                                 f"{_listing(obs.columns)}")
            columns[option] = None if name is None else obs[name].to_numpy()
        key = (f"layers/{layer}" if layer is not None
               else "X" if use_rep in (None, "X") else f"obsm/{use_rep}")
        mapped = _mapped(p, f[key])
        X = read_elem(f[key]) if mapped is None else mapped
    return Input(X, columns["--label-column"], columns["--color-by"], h5ad=p)


def _mapped(p: Path, element) -> np.ndarray | None:
    """A read-only ``np.memmap`` of an HDF5 dataset stored in one contiguous run of the file
    (not chunked, not compressed, native float or integer), or None."""
    import h5py

    if (not isinstance(element, h5py.Dataset) or element.chunks is not None
            or element.compression is not None or element.dtype.kind not in "fiu"
            or not element.dtype.isnative or element.ndim != 2 or element.size == 0):
        return None
    offset = element.id.get_offset()
    if offset is None:  # never written: no storage allocated
        return None
    return np.memmap(p, dtype=element.dtype, mode="r", offset=offset, shape=element.shape)


def _read_table(p: Path, suffix: str, label_column, color_column) -> Input:
    import pandas as pd

    if suffix == ".parquet":
        frame = pd.read_parquet(p)
    else:
        sep = _TABLES[suffix]
        try:
            first = pd.read_csv(p, sep=sep, header=None, nrows=1, dtype=str)
        except pd.errors.EmptyDataError:  # an empty file: check_data says so, in one line
            return Input(np.empty((0, 0)))
        header = None if pd.to_numeric(first.iloc[0], errors="coerce").notna().all() else 0
        frame = pd.read_csv(p, sep=sep, header=header)
    frame.columns = [str(c) for c in frame.columns]
    meta = {option: name for option, name in (("--label-column", label_column),
                                              ("--color-by", color_column)) if name is not None}
    for option, name in meta.items():
        if name not in frame.columns:
            raise ValueError(f"it has no column {name!r} ({option}); its columns are "
                             f"{_listing(frame.columns)}")
    features = frame.drop(columns=list(set(meta.values())))
    bad = [c for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c])
                                               or pd.api.types.is_bool_dtype(features[c]))]
    if bad:
        column = features[bad[0]]
        row = int(np.flatnonzero(pd.to_numeric(column, errors="coerce").isna()
                                 & column.notna())[0])
        raise ValueError(f"non-numeric feature column(s) {_listing(bad)} (e.g. "
                         f"{column.iloc[row]!r} in data row {row + 1}); a label column is named "
                         "with --label-column")
    return Input(features.to_numpy(),
                 None if label_column is None else frame[label_column].to_numpy(),
                 None if color_column is None else frame[color_column].to_numpy())


def check_output(path: str, force: bool, what: str = "output",
                 suffixes: dict | None = None) -> Path:
    """Check an output path before any work.

    Parameters
    ----------
    path : str
        Where the file will be written.
    force : bool
        Overwrite an existing file (``--force``).
    what : str
        The option, for messages (``"output"``, ``"--plot"``).
    suffixes : dict, optional
        Accepted suffixes -> (description, modules needed), default :data:`OUTPUT_FORMATS`.

    Returns
    -------
    pathlib.Path
        The path, to write with :func:`write_atomic`.

    Raises
    ------
    ValueError
        For a suffix that names no format this command writes (or whose package is missing),
        a directory that does not exist or cannot be written, a path that is a directory, or an
        existing file without ``force``.

    Examples
    --------
    >>> from icongraph.files import check_output
    >>> path = check_output("embedding.parquet", force=False)  # before the fit
    >>> path.suffix
    '.parquet'
    """
    suffixes = OUTPUT_FORMATS if suffixes is None else suffixes
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{what} {path!r}: the suffix {suffix or '(none)'!r} names no format "
                         f"written here; use one of {', '.join(suffixes)}.")
    missing = _missing_modules(suffix, suffixes)
    if missing:
        raise ValueError(f"{what} {path!r}: writing {suffix} needs {missing}: "
                         f"pip install {missing.split()[0]}.")
    parent = p.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path!r}: the directory {str(parent)!r} does not exist; "
                         "create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path!r}: the directory {str(parent)!r} is not writable.")
    if p.is_dir():
        raise ValueError(f"{what} {path!r} is a directory.")
    if p.exists() and not force:
        raise ValueError(f"{what} {path!r} already exists; pass --force to overwrite it.")
    return p


def write_atomic(path: Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary name in ``path``'s directory (same suffix), then
    rename it to ``path``: a reader never sees a partial file, and a failed write leaves
    ``path`` as it was. The file gets the usual permissions (0666 less the umask).

    Parameters
    ----------
    path : pathlib.Path
        The file to write.
    write : callable
        Writes the whole file to the path it is given.

    Returns
    -------
    pathlib.Path
        ``path``, the file written.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from icongraph.files import write_atomic
    >>> write_atomic(Path("values.npy"), lambda tmp: np.save(tmp, np.arange(3)))
    PosixPath('values.npy')
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_result(path: Path, values: np.ndarray, source: Input | None = None) -> Path:
    """Write an embedding or cluster labels atomically, in the format of ``path``'s suffix.

    Parameters
    ----------
    path : pathlib.Path
        A path checked by :func:`check_output` (suffix from :data:`OUTPUT_FORMATS`).
    values : np.ndarray
        (N, d) embedding, or (N,) integer cluster labels.
    source : Input, optional
        What was read: an .h5ad input's AnnData object is written with the result added
        (``obsm['X_icon']``, or ``obs['icon_cluster']`` as a categorical of strings, as
        scanpy's clusters); otherwise an AnnData file holds the result alone.

    Returns
    -------
    pathlib.Path
        ``path``, the file written (tables get the columns ``icon1``, ``icon2``, ... or
        ``icon_cluster``; .npy and .txt hold the bare numbers).

    Examples
    --------
    >>> import numpy as np
    >>> from icongraph.files import check_output, write_result
    >>> path = check_output("embedding.csv", force=True)
    >>> write_result(path, np.zeros((5, 2), np.float32))  # columns icon1, icon2
    PosixPath('embedding.csv')
    """
    suffix = path.suffix.lower()
    labels = values.ndim == 1
    columns = [CLUSTER_KEY] if labels else [f"icon{i + 1}" for i in range(values.shape[1])]

    def write(tmp: str):
        if suffix == ".npy":
            np.save(tmp, values)
        elif suffix == ".txt":
            np.savetxt(tmp, values, fmt="%d" if labels else "%.9g")
        elif suffix == ".h5ad":
            _write_h5ad(tmp, values, None if source is None else source.h5ad)
        else:
            import pandas as pd

            frame = pd.DataFrame(values[:, None] if labels else values, columns=columns)
            if suffix == ".parquet":
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, sep=_TABLES[suffix], index=False, float_format="%.9g")

    return write_atomic(path, write)


def _write_h5ad(tmp: str, values: np.ndarray, source: Path | None):
    """``values`` into a new AnnData file, or into a copy of the ``source`` .h5ad (its content
    kept, never loaded): ``obsm['X_icon']`` for an embedding, ``obs['icon_cluster']`` (a
    categorical of strings, as scanpy's clusters) for labels."""
    import anndata
    import h5py
    import pandas as pd
    from anndata.io import read_elem, write_elem

    if source is None:
        anndata.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(values))])
                        ).write_h5ad(tmp)
    else:
        shutil.copyfile(source, tmp)
    with h5py.File(tmp, "r+") as f:
        if values.ndim == 1:
            obs = read_elem(f["obs"])
            obs[CLUSTER_KEY] = pd.Categorical(values.astype(str),
                                              categories=[str(c) for c in np.unique(values)])
            del f["obs"]
            write_elem(f, "obs", obs)
            return
        if "obsm" not in f:
            write_elem(f, "obsm", {})
        if EMBEDDING_KEY in f["obsm"]:
            del f["obsm"][EMBEDDING_KEY]
        write_elem(f["obsm"], EMBEDDING_KEY, values)
