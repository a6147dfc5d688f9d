# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, cpow=True
"""The compiled step: everything between ``opt.step(grads)`` and the kernels.

An :class:`Engine` belongs to one optimizer. It keeps the raw pointers of the
parameters and their state, checks the gradients, turns each group's hyper-parameters
into per-step scalars (once per group and step), runs the optional global reduction
(norm clipping, non-finite detection) and then every parameter's kernel in one
parallel region. Nothing is written until every check has passed.

Lifetimes: the step holds its own reference to every gradient (and to every converted
array) until the kernels are done, so a container that builds gradients on demand, or
another thread emptying the caller's list, cannot free memory the kernels read.

Threads: one optimizer may be shared by threads. Its :class:`StepGuard` serialises
``step``, ``state_dict``, ``load_state_dict`` and ``add_param_group``; a thread waiting
for it has released the GIL. Re-entering the optimizer from the thread that holds it
(a gradient's ``__array__`` or a schedule calling ``step``) raises RuntimeError.
"""
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_get_thread_ident, PyThread_release_lock,
                               PyThread_type_lock)
from cpython.ref cimport PyObject
from libc.math cimport INFINITY, isfinite, pow, sqrt
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastopt._kernels._types cimport MAX_BUFFERS, N_COMMON, RuleEntry, Slot
from fastopt._kernels.layout cimport C_CLIP, C_COEF, C_DECAY, C_HAS_WD, C_LR, C_SIGMA, C_SIGN, C_WD, accesses
from fastopt._kernels.layout cimport C_L1_SUB, C_L1_THR
from fastopt._kernels.driver cimport (count_blocks, pass_done, plan_threads, resolve_threads, run_slots, slots_bytes,
                                      sumsq_partials, sumsq_slots, update_slots)
from fastopt._kernels.noise cimport noise_key
from fastopt._kernels.rules cimport rule_entry
from fastopt._kernels.rows cimport allows_exact, row_kernel
from fastopt._kernels.sparse cimport mark_rows, sumsq_rows
from fastopt._kernels.lowrules cimport low_kernel

import os
import weakref

import numpy as np
from numbers import Real

from fastopt._kernels.driver import first_touch
from fastopt._kernels.sparse import check_indices, coalesce_index, new_workspace
from fastopt._kernels.rules import RULE_INDEX
from fastopt._kernels.lowrules import LOW_VARIANTS
from fastopt._validate import ReentryError, as_array, check_like, grads_sequence
from fastopt.sparse import catch_up, checked_rows, is_sparse_input
from fastopt.rules import BY_NAME

cnp.import_array()

cdef enum:
    MAX_SSTATE = 4
    MAX_HYPER = 16
    MAX_OUT = 24
    STRIDE = N_COMMON + MAX_OUT
    GCOMMON = 6                 # per-group common settings (Engine.gcommon)

POLICIES = {"ignore": 0, "raise": 1, "skip": 2}


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient held inf or NaN and the optimizer's policy is ``"raise"``."""


cdef class StepGuard:
    """The lock of one optimizer: held by ``step`` (with the GIL released while the
    kernels run), ``state_dict``, ``load_state_dict`` and ``add_param_group``, so two
    threads never see each other's half-done work. Not re-entrant: the holding thread
    calling in again gets a RuntimeError instead of a deadlock or a torn state."""
    cdef PyThread_type_lock lock
    cdef unsigned long owner
    cdef str doing
    cdef object __weakref__

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()
        self.owner = 0
        self.doing = ""
        _GUARDS.add(self)

    cdef void _reset_in_child(self) noexcept:
        # the thread that held it does not exist in a forked child: a fresh lock
        self.lock = PyThread_allocate_lock()
        self.owner = 0
        self.doing = ""

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int enter(self, str what) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        # only the holder ever stores its own ident, so this is true only for the holder
        if self.owner == me:
            raise ReentryError(f"{what} called while this thread is inside {self.doing} of the same optimizer "
                               "(e.g. from a gradient's __array__ or a learning-rate schedule); an optimizer "
                               "cannot be re-entered")
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)      # waiting forever cannot fail
        self.owner = me
        self.doing = what
        return 0

    cdef void leave(self) noexcept:
        self.owner = 0
        PyThread_release_lock(self.lock)

    def acquire(self, str what):
        """Take the guard for ``what`` (a name for the error a re-entry gets)."""
        self.enter(what)

    def release(self):
        """Give the guard back (only the thread that took it may)."""
        if self.owner != PyThread_get_thread_ident():
            raise RuntimeError("the optimizer's guard is not held by this thread")
        self.leave()


_GUARDS = weakref.WeakSet()


cdef object _memory_owner(object a):
    # the last ndarray of the chain of bases: the one NumPy could resize
    while isinstance(a.base, cnp.ndarray):
        a = a.base
    return a


# steps that move fewer bytes keep the GIL (see Engine._step)
cdef Py_ssize_t NOGIL_BYTES = 65536


cdef list _pin_memory(list held):
    # a weak reference to the memory owner of every array the kernels will read
    # (gradients; a sparse gradient's rows and values)
    cdef list pins = []
    for g in held:
        if isinstance(g, tuple):
            for a in g:
                if isinstance(a, cnp.ndarray):
                    pins.append(weakref.ref(_memory_owner(a)))
        elif isinstance(g, cnp.ndarray):
            pins.append(weakref.ref(_memory_owner(g)))
    return pins


cdef int _norm_pass(Slot* run, Py_ssize_t ndense, Py_ssize_t nact, int nt, Py_ssize_t nbytes, int wanted,
                    double* total) noexcept nogil:
    # the global norm's sum of squares: dense slots, then row slots
    cdef int rc = sumsq_slots(run, ndense, nt, total)
    pass_done(nbytes, nt, wanted)
    # the row blocks continue the dense blocks' running sum
    if rc >= 0 and nact > ndense and sumsq_rows(run + ndense, nact - ndense, total) == 1:
        rc = 1
    return rc


