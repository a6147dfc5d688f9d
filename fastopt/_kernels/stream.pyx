# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, cpow=True
"""Streaming kernels that measure the memory bus in the same process as a step.

``stream(grad, rw)`` reads ``grad`` and reads-modifies-writes every array of ``rw`` in
one pass, the access pattern of an update rule with ``len(rw) - 1`` state buffers, with
the same thread split and threshold as the rule kernels. ``copy(dst, src)`` is the
plain two-array streaming copy. Both run serially below the kernels' serial threshold.
"""
cimport numpy as cnp
from cython.parallel cimport prange

from fastopt._kernels.driver cimport _team_started_now, pass_done, plan_threads, resolve_threads

import numpy as np

cnp.import_array()

ctypedef fused real:
    float
    double


cdef void _rw(real* g, real** w, int nw, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # Every load of an element comes before every store, as in the generated rule
    # kernels. Interleaved (w0 += g; w1 += g; ...) each load of w[k+1][i] followed the
    # store to w[k][i] and, with the arrays at one offset within a 4 KiB page (as a
    # parameter and its state are), waited on it (4K aliasing): in cache the stream
    # then ran up to 2x slower than the Adam and AMSGrad steps it should bound.
    cdef Py_ssize_t i
    cdef real x, y0, y1, y2, y3, y4
    cdef real* w0 = w[0]
    cdef real* w1
    cdef real* w2
    cdef real* w3
    cdef real* w4
    if nw == 1:
        for i in range(a, b):
            x = g[i]
            y0 = w0[i]
            w0[i] = y0 + x
    elif nw == 2:
        w1 = w[1]
        for i in range(a, b):
            x = g[i]
            y0 = w0[i]
            y1 = w1[i]
            w0[i] = y0 + x
            w1[i] = y1 + x
    elif nw == 3:
        w1 = w[1]
        w2 = w[2]
        for i in range(a, b):
            x = g[i]
            y0 = w0[i]
            y1 = w1[i]
            y2 = w2[i]
            w0[i] = y0 + x
            w1[i] = y1 + x
            w2[i] = y2 + x
    elif nw == 4:
        w1 = w[1]
        w2 = w[2]
        w3 = w[3]
        for i in range(a, b):
            x = g[i]
            y0 = w0[i]
            y1 = w1[i]
            y2 = w2[i]
            y3 = w3[i]
            w0[i] = y0 + x
            w1[i] = y1 + x
            w2[i] = y2 + x
            w3[i] = y3 + x
    else:
        # not vectorised: six arrays need 15 runtime alias checks, more than GCC's
        # vect-max-version-for-alias-checks (10). No rule has four state buffers yet.
        w1 = w[1]
        w2 = w[2]
        w3 = w[3]
        w4 = w[4]
        for i in range(a, b):
            x = g[i]
            y0 = w0[i]
            y1 = w1[i]
            y2 = w2[i]
            y3 = w3[i]
            y4 = w4[i]
            w0[i] = y0 + x
            w1[i] = y1 + x
            w2[i] = y2 + x
            w3[i] = y3 + x
            w4[i] = y4 + x


cdef void _copy(real* dst, real* src, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(a, b):
        dst[i] = src[i]


cdef inline Py_ssize_t _cut(Py_ssize_t n, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    if part >= parts:
        return n
    cdef Py_ssize_t x = <Py_ssize_t>((<double>n) * part / parts)
    return x - x % 16


def _check(arrays, written):
    """``arrays[k]`` for k in ``written`` are written: they must be writeable."""
    dt = arrays[0].dtype
    n = arrays[0].size
    for k, a in enumerate(arrays):
        if (not isinstance(a, cnp.ndarray) or a.dtype != dt or a.size != n or not a.flags.c_contiguous
                or not a.flags.aligned or not a.dtype.isnative):
            raise ValueError("stream kernels need aligned, C-contiguous native arrays of one dtype and size")
        if k in written and not a.flags.writeable:
            raise ValueError(f"stream kernels write array {k}, which is read-only")
        if dt not in (np.float32, np.float64):
            raise TypeError("stream kernels take float32 or float64")
    return dt == np.float32, n


def stream(grad, rw, int threads=0):
    """For every ``w`` in ``rw``: ``w += grad`` in one fused pass (1 + len(rw) arrays read,
    len(rw) written): the memory traffic of a rule with ``len(rw) - 1`` state buffers."""
    if not 1 <= len(rw) <= 5:
        raise ValueError("rw must hold 1 to 5 arrays")
    f32, n = _check([grad] + list(rw), range(1, 1 + len(rw)))
    cdef int nw = len(rw)
    cdef Py_ssize_t nbytes = (1 + 2 * nw) * n * grad.itemsize
    cdef int wanted = resolve_threads(threads)
    cdef int nt = plan_threads(nbytes, wanted)
    cdef void* ptrs[5]
    cdef Py_ssize_t part, N = n
    for k in range(nw):
        ptrs[k] = cnp.PyArray_DATA(rw[k])
    cdef void* g = cnp.PyArray_DATA(grad)
    if nt > 1:
        _team_started_now()
    if f32:
        for part in prange(nt, num_threads=nt, schedule="static", chunksize=1, nogil=True):
            _rw(<float*>g, <float**>ptrs, nw, _cut(N, part, nt), _cut(N, part + 1, nt))
    else:
        for part in prange(nt, num_threads=nt, schedule="static", chunksize=1, nogil=True):
            _rw(<double*>g, <double**>ptrs, nw, _cut(N, part, nt), _cut(N, part + 1, nt))
    pass_done(nbytes, nt, wanted)


def copy(dst, src, int threads=0):
    """``dst[:] = src`` as a parallel streaming copy (2 arrays, one read, one written)."""
    f32, n = _check([dst, src], (0,))
    cdef Py_ssize_t nbytes = 2 * n * dst.itemsize
    cdef int wanted = resolve_threads(threads)
    cdef int nt = plan_threads(nbytes, wanted)
    cdef void* d = cnp.PyArray_DATA(dst)
    cdef void* s = cnp.PyArray_DATA(src)
    cdef Py_ssize_t part, N = n
    if nt > 1:
        _team_started_now()
    if f32:
        for part in prange(nt, num_threads=nt, schedule="static", chunksize=1, nogil=True):
            _copy(<float*>d, <float*>s, _cut(N, part, nt), _cut(N, part + 1, nt))
    else:
        for part in prange(nt, num_threads=nt, schedule="static", chunksize=1, nogil=True):
            _copy(<double*>d, <double*>s, _cut(N, part, nt), _cut(N, part + 1, nt))
    pass_done(nbytes, nt, wanted)
