# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Row-wise AdaGrad's kernel: one accumulator per row of a 2-D parameter (the
memory-saving AdaGrad of recommendation embeddings, FBGEMM/TorchRec's "rowwise
adagrad"). For each touched row ``r`` with (coalesced, pre-processed) gradient row ``g``:

    s_r += mean_j(g_j²);   p_r,j -= clr · g_j / (√s_r + ε)

The mean is a float64 sum over eight lanes (column ``j`` goes to lane ``j % 8``, the
lanes added as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``), divided by ``dim`` and rounded
once to the parameter's precision; everything else runs in that precision. A row is
updated by one thread from start to end, so the bits never depend on the thread count.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf
cimport numpy as cnp

from fastopt._kernels.driver cimport pass_done, plan_threads, resolve_threads

cdef extern from "fo_prefetch.h":
    void fo_prefetch_span(const char* a, Py_ssize_t nbytes) noexcept nogil

cdef enum:
    PREFETCH_ROWS = 8       # rows ahead whose lines are prefetched (as in the row kernels)

cnp.import_array()

ctypedef fused real:
    float
    double


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void _row(real* p, real* s, const real* g, Py_ssize_t dim, real clr, real eps, real sign,
                      int has_wd, real wd) noexcept nogil:
    cdef double acc[8]
    cdef Py_ssize_t j
    cdef int k
    cdef real x, den, sv
    for k in range(8):
        acc[k] = 0.0
    # lane k sums the elements j = k mod 8 in order, in blocks of 8 (as one loop with
    # acc[j & 7] would: the same bits), which the compiler turns into vector code
    # (weight decay as its own loop: a select on a float operation stays a branch)
    j = 0
    if has_wd:
        while j + 8 <= dim:  # vec: mean_square_wd
            for k in range(8):
                x = g[j + k] * sign + wd * p[j + k]
                acc[k] += <double>x * <double>x
            j = j + 8
    else:
        while j + 8 <= dim:  # vec: mean_square
            for k in range(8):
                x = g[j + k] * sign
                acc[k] += <double>x * <double>x
            j = j + 8
    for k in range(dim - j):
        x = g[j + k] * sign
        x = x + wd * p[j + k] if has_wd else x
        acc[k] += <double>x * <double>x
    sv = s[0] + <real>((((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])))
                       / <double>dim)
    s[0] = sv
    den = _sqrt(sv) + eps
    for j in range(dim):  # vec: update
        x = g[j] * sign
        x = x + wd * p[j] if has_wd else x
        p[j] = p[j] - clr * (x / den)


cdef void _rows(real* p, real* s, const real* g, const Py_ssize_t* rows, Py_ssize_t n, Py_ssize_t dim,
                real clr, real eps, real sign, int has_wd, real wd, int nthreads) noexcept nogil:
    cdef Py_ssize_t r
    if nthreads <= 1:
        for r in range(n):
            if r + PREFETCH_ROWS < n:
                fo_prefetch_span(<const char*>(p + rows[r + PREFETCH_ROWS] * dim), dim * sizeof(real))
                fo_prefetch_span(<const char*>(s + rows[r + PREFETCH_ROWS]), sizeof(real))
            _row(p + rows[r] * dim, s + rows[r], g + r * dim, dim, clr, eps, sign, has_wd, wd)
        return
    for r in prange(n, num_threads=nthreads, schedule="static"):
        if r + PREFETCH_ROWS < n:
            fo_prefetch_span(<const char*>(p + rows[r + PREFETCH_ROWS] * dim), dim * sizeof(real))
            fo_prefetch_span(<const char*>(s + rows[r + PREFETCH_ROWS]), sizeof(real))
        _row(p + rows[r] * dim, s + rows[r], g + r * dim, dim, clr, eps, sign, has_wd, wd)


def rowwise_adagrad(cnp.ndarray param, cnp.ndarray state_sum, cnp.ndarray rows, cnp.ndarray grad_rows,
                    double clr, double eps, bint maximize, double weight_decay, int threads=0):
    """One row-wise AdaGrad step of the rows ``rows`` (intp, unique) of ``param``
    (C-contiguous ``(n, dim)``) with ``grad_rows`` (``(len(rows), dim)``, same dtype) and
    the per-row accumulator ``state_sum`` (``(n,)``). Inputs already checked; in place.
    ``clr``, ``eps``, ``weight_decay`` are rounded once to the parameter's precision."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(rows), dim = param.shape[1]
    cdef int wanted = resolve_threads(threads)
    cdef Py_ssize_t nbytes = n * dim * cnp.PyArray_ITEMSIZE(param) * 3
    cdef int nt = plan_threads(nbytes, wanted)
    cdef const Py_ssize_t* rp = <const Py_ssize_t*>cnp.PyArray_DATA(rows)
    cdef int has_wd = weight_decay != 0.0
    if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32:
        with nogil:
            _rows(<float*>cnp.PyArray_DATA(param), <float*>cnp.PyArray_DATA(state_sum),
                  <const float*>cnp.PyArray_DATA(grad_rows), rp, n, dim, <float>clr, <float>eps,
                  <float>(-1.0 if maximize else 1.0), has_wd, <float>weight_decay, nt)
            pass_done(nbytes, nt, wanted)
    else:
        with nogil:
            _rows(<double*>cnp.PyArray_DATA(param), <double*>cnp.PyArray_DATA(state_sum),
                  <const double*>cnp.PyArray_DATA(grad_rows), rp, n, dim, clr, eps,
                  -1.0 if maximize else 1.0, has_wd, weight_decay, nt)
            pass_done(nbytes, nt, wanted)