cdef void _update_pass(Slot* run, Py_ssize_t ndense, Py_ssize_t nact, int nt, Py_ssize_t nbytes, int wanted,
                       bint exact) noexcept nogil:
    run_slots(run, nact, nt)
    pass_done(nbytes, nt, wanted)
    if exact and nact > ndense:
        mark_rows(run + ndense, nact - ndense)


def _reset_guards_in_child():
    for guard in list(_GUARDS):
        (<StepGuard>guard)._reset_in_child()


os.register_at_fork(after_in_child=_reset_guards_in_child)


cdef inline int _typenum_itemsize(int typenum) noexcept:
    if typenum == cnp.NPY_FLOAT32:
        return 4
    if typenum == cnp.NPY_FLOAT64:
        return 8
    return 0


cdef void fill_common(double* row, double lr, double wd, bint maximize, bint decoupled, double clip,
                      double sigma) noexcept nogil:
    row[C_SIGN] = -1.0 if maximize else 1.0
    row[C_HAS_WD] = 1.0 if (wd != 0.0 and not decoupled) else 0.0
    row[C_WD] = 0.0 if decoupled else wd
    row[C_COEF] = 1.0
    row[C_CLIP] = clip
    row[C_DECAY] = 1.0 - lr * wd if (decoupled and wd != 0.0) else 1.0
    row[C_SIGMA] = sigma
    row[C_LR] = lr


cdef void fill_l1(double* row, double lr, double l1, bint coupled) noexcept nogil:
    # coupled: g += λ1 sign(p) before the rule; proximal: soft-threshold p by lr λ1 after it
    row[C_L1_SUB] = l1 if coupled else 0.0
    row[C_L1_THR] = 0.0 if coupled else lr * l1


