# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hogwild! (Niu, Recht, Ré, Wright 2011): lock-free parallel SGD over sparse examples.

One call runs one epoch. The epoch's examples are visited in the order of ``perm``; the
positions are cut into chunks of ``CHUNK`` examples that the threads take in turn
(OpenMP dynamic schedule), and every thread writes its sparse updates straight into the
shared weights: no locks, no atomics on the weights. With one thread an epoch is a
plain sequential loop, bitwise reproducible, and :mod:`fastopt.reference.hogwild`
repeats it in NumPy bit for bit; with more threads the updates race, as in the paper.

Linear models (the arithmetic of scikit-learn's ``_plain_sgd``): the weights are stored
as ``v`` with ``w = s v`` (the scale ``s`` is ``shared[0]``), so the L2 shrink
``w <- f w`` is ``s <- f s`` and each example costs O(nnz). The epoch is cut into
*blocks*: a block ends before the example whose shrink would take ``s`` below 1e-9;
between blocks (and at the end of the epoch) ``s`` is folded into ``v``. The
learning rate ``eta[k]``, the shrink ``f[k]`` and the cumulative L1 penalty ``u[k]``
of the example at position ``k`` are given per position (computed once by the caller),
so a thread needs no shared counter to know them. The intercept is ``shared[1]``.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp, log, sqrt

from fastopt._kernels.driver cimport _team_started_now, resolve_threads

import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #define FO_PREFETCH_W(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void FO_PREFETCH_W(const void* p) noexcept nogil

# examples per chunk a thread takes at a time: large enough to amortise the
# scheduler, small enough to balance a busy machine
cdef Py_ssize_t CHUNK = 256
CHUNK_SIZE = CHUNK
# a block with less work (non-zeros, or ratings x factors) runs on the calling thread:
# waking the team would cost more than it saves
cdef Py_ssize_t MIN_PARALLEL_WORK = 32768
PARALLEL_WORK = MIN_PARALLEL_WORK
# the scale is folded into the weights before it would fall below this (scikit-learn's bound)
cdef double MIN_SCALE = 1e-9
SCALE_FLOOR = MIN_SCALE
# |dloss| is clipped here, as in scikit-learn
cdef double MAX_DLOSS = 1e12

LOSSES = {"log": 0, "hinge": 1, "squared": 2}
RULES = {"sgd": 0, "adagrad": 1}

ctypedef fused real:
    float
    double

ctypedef fused index:
    int
    long long


cdef inline Py_ssize_t _within(long long i, Py_ssize_t n) noexcept nogil:
    # X's indices (and the ratings' users/items) are read in place, not copied: they
    # were checked before the run, but another Python thread may rewrite them while the
    # kernels run without the GIL. An index out of [0, n) becomes 0, so such a race
    # garbles the model instead of writing outside it (a select, no branch).
    return <Py_ssize_t>i if <unsigned long long>i < <unsigned long long>n else 0


cdef struct LinArgs:
    const long long* indptr
    const long long* perm
    const double* y
    const double* eta
    const double* shrink      # NULL: no L2 part (no scale updates)
    const double* ucum        # NULL: no L1 part
    volatile double* shared   # [0] scale s, [1] intercept, [2] intercept's Adagrad sum
    int loss
    int rule
    int fit_intercept
    double intercept_decay
    double alpha_l2           # Adagrad: alpha (1 - l1_ratio), the L2 gradient on the support
    double eps
    Py_ssize_t nfeat


cdef inline double _loss(int kind, double y, double p) noexcept nogil:
    cdef double z
    if kind == 0:
        z = p * y
        if z > 18.0:
            return exp(-z)
        if z < -18.0:
            return -z
        return log(1.0 + exp(-z))
    if kind == 1:
        z = p * y
        return 1.0 - z if z <= 1.0 else 0.0
    return 0.5 * (p - y) * (p - y)


cdef inline double _dloss(int kind, double y, double p) noexcept nogil:
    cdef double z
    if kind == 0:
        z = p * y
        if z > 18.0:
            return exp(-z) * -y
        if z < -18.0:
            return -y
        return -y / (exp(z) + 1.0)
    if kind == 1:
        z = p * y
        return -y if z <= 1.0 else 0.0
    return p - y


cdef inline double _sparse_dot(const real* w, const index* ind, const real* val, Py_ssize_t lo,
                               Py_ssize_t hi, Py_ssize_t nfeat) noexcept nogil:
    # eight independent float64 lanes (element lo + 8m + k goes to lane k), combined as
    # ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)): the gathers overlap instead of waiting on one sum
    cdef double acc[8]
    cdef Py_ssize_t j, k
    for k in range(8):
        acc[k] = 0.0
    j = lo
    while j + 8 <= hi:
        for k in range(8):
            acc[k] += <double>w[_within(ind[j + k], nfeat)] * <double>val[j + k]
        j = j + 8
    for k in range(hi - j):
        acc[k] += <double>w[_within(ind[j + k], nfeat)] * <double>val[j + k]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double _linear_range(const LinArgs* a, real* w, real* q, real* acc, const index* ind, const real* val,
                          Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Examples at positions [lo, hi) of the epoch; returns the sum of their losses."""
    cdef Py_ssize_t k, j, r, rn, start, end, idx
    cdef double s, p, d, update, c, z, nz, u, g, gs, y, total = 0.0
    for k in range(lo, hi):
        r = a.perm[k]
        start = a.indptr[r]
        end = a.indptr[r + 1]
        y = a.y[r]
        s = a.shared[0]
        p = _sparse_dot(w, ind, val, start, end, a.nfeat) * s + a.shared[1]
        if k + 1 < hi:
            # the next example's weights start loading while this one is updated
            # (its weights are in cache after the dot): two examples' misses overlap
            rn = a.perm[k + 1]
            for j in range(a.indptr[rn], a.indptr[rn + 1]):
                FO_PREFETCH_W(&w[_within(ind[j], a.nfeat)])
        total += _loss(a.loss, y, p)
        d = _dloss(a.loss, y, p)
        if d < -MAX_DLOSS:
            d = -MAX_DLOSS
        elif d > MAX_DLOSS:
            d = MAX_DLOSS
        if a.rule == 0:
            update = -a.eta[k] * d
            if a.shrink != NULL:
                s = a.shared[0] * a.shrink[k]
                a.shared[0] = s
            if update != 0.0:
                c = update / s
                for j in range(start, end):
                    idx = _within(ind[j], a.nfeat)
                    w[idx] = <real>(<double>w[idx] + <double>val[j] * c)
            if a.fit_intercept and update != 0.0:
                a.shared[1] = a.shared[1] + update * a.intercept_decay
            if a.ucum != NULL:
                # truncated gradient with the cumulative penalty (Tsuruoka et al. 2009)
                u = a.ucum[k]
                for j in range(start, end):
                    idx = _within(ind[j], a.nfeat)
                    z = <double>w[idx]
                    if s * z > 0.0:
                        nz = z - (u + <double>q[idx]) / s
                        w[idx] = <real>(nz if nz > 0.0 else 0.0)
                    elif s * z < 0.0:
                        nz = z + (u - <double>q[idx]) / s
                        w[idx] = <real>(nz if nz < 0.0 else 0.0)
                    q[idx] = <real>(<double>q[idx] + s * (<double>w[idx] - z))
        else:
            # sparse Adagrad on the example's support; the scale stays 1
            for j in range(start, end):
                idx = _within(ind[j], a.nfeat)
                z = <double>w[idx]
                g = d * <double>val[j] + a.alpha_l2 * z
                gs = <double>acc[idx] + g * g
                acc[idx] = <real>gs
                w[idx] = <real>(z - a.eta[k] * g / (sqrt(<double>acc[idx]) + a.eps))
            if a.fit_intercept and d != 0.0:
                a.shared[2] = a.shared[2] + d * d
                a.shared[1] = a.shared[1] - a.eta[k] * d / (sqrt(a.shared[2]) + a.eps) * a.intercept_decay
    return total


cdef void _fold(real* w, Py_ssize_t n, volatile double* shared) noexcept nogil:
    cdef double s = shared[0]
    cdef Py_ssize_t i
    if s != 1.0:
        for i in range(n):
            w[i] = <real>(<double>w[i] * s)
        shared[0] = 1.0


cdef double _linear_epoch(LinArgs* a, real* w, real* q, real* acc, const index* ind, const real* val,
                          Py_ssize_t n, Py_ssize_t nfeat, int nt, double* chunk_loss) noexcept nogil:
    cdef Py_ssize_t pos = 0, end, nch, ch, lo, hi, k, work
    cdef double s, s2, total = 0.0
    while pos < n:
        end = n
        if a.shrink != NULL:
            s = a.shared[0]
            end = pos
            while end < n:
                s2 = s * a.shrink[end]
                if s2 < MIN_SCALE:
                    break
                s = s2
                end += 1
            if end == pos:
                _fold(w, nfeat, a.shared)
                continue
        nch = (end - pos + CHUNK - 1) // CHUNK
        work = 0
        if nt > 1 and nch > 1:
            k = pos
            while k < end and work < MIN_PARALLEL_WORK:
                work = work + a.indptr[a.perm[k] + 1] - a.indptr[a.perm[k]]
                k = k + 1
        if work >= MIN_PARALLEL_WORK:
            _team_started_now()
            for ch in prange(nch, num_threads=nt, schedule="dynamic", chunksize=1):
                lo = pos + ch * CHUNK
                hi = lo + CHUNK if lo + CHUNK < end else end
                chunk_loss[ch] = _linear_range(a, w, q, acc, ind, val, lo, hi)
        else:
            for ch in range(nch):
                lo = pos + ch * CHUNK
                hi = lo + CHUNK if lo + CHUNK < end else end
                chunk_loss[ch] = _linear_range(a, w, q, acc, ind, val, lo, hi)
        for ch in range(nch):
            total += chunk_loss[ch]
        pos = end
    if a.shrink != NULL:
        _fold(w, nfeat, a.shared)
    return total


cdef inline const void* _ptr(object arr):
    return <const void*>cnp.PyArray_DATA(<cnp.ndarray>arr) if arr is not None else NULL


def linear_epoch(w, q, acc, shared, indptr, indices, data, y, perm, eta, shrink, ucum, *, int loss, int rule,
                 bint fit_intercept, double intercept_decay, double alpha_l2, double eps, int threads):
    """One epoch of Hogwild! SGD (``rule`` 0) or sparse Adagrad (``rule`` 1) on a linear model.

    The caller (:mod:`fastopt.hogwild`) has validated every argument: ``w`` (and ``q``,
    ``acc`` when used) C-contiguous arrays of ``data``'s dtype, ``shared`` float64[3]
    (scale, intercept, intercept's Adagrad sum), ``indptr``/``perm`` int64, ``indices``
    int32 or int64 (sorted, unique per row, in range), ``y``/``eta``/``shrink``/``ucum``
    float64 (``shrink``/``ucum`` None when the penalty has no L2/L1 part). Per example
    at position ``k`` (row ``r = perm[k]``, ``p = s <v, x_r> + b``, ``d = loss'(y_r, p)``
    clipped to +-1e12):

    * SGD: ``s <- s f[k]``; ``v_j <- v_j + (-eta[k] d / s) x_rj``; ``b <- b - eta[k] d
      decay``; L1: ``v_j`` moved toward 0 by ``(u[k] +- q_j) / s`` without crossing it,
      ``q_j`` += the penalty applied (scikit-learn's ``l1penalty``).
    * Adagrad: ``g_j = d x_rj + alpha_l2 v_j``, ``G_j += g_j^2``, ``v_j -= eta[k] g_j /
      (sqrt(G_j) + eps)`` for ``j`` in the row's support.

    Returns the sum of the examples' losses (at the prediction before their update).
    """
    cdef LinArgs a
    cdef Py_ssize_t n = perm.shape[0], nfeat = w.shape[0]
    cdef int nt = resolve_threads(threads)
    cdef cnp.ndarray chunk_loss = np.zeros(max(1, (n + CHUNK - 1) // CHUNK), np.float64)
    cdef double* cl = <double*>cnp.PyArray_DATA(chunk_loss)
    cdef double total
    cdef bint f32 = w.dtype == np.float32
    cdef bint i32 = indices.dtype == np.int32
    cdef void* pw = <void*>cnp.PyArray_DATA(<cnp.ndarray>w)
    cdef void* pq = <void*>_ptr(q)
    cdef void* pa = <void*>_ptr(acc)
    cdef const void* pi = _ptr(indices)
    cdef const void* pv = _ptr(data)
    a.indptr = <const long long*>_ptr(indptr)
    a.perm = <const long long*>_ptr(perm)
    a.y = <const double*>_ptr(y)
    a.eta = <const double*>_ptr(eta)
    a.shrink = <const double*>_ptr(shrink)
    a.ucum = <const double*>_ptr(ucum)
    a.shared = <volatile double*>cnp.PyArray_DATA(<cnp.ndarray>shared)
    a.loss = loss
    a.rule = rule
    a.fit_intercept = fit_intercept
    a.intercept_decay = intercept_decay
    a.alpha_l2 = alpha_l2
    a.eps = eps
    a.nfeat = nfeat
    with nogil:
        if f32 and i32:
            total = _linear_epoch(&a, <float*>pw, <float*>pq, <float*>pa, <const int*>pi, <const float*>pv,
                                  n, nfeat, nt, cl)
        elif f32:
            total = _linear_epoch(&a, <float*>pw, <float*>pq, <float*>pa, <const long long*>pi,
                                  <const float*>pv, n, nfeat, nt, cl)
        elif i32:
            total = _linear_epoch(&a, <double*>pw, <double*>pq, <double*>pa, <const int*>pi,
                                  <const double*>pv, n, nfeat, nt, cl)
        else:
            total = _linear_epoch(&a, <double*>pw, <double*>pq, <double*>pa, <const long long*>pi,
                                  <const double*>pv, n, nfeat, nt, cl)
    return total


cdef struct MFArgs:
    const long long* perm
    const long long* users
    const long long* items
    const double* ratings
    double mu
    double eta
    double reg
    double eps
    int rule
    Py_ssize_t k
    Py_ssize_t n_users
    Py_ssize_t n_items


cdef double _mf_range(const MFArgs* a, real* P, real* Q, real* GP, real* GQ, Py_ssize_t lo,
                      Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t, r, f, u, i, K = a.k
    cdef real* pu
    cdef real* qi
    cdef real* gu
    cdef real* gi
    cdef double e, pf, qf, gp, gq, total = 0.0
    for t in range(lo, hi):
        r = a.perm[t]
        u = _within(a.users[r], a.n_users)
        i = _within(a.items[r], a.n_items)
        pu = P + u * K
        qi = Q + i * K
        e = 0.0
        for f in range(K):
            e += <double>pu[f] * <double>qi[f]
        e = a.ratings[r] - (a.mu + e)
        total += e * e
        if a.rule == 0:
            for f in range(K):
                pf = <double>pu[f]
                qf = <double>qi[f]
                pu[f] = <real>(pf + a.eta * (e * qf - a.reg * pf))
                qi[f] = <real>(qf + a.eta * (e * pf - a.reg * qf))
        else:
            gu = GP + u * K
            gi = GQ + i * K
            for f in range(K):
                pf = <double>pu[f]
                qf = <double>qi[f]
                gp = a.reg * pf - e * qf
                gq = a.reg * qf - e * pf
                gu[f] = <real>(<double>gu[f] + gp * gp)
                gi[f] = <real>(<double>gi[f] + gq * gq)
                pu[f] = <real>(pf - a.eta * gp / (sqrt(<double>gu[f]) + a.eps))
                qi[f] = <real>(qf - a.eta * gq / (sqrt(<double>gi[f]) + a.eps))
    return total


cdef double _mf_epoch(const MFArgs* a, real* P, real* Q, real* GP, real* GQ, Py_ssize_t n, int nt,
                      double* chunk_loss) noexcept nogil:
    cdef Py_ssize_t nch = (n + CHUNK - 1) // CHUNK, ch, lo, hi
    cdef double total = 0.0
    if nt > 1 and nch > 1 and n * a.k >= MIN_PARALLEL_WORK:
        _team_started_now()
        for ch in prange(nch, num_threads=nt, schedule="dynamic", chunksize=1):
            lo = ch * CHUNK
            hi = lo + CHUNK if lo + CHUNK < n else n
            chunk_loss[ch] = _mf_range(a, P, Q, GP, GQ, lo, hi)
    else:
        for ch in range(nch):
            lo = ch * CHUNK
            hi = lo + CHUNK if lo + CHUNK < n else n
            chunk_loss[ch] = _mf_range(a, P, Q, GP, GQ, lo, hi)
    for ch in range(nch):
        total += chunk_loss[ch]
    return total


def mf_epoch(P, Q, GP, GQ, users, items, ratings, perm, *, double mu, double eta, double reg, double eps, int rule,
             int threads):
    """One epoch of Hogwild! matrix factorisation, ``r_ui ~ mu + <P_u, Q_i>``.

    Arguments validated by the caller: ``P`` (users x k) and ``Q`` (items x k)
    C-contiguous float32/float64 of one dtype (``GP``/``GQ`` their Adagrad sums, same
    shape, or None for SGD), ``users``/``items``/``perm`` int64, ``ratings`` float64.
    Per rating at position ``t`` (``e = r - mu - <P_u, Q_i>``, in float64), for each
    factor ``f`` with the old ``p = P_uf``, ``q = Q_if``:

    * SGD: ``P_uf <- p + eta (e q - reg p)``, ``Q_if <- q + eta (e p - reg q)``;
    * Adagrad: ``g = reg p - e q`` (and ``reg q - e p``), ``G += g^2``,
      ``P_uf <- p - eta g / (sqrt(G) + eps)``.

    Returns the sum of squared errors seen (before each rating's update).
    """
    cdef MFArgs a
    cdef Py_ssize_t n = perm.shape[0]
    cdef int nt = resolve_threads(threads)
    cdef cnp.ndarray chunk_loss = np.zeros(max(1, (n + CHUNK - 1) // CHUNK), np.float64)
    cdef double* cl = <double*>cnp.PyArray_DATA(chunk_loss)
    cdef double total
    cdef bint f32 = P.dtype == np.float32
    cdef void* pp = <void*>cnp.PyArray_DATA(<cnp.ndarray>P)
    cdef void* pq = <void*>cnp.PyArray_DATA(<cnp.ndarray>Q)
    cdef void* gp = <void*>_ptr(GP)
    cdef void* gq = <void*>_ptr(GQ)
    a.perm = <const long long*>_ptr(perm)
    a.users = <const long long*>_ptr(users)
    a.items = <const long long*>_ptr(items)
    a.ratings = <const double*>_ptr(ratings)
    a.mu = mu
    a.eta = eta
    a.reg = reg
    a.eps = eps
    a.rule = rule
    a.k = P.shape[1]
    a.n_users = P.shape[0]
    a.n_items = Q.shape[0]
    with nogil:
        if f32:
            total = _mf_epoch(&a, <float*>pp, <float*>pq, <float*>gp, <float*>gq, n, nt, cl)
        else:
            total = _mf_epoch(&a, <double*>pp, <double*>pq, <double*>gp, <double*>gq, n, nt, cl)
    return total


cdef Py_ssize_t _scan_csr(const long long* indptr, Py_ssize_t n, const index* ind, const real* val,
                          long long ncols, int* code) noexcept nogil:
    """First bad row (code 1: column out of range, 2: unsorted, 3: duplicate, 4: non-finite
    value), or -1."""
    cdef Py_ssize_t r, j
    cdef long long c, prev
    cdef double v
    for r in range(n):
        prev = -1
        for j in range(indptr[r], indptr[r + 1]):
            c = ind[j]
            v = <double>val[j]
            if c < 0 or c >= ncols:
                code[0] = 1
                return r
            if c <= prev:
                code[0] = 2 if c < prev else 3
                return r
            if v - v != 0.0:
                code[0] = 4
                return r
            prev = c
    code[0] = 0
    return -1


def scan_csr(indptr, indices, data, long long ncols):
    """``(code, row)`` of the first row of a CSR matrix that breaks a rule: code 0 (none,
    row -1), 1 (a column index outside ``[0, ncols)``), 2 (unsorted column indices),
    3 (a duplicate column index) or 4 (a non-finite value). ``indptr`` int64 (checked
    by the caller: starts at 0, never decreases, ends within the arrays), ``indices``
    int32/int64, ``data`` float32/float64, all C-contiguous."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, row
    cdef int code = 0
    cdef const long long* ip = <const long long*>_ptr(indptr)
    cdef const void* pi = _ptr(indices)
    cdef const void* pv = _ptr(data)
    cdef bint f32 = data.dtype == np.float32
    cdef bint i32 = indices.dtype == np.int32
    with nogil:
        if f32 and i32:
            row = _scan_csr(ip, n, <const int*>pi, <const float*>pv, ncols, &code)
        elif f32:
            row = _scan_csr(ip, n, <const long long*>pi, <const float*>pv, ncols, &code)
        elif i32:
            row = _scan_csr(ip, n, <const int*>pi, <const double*>pv, ncols, &code)
        else:
            row = _scan_csr(ip, n, <const long long*>pi, <const double*>pv, ncols, &code)
    return code, row


cdef void _remap(const index* ind, index* out, const long long* newid, Py_ssize_t n,
                 Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = <index>newid[_within(ind[j], d)]


def remap(indices, newid):
    """``newid[indices]`` as a new array of ``indices``' dtype (int32/int64, in range:
    checked by the caller)."""
    out = np.empty_like(indices)
    cdef const void* pi = _ptr(indices)
    cdef void* po = <void*>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef const long long* pn = <const long long*>_ptr(newid)
    cdef Py_ssize_t n = indices.shape[0], d = newid.shape[0]
    cdef bint i32 = indices.dtype == np.int32
    with nogil:
        if i32:
            _remap(<const int*>pi, <int*>po, pn, n, d)
        else:
            _remap(<const long long*>pi, <long long*>po, pn, n, d)
    return out
