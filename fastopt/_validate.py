"""Checks on arrays that every entry point shares. Each raises TypeError or ValueError
with a message naming the offending argument; none of them writes anything."""
import numpy as np

from fastopt._kernels.driver import data_span

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(obj, name, *, writeable):
    """``obj`` as an ndarray sharing its memory (buffer protocol, ``__array__``)."""
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        try:
            arr = np.asarray(obj)
        except Exception as exc:  # noqa: BLE001 - report whatever the object did
            raise TypeError(f"{name} is not an array ({type(obj).__name__}): {exc}") from None
        if arr.dtype == object:
            raise TypeError(f"{name} is not a numeric array ({type(obj).__name__})")
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; fastopt works on native-byte-order float32 and "
                        "float64 arrays")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; pass np.ascontiguousarray(...) "
                         "(an update must write into the caller's memory)")
    if not arr.flags.aligned:
        raise ValueError(f"{name} is not aligned to its element size")
    if writeable:
        if not arr.flags.writeable:
            raise ValueError(f"{name} is read-only")
        if arr.flags.owndata and arr is not obj:
            raise TypeError(f"{name} is a {type(obj).__name__}, which NumPy can only copy: the update would "
                            "be lost; pass an array or a writeable buffer")
    return arr


def byte_range(arr):
    """``(first byte, one past the last)`` of a C-contiguous array."""
    return data_span(arr)


def check_disjoint(named_arrays):
    """Raise if any two of the (name, array) pairs share memory."""
    spans = sorted((byte_range(a) + (name,)) for name, a in named_arrays if a.size)
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise ValueError(f"{n1} and {n2} share memory; every parameter and state buffer "
                             "must be its own array")


def check_like(arr, name, ref, ref_name):
    if arr.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {arr.dtype}, but {ref_name} is {ref.dtype}")
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape}, but {ref_name} has shape {ref.shape}")
