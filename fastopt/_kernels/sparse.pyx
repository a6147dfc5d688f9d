# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled pieces of a sparse (row-wise) step besides the row kernels themselves
(``rows.pyx``): coalescing the gradient rows, the global-norm reduction over them and
the "exact" mode's per-row step counters.

Coalescing is deterministic in the strong sense: the summed row does not depend on the
order in which equal indices arrive (nor on threads: it runs on the calling thread).
A row index that appears once keeps its values; twice, ``a + b`` (IEEE addition is
commutative); three or more times, each column's values are summed in ascending
order of value, in the parameter's precision, so any permutation of the duplicates
gives the same bits. (Only a column holding NaN may differ in the NaN's payload.)
"""
cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastopt._kernels._types cimport Slot
from fastopt._kernels.layout cimport C_HAS_WD, C_WD

import numpy as np

cnp.import_array()

cdef extern from "fo_prefetch.h":
    void fo_prefetch_span(const char* a, Py_ssize_t nbytes) noexcept nogil

cdef enum:
    PREFETCH_AHEAD = 8

ctypedef fused real:
    float
    double


cdef Py_ssize_t _first_bad(const cnp.int64_t* idx, Py_ssize_t n, Py_ssize_t nrows, bint* ordered) noexcept nogil:
    # the first index outside [0, nrows), or -1; ordered: strictly increasing (no duplicates)
    cdef Py_ssize_t i
    cdef bint inc = True
    for i in range(n):
        if idx[i] < 0 or idx[i] >= nrows:
            return i
        if i > 0 and idx[i] <= idx[i - 1]:
            inc = False
    ordered[0] = inc
    return -1


def check_indices(cnp.ndarray idx, Py_ssize_t nrows, str name):
    """Raise ValueError naming ``name`` if an index of ``idx`` (int64, 1-D, contiguous)
    is negative or ``>= nrows``; return whether the indices are strictly increasing
    (already coalesced)."""
    cdef bint ordered = True
    cdef Py_ssize_t bad
    cdef const cnp.int64_t* p = <const cnp.int64_t*>cnp.PyArray_DATA(idx)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx)
    with nogil:
        bad = _first_bad(p, n, nrows, &ordered)
    if bad >= 0:
        v = int(idx[bad])
        what = "negative" if v < 0 else f"out of range for a parameter of {nrows} rows"
        raise ValueError(f"{name}[{bad}] = {v} is {what}; nothing was updated")
    return ordered


cdef inline void _sort(real* a, Py_ssize_t m) noexcept nogil:
    # insertion sort: duplicate groups are small; a large group costs m² but stays correct
    cdef Py_ssize_t i, j
    cdef real x
    for i in range(1, m):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j = j - 1
        a[j + 1] = x


cdef int _sum_groups(const cnp.int64_t* idx, const cnp.intp_t* order, Py_ssize_t n, const real* vals,
                     Py_ssize_t dim, Py_ssize_t* rows, real* out) noexcept nogil:
    # idx: the indices in sorted order (idx[i] belongs to vals row order[i])
    cdef Py_ssize_t a = 0, b, m, j, u = 0, i, most = 0
    cdef const real* x
    cdef const real* y
    cdef real* o
    cdef real acc
    cdef real* tmp
    while a < n:                                   # the largest group, for the scratch buffer
        b = a + 1
        while b < n and idx[b] == idx[a]:
            b = b + 1
        if b - a > most:
            most = b - a
        a = b
    tmp = <real*>malloc((most if most > 0 else 1) * sizeof(real))
    if tmp == NULL:
        return -1
    a = 0
    while a < n:
        b = a + 1
        while b < n and idx[b] == idx[a]:
            b = b + 1
        m = b - a
        rows[u] = idx[a]
        if a + PREFETCH_AHEAD < n:                 # the value rows come in index order: scattered
            fo_prefetch_span(<const char*>(vals + order[a + PREFETCH_AHEAD] * dim), dim * sizeof(real))
        o = out + u * dim
        x = vals + order[a] * dim
        if m == 1:
            memcpy(o, x, dim * sizeof(real))
        elif m == 2:
            y = vals + order[a + 1] * dim
            for j in range(dim):
                o[j] = x[j] + y[j]
        else:
            for j in range(dim):
                for i in range(m):
                    tmp[i] = vals[order[a + i] * dim + j]
                _sort(tmp, m)
                acc = tmp[0]
                for i in range(1, m):
                    acc = acc + tmp[i]
                o[j] = acc
        u = u + 1
        a = b
    free(tmp)
    return 0


cdef int _index_groups(const cnp.int64_t* idx, const cnp.intp_t* order, Py_ssize_t n, const real* vals,
                       Py_ssize_t dim, Py_ssize_t* rows, Py_ssize_t* src, real* dup) noexcept nogil:
    # idx sorted (idx[i] belongs to vals row order[i]); a row given once points at its
    # values row, a duplicated row at its sum in dup (summed as _sum_groups does)
    cdef Py_ssize_t a = 0, b, u = 0, d = 0, i, j, m, most = 0
    cdef real* tmp
    cdef real* o
    cdef real acc
    cdef const real* x
    cdef const real* y
    while a < n:
        b = a + 1
        while b < n and idx[b] == idx[a]:
            b = b + 1
        if b - a > most:
            most = b - a
        a = b
    tmp = <real*>malloc((most if most > 0 else 1) * sizeof(real))
    if tmp == NULL:
        return -1
    a = 0
    while a < n:
        b = a + 1
        while b < n and idx[b] == idx[a]:
            b = b + 1
        m = b - a
        rows[u] = idx[a]
        if m == 1:
            src[u] = order[a]
        else:
            src[u] = -1 - d
            o = dup + d * dim
            x = vals + order[a] * dim
            if m == 2:
                y = vals + order[a + 1] * dim
                for j in range(dim):
                    o[j] = x[j] + y[j]
            else:
                for j in range(dim):
                    for i in range(m):
                        tmp[i] = vals[order[a + i] * dim + j]
                    _sort(tmp, m)
                    acc = tmp[0]
                    for i in range(1, m):
                        acc = acc + tmp[i]
                    o[j] = acc
            d = d + 1
        u = u + 1
        a = b
    free(tmp)
    return 0


cdef enum:
    RADIX_BITS = 11


cdef int _radix_order(const cnp.int64_t* idx, Py_ssize_t n, Py_ssize_t nrows, cnp.int64_t* keys,
                      cnp.intp_t* order) noexcept nogil:
    # stable LSD radix sort of the (checked, in [0, nrows)) indices, RADIX_BITS a pass:
    # keys gets them sorted, order their positions (equal indices keep their input order)
    cdef Py_ssize_t i, b, nb = 1 << RADIX_BITS, total
    cdef int shift = 0, bits = 0
    cdef Py_ssize_t* count = <Py_ssize_t*>malloc(nb * sizeof(Py_ssize_t))
    cdef cnp.int64_t* k2 = <cnp.int64_t*>malloc((n if n > 0 else 1) * sizeof(cnp.int64_t))
    cdef cnp.intp_t* o2 = <cnp.intp_t*>malloc((n if n > 0 else 1) * sizeof(cnp.intp_t))
    cdef cnp.int64_t* kt
    cdef cnp.intp_t* ot
    cdef cnp.int64_t d
    if count == NULL or k2 == NULL or o2 == NULL:
        free(count)
        free(k2)
        free(o2)
        return -1
    while (nrows - 1) >> bits:
        bits = bits + 1
    for i in range(n):
        keys[i] = idx[i]
        order[i] = i
    while shift < bits:
        for b in range(nb):
            count[b] = 0
        for i in range(n):
            count[(keys[i] >> shift) & (nb - 1)] += 1
        total = 0
        for b in range(nb):
            d = count[b]
            count[b] = total
            total = total + d
        for i in range(n):
            b = (keys[i] >> shift) & (nb - 1)
            k2[count[b]] = keys[i]
            o2[count[b]] = order[i]
            count[b] += 1
        kt = keys
        keys = k2
        k2 = kt
        ot = order
        order = o2
        o2 = ot
        shift = shift + RADIX_BITS
    if ((bits + RADIX_BITS - 1) // RADIX_BITS) % 2 == 1:
        # an odd number of passes left the result in the scratch buffers: copy it back
        memcpy(k2, keys, n * sizeof(cnp.int64_t))
        memcpy(o2, order, n * sizeof(cnp.intp_t))
        free(keys)
        free(order)
    else:
        free(k2)
        free(o2)
    free(count)
    return 0


def sorted_order(cnp.ndarray idx, Py_ssize_t nrows):
    """``(sorted indices, order)``: ``idx`` (int64, checked to lie in [0, nrows)) sorted
    stably, as ``np.argsort(idx, kind="stable")`` would order them, by a radix sort."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx)
    cdef cnp.ndarray keys = np.empty(n, np.int64)
    cdef cnp.ndarray order = np.empty(n, np.intp)
    cdef int rc
    with nogil:
        rc = _radix_order(<const cnp.int64_t*>cnp.PyArray_DATA(idx), n, nrows,
                          <cnp.int64_t*>cnp.PyArray_DATA(keys), <cnp.intp_t*>cnp.PyArray_DATA(order))
    if rc < 0:
        raise MemoryError()
    return keys, order


def coalesce_index(cnp.ndarray idx, cnp.ndarray vals, Py_ssize_t nrows=-1):
    """``(rows, src, dup)``: :func:`coalesce` without copying the rows given once. ``rows``:
    the sorted unique indices; touched row ``r``'s gradient is ``vals[src[r]]`` when
    ``src[r] >= 0``, else ``dup[-1 - src[r]]`` (a duplicated row's sum, as in
    :func:`coalesce`). ``nrows`` (> every index; the indices must have been checked):
    sort by radix; -1: by NumPy's stable argsort."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx), dim = vals.shape[1], nuniq = 0, ndup = 0, i, run = 0
    cdef cnp.ndarray order, sorted_idx
    if nrows > 0:
        sorted_idx, order = sorted_order(idx, nrows)
    else:
        order = np.argsort(idx, kind="stable").astype(np.intp, copy=False)
        sorted_idx = np.ascontiguousarray(idx[order], dtype=np.int64)
    cdef const cnp.int64_t* ip = <const cnp.int64_t*>cnp.PyArray_DATA(sorted_idx)
    for i in range(n):
        if i == 0 or ip[i] != ip[i - 1]:
            nuniq = nuniq + 1
            run = 1
        else:
            run = run + 1
            if run == 2:
                ndup = ndup + 1
    cdef cnp.ndarray rows = np.empty(nuniq, np.intp)
    cdef cnp.ndarray src = np.empty(nuniq, np.intp)
    cdef cnp.ndarray dup = np.empty((ndup, dim), vals.dtype)
    cdef int rc
    cdef const cnp.intp_t* op = <const cnp.intp_t*>cnp.PyArray_DATA(order)
    cdef Py_ssize_t* rp = <Py_ssize_t*>cnp.PyArray_DATA(rows)
    cdef Py_ssize_t* sp = <Py_ssize_t*>cnp.PyArray_DATA(src)
    if cnp.PyArray_TYPE(vals) == cnp.NPY_FLOAT32:
        with nogil:
            rc = _index_groups(ip, op, n, <const float*>cnp.PyArray_DATA(vals), dim, rp, sp,
                               <float*>cnp.PyArray_DATA(dup))
    else:
        with nogil:
            rc = _index_groups(ip, op, n, <const double*>cnp.PyArray_DATA(vals), dim, rp, sp,
                               <double*>cnp.PyArray_DATA(dup))
    if rc < 0:
        raise MemoryError()
    return rows, src, dup


def coalesce(cnp.ndarray idx, cnp.ndarray vals, Py_ssize_t nrows=-1):
    """``(rows, summed)``: the sorted unique indices of ``idx`` (int64, checked) and, per
    row, the sum of its ``vals`` rows (``vals``: C-contiguous ``(len(idx), dim)``) in the
    order described in the module docstring. New arrays; the inputs are not changed.
    ``nrows`` as for :func:`coalesce_index`."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx), dim = vals.shape[1] if vals.ndim == 2 else 0, nuniq = 0, i
    cdef cnp.ndarray order, sorted_idx
    if nrows > 0:
        sorted_idx, order = sorted_order(idx, nrows)
    else:
        order = np.argsort(idx, kind="stable").astype(np.intp, copy=False)
        sorted_idx = np.ascontiguousarray(idx[order], dtype=np.int64)
    cdef const cnp.int64_t* ip = <const cnp.int64_t*>cnp.PyArray_DATA(sorted_idx)
    cdef const cnp.intp_t* op = <const cnp.intp_t*>cnp.PyArray_DATA(order)
    for i in range(n):
        if i == 0 or ip[i] != ip[i - 1]:
            nuniq = nuniq + 1
    cdef cnp.ndarray rows = np.empty(nuniq, np.intp)
    cdef cnp.ndarray out = np.empty((nuniq, dim), vals.dtype)
    cdef int rc
    cdef Py_ssize_t* rp = <Py_ssize_t*>cnp.PyArray_DATA(rows)
    if vals.dtype == np.float32:
        with nogil:
            rc = _sum_groups(ip, op, n, <const float*>cnp.PyArray_DATA(vals), dim, rp,
                             <float*>cnp.PyArray_DATA(out))
    else:
        with nogil:
            rc = _sum_groups(ip, op, n, <const double*>cnp.PyArray_DATA(vals), dim, rp,
                             <double*>cnp.PyArray_DATA(out))
    if rc < 0:
        raise MemoryError()
    return rows, out


cdef void _row_sumsq(const real* g, const real* p, const Py_ssize_t* rows, Py_ssize_t nrows, Py_ssize_t dim,
                     const double* scal, const Py_ssize_t* src, const real* dup, double* res) noexcept nogil:
    # eight float64 lanes by column, rows in order: a fixed association on one thread
    cdef int has_wd = scal[C_HAS_WD] != 0.0
    cdef real wd = <real>scal[C_WD]
    cdef double acc[8]
    cdef double bad[8]
    cdef Py_ssize_t r, j, k
    cdef real x
    cdef const real* pr
    cdef const real* gr
    for k in range(8):
        acc[k] = 0.0
        bad[k] = 0.0
    for r in range(nrows):
        pr = p + rows[r] * dim
        gr = g + r * dim if src == NULL else (g + src[r] * dim if src[r] >= 0 else dup + (-1 - src[r]) * dim)
        for j in range(dim):
            x = gr[j]
            bad[j & 7] += <double>(x - x)          # 0 for finite x, NaN for inf and NaN
            x = x + wd * pr[j] if has_wd else x
            acc[j & 7] += <double>x * <double>x
    res[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    res[1] = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]))