cdef class Engine:
    cdef Slot* slots            # per parameter: param and state pointers
    cdef Slot* run              # scratch: the slots of this step's active parameters
    cdef int* rule_of
    cdef Py_ssize_t* group_of
    cdef long long* steps
    cdef double* sstate
    cdef double* sstate_new
    cdef double* scal
    cdef double* ghyper         # per group: lr, then the rule's hyper-parameters
    cdef double* gcommon        # per group (GCOMMON each): weight_decay, maximize, decoupled, clip, l1, l1 coupled
    cdef long long* gstep       # per group: steps taken (the schedule's counter)
    cdef Py_ssize_t* iv_lo      # every written buffer's byte range, sorted
    cdef Py_ssize_t* iv_hi
    cdef Py_ssize_t niv
    cdef readonly Py_ssize_t nparams, ngroups
    cdef list params, states, groups, keys, cache
    cdef int* typenum           # per parameter: its dtype at construction
    cdef object validate
    cdef StepGuard guard
    cdef Engine successor       # set when add_param_group replaced this engine
    cdef list pins              # weak references that stop NumPy resizing our arrays
    cdef double clip_norm, noise_eta, noise_gamma
    cdef unsigned long long seed
    cdef int policy
    cdef readonly double last_grad_norm
    cdef readonly bint last_skipped
    cdef object norm_reducer    # None, or combines this engine's block terms with other processes'
    # sparse steps (fastopt.sparse): "exact" mode and its per-row step counters
    cdef readonly bint exact
    cdef list last_rows         # per parameter: int64 (rows,) of last-updated steps, or None
    cdef list coalesce_ws       # per parameter: None, or its coalescing workspace (buffers kept between steps)
    cdef list rule_names
    cdef list low               # per parameter: None, or its LowSlot (low-precision storage)
    cdef double grad_scale      # gradients are multiplied by it first (1 / loss scale)

    def __cinit__(self):
        self.slots = NULL

    @staticmethod
    def first_touch(list states, list values):
        """Fill new state buffers (``states[k][j] = values[k][j]``) with the threads and
        element split of a step: see :func:`fastopt._kernels.driver.first_touch`."""
        first_touch(states, values)

    def __init__(self, list params, list states, list rules, list group_of, list groups, list keys,
                 validate, *, clip_norm=None, noise=None, seed=0, nonfinite="ignore", StepGuard guard=None,
                 low=None, grad_scale=1.0):
        """params: ndarrays; states: per param, the tuple of state ndarrays in rule order;
        rules: per param, the rule name; group_of: per param, its group index; groups:
        the optimizer's param_groups (dicts, read on every step); keys: per group, the
        dict keys whose change calls ``validate(group_index)``, which returns
        ``(rule hyper tuple, weight_decay, maximize, decoupled, clip_value)``, optionally
        followed by ``(l1, l1_coupled)`` (L1 off when absent).

        low: None, or per parameter None or a :class:`LowSlot` (a low-precision kernel
        variant: its buffers' dtypes and sizes, the working copy, the accepted gradient
        dtypes); grad_scale: every gradient is multiplied by it before anything else
        (the inverse of a loss scale; low-precision gradients only)."""
        cdef Py_ssize_t k, j, n = len(params), ng = len(groups)
        cdef cnp.ndarray a
        cdef const RuleEntry* e
        self.nparams = n
        self.ngroups = ng
        self.params = params
        self.states = states
        self.groups = groups
        self.keys = keys
        self.validate = validate
        self.guard = StepGuard() if guard is None else guard
        self.cache = [[None] * len(kk) for kk in keys]
        if nonfinite not in POLICIES:
            raise ValueError(f"nonfinite must be one of {sorted(POLICIES)}, got {nonfinite!r}")
        self.policy = POLICIES[nonfinite]
        self.clip_norm = 0.0 if clip_norm is None else float(clip_norm)
        if noise is None:
            self.noise_eta, self.noise_gamma = 0.0, 0.55
        else:
            self.noise_eta, self.noise_gamma = float(noise[0]), float(noise[1])
        self.seed = <unsigned long long>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.exact = False
        self.last_rows = [None] * n
        self.coalesce_ws = [None] * n
        self.rule_names = list(rules)
        self.low = [None] * n if low is None else list(low)
        self.grad_scale = float(grad_scale)
        if len(self.low) != n:
            raise ValueError("low must have one entry per parameter")
        m = max(n, 1)
        self.slots = <Slot*>calloc(m, sizeof(Slot))
        self.run = <Slot*>calloc(m, sizeof(Slot))
        self.rule_of = <int*>calloc(m, sizeof(int))
        self.group_of = <Py_ssize_t*>calloc(m, sizeof(Py_ssize_t))
        self.steps = <long long*>calloc(m, sizeof(long long))
        self.sstate = <double*>calloc(m * MAX_SSTATE, sizeof(double))
        self.sstate_new = <double*>calloc(m * MAX_SSTATE, sizeof(double))
        self.scal = <double*>calloc(m * STRIDE, sizeof(double))
        self.ghyper = <double*>calloc(max(ng, 1) * MAX_HYPER, sizeof(double))
        self.gcommon = <double*>calloc(max(ng, 1) * GCOMMON, sizeof(double))
        self.gstep = <long long*>calloc(max(ng, 1), sizeof(long long))
        self.iv_lo = <Py_ssize_t*>calloc(m * MAX_BUFFERS, sizeof(Py_ssize_t))
        self.iv_hi = <Py_ssize_t*>calloc(m * MAX_BUFFERS, sizeof(Py_ssize_t))
        self.typenum = <int*>calloc(m, sizeof(int))
        if (self.typenum == NULL or self.slots == NULL or self.run == NULL or self.scal == NULL or self.iv_lo == NULL
                or self.iv_hi == NULL or self.sstate == NULL or self.sstate_new == NULL):
            raise MemoryError()
        intervals = []
        for k in range(n):
            r = RULE_INDEX[rules[k]]
            e = rule_entry(r)
            if e.n_out > MAX_OUT or e.n_scalar_state > MAX_SSTATE or e.n_hyper > MAX_HYPER:
                raise RuntimeError("rule table exceeds the engine's limits")
            self.rule_of[k] = r
            self.group_of[k] = group_of[k]
            a = params[k]
            self.typenum[k] = cnp.PyArray_TYPE(a)
            itemsize = _typenum_itemsize(cnp.PyArray_TYPE(a))
            self.slots[k].n = cnp.PyArray_SIZE(a)
            self.slots[k].itemsize = itemsize
            self.slots[k].accesses = accesses(e.n_state)
            self.slots[k].fn = e.f32 if itemsize == 4 else e.f64
            self.slots[k].buf[0] = <char*>cnp.PyArray_DATA(a)
            lo_slot = self.low[k]
            if lo_slot is not None:
                self._set_low(k, r, lo_slot, e.n_state, len(states[k]))
            elif len(states[k]) != e.n_state:
                raise RuntimeError(f"rule {rules[k]} needs {e.n_state} state buffers")
            for j, s in enumerate(states[k]):
                self.slots[k].buf[2 + j] = <char*>cnp.PyArray_DATA(s)
            for buf in [a] + list(states[k]) + ([] if lo_slot is None or lo_slot.copy is None else [lo_slot.copy]):
                if buf.size:
                    lo = <Py_ssize_t>cnp.PyArray_DATA(buf)
                    intervals.append((lo, lo + buf.nbytes))
        # NumPy refuses to resize an array that has a weak reference, even with
        # refcheck=False, so a weak reference to the array that owns each parameter's
        # and state's memory keeps the pointers above valid while this engine lives
        self.pins = [weakref.ref(_memory_owner(a)) for k in range(n) for a in [params[k]] + list(states[k])
                     + ([] if self.low[k] is None or self.low[k].copy is None else [self.low[k].copy])]
        intervals.sort()
        self.niv = len(intervals)
        for k, (lo, hi) in enumerate(intervals):
            self.iv_lo[k] = lo
            self.iv_hi[k] = hi

    def __dealloc__(self):
        if self.slots != NULL:
            free(self.slots)
            free(self.run)
            free(self.rule_of)
            free(self.group_of)
            free(self.steps)
            free(self.sstate)
            free(self.sstate_new)
            free(self.scal)
            free(self.ghyper)
            free(self.gcommon)
            free(self.gstep)
            free(self.iv_lo)
            free(self.iv_hi)
            free(self.typenum)

    cdef int _set_low(self, Py_ssize_t k, int r, object lo_slot, int n_state, int nbuf) except -1:
        cdef LowSlot ls = <LowSlot?>lo_slot
        cdef int v = LOW_VARIANTS.index(ls.variant)
        if low_kernel(r, v) == NULL:
            raise ValueError(f"params[{k}]: no {ls.variant} kernel is generated for this rule")
        if nbuf != n_state * (2 if ls.q8 else 1):
            raise RuntimeError(f"params[{k}]: {nbuf} state buffers for the {ls.variant} kernel")
        self.slots[k].fn = low_kernel(r, v)
        self.slots[k].itemsize = 4
        self.slots[k].gkind = ls.gkind
        self.slots[k].sround = ls.sround
        self.slots[k].align = 256 if ls.q8 else 0
        self.slots[k].bpe = ls.bpe
        if ls.copy is not None:
            self.slots[k].buf[MAX_BUFFERS - 1] = <char*>cnp.PyArray_DATA(<cnp.ndarray>ls.copy)
        return 0

    cdef int _check_low_buffers(self, Py_ssize_t k) except -1:
        # the low-precision twin of _check_buffers: each buffer against its own dtype and size
        cdef LowSlot ls = <LowSlot>self.low[k]
        cdef cnp.ndarray a
        cdef char* ptr
        cdef Py_ssize_t j, nst = len(<tuple>self.states[k])
        for j in range(nst + 2):
            if j == 0:
                a, ptr, dtype, size, name = (<cnp.ndarray>self.params[k], self.slots[k].buf[0], ls.param_dtype,
                                             self.slots[k].n, f"params[{k}]")
            elif j <= nst:
                a, ptr, dtype, size = ((<tuple>self.states[k])[j - 1], self.slots[k].buf[1 + j],
                                       ls.state_dtypes[j - 1], ls.state_sizes[j - 1])
                name = f"the state buffer {j - 1} of params[{k}]"
            elif ls.copy is not None:
                a, ptr, dtype, size, name = (<cnp.ndarray>ls.copy, self.slots[k].buf[MAX_BUFFERS - 1], ls.copy.dtype,
                                             self.slots[k].n, f"the working copy of params[{k}]")
            else:
                break
            if (<char*>cnp.PyArray_DATA(a) != ptr or a.dtype != dtype or a.size != size
                    or not cnp.PyArray_ISWRITEABLE(a) or not cnp.PyArray_ISNOTSWAPPED(a)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
                self._buffer_error(k, a, name)
        return 0

    cdef object _check_grad_low(self, object g, Py_ssize_t k):
        cdef LowSlot ls = <LowSlot>self.low[k]
        if not isinstance(g, cnp.ndarray):
            raise TypeError(f"grads[{k}] must be a NumPy array of dtype {ls.grad_names}, got {type(g).__name__}")
        arr = g
        if arr.dtype not in ls.grad_dtypes:
            raise TypeError(f"grads[{k}] has dtype {arr.dtype}; this parameter takes {ls.grad_names} gradients "
                            f"({ls.why})")
        if arr.shape != ls.shape:
            raise ValueError(f"grads[{k}] has shape {arr.shape}, its parameter {ls.shape}")
        if not (arr.flags.c_contiguous and arr.flags.aligned and arr.dtype.isnative):
            raise ValueError(f"grads[{k}] must be C-contiguous, aligned and in native byte order")
        lo = <Py_ssize_t>cnp.PyArray_DATA(arr)
        if arr.size and self._overlaps_written(lo, lo + arr.nbytes):
            raise ValueError(f"grads[{k}] shares memory with a parameter or optimizer state")
        return arr.view(ls.grad_view)

    def set_grad_scale(self, double scale):
        """Multiply every gradient by ``scale`` first (the inverse of a loss scale)."""
        if not (isfinite(scale) and scale > 0.0):
            raise ValueError(f"the gradient scale must be finite and > 0, got {scale!r}")
        self.grad_scale = scale

    cdef bint _overlaps_written(self, Py_ssize_t lo, Py_ssize_t hi) noexcept:
        # the written ranges are disjoint and sorted: only the last one starting before
        # ``hi`` can overlap [lo, hi)
        cdef Py_ssize_t a = 0, b = self.niv, mid
        while a < b:
            mid = (a + b) // 2
            if self.iv_lo[mid] < hi:
                a = mid + 1
            else:
                b = mid
        return a > 0 and self.iv_hi[a - 1] > lo

    cdef inline bint _fast_grad_ok(self, object g, Py_ssize_t k):
        # the common case, checked without building any Python object
        if type(g) is not cnp.ndarray:
            return False
        cdef cnp.ndarray arr = <cnp.ndarray>g
        cdef cnp.ndarray p = <cnp.ndarray>self.params[k]
        cdef int nd = cnp.PyArray_NDIM(arr), d
        if (cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(p) or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
                or not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_ISALIGNED(arr)
                or nd != cnp.PyArray_NDIM(p)):
            return False
        for d in range(nd):
            if cnp.PyArray_DIMS(arr)[d] != cnp.PyArray_DIMS(p)[d]:
                return False
        cdef Py_ssize_t lo = <Py_ssize_t>cnp.PyArray_DATA(arr)
        return not (cnp.PyArray_SIZE(arr) and self._overlaps_written(lo, lo + cnp.PyArray_NBYTES(arr)))

    cdef int _check_buffers(self, Py_ssize_t k) except -1:
        # the step writes through pointers taken at construction: refuse if the arrays
        # behind them were made read-only, re-typed or reallocated since (ndarray.resize
        # with refcheck=False moves the data and frees the old block)
        if self.low[k] is not None:
            return self._check_low_buffers(k)
        cdef cnp.ndarray a = <cnp.ndarray>self.params[k]
        cdef Py_ssize_t j
        if (<char*>cnp.PyArray_DATA(a) != self.slots[k].buf[0] or cnp.PyArray_TYPE(a) != self.typenum[k]
                or cnp.PyArray_SIZE(a) != self.slots[k].n or not cnp.PyArray_ISWRITEABLE(a)
                or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
            self._buffer_error(k, a, f"params[{k}]")
        states = <tuple>self.states[k]
        for j in range(len(states)):
            a = <cnp.ndarray>states[j]
            if (<char*>cnp.PyArray_DATA(a) != self.slots[k].buf[2 + j] or cnp.PyArray_TYPE(a) != self.typenum[k]
                    or cnp.PyArray_SIZE(a) != self.slots[k].n or not cnp.PyArray_ISWRITEABLE(a)
                    or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
                self._buffer_error(k, a, f"the state buffer {j} of params[{k}]")
        return 0

    cdef void _buffer_error(self, Py_ssize_t k, cnp.ndarray a, str name) except *:
        if not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError(f"{name} is read-only (made so after the optimizer was created); nothing was updated")
        raise ValueError(f"{name} no longer has the memory, dtype, byte order, layout or size it had when the "
                         "optimizer was created (resized, re-typed or re-strided in place?); nothing was updated")

    cdef object _check_grad(self, object g, Py_ssize_t k):
        # the slow path: convert what can be converted, or raise naming the gradient
        arr = as_array(g, f"grads[{k}]", writeable=False)
        check_like(arr, f"grads[{k}]", self.params[k], "its parameter")
        cdef Py_ssize_t lo = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>arr)
        if arr.size and self._overlaps_written(lo, lo + arr.nbytes):
            raise ValueError(f"grads[{k}] shares memory with a parameter or optimizer state")
        return arr

    cdef dict _group(self, Py_ssize_t gi):
        # param_groups is the optimizer's live list: a user (or a callback) may have
        # removed or replaced entries since the engine was built
        if len(self.groups) != self.ngroups:
            raise ValueError(f"param_groups has {len(self.groups)} groups, the optimizer was built with "
                             f"{self.ngroups}; add groups with add_param_group, never remove them")
        group = self.groups[gi]
        if type(group) is not dict:
            raise TypeError(f"param_groups[{gi}] must be a dict, got {type(group).__name__}")
        return <dict>group

    cdef void _refresh_group(self, Py_ssize_t gi) except *:
        group = self._group(gi)
        cdef list keys = self.keys[gi], cache = self.cache[gi]
        cdef Py_ssize_t j
        cdef PyObject* v
        cdef bint changed = False
        for j in range(len(keys)):
            v = PyDict_GetItem(group, keys[j])
            if v == NULL:
                changed = True
                break
            c = cache[j]
            if <object>v is not c and (type(<object>v) is not type(c) or not (<object>v == c)):
                changed = True
                break
        if not changed:
            return
        checked = self.validate(gi)
        hyper, wd, maximize, decoupled, clip = checked[:5]
        l1, l1_coupled = checked[5:7] if len(checked) > 5 else (0.0, False)
        cdef double* h = self.ghyper + gi * MAX_HYPER
        for j, x in enumerate(hyper):
            h[1 + j] = x
        self.gcommon[GCOMMON * gi + 0] = wd
        self.gcommon[GCOMMON * gi + 1] = maximize
        self.gcommon[GCOMMON * gi + 2] = decoupled
        self.gcommon[GCOMMON * gi + 3] = INFINITY if clip is None else clip
        self.gcommon[GCOMMON * gi + 4] = l1
        self.gcommon[GCOMMON * gi + 5] = l1_coupled
        for j in range(len(keys)):
            cache[j] = group[keys[j]]

    cdef bint _same_scalars(self, Py_ssize_t a, Py_ssize_t b) noexcept:
        cdef int i
        if (self.group_of[a] != self.group_of[b] or self.rule_of[a] != self.rule_of[b]
                or self.steps[a] != self.steps[b]):
            return False
        for i in range(MAX_SSTATE):
            if self.sstate[a * MAX_SSTATE + i] != self.sstate[b * MAX_SSTATE + i]:
                return False
        return True

    def step(self, grads):
        """Apply one update with ``grads`` (one per parameter, ``None`` to leave a
        parameter and its state alone). Returns False when the step was skipped."""
        self.guard.enter("step")
        try:
            if self.successor is not None:
                # a caller that fetched this engine before add_param_group replaced it
                # (while it waited for the guard) must step the engine that is current
                return self._current()._step(grads)
            return self._step(grads)
        finally:
            self.guard.leave()

    cdef Engine _current(self):
        cdef Engine e = self
        while e.successor is not None:
            e = e.successor
        return e

    def retire(self, Engine successor):
        """Hand over to ``successor`` (same guard): later steps through this engine go
        there. Call holding the guard."""
        if successor is self or successor._current() is self:
            raise ValueError("an engine cannot succeed itself")
        if successor.guard is not self.guard:
            raise ValueError("the successor must share this engine's guard")
        self.successor = successor

    cdef object _step(self, object grads):
        cdef Py_ssize_t k, j, gi, prev, nact = 0, n = self.nparams, nbytes
        cdef double lr, t, sigma, total, coef
        cdef double* row
        cdef double* h
        cdef const RuleEntry* e
        cdef int rc, nt, wanted
        # our own list: it keeps every gradient alive until the kernels are done, however
        # the caller's container produces or drops them
        cdef list held = list(grads) if (type(grads) is list or type(grads) is tuple) else grads_sequence(grads)
        cdef list sparse = None
        cdef Py_ssize_t ndense
        if len(held) != n:
            raise ValueError(f"expected {n} gradients (one per parameter), got {len(held)}")
        for k in range(n):
            g = held[k]
            if g is None:
                continue
            if self.low[k] is not None:
                if is_sparse_input(g):
                    raise TypeError(f"grads[{k}] is a sparse gradient: a parameter with low-precision storage "
                                    "(precision=...) takes dense gradients only; nothing was updated")
                g = self._check_grad_low(g, k)
                held[k] = g
            else:
                if self.exact and self.last_rows[k] is not None:
                    # a row has stale state: a dense gradient too goes through the catch-up
                    sparse = self._rows_grad(g, k, sparse, held)
                    continue
                if not self._fast_grad_ok(g, k):
                    if is_sparse_input(g):
                        sparse = self._rows_grad(g, k, sparse, held)
                        continue
                    g = self._check_grad(g, k)     # raises with a message, or converts
                    held[k] = g                    # a converted array must outlive the kernels
            self.run[nact] = self.slots[k]
            self.run[nact].buf[1] = <char*>cnp.PyArray_DATA(<cnp.ndarray>g)
            self.run[nact].noise_key = k            # parameter index until keys are made
            nact += 1
        ndense = nact
        if sparse is not None:
            # row slots after the dense ones: the norm pass reduces them apart
            nact = self._row_slots(sparse, held, nact)
        for gi in range(self.ngroups):
            self._refresh_group(gi)
            lr_obj = self._group(gi)["lr"]
            if type(lr_obj) is float:
                lr = lr_obj
            else:
                value = lr_obj(self.gstep[gi]) if callable(lr_obj) else lr_obj
                if isinstance(value, bool) or not isinstance(value, Real):
                    raise TypeError(f"param_groups[{gi}]: the learning-rate schedule gave {value!r}, "
                                    "not a real number")
                lr = value
                if not (isfinite(lr) and lr >= 0.0):
                    raise ValueError(f"param_groups[{gi}]: the learning-rate schedule gave {lr!r}; "
                                     "a learning rate must be finite and >= 0")
            self.ghyper[gi * MAX_HYPER] = lr
        # no Python code runs from here to the kernels: only now are the pointers final
        # (a later gradient's __array__, a schedule or a hyper-parameter's __float__ may
        # have resized, re-typed or frozen an array checked earlier)
        for j in range(nact):
            k = <Py_ssize_t>self.run[j].noise_key
            self._check_buffers(k)
            g = held[k]
            if j >= ndense:
                self._check_rows_final(k, j, g)
                continue
            if not isinstance(g, cnp.ndarray) or \
                    <char*>cnp.PyArray_DATA(<cnp.ndarray>g) != self.run[j].buf[1] or \
                    cnp.PyArray_SIZE(<cnp.ndarray>g) != self.slots[k].n or \
                    (self.low[k] is None and cnp.PyArray_TYPE(<cnp.ndarray>g) != self.typenum[k]):
                raise ValueError(f"grads[{k}] was resized or re-typed during the step (by a callback); "
                                 "nothing was updated")
        nbytes = slots_bytes(self.run, nact)
        # Another Python thread runs while the GIL is released, and could free a
        # gradient's memory under the kernels (ndarray.resize(..., refcheck=False)); a
        # weak reference to each array that owns a gradient's memory makes NumPy refuse
        # that until the step is done. Small steps keep the GIL instead: they end in
        # microseconds, and pinning would cost them more than it saves anyone.
        cdef bint free_gil = nbytes >= NOGIL_BYTES
        cdef list pins = _pin_memory(held) if (free_gil or self.norm_reducer is not None) else None
        prev = -1
        for j in range(nact):
            k = <Py_ssize_t>self.run[j].noise_key
            row = self.scal + k * STRIDE
            if prev >= 0 and self._same_scalars(prev, k):
                # parameters of one group at one step share their scalars: copy, not recompute
                memcpy(row, self.scal + prev * STRIDE, STRIDE * sizeof(double))
                memcpy(self.sstate_new + k * MAX_SSTATE, self.sstate_new + prev * MAX_SSTATE,
                       MAX_SSTATE * sizeof(double))
            else:
                gi = self.group_of[k]
                e = rule_entry(self.rule_of[k])
                h = self.ghyper + gi * MAX_HYPER
                t = <double>(self.steps[k] + 1)
                sigma = sqrt(self.noise_eta / pow(1.0 + t, self.noise_gamma)) if self.noise_eta > 0.0 else 0.0
                fill_common(row, h[0], self.gcommon[GCOMMON * gi], self.gcommon[GCOMMON * gi + 1] != 0.0,
                            self.gcommon[GCOMMON * gi + 2] != 0.0, self.gcommon[GCOMMON * gi + 3], sigma)
                fill_l1(row, h[0], self.gcommon[GCOMMON * gi + 4], self.gcommon[GCOMMON * gi + 5] != 0.0)
                memcpy(self.sstate_new + k * MAX_SSTATE, self.sstate + k * MAX_SSTATE, MAX_SSTATE * sizeof(double))
                e.scalars(h, t, self.sstate_new + k * MAX_SSTATE, row + N_COMMON)
                if self.grad_scale != 1.0:
                    row[C_SIGN] = row[C_SIGN] * self.grad_scale    # unscale first: g * (±1 / loss scale)
            prev = k
            self.run[j].scal = row
            self.run[j].noise_key = noise_key(self.seed, <unsigned long long>(self.steps[k] + 1), k)
        wanted = resolve_threads(0)
        nt = plan_threads(nbytes, wanted)                  # one plan for both passes
        self.last_skipped = False
        if (self.clip_norm > 0.0 or self.policy != 0) and self.norm_reducer is not None:
            if nact > ndense:
                # the reducer combines dense per-block terms across processes; rows have none
                raise ValueError("sparse gradients cannot be stepped with a norm that spans processes "
                                 "(fastopt.distributed); nothing was updated")
            if any(low is not None for low in self.low):
                raise ValueError("low-precision storage (precision=...) cannot be stepped with a norm that spans "
                                 "processes (fastopt.distributed); nothing was updated")
            rc = self._reduce_across(nact, nt, nbytes, wanted, &total)
        elif self.clip_norm > 0.0 or self.policy != 0:
            if free_gil:
                with nogil:
                    rc = _norm_pass(self.run, ndense, nact, nt, nbytes, wanted, &total)
            else:
                rc = _norm_pass(self.run, ndense, nact, nt, nbytes, wanted, &total)
        elif self.norm_reducer is not None:
            self.norm_reducer(None)     # no norm needed: the step's checks passed (other processes may wait)
        if self.clip_norm > 0.0 or self.policy != 0:
            if rc < 0:
                raise MemoryError()
            self.last_grad_norm = sqrt(total)
            if rc == 1 and self.policy == 1:
                raise NonFiniteGradientError("a gradient holds inf or NaN; nothing was updated "
                                             "(nonfinite='raise')")
            if rc == 1 and self.policy == 2:
                self.last_skipped = True
                return False
            if self.clip_norm > 0.0:
                coef = self.clip_norm / (self.last_grad_norm + 1e-6)
                if coef < 1.0 or coef != coef:
                    for j in range(nact):
                        (<double*>self.run[j].scal)[C_COEF] = coef
        if free_gil:
            with nogil:
                _update_pass(self.run, ndense, nact, nt, nbytes, wanted, self.exact)
        else:
            _update_pass(self.run, ndense, nact, nt, nbytes, wanted, self.exact)
        del pins
        for k in range(n):
            if held[k] is not None:
                self.steps[k] += 1
                memcpy(self.sstate + k * MAX_SSTATE, self.sstate_new + k * MAX_SSTATE, MAX_SSTATE * sizeof(double))
        for gi in range(self.ngroups):
            self.gstep[gi] += 1
        return True

    def set_norm_reducer(self, reducer):
        """Let ``reducer`` make the global-norm reduction span other processes (used by
        :mod:`fastopt.distributed`; None: this engine's parameters only). When clipping
        or a non-finite policy needs the norm, the step calls ``reducer(terms)`` with
        this engine's per-block terms (a float64 array, ``[sumsq_0, bad_0, sumsq_1, ...]``
        as :func:`sumsq_partials` makes them) and uses the ``(sum of squares, non-finite)``
        it returns as if it had computed them itself; when no norm is needed it is
        called with None (its result is ignored), so every step calls it exactly once.
        It runs after every check of the step and before anything is written; an
        exception from it leaves everything as it was."""
        if reducer is not None and not callable(reducer):
            raise TypeError("the norm reducer must be callable or None")
        self.norm_reducer = reducer

    cdef int _reduce_across(self, Py_ssize_t nact, int nt, Py_ssize_t nbytes, int wanted,
                            double* total) except -2:
        cdef Py_ssize_t nblocks = count_blocks(self.run, nact)
        cdef cnp.npy_intp dim = 2 * nblocks
        cdef cnp.ndarray terms = cnp.PyArray_ZEROS(1, &dim, cnp.NPY_FLOAT64, 0)
        cdef double* res = <double*>cnp.PyArray_DATA(terms)
        cdef int rc
        with nogil:
            rc = sumsq_partials(self.run, nact, nt, res)
            pass_done(nbytes, nt, wanted)
        if rc < 0:
            return -1
        sumsq, bad = self.norm_reducer(terms)
        total[0] = float(sumsq)
        return 1 if bad else 0

    # --- sparse (row-wise) steps -------------------------------------------------------
    cdef list _rows_grad(self, object g, Py_ssize_t k, list sparse, list held):
        # check and coalesce a sparse gradient (or, in exact mode, a dense one as every
        # row); raises naming grads[k] before anything is written
        cdef cnp.ndarray p = <cnp.ndarray>self.params[k]
        src = dup = None
        if is_sparse_input(g):
            idx, vals, ordered = checked_rows(g, f"grads[{k}]", p)
            rows = idx
            if not ordered:
                # rows given once are read from the caller's values where they are
                if self.coalesce_ws[k] is None:
                    self.coalesce_ws[k] = new_workspace()
                # views of the workspace, alive (in held) until the kernels are done; the next step reuses them
                rows, src, dup = coalesce_index(idx, vals, p.shape[0], 0, self.coalesce_ws[k])
        else:
            vals = self._check_grad(g, k)
            rows = np.arange(p.shape[0], dtype=np.intp)
        cdef Py_ssize_t lo = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>vals)
        if vals.size and self._overlaps_written(lo, lo + vals.nbytes):
            raise ValueError(f"grads[{k}].values shares memory with a parameter or optimizer state")
        if self.exact and self.last_rows[k] is None:
            # every row is current up to now: the counters start at this parameter's step
            self.last_rows[k] = np.full(p.shape[0], self.steps[k], np.int64)
        held[k] = (rows, vals, src, dup, cnp.PyArray_SIZE(<cnp.ndarray>vals))    # alive until the kernels are done
        if sparse is None:
            sparse = []
        sparse.append(k)
        return sparse

    cdef Py_ssize_t _row_slots(self, list sparse, list held, Py_ssize_t nact) except -1:
        cdef Py_ssize_t k
        cdef cnp.ndarray rows, vals
        cdef Py_ssize_t dim
        for k in sparse:
            rows, vals, src, dup, _ = held[k]
            dim = (<cnp.ndarray>self.params[k]).shape[1]
            self.run[nact] = self.slots[k]
            self.run[nact].buf[1] = <char*>cnp.PyArray_DATA(vals)
            self.run[nact].rows = <const Py_ssize_t*>cnp.PyArray_DATA(rows)
            self.run[nact].dim = dim
            self.run[nact].n = cnp.PyArray_SIZE(rows) * dim
            self.run[nact].src = NULL
            self.run[nact].dup = NULL
            if src is not None:
                self.run[nact].src = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>src)
                self.run[nact].dup = <const char*>cnp.PyArray_DATA(<cnp.ndarray>dup)
            self.run[nact].fn = row_kernel(self.rule_of[k], self.slots[k].itemsize)
            self.run[nact].step = self.steps[k] + 1
            self.run[nact].last = NULL
            if self.exact:
                self.run[nact].last = <const long long*>cnp.PyArray_DATA(<cnp.ndarray>self.last_rows[k])
            self.run[nact].noise_key = k
            nact += 1
        return nact

    cdef int _check_rows_final(self, Py_ssize_t k, Py_ssize_t j, object g) except -1:
        rows, vals, _, _, size = g
        if (<char*>cnp.PyArray_DATA(<cnp.ndarray>vals) != self.run[j].buf[1]
                or cnp.PyArray_SIZE(<cnp.ndarray>vals) != size
                or cnp.PyArray_TYPE(<cnp.ndarray>vals) != self.typenum[k]
                or <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>rows) != self.run[j].rows):
            raise ValueError(f"grads[{k}] was resized or re-typed during the step (by a callback); "
                             "nothing was updated")
        # the indices may be the caller's array: a callback (a schedule, a later gradient's
        # __array__) could have rewritten them since they were checked; the kernels index with them
        if not check_indices(rows, (<cnp.ndarray>self.params[k]).shape[0], f"grads[{k}].indices"):
            raise ValueError(f"grads[{k}].indices were changed during the step (by a callback); nothing was updated")
        if self.exact and self.gcommon[GCOMMON * self.group_of[k]] != 0.0:
            raise ValueError(f"grads[{k}]: sparse='exact' needs weight_decay=0 (weight decay changes every row at "
                             "every step, touched or not); nothing was updated")
        if self.exact and self.gcommon[GCOMMON * self.group_of[k] + 4] != 0.0:
            raise ValueError(f"grads[{k}]: sparse='exact' needs l1=0 (the L1 term changes every row at every "
                             "step, touched or not); nothing was updated")
        return 0

    def set_sparse_mode(self, str mode):
        """``"lazy"`` or ``"exact"`` (see :mod:`fastopt.sparse`); exact only for rules
        that allow it and without gradient noise."""
        if mode not in ("lazy", "exact"):
            raise ValueError(f"sparse must be 'lazy' or 'exact', got {mode!r}")
        if mode == "exact":
            bad = sorted({self.rule_names[k] for k in range(self.nparams) if not allows_exact(self.rule_of[k])})
            if bad:
                raise ValueError(f"sparse='exact' is not available for the {', '.join(bad)} kernel: with a zero "
                                 "gradient it still moves the parameter (momentum), and the skipped steps' moves "
                                 "have no closed form; it is available for SGD, Adagrad, RMSprop without "
                                 "momentum and Adadelta (use sparse='lazy')")
            if self.noise_eta > 0.0:
                raise ValueError("sparse='exact' cannot be combined with grad_noise (the noise changes every row "
                                 "at every step)")
        self.exact = mode == "exact"

    def sparse_flush(self):
        """Exact mode: bring every row's state up to the current step (before it is read)."""
        cdef Py_ssize_t k
        for k in range(self.nparams):
            if self.last_rows[k] is None:
                continue
            rule = BY_NAME[self.rule_names[k]]
            h = self.ghyper + self.group_of[k] * MAX_HYPER
            names = rule.hyper_names
            states = dict(zip(rule.state, self.states[k]))
            decays = {s: h[1 + names.index(hp)] for s, hp in rule.sparse_decay_hyper.items()}
            catch_up(states, decays, self.last_rows[k], self.steps[k], self.params[k].dtype)

    def sparse_reset(self):
        """Forget the per-row counters (the state was just loaded whole: every row is current)."""
        self.last_rows = [None] * self.nparams

    def get_row_steps(self):
        """Exact mode: per parameter a copy of the step at which each row's state was last
        brought up to date (int64, one per row), or None where every row is current."""
        return [None if r is None else r.copy() for r in self.last_rows]

    def set_row_steps(self, values):
        """Install checked per-row counters (as :meth:`get_row_steps` gives them)."""
        self.last_rows = [None if v is None else np.array(v, dtype=np.int64, order="C") for v in values]

    # --- state access for state_dict / load_state_dict -------------------------------
    def get_steps(self):
        return [self.steps[k] for k in range(self.nparams)]

    def set_steps(self, values):
        for k in range(self.nparams):
            self.steps[k] = values[k]

    def get_scalar_state(self, Py_ssize_t k):
        cdef const RuleEntry* e = rule_entry(self.rule_of[k])
        return [self.sstate[k * MAX_SSTATE + j] for j in range(e.n_scalar_state)]

    def set_scalar_state(self, Py_ssize_t k, values):
        if not 0 <= k < self.nparams or len(values) > MAX_SSTATE:
            raise IndexError(f"no parameter {k} (or too many scalars) in this engine")
        for j, x in enumerate(values):
            self.sstate[k * MAX_SSTATE + j] = x

    def get_group_steps(self):
        return [self.gstep[g] for g in range(self.ngroups)]

    def set_group_steps(self, values):
        for g in range(self.ngroups):
            self.gstep[g] = values[g]


