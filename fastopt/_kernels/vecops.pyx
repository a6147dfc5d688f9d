# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, cpow=True
"""Fused vector kernels of the second-order methods (L-BFGS, Newton-CG).

A *vector* is one logical float32/float64 vector split into segments (the parameter
arrays of an optimizer); a :class:`Layout` holds the segment sizes. An argument is
either a flat 1-D array of the whole length (then cut at the segment boundaries) or a
list of arrays, one per segment.

Every reduction is a float64 sum over fixed blocks of ``BLOCK`` elements (blocks start
afresh at every segment): each block is summed in eight interleaved float64 lanes
(element ``lo + 8j + k`` goes to lane k) combined as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``,
and the blocks' sums are added in block order. Which thread computes a block never
changes a bit, so every result is the same for any thread count;
:mod:`fastopt.reference.second_order` does the same arithmetic in NumPy.

A pass writes ``z = a x + b w`` (or ``z = a x``) block by block and then reduces the
block it just wrote while it is still in cache: one parallel region per pass.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.math cimport fabs

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* The stats' eight lanes as one vector (GCC vector extensions): the vectoriser, left
       to the scalar lanes, interleaves eight iterations with shuffles and ends up slower
       than a scalar loop. Lane k still takes elements lo + 8j + k in order, so the bits
       are the scalar lanes'. fo_stats_lanes: see _stats. */
    typedef double fo_v8d __attribute__((vector_size(64)));
    typedef long long fo_v8l __attribute__((vector_size(64)));
    typedef float fo_v8f __attribute__((vector_size(32)));
    static inline fo_v8d fo_load8d(const double* p) { fo_v8d v; memcpy(&v, p, 64); return v; }
    static inline fo_v8d fo_load8f(const float* p) {
        fo_v8f v; memcpy(&v, p, 32); return __builtin_convertvector(v, fo_v8d);
    }
    #define FO_STATS_LANES(NAME, T, LOAD) \
    static void NAME(const T* x, Py_ssize_t n8, double* l1, double* sq, double* bad, long long* mb) { \
        fo_v8d a1, a2, a3, v; fo_v8l am, bits, gt; Py_ssize_t j; \
        const fo_v8l mask = {0x7fffffffffffffffLL, 0x7fffffffffffffffLL, 0x7fffffffffffffffLL, \
                             0x7fffffffffffffffLL, 0x7fffffffffffffffLL, 0x7fffffffffffffffLL, \
                             0x7fffffffffffffffLL, 0x7fffffffffffffffLL}; \
        memcpy(&a1, l1, 64); memcpy(&a2, sq, 64); memcpy(&a3, bad, 64); memcpy(&am, mb, 64); \
        for (j = 0; j < n8; j++) { \
            v = LOAD(x + 8 * j); \
            a3 += v - v;                  /* 0 for finite v, NaN for inf and NaN */ \
            memcpy(&bits, &v, 64); bits &= mask; memcpy(&v, &bits, 64);   /* |v| */ \
            a1 += v; \
            a2 += v * v; \
            gt = bits > am; am = (bits & gt) | (am & ~gt); \
        } \
        memcpy(l1, &a1, 64); memcpy(sq, &a2, 64); memcpy(bad, &a3, 64); memcpy(mb, &am, 64); \
    }
    FO_STATS_LANES(fo_stats_lanes_d, double, fo_load8d)
    FO_STATS_LANES(fo_stats_lanes_f, float, fo_load8f)
    /* Dot products in the eight lanes (element off + 8j + k to lanes[k], in order; the
       tail's k < n % 8 to lanes[k] last). Products and sums are float64, one rounding
       each (-ffp-contract=off), as the scalar lanes they replace: an accumulator array
       left to the vectoriser went through the stack at every step, a store-to-load
       round trip per eight elements (the 54 dot products of an L-BFGS pass at m = 10
       took 2.7x the time of reading their 23 vectors). */
    /* elements ahead to prefetch in the many-stream loops below: a chunk holds a few
       KiB of each of up to 2m + 3 vectors, and the hardware prefetcher, which starts
       afresh at every 4 KiB page, lost a third of the bandwidth to them */
    #ifndef FO_PF_AHEAD
    #define FO_PF_AHEAD 512
    #endif
    /* the address FO_PF_AHEAD elements past p, formed as an integer: near an array's end
       it points past it, which pointer arithmetic may not, and a prefetch never faults */
    #define FO_PF(p) __builtin_prefetch((const void*)((uintptr_t)(p) + FO_PF_AHEAD * sizeof(*(p))))
    #define FO_DOT_LANES(NAME, T, LOAD) \
    static void NAME(const T* u, const T* v, Py_ssize_t off, Py_ssize_t n, double* lanes) { \
        fo_v8d a; Py_ssize_t j, k, n8 = n / 8; \
        u += off; v += off; \
        memcpy(&a, lanes, 64); \
        for (j = 0; j < n8; j++) a += LOAD(u + 8 * j) * LOAD(v + 8 * j); \
        memcpy(lanes, &a, 64); \
        for (k = 0; k < n - 8 * n8; k++) lanes[k] += (double)u[8 * n8 + k] * (double)v[8 * n8 + k]; \
    }
    FO_DOT_LANES(fo_dot_lanes_d, double, fo_load8d)
    FO_DOT_LANES(fo_dot_lanes_f, float, fo_load8f)
    /* One vector h dotted with np <= 4 partners in one loop (lanes[r]: the lanes of
       h . p[r]): h is loaded (and, from float32, converted) once for all of them, and
       the np chains are independent, so the adds' latency overlaps. u . v and v . u are
       the same products, so which side is the hub changes no bit (except which NaN a
       product of two NaNs keeps, which "bit for bit" leaves out: the compiler may swap
       a product's operands anyway). */
    #define FO_HUB_BODY(T, LOAD, NP) { \
        fo_v8d a[NP], x; const T* q[NP]; Py_ssize_t j, k, n8 = n / 8; int r; \
        for (r = 0; r < NP; r++) { q[r] = p[r] + off; memcpy(&a[r], lanes[r], 64); } \
        for (j = 0; j < n8; j++) { \
            x = LOAD(h + off + 8 * j); \
            FO_PF(h + off + 8 * j); \
            for (r = 0; r < NP; r++) { \
                FO_PF(q[r] + 8 * j); \
                a[r] += x * LOAD(q[r] + 8 * j); \
            } \
        } \
        for (r = 0; r < NP; r++) { \
            memcpy(lanes[r], &a[r], 64); \
            for (k = 0; k < n - 8 * n8; k++) \
                lanes[r][k] += (double)h[off + 8 * n8 + k] * (double)q[r][8 * n8 + k]; \
        } \
    }
    #define FO_HUB_LANES(NAME, T, LOAD) \
    static void NAME(const T* h, const T** p, int np, Py_ssize_t off, Py_ssize_t n, double** lanes) { \
        switch (np) { \
        case 1: FO_HUB_BODY(T, LOAD, 1) break; \
        case 2: FO_HUB_BODY(T, LOAD, 2) break; \
        case 3: FO_HUB_BODY(T, LOAD, 3) break; \
        default: FO_HUB_BODY(T, LOAD, 4) break; \
        } \
    }
    FO_HUB_LANES(fo_hub_lanes_d, double, fo_load8d)
    FO_HUB_LANES(fo_hub_lanes_f, float, fo_load8f)
    /* acc[i] = (((acc[i] + c0 v0[i]) + c1 v1[i]) + c2 v2[i]) + c3 v3[i], i < n: four terms
       of a combination per sweep of the float64 accumulator instead of one, the same
       additions in the same order. */
    /* x in every lane (not 0 + x, which turns -0.0 into +0.0) */
    static inline fo_v8d fo_splat8d(double x) { fo_v8d v = {x, x, x, x, x, x, x, x}; return v; }
    #define FO_COMB4_ADD(NAME, T, LOAD) \
    static void NAME(double* acc, const T** v, const double* c, Py_ssize_t off, Py_ssize_t n) { \
        const fo_v8d c0 = fo_splat8d(c[0]), c1 = fo_splat8d(c[1]), c2 = fo_splat8d(c[2]), c3 = fo_splat8d(c[3]); \
        const T *v0 = v[0] + off, *v1 = v[1] + off, *v2 = v[2] + off, *v3 = v[3] + off; \
        fo_v8d a; Py_ssize_t j, k, n8 = n / 8; \
        for (j = 0; j < n8; j++) { \
            memcpy(&a, acc + 8 * j, 64); \
            FO_PF(v0 + 8 * j); FO_PF(v1 + 8 * j); FO_PF(v2 + 8 * j); FO_PF(v3 + 8 * j); \
            a = a + c0 * LOAD(v0 + 8 * j); \
            a = a + c1 * LOAD(v1 + 8 * j); \
            a = a + c2 * LOAD(v2 + 8 * j); \
            a = a + c3 * LOAD(v3 + 8 * j); \
            memcpy(acc + 8 * j, &a, 64); \
        } \
        for (k = 8 * n8; k < n; k++) \
            acc[k] = (((acc[k] + c[0] * (double)v0[k]) + c[1] * (double)v1[k]) + c[2] * (double)v2[k]) \
                     + c[3] * (double)v3[k]; \
    }
    FO_COMB4_ADD(fo_comb4_add_d, double, fo_load8d)
    FO_COMB4_ADD(fo_comb4_add_f, float, fo_load8f)
    /* |x| as its bits: for values >= 0 the integer order is the float order */
    static inline long long fo_abs_bits(double v) { long long b; v = v < 0.0 ? -v : v; memcpy(&b, &v, 8); return b; }
    static inline long long fo_imax(long long a, long long b) { return a > b ? a : b; }
    static inline double fo_from_bits(long long b) { double v; memcpy(&v, &b, 8); return v; }
    """
    void fo_stats_lanes_d(const double* x, Py_ssize_t n8, double* l1, double* sq, double* bad,
                          long long* mb) noexcept nogil
    void fo_stats_lanes_f(const float* x, Py_ssize_t n8, double* l1, double* sq, double* bad,
                          long long* mb) noexcept nogil
    long long fo_abs_bits(double v) noexcept nogil
    long long fo_imax(long long a, long long b) noexcept nogil
    double fo_from_bits(long long b) noexcept nogil
    void fo_dot_lanes_d(const double* u, const double* v, Py_ssize_t off, Py_ssize_t n, double* lanes) noexcept nogil
    void fo_dot_lanes_f(const float* u, const float* v, Py_ssize_t off, Py_ssize_t n, double* lanes) noexcept nogil
    void fo_hub_lanes_d(const double* h, const double** p, int np, Py_ssize_t off, Py_ssize_t n,
                        double** lanes) noexcept nogil
    void fo_hub_lanes_f(const float* h, const float** p, int np, Py_ssize_t off, Py_ssize_t n,
                        double** lanes) noexcept nogil
    void fo_comb4_add_d(double* acc, const double** v, const double* c, Py_ssize_t off,
                        Py_ssize_t n) noexcept nogil
    void fo_comb4_add_f(double* acc, const float** v, const double* c, Py_ssize_t off,
                        Py_ssize_t n) noexcept nogil

