"""Validation of the Hogwild! trainers' inputs: every check runs before anything is written,
and each error names the argument."""
import math
import numbers

import numpy as np

from fastopt._kernels import hogwild as _k
from fastopt._kernels.driver import check_threads
from fastopt._lifetime import pin_memory


class CSR:
    """A compressed-sparse-row matrix as three arrays (``indptr``, ``indices``, ``data``)
    and a ``shape``, the layout ``scipy.sparse.csr_matrix`` uses (no SciPy needed).
    :meth:`to_scipy` makes the SciPy matrix without copying."""

    format = "csr"

    def __init__(self, data, indices, indptr, shape):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))

    @property
    def nnz(self):
        return int(self.indptr[-1])

    def to_scipy(self):
        """The same matrix as a ``scipy.sparse.csr_matrix`` (shares the arrays)."""
        try:
            import scipy.sparse
        except ImportError:
            raise ImportError("CSR.to_scipy needs SciPy: pip install scipy") from None
        return scipy.sparse.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape, copy=False)

    def rows(self, which):
        """A new CSR of the rows ``which`` (an index array), in that order."""
        which = np.asarray(which, np.int64)
        starts, ends = self.indptr[which].astype(np.int64), self.indptr[which + 1].astype(np.int64)
        lens = ends - starts
        indptr = np.zeros(which.size + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
        return CSR(self.data[take], self.indices[take], indptr, (which.size, self.shape[1]))

    def __repr__(self):
        return f"CSR(shape={self.shape}, nnz={self.nnz}, dtype={self.data.dtype})"


def csr(X, name="X", pins=None):
    """``(indptr int64, indices int32/int64, data float32/float64, (n, d))`` of a CSR matrix
    (``scipy.sparse`` CSR or :class:`CSR`), checked: sorted, unique, in-range column
    indices per row, finite values. Never writes into ``X``.

    ``indices`` and ``data`` may be ``X``'s own arrays (no copy). A list passed as
    ``pins`` receives weak references to their memory owners before anything reads them
    without the GIL: keep it alive while kernels use the arrays."""
    fmt = getattr(X, "format", None)
    if fmt is None or not all(hasattr(X, a) for a in ("indptr", "indices", "data", "shape")):
        raise TypeError(f"{name} must be a CSR matrix (scipy.sparse.csr_matrix/csr_array or "
                        f"fastopt.hogwild.CSR), got {type(X).__name__}")
    if fmt != "csr":
        raise TypeError(f"{name} must be in CSR format, got {fmt!r} (convert with {name}.tocsr())")
    shape = tuple(X.shape)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D matrix with at least one row and column, got shape {shape}")
    n, d = int(shape[0]), int(shape[1])
    indptr, indices, data = (np.asarray(X.indptr), np.asarray(X.indices), np.asarray(X.data))
    if pins is not None:
        pins.extend(pin_memory([indices, data]))
    for part, arr in (("indptr", indptr), ("indices", indices)):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(f"{name}.{part} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if data.ndim != 1 or data.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}.data must be a 1-D float32 or float64 array, got {data.dtype} {data.shape}")
    if indptr.size != n + 1:
        raise ValueError(f"{name}.indptr must have {n + 1} entries (rows + 1), got {indptr.size}")
    indptr = indptr.astype(np.int64)
    nnz = int(indptr[-1])
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or nnz > min(indices.size, data.size):
        raise ValueError(f"{name}.indptr must start at 0, never decrease and end at most at len({name}.indices)")
    indices, data = indices[:nnz], data[:nnz]
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    indices, data = np.ascontiguousarray(indices), np.ascontiguousarray(data)
    code, row = _k.scan_csr(indptr, indices, data, d)
    if code == 1:
        cols = indices[indptr[row]:indptr[row + 1]]
        bad = cols[(cols < 0) | (cols >= d)][0]
        raise ValueError(f"{name}.indices must lie in [0, {d}), found {int(bad)} in row {row}")
    if code in (2, 3):
        kind = "duplicate" if code == 3 else "unsorted"
        raise ValueError(f"{name} has {kind} column indices in row {row}: the column indices of every row "
                         f"must be sorted and unique (call {name}.sum_duplicates() / {name}.sort_indices())")
    if code == 4:
        raise ValueError(f"{name}.data must be finite (it holds NaN or infinity, in row {row})")
    return indptr, indices, data, (n, d)


def labels(y, n, loss, name="y"):
    """``y`` as float64[n], in the domain of ``loss`` (-1/+1 for log and hinge, finite for squared)."""
    try:
        arr = np.asarray(y)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one label per row of X), got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (it holds NaN or infinity)")
    if loss in ("log", "hinge"):
        bad = arr[(arr != 1.0) & (arr != -1.0)]
        if bad.size:
            raise ValueError(f"{name} must hold only -1 and +1 for loss={loss!r}, found {float(bad[0])!r}")
    return np.ascontiguousarray(arr)


def choice(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def real(value, name, *, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v!r}")
    return v


def integer(value, name, *, lo=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def threads(value):
    """``None`` (fastopt's thread count) or a count checked like the optimizers' ``threads``."""
    return 0 if value is None else check_threads(value, "threads")


def seed(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < 2 ** 63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {value!r}")
    return int(value)