def apply_rule(str rule, cnp.ndarray param, cnp.ndarray grad, tuple states, tuple hyper, double t,
               list scalar_state, double weight_decay, bint maximize, bint decoupled, double clip,
               int threads=0, double l1=0.0, bint l1_coupled=False):
    """One step of ``rule`` on one parameter, inputs already validated (see
    ``fastopt.kernels``). Returns the new scalar state."""
    cdef Slot slot
    memset(&slot, 0, sizeof(Slot))
    cdef double row[STRIDE]
    cdef double h[MAX_HYPER]
    cdef double ss[MAX_SSTATE]
    cdef Py_ssize_t j
    cdef const RuleEntry* e = rule_entry(RULE_INDEX[rule])
    for j, x in enumerate(hyper):
        h[j] = x
    for j, x in enumerate(scalar_state):
        ss[j] = x
    fill_common(row, h[0], weight_decay, maximize, decoupled, clip, 0.0)
    fill_l1(row, h[0], l1, l1_coupled)
    e.scalars(h, t, ss, row + N_COMMON)
    slot.n = cnp.PyArray_SIZE(param)
    slot.itemsize = cnp.PyArray_ITEMSIZE(param)
    slot.accesses = accesses(e.n_state)
    slot.fn = e.f32 if slot.itemsize == 4 else e.f64
    slot.scal = row
    slot.noise_key = 0
    slot.buf[0] = <char*>cnp.PyArray_DATA(param)
    slot.buf[1] = <char*>cnp.PyArray_DATA(grad)
    for j, s in enumerate(states):
        slot.buf[2 + j] = <char*>cnp.PyArray_DATA(s)
    cdef int nt = resolve_threads(threads)
    cdef list pins
    if slot.n * slot.itemsize * slot.accesses < NOGIL_BYTES:
        # as in Engine._step: holding the GIL costs a small step less than releasing it,
        # and no other thread can reallocate the arrays meanwhile
        update_slots(&slot, 1, nt)
    else:
        pins = _pin_memory([param, grad] + list(states))
        with nogil:
            update_slots(&slot, 1, nt)
        del pins
    return [ss[j] for j in range(e.n_scalar_state)]