from fastopt._kernels.driver cimport _team_started_now, pass_done, plan_threads, resolve_threads

import functools

import numpy as np

cnp.import_array()

# the driver's REDUCE_BLOCK: clipping and these kernels reduce over the same blocks
cdef Py_ssize_t BLOCK = 8192
BLOCK_SIZE = BLOCK

cdef enum:
    NRES = 6          # per block: two dot products, then l1, linf, sumsq, non-finite
    ROLES = 7         # z, x, w, u0, v0, u1, v1

ctypedef fused real:
    float
    double


cdef struct VPass:
    char** z          # per-segment pointers; NULL: the pass writes nothing
    char** x
    char** w          # NULL: z = a x
    char** u0
    char** v0
    char** u1
    char** v1
    double a
    double b
    int ndots
    int stats         # reduce l1/linf/sumsq/non-finite of z (of x when z is NULL)


cdef double _dot(const real* u, const real* v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # eight independent lanes: a fixed association that still vectorises
    cdef double acc[8]
    cdef Py_ssize_t k
    for k in range(8):
        acc[k] = 0.0
    if real is float:
        fo_dot_lanes_f(u, v, lo, hi - lo, acc)  # vec: dot
    else:
        fo_dot_lanes_d(u, v, lo, hi - lo, acc)  # vec: dot
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef void _stats(const real* x, Py_ssize_t lo, Py_ssize_t hi, double* res) noexcept nogil:
    cdef double l1[8]
    cdef double sq[8]
    cdef double bad[8]
    cdef long long mb[8]
    cdef long long b = 0
    cdef double m = 0.0, v
    cdef Py_ssize_t i, k
    for k in range(8):
        l1[k] = 0.0
        sq[k] = 0.0
        bad[k] = 0.0
        mb[k] = 0
    # the integer max of the bits is the float max of values >= 0, but a NaN's bits would
    # win it: a block with a non-finite value takes the scalar max below, which skips NaN
    if real is float:
        fo_stats_lanes_f(x + lo, (hi - lo) // 8, l1, sq, bad, mb)  # vec: stats
    else:
        fo_stats_lanes_d(x + lo, (hi - lo) // 8, l1, sq, bad, mb)  # vec: stats
    i = lo + (hi - lo) // 8 * 8
    for k in range(hi - i):
        v = <double>x[i + k]
        bad[k] += v - v
        v = fabs(v)
        l1[k] += v
        sq[k] += v * v
    res[0] = ((l1[0] + l1[1]) + (l1[2] + l1[3])) + ((l1[4] + l1[5]) + (l1[6] + l1[7]))
    res[2] = ((sq[0] + sq[1]) + (sq[2] + sq[3])) + ((sq[4] + sq[5]) + (sq[6] + sq[7]))
    res[3] = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]))
    if res[3] == 0.0:
        for k in range(8):
            b = fo_imax(mb[k], b)
        for k in range(i, hi):
            b = fo_imax(fo_abs_bits(<double>x[k]), b)
        m = fo_from_bits(b)
    else:
        for k in range(lo, hi):
            v = fabs(<double>x[k])
            if v > m:
                m = v
    res[1] = m


