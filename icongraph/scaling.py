"""Scale-free input: data of any magnitude (1e-30..1e30) or with a large offset reaches the
float32 engine as a well-conditioned copy, by one global affine map (never per-feature
z-scoring, which would change the metric the user chose).

Distances among points at scale ``s`` are computed from ``s^2`` terms: in float32 they
underflow below ``s ~ 1e-19`` and overflow above ``s ~ 1e19``, and a common offset ``m`` costs
``log10(m / s)`` of float32's 7 significant digits. So when the spread leaves
``[SPREAD_RANGE]`` or the offset exceeds ``OFFSET_RATIO`` spreads, the data are mapped to
``(x - shift) / scale`` in float64, then cast: unit spread, centred (euclidean only; a
translation changes cosine distances, so those are only rescaled). Every neighbourhood is
unchanged: kNN graphs, perplexity and fuzzy targets are invariant to a global scale and
translation. The fitted map is applied again to new points (``transform``/``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["DataScale", "SPREAD_RANGE", "OFFSET_RATIO"]

#: spreads (RMS distance of the points from their mean) that are used as they are
SPREAD_RANGE = (1e-6, 1e6)
#: largest |mean| / spread (per feature, the largest) used as it is
OFFSET_RATIO = 1e3
#: rows per float64 block (bounded extra memory at any N)
BLOCK_ROWS = 65536


@dataclass(frozen=True)
class DataScale:
    """The affine map ``x -> (x - shift) / scale`` applied to the data (identity when
    ``scale == 1`` and ``shift is None``).

    Attributes
    ----------
    shift : ndarray of shape (D,) in float64, or None
        Subtracted first (the data's mean; None: no translation).
    scale : float
        Then divided by (the data's spread).
    """

    shift: np.ndarray | None = None
    scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self.shift is None and self.scale == 1.0

    @classmethod
    def fit(cls, X, centre: bool) -> DataScale:
        """The map for ``X`` (N, D), dense of any real dtype or scipy sparse (never centred),
        computed in float64 in blocks of rows: identity when the spread lies in
        ``SPREAD_RANGE`` and the offset below ``OFFSET_RATIO`` spreads, else unit spread
        (centred when ``centre``). Raises ``ValueError`` when every row is identical."""
        n = X.shape[0]
        if sp.issparse(X):
            data = X.data.astype(np.float64)
            peak = float(np.abs(data).max()) if data.size else 0.0
            spread = peak * float(np.sqrt(((data / peak) ** 2).sum() / n)) if peak else 0.0
            mean = None
        else:
            ref = np.asarray(X[0], np.float64)
            unit = 1.0  # one pass; a second, normalised by the peak, when squares overflow
            while True:
                sums = np.zeros(X.shape[1])
                squares = np.zeros(X.shape[1])
                for lo in range(0, n, BLOCK_ROWS):
                    block = (np.asarray(X[lo:lo + BLOCK_ROWS], np.float64) - ref) / unit
                    sums += block.sum(0)
                    with np.errstate(over="ignore"):  # caught below: a second, scaled pass
                        squares += np.einsum("ij,ij->j", block, block)
                if np.isfinite(squares).all() or unit != 1.0:
                    break
                unit = max(float(np.abs(np.asarray(X[lo:lo + BLOCK_ROWS], np.float64)
                                        - ref).max()) for lo in range(0, n, BLOCK_ROWS))
            centred = sums / n
            spread = unit * float(np.sqrt(max((squares / n - centred**2).sum(), 0.0)))
            mean = ref + unit * centred
        if not spread > 0:
            raise ValueError(f"all {n} rows of the data are identical: there is no structure to "
                             "embed or cluster.")
        offset = 0.0 if mean is None else float(np.abs(mean).max()) / spread
        low, high = SPREAD_RANGE
        if low <= spread <= high and offset <= OFFSET_RATIO:
            return cls()
        return cls(mean if centre else None, spread)

    def apply(self, X) -> np.ndarray | sp.csr_matrix:
        """``(X - shift) / scale`` as float32 (dense: C-contiguous; sparse: CSR), computed in
        float64 block by block; ``X`` itself when the map is the identity."""
        if self.identity:
            return X
        if self.shift is not None and X.shape[1] != self.shift.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features; the model was fitted with "
                             f"{self.shift.shape[0]}.")
        if sp.issparse(X):
            out = sp.csr_matrix(X, dtype=np.float64, copy=True)
            out.data /= self.scale
            return out.astype(np.float32)
        out = np.empty(X.shape, np.float32)
        for lo in range(0, X.shape[0], BLOCK_ROWS):
            block = np.asarray(X[lo:lo + BLOCK_ROWS], np.float64)
            if self.shift is not None:
                block = block - self.shift
            out[lo:lo + BLOCK_ROWS] = block / self.scale
        return out