def rule_scalars(str rule, tuple hyper, double t, list scalar_state):
    """The per-step scalars a rule's kernel reads (for tests and inspection):
    ``(outputs, new scalar state)``."""
    cdef double out[MAX_OUT]
    cdef double h[MAX_HYPER]
    cdef double ss[MAX_SSTATE]
    cdef const RuleEntry* e = rule_entry(RULE_INDEX[rule])
    for j, x in enumerate(hyper):
        h[j] = x
    for j, x in enumerate(scalar_state):
        ss[j] = x
    e.scalars(h, t, ss, out)
    return [out[j] for j in range(e.n_out)], [ss[j] for j in range(e.n_scalar_state)]


cdef class LowSlot:
    """What the engine needs of a parameter stored in low precision (built by
    :mod:`fastopt.lowprec.storage`): the kernel variant (a name of ``LOW_VARIANTS``),
    whether its state is 8-bit, the norm pass's storage kind, stochastic rounding, bytes
    moved per element, the dtypes and sizes of the engine's parameter buffer and of each
    state buffer, the working copy (or None), and the accepted gradient dtypes, the
    dtype they are viewed as, their names and why (for error messages)."""
    cdef readonly str variant
    cdef readonly bint q8
    cdef readonly int gkind, sround, bpe
    cdef readonly object param_dtype, copy, grad_view, shape
    cdef readonly tuple state_dtypes, state_sizes, grad_dtypes
    cdef readonly str grad_names, why

    def __init__(self, str variant, bint q8, int gkind, int sround, int bpe, param_dtype, tuple state_dtypes,
                 tuple state_sizes, copy, tuple grad_dtypes, grad_view, shape, str grad_names, str why):
        if variant not in LOW_VARIANTS:
            raise ValueError(f"unknown low-precision variant {variant!r}")
        self.variant, self.q8, self.gkind, self.sround, self.bpe = variant, q8, gkind, sround, bpe
        self.param_dtype, self.state_dtypes, self.state_sizes, self.copy = param_dtype, state_dtypes, state_sizes, copy
        self.grad_dtypes, self.grad_view, self.shape, self.grad_names, self.why = (grad_dtypes, grad_view, tuple(shape),
                                                                                   grad_names, why)