cdef void _block(const VPass* p, Py_ssize_t seg, Py_ssize_t lo, Py_ssize_t hi, double* res,
                 real* tag) noexcept nogil:
    cdef real* z = <real*>p.z[seg] if p.z != NULL else NULL
    cdef const real* x = <const real*>p.x[seg]
    cdef const real* w = <const real*>p.w[seg] if p.w != NULL else NULL
    cdef real a = <real>p.a
    cdef real b = <real>p.b
    cdef Py_ssize_t i
    if z != NULL:
        # a == 1 and b == 1 make a product exact, so the short forms give the same bits
        if w == NULL:
            if p.a == 1.0:
                for i in range(lo, hi):  # vec: copy
                    z[i] = x[i]
            else:
                for i in range(lo, hi):  # vec: scale
                    z[i] = a * x[i]
        elif p.b == 1.0:
            for i in range(lo, hi):  # vec: axpy
                z[i] = a * x[i] + w[i]
        elif p.a == 1.0:
            for i in range(lo, hi):  # vec: xpby
                z[i] = x[i] + b * w[i]
        else:
            for i in range(lo, hi):  # vec: axpby
                z[i] = a * x[i] + b * w[i]
    if p.ndots > 0:
        res[0] = _dot(<const real*>p.u0[seg], <const real*>p.v0[seg], lo, hi)
    if p.ndots > 1:
        res[1] = _dot(<const real*>p.u1[seg], <const real*>p.v1[seg], lo, hi)
    if p.stats:
        _stats(<const real*>z if z != NULL else x, lo, hi, res + 2)


cdef inline void _one(const VPass* p, const Py_ssize_t* blk, Py_ssize_t k, int itemsize, double* res) noexcept nogil:
    if itemsize == 4:
        _block(p, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + NRES * k, <float*>NULL)
    else:
        _block(p, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + NRES * k, <double*>NULL)


