"""Progress bars (tqdm) for long phases: shown only when asked for and writing to a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(iterable, desc: str, verbose: bool, total: int | None = None, unit: str = "it"):
    """A tqdm bar around ``iterable`` (or a manual bar when it is None); silent unless ``verbose``
    is true and stderr is a terminal (``verbose='always'`` forces it, e.g. for logs)."""
    show = verbose == "always" or (bool(verbose) and sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not show, leave=False,
                dynamic_ncols=True)
