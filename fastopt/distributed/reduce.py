"""The mean gradient of P ranks, defined once, for the sharded step and its
single-process reference alike.

    mean = round_to_dtype( (((g_0 + g_1) + g_2) + ... + g_{P-1}) / P )

with every ``g_r`` converted to float64, the sum taken left to right in rank order and
the division made in float64, then rounded to the parameters' dtype. MPI's own
reductions leave their order unspecified (and MPICH's depends on the rank count and
message size), so the sharded optimizer exchanges the raw gradient shards and calls
:func:`mean_into` itself.
"""
import numpy as np

from fastopt._kernels.meanred import mean_into_c
from fastopt._lifetime import pin_memory

__all__ = ["mean_gradient", "mean_into", "mean_reference"]

# elements per pass: the float64 accumulator stays in L2 while the P sources stream by
_CHUNK = 32768


def mean_into(out, sources):
    """Write the mean of ``sources`` (a list of P arrays of ``out``'s dtype and size, in
    rank order) into ``out``: float64 sum in rank order, divided by P, rounded to
    ``out.dtype``, in one fused pass (``fastopt._kernels.meanred``). ``out`` may be one
    of the sources."""
    if (isinstance(out, np.ndarray) and out.dtype in (np.float32, np.float64) and out.flags.c_contiguous
            and out.flags.writeable and len(sources) > 0
            and all(isinstance(s, np.ndarray) and s.dtype == out.dtype and s.flags.c_contiguous
                    and s.size == out.size for s in sources)):
        # the kernel runs without the GIL: no other thread may reallocate these meanwhile
        pins = pin_memory([out] + list(sources))          # noqa: F841
        mean_into_c(out, list(sources))
        return out
    return mean_reference(out, sources)


def mean_reference(out, sources):
    """:func:`mean_into` in plain NumPy, tile by tile (the definition the kernel is
    tested against bit for bit)."""
    nsrc = len(sources)
    if nsrc == 0:
        raise ValueError("mean_into needs at least one source")
    flat = out.reshape(-1)
    srcs = [s.reshape(-1) for s in sources]
    n = flat.size
    for s in srcs:
        if s.size != n:
            raise ValueError(f"mean_into: a source has {s.size} elements, out has {n}")
    acc = np.empty(min(n, _CHUNK), np.float64)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        a = acc[:hi - lo]
        a[...] = srcs[0][lo:hi]
        for s in srcs[1:]:
            a += s[lo:hi]
        a /= nsrc
        flat[lo:hi] = a
    return out


def mean_gradient(grads):
    """The mean gradient a sharded step of P ranks uses, for one parameter: ``grads`` is
    the list of the P ranks' gradients (same shape and dtype) in rank order. A
    single-process optimizer stepping on ``mean_gradient(...)`` of every parameter gives
    the bits :class:`fastopt.distributed.ShardedOptimizer` gives on every rank."""
    grads = [np.ascontiguousarray(g) for g in grads]
    if not grads:
        raise ValueError("mean_gradient needs the gradients of at least one rank")
    first = grads[0]
    for r, g in enumerate(grads):
        if g.shape != first.shape or g.dtype != first.dtype:
            raise ValueError(f"mean_gradient: rank {r}'s gradient is {g.dtype} {g.shape}, rank 0's "
                             f"{first.dtype} {first.shape}")
    return mean_into(np.empty_like(first), grads)