cdef int sumsq_rows(const Slot* slots, Py_ssize_t nslots, double* sumsq) noexcept nogil:
    """Sum of squares of every row slot's gradient (after coupled weight decay) in
    float64, slot after slot on the calling thread; 1 if any element is not finite."""
    cdef Py_ssize_t k
    cdef double res[2]
    cdef double total = 0.0, bad = 0.0
    for k in range(nslots):
        if slots[k].dim == 0:
            continue
        if slots[k].itemsize == 4:
            _row_sumsq(<const float*>slots[k].buf[1], <const float*>slots[k].buf[0], slots[k].rows,
                       slots[k].n // slots[k].dim, slots[k].dim, slots[k].scal, slots[k].src,
                       <const float*>slots[k].dup, res)
        else:
            _row_sumsq(<const double*>slots[k].buf[1], <const double*>slots[k].buf[0], slots[k].rows,
                       slots[k].n // slots[k].dim, slots[k].dim, slots[k].scal, slots[k].src,
                       <const double*>slots[k].dup, res)
        total = total + res[0]
        bad = bad + res[1]
    sumsq[0] = total
    return 0 if bad == 0.0 else 1


cdef void mark_rows(const Slot* slots, Py_ssize_t nslots) noexcept nogil:
    """Exact mode, after the update: every touched row was last updated at this step."""
    cdef Py_ssize_t k, r
    cdef long long* last
    for k in range(nslots):
        last = <long long*>slots[k].last
        if last == NULL or slots[k].dim == 0:
            continue
        for r in range(slots[k].n // slots[k].dim):
            last[slots[k].rows[r]] = slots[k].step
