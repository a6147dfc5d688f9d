# cython: language_level=3, boundscheck=False, wraparound=False
"""A third-party extension that drives fastopt's compiled kernels from C, without the
GIL: built and imported by tests/test_cimport.py."""
from libc.math cimport INFINITY
from libc.string cimport memset

from fastopt._kernels._types cimport MAX_BUFFERS, N_COMMON, RuleEntry, Slot
from fastopt._kernels.rules cimport rule_entry, sgd_f64

cdef extern from "Python.h":
    int PyGILState_Check() nogil      # 1 if this thread holds the GIL


cdef enum:
    MAX_OUT = 32
    MAX_HYPER = 16
    MAX_SSTATE = 4


cdef void fill_common(double* scal, double lr) noexcept nogil:
    # fastopt.rules.COMMON_SCALARS: sign, has_wd, wd, coef, clip, decay, sigma, lr, l1_sub, l1_thr
    # (zero first: common scalars added later default to "off")
    memset(scal, 0, N_COMMON * sizeof(double))
    scal[0] = 1.0          # sign (-1 to maximize)
    scal[1] = 0.0          # has_wd (coupled weight decay on/off)
    scal[2] = 0.0          # wd
    scal[3] = 1.0          # coef (global-norm clip factor)
    scal[4] = INFINITY     # clip (by value)
    scal[5] = 1.0          # decay (decoupled: 1 - lr wd)
    scal[6] = 0.0          # sigma (gradient noise off)
    scal[7] = lr
    scal[8] = 0.0          # l1_sub (coupled L1 subgradient off)
    scal[9] = 0.0          # l1_thr (proximal L1 off)


def sgd(double[::1] param, const double[::1] grad, double lr):
    """p -= lr g through fastopt's sgd_f64, called with the GIL released. Returns
    whether the GIL was held during the call (it must not be)."""
    cdef Slot slot
    cdef double scal[N_COMMON]
    cdef Py_ssize_t n = param.shape[0]
    cdef int held
    if grad.shape[0] != n:
        raise ValueError("grad and param differ in length")
    memset(&slot, 0, sizeof(Slot))
    fill_common(scal, lr)
    slot.n = n
    slot.scal = scal
    slot.fn = sgd_f64
    slot.itemsize = 8
    if n:
        slot.buf[0] = <char*>&param[0]
        slot.buf[1] = <char*>&grad[0]
    with nogil:
        held = PyGILState_Check()
        sgd_f64(&slot, 0, n)
    return bool(held)


def rule_step(int index, double[::1] param, const double[::1] grad, list states, hyper, double t,
              scalar_state=()):
    """One float64 step of any rule, found through rule_entry(index): its per-step
    scalars, then its kernel, both with the GIL released. ``hyper`` is lr followed by
    the rule's hyper-parameters in order. Returns (new scalar state, GIL held?)."""
    cdef const RuleEntry* e = rule_entry(index)
    cdef Slot slot
    cdef double scal[N_COMMON + MAX_OUT]
    cdef double h[MAX_HYPER]
    cdef double ss[MAX_SSTATE]
    cdef double[::1] s
    cdef Py_ssize_t n = param.shape[0], k
    cdef int held
    if len(states) != e.n_state or e.n_state + 2 > MAX_BUFFERS:
        raise ValueError(f"this rule takes {e.n_state} state arrays")
    if len(hyper) != e.n_hyper or e.n_out > MAX_OUT:
        raise ValueError(f"this rule takes {e.n_hyper} hyper-parameters (lr first)")
    memset(&slot, 0, sizeof(Slot))
    for k in range(e.n_hyper):
        h[k] = hyper[k]
    for k in range(MAX_SSTATE):
        ss[k] = scalar_state[k] if k < len(scalar_state) else 0.0
    fill_common(scal, h[0])
    slot.n = n
    slot.scal = scal
    slot.fn = e.f64
    slot.itemsize = 8
    if n:
        slot.buf[0] = <char*>&param[0]
        slot.buf[1] = <char*>&grad[0]
        for k in range(e.n_state):
            s = states[k]
            if s.shape[0] != n:
                raise ValueError("state length")
            slot.buf[2 + k] = <char*>&s[0]
    with nogil:
        held = PyGILState_Check()
        e.scalars(h, t, ss, scal + N_COMMON)
        e.f64(&slot, 0, n)
    return [ss[k] for k in range(e.n_scalar_state)], bool(held)
