# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled pieces of a sparse (row-wise) step besides the row kernels themselves
(``rows.pyx``): coalescing the gradient rows, the global-norm reduction over them and
the "exact" mode's per-row step counters.

Coalescing is deterministic in the strong sense: the summed row does not depend on the
order in which equal indices arrive, nor on the number of threads. A row index that
appears once keeps its values; twice, ``a + b`` (IEEE addition is commutative); three
or more times, each column's values are summed exactly on two grids fixed by the
column's largest magnitude and the group's size, then rounded once (the binned sum
described above ``_bits``), so any permutation of the duplicates gives the same bits.
(Only a column holding NaN may differ in the NaN's payload.)

How, in parallel: the indices are radix-sorted stably (each pass counts the digits of
fixed chunks apart and scatters chunk t after the same digits of chunks < t, so the
order is the stable one whatever the thread count); input already in non-decreasing
order is not sorted. The groups of equal indices are then summed, each by one thread
(dynamic scheduling changes who, never how): a group of up to ``BIG_BYTES`` (256 KB)
whole, a cache line of columns at a time (``fo_binsum.h``); a larger group (a power-law
batch's hot rows appear thousands of times) in blocks of ``COL_BLOCK`` columns that the
threads share. Each group's rows are read where the batch put them, so the rows of the
groups a couple of places ahead are prefetched. With a workspace
(:func:`new_workspace`) the buffers are kept from one step to the next: no fresh pages
to fault in.
"""
from cython.parallel cimport prange
cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY
from libc.string cimport memcpy

from fastopt._kernels._types cimport Slot
from fastopt._kernels.driver cimport pass_done, plan_threads, resolve_threads
from fastopt._kernels.layout cimport C_HAS_WD, C_WD

import numpy as np

cnp.import_array()

cdef extern from "fo_prefetch.h":
    void fo_prefetch_l2_span(const char* a, Py_ssize_t nbytes) noexcept nogil

cdef extern from "fo_binsum.h":
    int fo_bs_line_f(const float* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim, Py_ssize_t col,
                     Py_ssize_t w, int L, Py_ssize_t pf, float* out) noexcept nogil
    int fo_bs_line_d(const double* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim, Py_ssize_t col,
                     Py_ssize_t w, int L, Py_ssize_t pf, double* out) noexcept nogil

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


cdef enum:
    BIG_BYTES = 256 * 1024  # a group of more bytes is split into column blocks, summed by any thread
    COL_BLOCK = 16          # columns of a large group's work item (a 64-byte line of float32)
    PARALLEL_SORT = 1 << 20  # indices from which their radix sort is worth a team (serial: ~6 ns each)
    IDX_DIGIT_MAX = 12      # at most this many bits per pass of the index radix sort
    GROUP_CHUNK = 64        # groups a thread claims at a time
    GROUPS_AHEAD = 2        # a group's first rows are prefetched this many groups before its sum
    GROUP_PREFETCH = 32     # ... that many of its rows at most (a power-law batch's groups: 3 to ~100)


# --- an order-independent sum of a group's rows ---------------------------------------
# Each column's values are split on two fixed grids that depend only on the column's
# largest magnitude and the group's size (never on the order of its rows), in double:
# with |x| < 2^e and 2^L > m (L = bit_length(m) >= 2),
#     q1 = (x + C1) - C1,   C1 = 1.5 * 2^(e + L):      x rounded to the grid 2^(e + L - 52)
#     q2 = (r + C2) - C2,   C2 = 1.5 * 2^(e + 2L - 53): r = x - q1 (exact) on 2^(e + 2L - 105)
# Every q1 and q2 of the column is a multiple of its grid and their sums stay below 2^53
# grid steps, so Σq1 and Σq2 are exact in any order; the result is (Σq1 + Σq2) rounded
# once to the parameter's type. (What lies below the second grid, 2^(e + 2L - 105), is
# dropped, half a step at most per value: error <= m * 2^(e + 2L - 106), relative to
# the column's largest value.) This is "binned" reproducible summation (Demmel & Nguyen, 2013)
# with two bins. A float64 column whose e + L would pass 1023 is scaled by 2^-64 first
# (and back after). Columns of zeros sum to -0 exactly when all are -0; a column with a
# NaN, or with +inf and -inf, sums to NaN; one with infinities of one sign to that infinity.

cdef inline cnp.uint64_t _bits(real x) noexcept nogil:
    cdef cnp.uint32_t u
    cdef cnp.uint64_t w
    if real is float:
        memcpy(&u, &x, 4)
        return u
    else:
        memcpy(&w, &x, 8)
        return w


cdef real _nonfinite_sum(const real* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim,
                         Py_ssize_t col) noexcept nogil:
    # a column holding inf or NaN: NaN if it holds a NaN or both infinities, else the infinity
    cdef Py_ssize_t i
    cdef real x, inf = <real>INFINITY
    cdef bint pos = False, neg = False
    for i in range(m):
        x = vals[order[i] * dim + col]
        if x != x:
            return x
        pos = pos or x == inf
        neg = neg or x == -inf
    if pos and neg:
        return inf - inf
    return inf if pos else -inf


cdef void _special_col(const real* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim,
                       Py_ssize_t col, real* o) noexcept nogil:
    # column col of a line fo_binsum.h flagged: all zeros (-0 exactly when all are -0),
    # or holding inf/NaN; any other column of the line keeps its binned sum
    cdef Py_ssize_t i
    cdef cnp.uint64_t u, mx = 0, an = <cnp.uint64_t>0xFFFFFFFFFFFFFFFF, inf, absmask
    if real is float:
        absmask, inf = 0x7FFFFFFF, 0x7F800000
    else:
        absmask, inf = 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000
    for i in range(m):
        u = _bits(vals[order[i] * dim + col])
        an = an & u
        mx = mx if mx > (u & absmask) else u & absmask
    if mx >= inf:
        o[col] = _nonfinite_sum(vals, order, m, dim, col)
    elif mx == 0:
        o[col] = <real>-0.0 if an >> (8 * sizeof(real) - 1) else <real>0.0


cdef void _binned_sum(const real* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim,
                      Py_ssize_t c0, Py_ssize_t c1, real* o) noexcept nogil:
    # columns [c0, c1) of the sum of the m >= 3 value rows order[0:m) into o[c0:c1), as
    # described above, a line of columns at a time (fo_binsum.h: one pass for the
    # largest magnitudes, one for the grids' sums). The first line of a whole row asks
    # for the rest of each row too.
    cdef Py_ssize_t c, cb = c0, w, pf, line = 64 // sizeof(real)
    cdef int special, L = 0
    while (<Py_ssize_t>1 << L) <= m:
        L = L + 1
    while cb < c1:
        w = c1 - cb if c1 - cb < line else line
        pf = (dim - cb) * sizeof(real) if cb == 0 and c1 == dim else 64
        if real is float:
            special = fo_bs_line_f(vals, order, m, dim, cb, w, L, pf, o + cb)
        else:
            special = fo_bs_line_d(vals, order, m, dim, cb, w, L, pf, o + cb)
        if special:
            for c in range(cb, cb + w):
                _special_col(vals, order, m, dim, c, o)
        cb = cb + w


cdef inline void _group_sum(const real* vals, const cnp.intp_t* order, Py_ssize_t m, Py_ssize_t dim,
                            real* o) noexcept nogil:
    # the sum of the m value rows order[0:m): one row as it is, two a + b, more binned
    cdef const real* x = vals + order[0] * dim
    cdef const real* y
    cdef Py_ssize_t j
    if m == 1:
        memcpy(o, x, dim * sizeof(real))
    elif m == 2:
        y = vals + order[1] * dim
        for j in range(dim):
            o[j] = x[j] + y[j]
    else:
        _binned_sum(vals, order, m, dim, 0, dim, o)


cdef inline bint _is_small(Py_ssize_t m, Py_ssize_t dim, Py_ssize_t itemsize) noexcept nogil:
    return m <= 2 or m * dim * itemsize <= BIG_BYTES


cdef inline void _prefetch_group(const real* vals, const cnp.intp_t* order, Py_ssize_t m,
                                 Py_ssize_t dim) noexcept nogil:
    # a group's first GROUP_PREFETCH rows (scattered over the batch), asked for a couple of
    # groups before its sum: a small group's sum is over before a miss it starts itself
    # returns. Into L2: that many lines at once overflow L1's miss buffers (an L1 prefetch
    # then waits or is lost; into L2 the coalescing of a cold power-law batch was 15% faster)
    cdef Py_ssize_t i
    for i in range(m if m < GROUP_PREFETCH else GROUP_PREFETCH):
        fo_prefetch_l2_span(<const char*>(vals + order[i] * dim), dim * sizeof(real))


cdef int _sum_groups(const cnp.int64_t* K, const cnp.intp_t* O, Py_ssize_t n, const real* vals, Py_ssize_t dim,
                     Py_ssize_t* rows, Py_ssize_t* src, real* out, int nt) noexcept nogil:
    # K: the indices sorted (K[i] belongs to value row O[i]). rows: the unique indices.
    # src NULL: out row u is unique row u's sum; else a row given once gets src = its
    # value row and no out row, a duplicated one src = -1 - d and out row d (its sum).
    # Each sum (each column of it) is computed by one thread, and its bits do not
    # depend on the order of the group's rows anyway: nor on nt. Returns -1 if memory
    # ran out.
    cdef Py_ssize_t a = 0, b, u = 0, g = 0, ng, nbig = 0, nblk, item, bg, c0, c1
    cdef Py_ssize_t cap = n if n > 0 else 1
    cdef Py_ssize_t* gs = <Py_ssize_t*>malloc(4 * cap * sizeof(Py_ssize_t))
    cdef Py_ssize_t* gl
    cdef Py_ssize_t* gd
    cdef Py_ssize_t* big
    if gs == NULL:
        return -1
    gl = gs + cap
    gd = gl + cap
    big = gd + cap
    # the groups to sum (start, length, out row), in index order
    while a < n:
        b = a + 1
        while b < n and K[b] == K[a]:
            b = b + 1
        rows[u] = K[a]
        if src != NULL and b - a == 1:
            src[u] = O[a]
        else:
            if src != NULL:
                src[u] = -1 - g
            gs[g] = a
            gl[g] = b - a
            gd[g] = g if src != NULL else u
            if not _is_small(b - a, dim, sizeof(real)):
                big[nbig] = g
                nbig = nbig + 1
            g = g + 1
        u = u + 1
        a = b
    ng = g
    if nt <= 1 or ng < 2 * GROUP_CHUNK:
        for g in range(ng):
            if g + GROUPS_AHEAD < ng and _is_small(gl[g + GROUPS_AHEAD], dim, sizeof(real)):
                _prefetch_group(vals, O + gs[g + GROUPS_AHEAD], gl[g + GROUPS_AHEAD], dim)
            if _is_small(gl[g], dim, sizeof(real)):
                _group_sum(vals, O + gs[g], gl[g], dim, out + gd[g] * dim)
    else:
        for g in prange(ng, num_threads=nt, schedule="dynamic", chunksize=GROUP_CHUNK):
            if g + GROUPS_AHEAD < ng and _is_small(gl[g + GROUPS_AHEAD], dim, sizeof(real)):
                _prefetch_group(vals, O + gs[g + GROUPS_AHEAD], gl[g + GROUPS_AHEAD], dim)
            if _is_small(gl[g], dim, sizeof(real)):
                _group_sum(vals, O + gs[g], gl[g], dim, out + gd[g] * dim)
    # large groups: work items of COL_BLOCK columns of one group
    nblk = (dim + COL_BLOCK - 1) // COL_BLOCK
    if nt > nbig * nblk:
        nt = <int>(nbig * nblk)
    if nt <= 1:
        for item in range(nbig * nblk):
            bg = big[item // nblk]
            c0 = (item % nblk) * COL_BLOCK
            c1 = c0 + COL_BLOCK if c0 + COL_BLOCK < dim else dim
            _binned_sum(vals, O + gs[bg], gl[bg], dim, c0, c1, out + gd[bg] * dim)
    else:
        for item in prange(nbig * nblk, num_threads=nt, schedule="dynamic", chunksize=1):
            bg = big[item // nblk]
            c0 = (item % nblk) * COL_BLOCK
            c1 = c0 + COL_BLOCK if c0 + COL_BLOCK < dim else dim
            _binned_sum(vals, O + gs[bg], gl[bg], dim, c0, c1, out + gd[bg] * dim)
    free(gs)
    return 0


# --- the indices' stable radix sort, parallel over fixed chunks ---------------------------

cdef void _digit_count(const cnp.int64_t* keys, Py_ssize_t lo, Py_ssize_t hi, int shift, Py_ssize_t mask,
                       Py_ssize_t* c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(mask + 1):
        c[i] = 0
    for i in range(lo, hi):
        c[(keys[i] >> shift) & mask] += 1


cdef void _digit_scatter(const cnp.int64_t* keys, const cnp.intp_t* order, Py_ssize_t lo, Py_ssize_t hi, int shift,
                         Py_ssize_t mask, Py_ssize_t* c, cnp.int64_t* k2, cnp.intp_t* o2) noexcept nogil:
    # c: this chunk's first position per digit; order NULL: the identity
    cdef Py_ssize_t i, b, pos
    for i in range(lo, hi):
        b = (keys[i] >> shift) & mask
        pos = c[b]
        c[b] = pos + 1
        k2[pos] = keys[i]
        o2[pos] = order[i] if order != NULL else i


cdef int _radix_order(const cnp.int64_t* idx, Py_ssize_t n, Py_ssize_t nrows, cnp.int64_t* keys,
                      cnp.intp_t* order, cnp.int64_t* k2, cnp.intp_t* o2, int nt) noexcept nogil:
    # stable LSD radix sort of the (checked, in [0, nrows)) indices: keys gets them
    # sorted, order their positions (equal indices keep their input order); k2/o2:
    # scratch of n. Chunk t of nt counts its digits apart and scatters them after the
    # same digits of chunks < t: the result is the stable order, whatever nt is.
    cdef int bits = 0, npass, width, shift, p, t
    cdef Py_ssize_t nb, mask, b, total, d
    cdef Py_ssize_t* count
    cdef const cnp.int64_t* ck = idx
    cdef const cnp.intp_t* co = NULL
    cdef cnp.int64_t* dk
    cdef cnp.intp_t* do
    while (nrows - 1) >> bits:
        bits = bits + 1
    if bits == 0 or n <= 1:
        for d in range(n):
            keys[d] = idx[d]
            order[d] = d
        return 0
    npass = (bits + IDX_DIGIT_MAX - 1) // IDX_DIGIT_MAX
    width = (bits + npass - 1) // npass
    nb = <Py_ssize_t>1 << width
    mask = nb - 1
    if n < PARALLEL_SORT:
        nt = 1
    count = <Py_ssize_t*>malloc(nt * nb * sizeof(Py_ssize_t))
    if count == NULL:
        return -1
    for p in range(npass):
        shift = p * width
        # the last pass writes into keys/order
        if (npass - 1 - p) % 2 == 0:
            dk = keys
            do = order
        else:
            dk = k2
            do = o2
        if nt <= 1:
            _digit_count(ck, 0, n, shift, mask, count)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                _digit_count(ck, n * t // nt, n * (t + 1) // nt, shift, mask, count + t * nb)
        total = 0
        for b in range(nb):
            for t in range(nt):
                d = count[t * nb + b]
                count[t * nb + b] = total
                total = total + d
        if nt <= 1:
            _digit_scatter(ck, co, 0, n, shift, mask, count, dk, do)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                _digit_scatter(ck, co, n * t // nt, n * (t + 1) // nt, shift, mask, count + t * nb, dk, do)
        ck = dk
        co = do
    free(count)
    return 0


cdef bint _nondecreasing(const cnp.int64_t* idx, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(1, n):
        if idx[i] < idx[i - 1]:
            return False
    return True


cdef int _threads_for(int threads, Py_ssize_t nbytes) noexcept nogil:
    # threads > 0: exactly that many (tests, benchmarks); 0: the library's setting, one
    # thread when the work is too small to repay the team
    if threads > 0:
        return resolve_threads(threads)
    return plan_threads(nbytes, resolve_threads(0))


cdef cnp.ndarray _buffer(list ws, int slot, Py_ssize_t n, int typenum):
    # a 1-D array of n elements: from the workspace ws (grown when too small, kept for
    # the next call: no fresh pages to fault in every step), or new when ws is None
    cdef cnp.npy_intp size = n
    cdef cnp.ndarray a
    if ws is None:
        return cnp.PyArray_EMPTY(1, &size, typenum, 0)
    a = ws[slot]
    if a is None or cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_SIZE(a) < n:
        size = n + n // 4 + 16
        a = cnp.PyArray_EMPTY(1, &size, typenum, 0)
        ws[slot] = a
    return a[:n]


def new_workspace():
    """A workspace for :func:`coalesce_index` (its ``ws=``): buffers kept between calls."""
    return [None] * 8


def sorted_order(cnp.ndarray idx, Py_ssize_t nrows, int threads=0, list ws=None):
    """``(sorted indices, order)``: ``idx`` (int64, checked to lie in [0, nrows)) sorted
    stably, as ``np.argsort(idx, kind="stable")`` would order them, by a radix sort over
    fixed chunks (same result for any ``threads``; 0: the library's thread setting)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx)
    cdef cnp.ndarray keys = _buffer(ws, 0, n, cnp.NPY_INT64)
    cdef cnp.ndarray order = _buffer(ws, 1, n, cnp.NPY_INTP)
    cdef cnp.ndarray k2 = _buffer(ws, 2, n, cnp.NPY_INT64)
    cdef cnp.ndarray o2 = _buffer(ws, 3, n, cnp.NPY_INTP)
    cdef int rc, wanted = resolve_threads(threads if threads > 0 else 0)
    cdef int nt = _threads_for(threads, n * 32)
    with nogil:
        rc = _radix_order(<const cnp.int64_t*>cnp.PyArray_DATA(idx), n, nrows,
                          <cnp.int64_t*>cnp.PyArray_DATA(keys), <cnp.intp_t*>cnp.PyArray_DATA(order),
                          <cnp.int64_t*>cnp.PyArray_DATA(k2), <cnp.intp_t*>cnp.PyArray_DATA(o2), nt)
        pass_done(n * 32, nt, wanted)
    if rc < 0:
        raise MemoryError()
    return keys, order


cdef tuple _sorted(cnp.ndarray idx, Py_ssize_t nrows, int threads, list ws):
    # (sorted indices, order): the input itself when it is already in order
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx)
    cdef bint done
    cdef const cnp.int64_t* p = <const cnp.int64_t*>cnp.PyArray_DATA(idx)
    with nogil:
        done = _nondecreasing(p, n)
    if done:
        return idx, None
    if nrows > 0:
        return sorted_order(idx, nrows, threads, ws)
    order = np.argsort(idx, kind="stable").astype(np.intp, copy=False)
    return np.ascontiguousarray(idx[order], dtype=np.int64), order


cdef void _iota(cnp.intp_t* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = i


cdef Py_ssize_t _count_unique(const cnp.int64_t* ip, Py_ssize_t n, Py_ssize_t* ndup) noexcept nogil:
    cdef Py_ssize_t i, nuniq = 0, run = 0
    ndup[0] = 0
    for i in range(n):
        if i == 0 or ip[i] != ip[i - 1]:
            nuniq = nuniq + 1
            run = 1
        else:
            run = run + 1
            if run == 2:
                ndup[0] += 1
    return nuniq


cdef object _coalesce(cnp.ndarray idx, cnp.ndarray vals, Py_ssize_t nrows, int threads, list ws, bint index):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx), dim = vals.shape[1] if vals.ndim == 2 else 0, nuniq, ndup, nsum
    sorted_idx, order = _sorted(idx, nrows, threads, ws)
    if order is None:
        order = _buffer(ws, 4, n, cnp.NPY_INTP)
        _iota(<cnp.intp_t*>cnp.PyArray_DATA(<cnp.ndarray>order), n)
    cdef const cnp.int64_t* ip = <const cnp.int64_t*>cnp.PyArray_DATA(<cnp.ndarray>sorted_idx)
    cdef const cnp.intp_t* op = <const cnp.intp_t*>cnp.PyArray_DATA(<cnp.ndarray>order)
    with nogil:
        nuniq = _count_unique(ip, n, &ndup)
    nsum = ndup if index else nuniq
    cdef cnp.ndarray rows = _buffer(ws, 5, nuniq, cnp.NPY_INTP)
    cdef cnp.ndarray src = _buffer(ws, 6, nuniq, cnp.NPY_INTP) if index else None
    cdef cnp.ndarray out
    cdef cnp.npy_intp shape[2]
    if ws is None:
        shape[0] = nsum
        shape[1] = dim
        out = cnp.PyArray_EMPTY(2, shape, cnp.PyArray_TYPE(vals), 0)
    else:
        out = _buffer(ws, 7, nsum * dim, cnp.PyArray_TYPE(vals)).reshape(nsum, dim)
    cdef Py_ssize_t* rp = <Py_ssize_t*>cnp.PyArray_DATA(rows)
    cdef Py_ssize_t* sp = <Py_ssize_t*>cnp.PyArray_DATA(src) if index else NULL
    cdef int rc, wanted = resolve_threads(threads if threads > 0 else 0)
    cdef Py_ssize_t nbytes = n * (16 + dim * cnp.PyArray_ITEMSIZE(vals))
    cdef int nt = _threads_for(threads, nbytes)
    if cnp.PyArray_TYPE(vals) == cnp.NPY_FLOAT32:
        with nogil:
            rc = _sum_groups(ip, op, n, <const float*>cnp.PyArray_DATA(vals), dim, rp, sp,
                             <float*>cnp.PyArray_DATA(out), nt)
            pass_done(nbytes, nt, wanted)
    else:
        with nogil:
            rc = _sum_groups(ip, op, n, <const double*>cnp.PyArray_DATA(vals), dim, rp, sp,
                             <double*>cnp.PyArray_DATA(out), nt)
            pass_done(nbytes, nt, wanted)
    if rc < 0:
        raise MemoryError()
    return (rows, src, out) if index else (rows, out)


def coalesce_index(cnp.ndarray idx, cnp.ndarray vals, Py_ssize_t nrows=-1, int threads=0, list ws=None):
    """``(rows, src, dup)``: :func:`coalesce` without copying the rows given once. ``rows``:
    the sorted unique indices; touched row ``r``'s gradient is ``vals[src[r]]`` when
    ``src[r] >= 0``, else ``dup[-1 - src[r]]`` (a duplicated row's sum, as in
    :func:`coalesce`). ``nrows`` (> every index; the indices must have been checked):
    sort by radix; -1: by NumPy's stable argsort (input already in non-decreasing order
    is not sorted again). ``threads``: as for :func:`sorted_order`. ``ws``: None, or a
    :func:`new_workspace` whose buffers the results are views of (valid until its next
    use)."""
    return _coalesce(idx, vals, nrows, threads, ws, True)


def coalesce(cnp.ndarray idx, cnp.ndarray vals, Py_ssize_t nrows=-1, int threads=0, list ws=None):
    """``(rows, summed)``: the sorted unique indices of ``idx`` (int64, checked) and, per
    row, the sum of its ``vals`` rows (``vals``: C-contiguous ``(len(idx), dim)``) in the
    order described in the module docstring. The inputs are not changed. ``nrows``,
    ``threads`` and ``ws`` as for :func:`coalesce_index` (``ws`` None: new arrays)."""
    return _coalesce(idx, vals, nrows, threads, ws, False)


cdef enum:
    NORM_BLOCK = 8192       # the driver's norm blocks (REDUCE_BLOCK), so the order is the reference's


cdef inline double _lanes(double* acc) noexcept nogil:
    cdef double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    cdef int k
    for k in range(8):
        acc[k] = 0.0
    return s


cdef void _row_sumsq(const real* g, const real* p, const Py_ssize_t* rows, Py_ssize_t nrows, Py_ssize_t dim,
                     const double* scal, const Py_ssize_t* src, const real* dup, double* res) noexcept nogil:
    # the driver's order over the coalesced rows one after another: blocks of NORM_BLOCK
    # elements, element e of a block into lane e % 8, the blocks' sums added to res[0]
    # (the running total) left to right, on one thread
    cdef int has_wd = scal[C_HAS_WD] != 0.0
    cdef real wd = <real>scal[C_WD]
    cdef double acc[8]
    cdef double bad[8]
    cdef Py_ssize_t r, j, k, e = 0
    cdef double total = res[0]
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
            bad[e & 7] += <double>(x - x)          # 0 for finite x, NaN for inf and NaN
            x = x + wd * pr[j] if has_wd else x
            acc[e & 7] += <double>x * <double>x
            e = e + 1
            if e % NORM_BLOCK == 0:
                total = total + _lanes(acc)
    if e % NORM_BLOCK:
        total = total + _lanes(acc)
    res[0] = total
    res[1] = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]))


cdef int sumsq_rows(const Slot* slots, Py_ssize_t nslots, double* sumsq) noexcept nogil:
    """Add to ``sumsq[0]`` (a running total) the sum of squares of every row slot's
    gradient (after coupled weight decay) in float64, slot after slot on the calling
    thread, in the driver's block order; 1 if any element is not finite."""
    cdef Py_ssize_t k
    cdef double res[2]
    cdef double bad = 0.0
    res[0] = sumsq[0]
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
        bad = bad + res[1]
    sumsq[0] = res[0]
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