cdef void _run(const VPass* p, const Py_ssize_t* blk, Py_ssize_t nb, Py_ssize_t n, int itemsize, int threads,
               double* res, double* out) noexcept nogil:
    """One pass over every block, then the blocks' partial results added in block order."""
    cdef int arrays = (p.z != NULL) * 1 + 1 + (p.w != NULL) * 1 + 2 * p.ndots
    cdef Py_ssize_t nbytes = n * itemsize * arrays
    cdef int wanted = resolve_threads(threads)
    cdef int nt = plan_threads(nbytes, wanted)
    cdef Py_ssize_t k
    cdef int j
    if nt > nb:
        nt = <int>nb if nb > 0 else 1
    if nt > 1:
        _team_started_now()
        # dynamic: whichever member is running takes the next blocks; each block's
        # results land in its own slot, so the sums do not depend on who computed it
        for k in prange(nb, num_threads=nt, schedule="dynamic", chunksize=2):
            _one(p, blk, k, itemsize, res)
    else:
        for k in range(nb):
            _one(p, blk, k, itemsize, res)
    pass_done(nbytes, nt, wanted)
    for j in range(NRES):
        out[j] = 0.0
    for k in range(nb):
        out[0] = out[0] + res[NRES * k]
        out[1] = out[1] + res[NRES * k + 1]
        out[2] = out[2] + res[NRES * k + 2]
        if res[NRES * k + 3] > out[3]:
            out[3] = res[NRES * k + 3]
        out[4] = out[4] + res[NRES * k + 4]
        out[5] = out[5] + res[NRES * k + 5]


