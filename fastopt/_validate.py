"""Checks on arrays that every entry point shares. Each raises TypeError or ValueError
with a message naming the offending argument; none of them writes anything."""
from collections.abc import Mapping

import numpy as np

from fastopt._kernels.driver import data_span

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ReentryError(RuntimeError):
    """An optimizer was called again from inside one of its own calls (a gradient's
    ``__array__``, a schedule) on the same thread."""


def grads_sequence(grads):
    """``grads`` (a sequence: one entry per parameter) as a new list, each entry read
    once; TypeError naming ``grads`` for anything else (None, a generator, a dict)."""
    if isinstance(grads, np.ndarray):
        if grads.ndim == 0:
            raise TypeError("grads must be a sequence of arrays (one per parameter), got a 0-d array")
        return list(grads)
    if isinstance(grads, (str, bytes, Mapping)) or not (hasattr(grads, "__len__") and hasattr(grads, "__getitem__")):
        raise TypeError(f"grads must be a sequence (list or tuple) of arrays, one per parameter (None to skip "
                        f"one), got {type(grads).__name__}" + ("; pass list(grads)" if hasattr(grads, "__next__")
                                                               else ""))
    n = len(grads)
    return [grads[k] for k in range(n)]


def as_array(obj, name, *, writeable):
    """``obj`` as an ndarray sharing its memory (buffer protocol, ``__array__``)."""
    if isinstance(obj, np.ma.MaskedArray):
        # the update would run over masked elements too, silently ignoring the mask
        raise TypeError(f"{name} is a masked array; fastopt ignores no elements: pass np.ma.getdata({name}) "
                        "or fill the masked entries (e.g. .filled(0))")
    if isinstance(obj, np.ndarray):
        # a subclass's own operators (np.matrix's * is a matrix product) must not reach
        # the reference arithmetic: work on a plain view of the same memory
        arr = obj if type(obj) is np.ndarray else obj.view(np.ndarray)
    else:
        try:
            arr = np.asarray(obj)
        except ReentryError:
            raise                     # the object re-entered the optimizer: that message says so
        except Exception as exc:  # noqa: BLE001 - report whatever the object did
            if type(obj).__module__.startswith("torch"):
                # e.g. a parameter that requires grad: torch refuses to share its memory
                raise TypeError(f"{name} is a torch tensor NumPy cannot view ({exc}); in a PyTorch training loop "
                                "use fastopt.torch, e.g. fastopt.torch.Adam(model.parameters())") from None
            raise TypeError(f"{name} is not an array ({type(obj).__name__}): {exc}") from None
        if arr.dtype == object:
            raise TypeError(f"{name} is not a numeric array ({type(obj).__name__})")
    if isinstance(arr, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; fastopt ignores no elements: pass the data without the mask")
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
        if arr.flags.owndata and arr is not obj and not isinstance(obj, np.ndarray):
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


def check_domain(arr, name, domain):
    """Raise ValueError naming ``name`` if an element of ``arr`` lies outside the
    :class:`fastopt.rules.Hyper` range ``domain`` (NaN passes: the rules carry NaN
    through, and a state the optimizer itself produced must load back)."""
    with np.errstate(invalid="ignore"):
        below = arr < domain.lo if not domain.lo_open else arr <= domain.lo
        above = arr > domain.hi if not domain.hi_open else arr >= domain.hi
        bad = np.flatnonzero(below | above)
    if bad.size:
        k = bad[0]
        raise ValueError(f"{name} holds {arr.reshape(-1)[k].item()!r} at index {k} ({bad.size} such values): must be "
                         f"in {domain.range_text()}; no step of the rule can produce it")


def check_like(arr, name, ref, ref_name):
    if arr.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {arr.dtype}, but {ref_name} is {ref.dtype}")
    if arr.shape != ref.shape:
        raise ValueError(f"{name} has shape {arr.shape}, but {ref_name} has shape {ref.shape}")
