# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The mean of P ranks' gradient pieces in one pass (fastopt.distributed's reduction):

    out[i] = (T) ((((double) s_0[i] + s_1[i]) + ...) + s_{P-1}[i]) / P)

float64 sum in rank order, float64 division, one rounding to ``T`` (float32 or
float64) — the same operations, in the same order, as
:func:`fastopt.distributed.reduce.mean_reference`, element by element, so any split of
the elements over threads or ranks gives the same bits."""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from fastopt._kernels.driver cimport _team_started_now, pass_done, plan_threads, resolve_threads

cnp.import_array()

ctypedef fused real:
    float
    double

cdef enum:
    TILE = 2048      # elements per tile: the float64 accumulator stays in L1


cdef void _tile(real* out, const real** src, int nsrc, Py_ssize_t lo, Py_ssize_t hi, double p) noexcept nogil:
    cdef double acc[TILE]
    cdef Py_ssize_t i, n = hi - lo
    cdef int r
    cdef const real* s = src[0] + lo
    for i in range(n):  # vec: first
        acc[i] = <double>s[i]
    for r in range(1, nsrc):
        s = src[r] + lo
        for i in range(n):  # vec: add
            acc[i] = acc[i] + <double>s[i]
    for i in range(n):  # vec: store
        out[lo + i] = <real>(acc[i] / p)


cdef void _mean(real* out, const real** src, int nsrc, Py_ssize_t n, int nt) noexcept nogil:
    cdef Py_ssize_t ntiles = (n + TILE - 1) // TILE, t, hi
    cdef double p = <double>nsrc
    for t in prange(ntiles, num_threads=nt, schedule="static"):
        hi = (t + 1) * TILE
        if hi > n:
            hi = n
        _tile(out, src, nsrc, t * TILE, hi, p)


def mean_into_c(cnp.ndarray out, list sources):
    """``out`` = the mean of ``sources`` (C-contiguous arrays of ``out``'s dtype and
    size; checked by the caller). Threads as the optimizers' (small arrays: one)."""
    cdef int nsrc = len(sources), k, nt, wanted
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out), nbytes
    cdef void** ptrs = <void**>malloc(max(nsrc, 1) * sizeof(void*))
    if ptrs == NULL:
        raise MemoryError()
    try:
        for k in range(nsrc):
            ptrs[k] = cnp.PyArray_DATA(<cnp.ndarray>sources[k])
        nbytes = n * (nsrc + 1) * cnp.PyArray_ITEMSIZE(out)
        wanted = resolve_threads(0)
        nt = plan_threads(nbytes, wanted)
        if nt > 1:
            _team_started_now()
        if cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32:
            with nogil:
                _mean(<float*>cnp.PyArray_DATA(out), <const float**>ptrs, nsrc, n, nt)
        else:
            with nogil:
                _mean(<double*>cnp.PyArray_DATA(out), <const double**>ptrs, nsrc, n, nt)
        pass_done(nbytes, nt, wanted)
    finally:
        free(ptrs)