cdef class Layout:
    """The segmentation of one logical vector: ``sizes[k]`` elements in segment k (the
    k-th parameter array), and the fixed reduction blocks that follow from it."""
    cdef Py_ssize_t* off
    cdef Py_ssize_t* blk
    cdef double* res
    cdef readonly Py_ssize_t nseg, nblocks, n
    cdef readonly object sizes

    def __cinit__(self, sizes):
        sizes = tuple(int(s) for s in sizes)
        if not sizes or any(s < 0 for s in sizes):
            raise ValueError(f"a layout needs one or more segment sizes >= 0, got {sizes!r}")
        self.sizes = sizes
        self.nseg = len(sizes)
        self.nblocks = sum((s + BLOCK - 1) // BLOCK for s in sizes)
        self.n = sum(sizes)
        self.off = <Py_ssize_t*>malloc((self.nseg + 1) * sizeof(Py_ssize_t))
        self.blk = <Py_ssize_t*>malloc((3 * self.nblocks + 1) * sizeof(Py_ssize_t))
        self.res = <double*>malloc((NRES * self.nblocks + 1) * sizeof(double))
        if self.off == NULL or self.blk == NULL or self.res == NULL:
            raise MemoryError()
        cdef Py_ssize_t k, b = 0, j, o = 0
        for k in range(self.nseg):
            self.off[k] = o
            j = 0
            while j < sizes[k]:
                self.blk[3 * b] = k
                self.blk[3 * b + 1] = j
                self.blk[3 * b + 2] = min(j + BLOCK, sizes[k])
                b += 1
                j += BLOCK
            o += sizes[k]
        self.off[self.nseg] = o

    def __dealloc__(self):
        free(self.off)
        free(self.blk)
        free(self.res)

    def offsets(self):
        """The first element of every segment in the flat vector, and its length."""
        return [self.off[k] for k in range(self.nseg + 1)]

    def __reduce__(self):
        return (Layout, (self.sizes,))


cdef object _table(Layout lay, object arr, char** tab, int itemsize, bint writeable, str name):
    """Fill ``tab`` with the per-segment pointers of ``arr`` (flat array or list);
    returns the dtype char it found. Raises naming ``name`` on a mismatch."""
    cdef Py_ssize_t k
    cdef cnp.ndarray a
    if isinstance(arr, cnp.ndarray):
        a = <cnp.ndarray>arr
        if a.size != lay.n or not a.flags.c_contiguous or a.itemsize != itemsize or a.dtype.char not in "fd" \
                or not a.dtype.isnative or not a.flags.aligned:
            raise ValueError(f"{name} must be a C-contiguous native {'float32' if itemsize == 4 else 'float64'} "
                             f"array of {lay.n} elements, got {arr.dtype} {arr.shape}")
        if writeable and not a.flags.writeable:
            raise ValueError(f"{name} is read-only")
        for k in range(lay.nseg):
            tab[k] = <char*>cnp.PyArray_DATA(a) + lay.off[k] * itemsize
        return
    if not isinstance(arr, (list, tuple)) or len(arr) != lay.nseg:
        raise ValueError(f"{name} must be a flat array or a list of {lay.nseg} arrays")
    for k in range(lay.nseg):
        a = arr[k]
        if not isinstance(a, cnp.ndarray) or a.size != lay.sizes[k] or not a.flags.c_contiguous \
                or a.itemsize != itemsize or a.dtype.char not in "fd" or not a.dtype.isnative or not a.flags.aligned:
            raise ValueError(f"{name}[{k}] must be a C-contiguous native array of {lay.sizes[k]} elements of "
                             f"the vector's dtype")
        if writeable and not a.flags.writeable:
            raise ValueError(f"{name}[{k}] is read-only")
        tab[k] = <char*>cnp.PyArray_DATA(a)


def _itemsize_of(x):
    a = x if isinstance(x, np.ndarray) else (x[0] if isinstance(x, (list, tuple)) and x else None)
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError("vector arguments must be float32 or float64 arrays (or lists of them)")
    return a.itemsize


def lincomb(Layout lay, z, double a, x, double b=0.0, w=None, dots=(), bint stats=False, int threads=0):
    """One fused pass: ``z = a·x + b·w`` (``z = a·x`` when ``w`` is None; nothing is
    written when ``z`` is None), then over the values just written, per block,
    ``uᵢ·vᵢ`` for each pair of ``dots`` (at most two) and, with ``stats``, the
    ``(‖z‖₁, ‖z‖∞, ‖z‖₂², finite)`` of ``z`` (of ``x`` when ``z`` is None).

    Returns ``(list of dot products, stats tuple or None)``. Reductions: float64 over
    fixed blocks (see the module docstring); the same bits for any thread count."""
    if len(dots) > 2:
        raise ValueError("at most two dot products per pass")
    cdef int isz = _itemsize_of(x)
    cdef Py_ssize_t ns = lay.nseg
    cdef char** tab = <char**>malloc(ROLES * ns * sizeof(char*) + 1)
    if tab == NULL:
        raise MemoryError()
    cdef VPass p
    cdef double out[NRES]
    cdef int jj
    try:
        p.z = NULL if z is None else tab
        p.x = tab + ns
        p.w = NULL if w is None else tab + 2 * ns
        p.u0 = tab + 3 * ns
        p.v0 = tab + 4 * ns
        p.u1 = tab + 5 * ns
        p.v1 = tab + 6 * ns
        if z is not None:
            _table(lay, z, p.z, isz, True, "z")
        _table(lay, x, p.x, isz, False, "x")
        if w is not None:
            _table(lay, w, p.w, isz, False, "w")
        for jj in range(len(dots)):
            u, v = dots[jj]
            _table(lay, u, tab + (3 + 2 * jj) * ns, isz, False, f"dots[{jj}][0]")
            _table(lay, v, tab + (4 + 2 * jj) * ns, isz, False, f"dots[{jj}][1]")
        p.a = a
        p.b = b
        p.ndots = len(dots)
        p.stats = stats
        with nogil:
            _run(&p, lay.blk, lay.nblocks, lay.n, isz, threads, lay.res, out)
    finally:
        free(tab)
    return ([out[j] for j in range(p.ndots)],
            (out[2], out[3], out[4], out[5] == 0.0) if stats else None)


def dot(Layout lay, u, v, int threads=0):
    """``uᵀv`` in float64 over fixed blocks (the same bits for any thread count)."""
    return lincomb(lay, None, 1.0, u, dots=((u, v),), threads=threads)[0][0]


def two_loop(Layout lay, g, q, d, S, Y, rho, order, double gamma, al, int threads=0):
    """The L-BFGS two-loop recursion, ``d = -H g``, with the pairs ``(S[i], Y[i])`` for
    ``i`` in ``order`` (oldest first) and ``H₀ = γI``; 2m + 2 fused passes:

    * ``q = -g``; for i newest → oldest: ``αᵢ = ρᵢ sᵢᵀq``, ``q = q - αᵢ yᵢ``
    * ``d = γ q``; for i oldest → newest: ``βᵢ = ρᵢ yᵢᵀd``, ``d = d + (αᵢ - βᵢ) sᵢ``

    each dot product computed in the pass that wrote the vector it reads. ``S`` and
    ``Y`` are 2-D ``(history, n)`` ring buffers, ``rho`` and ``al`` float64 arrays of
    the history length (``al`` is written). Returns ``(‖d‖∞, gᵀd)``, both from the last pass."""
    cdef int isz = _itemsize_of(g)
    cdef cnp.ndarray Sa = S, Ya = Y
    cdef double[::1] rh = rho
    cdef double[::1] alv = al
    cdef cnp.int64_t[::1] od = np.ascontiguousarray(order, np.int64)
    cdef Py_ssize_t m = od.shape[0], ns = lay.nseg, i, hist = Sa.shape[0] if Sa.ndim == 2 else 0
    if Sa.ndim != 2 or Ya.ndim != 2 or Sa.shape[1] != lay.n or Ya.shape[0] != hist or Ya.shape[1] != lay.n \
            or not Sa.flags.c_contiguous or not Ya.flags.c_contiguous or Sa.itemsize != isz or Ya.itemsize != isz:
        raise ValueError("S and Y must be C-contiguous (history, n) arrays of the vector's dtype")
    if rh.shape[0] < hist or alv.shape[0] < hist or any(not 0 <= o < hist for o in od):
        raise ValueError("rho/al shorter than the history, or order out of range")
    cdef char** tab = <char**>malloc((5 + 2 * m) * ns * sizeof(char*) + 1)
    if tab == NULL:
        raise MemoryError()
    cdef char** tg = tab
    cdef char** tq = tab + ns
    cdef char** td = tab + 2 * ns
    cdef char** ts = tab + 5 * ns            # ts[i * ns + k]: segment k of S[order[i]]
    cdef char** ty = tab + (5 + m) * ns
    cdef VPass p
    cdef double out[NRES]
    cdef double alpha, beta, dnorm = 0.0, gtd = 0.0
    try:
        _table(lay, g, tg, isz, False, "g")
        _table(lay, q, tq, isz, True, "q")
        _table(lay, d, td, isz, True, "d")
        for i in range(m):
            _table(lay, Sa[od[i]], ts + i * ns, isz, False, "S")
            _table(lay, Ya[od[i]], ty + i * ns, isz, False, "Y")
        with nogil:
            p.stats = 0
            p.w = NULL
            # q = -g, and s_newest . q
            p.z = tq
            p.x = tg
            p.a = -1.0
            p.b = 0.0
            p.ndots = 1 if m > 0 else 0
            if m > 0:
                p.u0 = ts + (m - 1) * ns
                p.v0 = tq
            _run(&p, lay.blk, lay.nblocks, lay.n, isz, threads, lay.res, out)
            i = m - 1
            while i >= 0:
                alpha = out[0] * rh[od[i]]
                alv[od[i]] = alpha
                # q = q - alpha y_i, then s_{i-1} . q
                p.z = tq
                p.x = ty + i * ns
                p.a = -alpha
                p.w = tq
                p.b = 1.0
                p.ndots = 1 if i > 0 else 0
                if i > 0:
                    p.u0 = ts + (i - 1) * ns
                    p.v0 = tq
                _run(&p, lay.blk, lay.nblocks, lay.n, isz, threads, lay.res, out)
                i -= 1
            # d = gamma q, then y_oldest . d
            p.z = td
            p.x = tq
            p.a = gamma
            p.w = NULL
            p.ndots = 1
            p.stats = 1 if m == 0 else 0
            p.u0 = ty if m > 0 else tg
            p.v0 = td
            _run(&p, lay.blk, lay.nblocks, lay.n, isz, threads, lay.res, out)
            if m == 0:
                dnorm = out[3]
                gtd = out[0]
            for i in range(m):
                beta = out[0] * rh[od[i]]
                # d = d + (alpha_i - beta_i) s_i, then y_{i+1} . d
                p.z = td
                p.x = ts + i * ns
                p.a = alv[od[i]] - beta
                p.w = td
                p.b = 1.0
                p.ndots = 1
                p.stats = 1 if i + 1 == m else 0
                p.u0 = ty + (i + 1) * ns if i + 1 < m else tg
                p.v0 = td
                _run(&p, lay.blk, lay.nblocks, lay.n, isz, threads, lay.res, out)
                if i + 1 == m:
                    dnorm = out[3]
                    gtd = out[0]
    finally:
        free(tab)
    return dnorm, gtd


# --- compact L-BFGS passes: many dot products, and one linear combination ---------------------
cdef struct MPass:
    int nvec           # vectors in the table (per segment: tab[j * nseg + k])
    char** tab
    int npairs
    const int* pairs   # (u, v) indices into the table, 2 per pair
    int ngroups        # the pairs as groups sharing a vector (the hub), GROUP_INTS each:
    const int* groups  # hub, np <= 4, partners[4], the pairs' indices[4]
    int nwrites        # 0..2 writes run first: z = a x (+ b w), as VPass
    VPass* writes
    # combine: d = Σ c_j v_j (float64, in order), then g·d and stats of d; optional
    # x0 = p, p = t d + x0 (the first trial point)
    const double* coef
    char** d
    int gidx
    char** p
    char** x0
    double t


cdef enum:
    GROUP_INTS = 10
    CHUNK = 2048       # elements per sub-block: the chunks of every vector stay in L2 across the dots


cdef inline void _hub_lanes(const MPass* m, Py_ssize_t nseg, Py_ssize_t seg, int gi, Py_ssize_t lo, Py_ssize_t hi,
                            double* lanes, real* tag) noexcept nogil:
    # group gi: its hub dotted with its partners over lo..hi, the lanes continued (chunks
    # start at multiples of 8 from the block start, so element lo + 8i + k still goes
    # to lane k in order)
    cdef const int* g = m.groups + GROUP_INTS * gi
    cdef const real* p[4]
    cdef double* ln[4]
    cdef int r
    for r in range(g[1]):
        p[r] = <const real*>m.tab[g[2 + r] * nseg + seg]
        ln[r] = lanes + 8 * g[6 + r]
    if real is float:
        fo_hub_lanes_f(<const float*>m.tab[g[0] * nseg + seg], p, g[1], lo, hi - lo, ln)  # vec: hub_lanes
    else:
        fo_hub_lanes_d(<const double*>m.tab[g[0] * nseg + seg], p, g[1], lo, hi - lo, ln)  # vec: hub_lanes


cdef void _mblock(const MPass* m, Py_ssize_t nseg, Py_ssize_t seg, Py_ssize_t lo, Py_ssize_t hi, double* res,
                  real* tag) noexcept nogil:
    cdef int w, j, k
    cdef double dummy[NRES]
    cdef double* lanes
    cdef Py_ssize_t c, ce
    for w in range(m.nwrites):
        _block(&m.writes[w], seg, lo, hi, dummy, tag)
    lanes = <double*>malloc(8 * m.npairs * sizeof(double) + 8)
    if lanes == NULL:           # no memory for the lanes: the unchunked dots, same bits
        for j in range(m.npairs):
            res[j] = _dot(<const real*>m.tab[m.pairs[2 * j] * nseg + seg],
                          <const real*>m.tab[m.pairs[2 * j + 1] * nseg + seg], lo, hi)
        return
    for j in range(8 * m.npairs):
        lanes[j] = 0.0
    c = lo
    while c < hi:
        ce = c + CHUNK if c + CHUNK < hi else hi
        for j in range(m.ngroups):
            _hub_lanes(m, nseg, seg, j, c, ce, lanes, tag)
        c = ce
    for j in range(m.npairs):
        k = 8 * j
        res[j] = ((lanes[k] + lanes[k + 1]) + (lanes[k + 2] + lanes[k + 3])) + \
            ((lanes[k + 4] + lanes[k + 5]) + (lanes[k + 6] + lanes[k + 7]))
    free(lanes)


cdef void _cblock(const MPass* m, Py_ssize_t nseg, Py_ssize_t seg, Py_ssize_t lo, Py_ssize_t hi, double* res,
                  real* tag) noexcept nogil:
    # j outer, i inner over a float64 block buffer: the same per-element order of
    # additions as acc = c0 v0 + c1 v1 + ... and still one vector loop per term
    cdef double acc[CHUNK]
    cdef real* d
    cdef const real* v
    cdef const real* vs[4]
    cdef int q
    cdef double c
    cdef Py_ssize_t i, nn, lo2
    cdef int j
    cdef real t = <real>m.t
    cdef real* p
    cdef real* x0
    lo2 = lo
    while lo2 < hi:                 # chunks: the accumulator stays in L1
        nn = CHUNK if lo2 + CHUNK <= hi else hi - lo2
        v = <const real*>m.tab[seg] + lo2
        c = m.coef[0]
        for i in range(nn):  # vec: combine_first
            acc[i] = c * <double>v[i]
        j = 1
        while j + 4 <= m.nvec:
            for q in range(4):
                vs[q] = <const real*>m.tab[(j + q) * nseg + seg]
            if real is float:
                fo_comb4_add_f(acc, vs, m.coef + j, lo2, nn)  # vec: combine_add4
            else:
                fo_comb4_add_d(acc, vs, m.coef + j, lo2, nn)  # vec: combine_add4
            j = j + 4
        while j < m.nvec:
            v = <const real*>m.tab[j * nseg + seg] + lo2
            c = m.coef[j]
            for i in range(nn):  # vec: combine_add
                acc[i] = acc[i] + c * <double>v[i]
            j = j + 1
        d = <real*>m.d[seg] + lo2
        for i in range(nn):  # vec: combine_store
            d[i] = <real>acc[i]
        lo2 = lo2 + nn
    d = <real*>m.d[seg] + lo
    nn = hi - lo
    if m.p != NULL:
        p = <real*>m.p[seg] + lo
        x0 = <real*>m.x0[seg] + lo
        for i in range(nn):  # vec: combine_save_x0
            x0[i] = p[i]
        for i in range(nn):  # vec: combine_trial
            p[i] = t * d[i] + x0[i]
    res[0] = _dot(<const real*>m.tab[m.gidx * nseg + seg], <const real*>m.d[seg], lo, hi)
    _stats(<const real*>m.d[seg], lo, hi, res + 2)


cdef inline void _mone(const MPass* m, Py_ssize_t nseg, const Py_ssize_t* blk, Py_ssize_t k, int itemsize,
                       int combine, Py_ssize_t stride, double* res) noexcept nogil:
    if combine:
        if itemsize == 4:
            _cblock(m, nseg, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + stride * k, <float*>NULL)
        else:
            _cblock(m, nseg, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + stride * k, <double*>NULL)
    elif itemsize == 4:
        _mblock(m, nseg, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + stride * k, <float*>NULL)
    else:
        _mblock(m, nseg, blk[3 * k], blk[3 * k + 1], blk[3 * k + 2], res + stride * k, <double*>NULL)


cdef void _mrun(const MPass* m, Layout lay, int itemsize, int threads, int combine, Py_ssize_t stride,
                Py_ssize_t nbytes, double* res) noexcept nogil:
    cdef int wanted = resolve_threads(threads)
    cdef int nt = plan_threads(nbytes, wanted)
    cdef Py_ssize_t k, nb = lay.nblocks
    if nt > nb:
        nt = <int>nb if nb > 0 else 1
    if nt > 1:
        _team_started_now()
        for k in prange(nb, num_threads=nt, schedule="dynamic", chunksize=2):
            _mone(m, lay.nseg, lay.blk, k, itemsize, combine, stride, res)
    else:
        for k in range(nb):
            _mone(m, lay.nseg, lay.blk, k, itemsize, combine, stride, res)
    pass_done(nbytes, nt, wanted)


cdef object _vector_table(Layout lay, vectors, int isz, char** tab):
    cdef Py_ssize_t j
    for j in range(len(vectors)):
        _table(lay, vectors[j], tab + j * lay.nseg, isz, False, f"vectors[{j}]")


@functools.lru_cache(maxsize=64)
def _hub_groups_cached(pairs):
    groups = _hub_groups(pairs)
    groups.flags.writeable = False
    return groups


def _hub_groups(pairs):
    """The pairs as groups of at most four sharing one vector, the hub: the vectors in
    the most pairs (the lower index on a tie) take their pairs not yet taken, four at a
    time. One row ``[hub, np, partners[4], pair indices[4]]`` per group; the hub is read
    once for all of its group. O(pairs)."""
    adj = {}
    for j, (u, v) in enumerate(pairs):
        adj.setdefault(u, []).append(j)
        if v != u:
            adj.setdefault(v, []).append(j)
    taken = [False] * len(pairs)
    rows = []
    for hub in sorted(adj, key=lambda x: (-len(adj[x]), x)):
        mine = [j for j in adj[hub] if not taken[j]]
        for j in mine:
            taken[j] = True
        for k in range(0, len(mine), 4):
            part = mine[k:k + 4]
            partners = [pairs[j][1] if pairs[j][0] == hub else pairs[j][0] for j in part]
            rows.append([hub, len(part)] + partners + [0] * (4 - len(part)) + part + [0] * (4 - len(part)))
    return np.array(rows, dtype=np.intc).reshape(len(rows), GROUP_INTS)


def multidot(Layout lay, vectors, pairs, writes=(), int threads=0):
    """One fused pass: first the ``writes`` (at most two ``(z, a, x, b, w)``:
    ``z = a·x + b·w``, ``w`` may be None, each as :func:`lincomb`), then, block by block
    over the values just written, the dot products ``vectors[u]·vectors[v]`` for every
    ``(u, v)`` in ``pairs``. Returns the list of dot products, each the same bits as
    :func:`dot` of its pair (float64 over the fixed blocks)."""
    if len(writes) > 2:
        raise ValueError("at most two writes per pass")
    cdef int isz = _itemsize_of(vectors[0] if len(vectors) else writes[0][2])
    cdef Py_ssize_t ns = lay.nseg, k
    cdef int K = len(vectors), P = len(pairs), w
    cdef cnp.ndarray pr = np.ascontiguousarray(np.asarray(pairs, dtype=np.intc).reshape(P, 2))
    if P and (pr.min() < 0 or pr.max() >= K):
        raise ValueError("pairs index outside vectors")
    # an L-BFGS run asks for the same pairs at every iteration
    cdef cnp.ndarray grp = _hub_groups_cached(tuple(tuple(r) for r in pr.tolist()))
    cdef char** tab = <char**>malloc((K + 3 * 2) * ns * sizeof(char*) + 1)
    cdef double* res = <double*>malloc((P * lay.nblocks + 1) * sizeof(double))
    cdef VPass wp[2]
    cdef MPass m
    cdef Py_ssize_t nbytes = 0
    cdef list out
    if tab == NULL or res == NULL:
        free(tab)
        free(res)
        raise MemoryError()
    try:
        _vector_table(lay, vectors, isz, tab)
        for w in range(len(writes)):
            z, a, x, b, ww = writes[w]
            wp[w].z = tab + (K + 3 * w) * ns
            wp[w].x = tab + (K + 3 * w + 1) * ns
            wp[w].w = NULL if ww is None else tab + (K + 3 * w + 2) * ns
            _table(lay, z, wp[w].z, isz, True, f"writes[{w}] z")
            _table(lay, x, wp[w].x, isz, False, f"writes[{w}] x")
            if ww is not None:
                _table(lay, ww, wp[w].w, isz, False, f"writes[{w}] w")
            wp[w].a = a
            wp[w].b = b
            wp[w].ndots = 0
            wp[w].stats = 0
            nbytes += (2 if ww is None else 3) * lay.n * isz
        m.nvec = K
        m.tab = tab
        m.npairs = P
        m.pairs = <const int*>cnp.PyArray_DATA(pr)
        m.ngroups = grp.shape[0]
        m.groups = <const int*>cnp.PyArray_DATA(grp)
        m.nwrites = len(writes)
        m.writes = wp
        nbytes += K * lay.n * isz
        with nogil:
            _mrun(&m, lay, isz, threads, 0, P, nbytes, res)
        out = []
        for w in range(P):
            acc = 0.0
            for k in range(lay.nblocks):
                acc = acc + res[P * k + w]
            out.append(acc)
    finally:
        free(tab)
        free(res)
    return out


def combine(Layout lay, d, coef, vectors, int gidx, p=None, x0=None, double t=0.0, int threads=0):
    """One fused pass: ``d = Σⱼ coef[j]·vectors[j]`` summed in float64 in the order of
    ``j`` and rounded once to the vector's dtype; then ``vectors[gidx]·d`` and the stats
    of ``d``; with ``p`` and ``x0`` also ``x0 = p`` and ``p = t·d + x0`` (a trial point
    as :func:`lincomb` writes it). Returns ``(gᵀd, (‖d‖₁, ‖d‖∞, ‖d‖₂², finite))``."""
    cdef int K = len(vectors)
    if K < 1 or len(coef) != K or not 0 <= gidx < K:
        raise ValueError("combine needs one coefficient per vector (at least one) and gidx among them")
    if (p is None) != (x0 is None):
        raise ValueError("p and x0 go together")
    cdef int isz = _itemsize_of(vectors[0])
    cdef Py_ssize_t ns = lay.nseg, k
    cdef cnp.ndarray cf = np.ascontiguousarray(coef, dtype=np.float64)
    cdef char** tab = <char**>malloc((K + 3) * ns * sizeof(char*) + 1)
    cdef double* res = lay.res
    cdef MPass m
    cdef double out[NRES]
    if tab == NULL:
        raise MemoryError()
    try:
        _vector_table(lay, vectors, isz, tab)
        m.d = tab + K * ns
        _table(lay, d, m.d, isz, True, "d")
        m.p = NULL
        m.x0 = NULL
        if p is not None:
            m.p = tab + (K + 1) * ns
            m.x0 = tab + (K + 2) * ns
            _table(lay, p, m.p, isz, True, "p")
            _table(lay, x0, m.x0, isz, True, "x0")
        m.nvec = K
        m.tab = tab
        m.coef = <const double*>cnp.PyArray_DATA(cf)
        m.gidx = gidx
        m.t = t
        with nogil:
            _mrun(&m, lay, isz, threads, 1, NRES, (K + 1 + (3 if p is not None else 0)) * lay.n * isz, res)
            for k in range(NRES):
                out[k] = 0.0
            for k in range(lay.nblocks):
                out[0] = out[0] + res[NRES * k]
                out[2] = out[2] + res[NRES * k + 2]
                if res[NRES * k + 3] > out[3]:
                    out[3] = res[NRES * k + 3]
                out[4] = out[4] + res[NRES * k + 4]
                out[5] = out[5] + res[NRES * k + 5]
    finally:
        free(tab)
    return out[0], (out[2], out[3], out[4], out[5] == 0.0)
