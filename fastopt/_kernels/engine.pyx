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
from libc.string cimport memcpy

from fastopt._kernels._types cimport MAX_BUFFERS, N_COMMON, RuleEntry, Slot
from fastopt._kernels.layout cimport C_CLIP, C_COEF, C_DECAY, C_HAS_WD, C_LR, C_SIGMA, C_SIGN, C_WD, accesses
from fastopt._kernels.driver cimport (count_blocks, pass_done, plan_threads, resolve_threads, run_slots, slots_bytes,
                                      sumsq_partials, sumsq_slots, update_slots)
from fastopt._kernels.noise cimport noise_key
from fastopt._kernels.rules cimport rule_entry

import os
import weakref
from numbers import Real

from fastopt._kernels.driver import first_touch
from fastopt._kernels.rules import RULE_INDEX
from fastopt._validate import ReentryError, as_array, check_like, grads_sequence

cnp.import_array()

cdef enum:
    MAX_SSTATE = 4
    MAX_HYPER = 16
    MAX_OUT = 24
    STRIDE = N_COMMON + MAX_OUT

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
    cdef double* gcommon        # per group: weight_decay, maximize, decoupled, clip
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

    def __cinit__(self):
        self.slots = NULL

    @staticmethod
    def first_touch(list states, list values):
        """Fill new state buffers (``states[k][j] = values[k][j]``) with the threads and
        element split of a step: see :func:`fastopt._kernels.driver.first_touch`."""
        first_touch(states, values)

    def __init__(self, list params, list states, list rules, list group_of, list groups, list keys,
                 validate, *, clip_norm=None, noise=None, seed=0, nonfinite="ignore", StepGuard guard=None):
        """params: ndarrays; states: per param, the tuple of state ndarrays in rule order;
        rules: per param, the rule name; group_of: per param, its group index; groups:
        the optimizer's param_groups (dicts, read on every step); keys: per group, the
        dict keys whose change calls ``validate(group_index)``, which returns
        ``(rule hyper tuple, weight_decay, maximize, decoupled, clip_value)``."""
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
        self.gcommon = <double*>calloc(max(ng, 1) * 4, sizeof(double))
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
            if len(states[k]) != e.n_state:
                raise RuntimeError(f"rule {rules[k]} needs {e.n_state} state buffers")
            for j, s in enumerate(states[k]):
                self.slots[k].buf[2 + j] = <char*>cnp.PyArray_DATA(s)
            for buf in [a] + list(states[k]):
                if buf.size:
                    lo = <Py_ssize_t>cnp.PyArray_DATA(buf)
                    intervals.append((lo, lo + buf.nbytes))
        # NumPy refuses to resize an array that has a weak reference, even with
        # refcheck=False, so a weak reference to the array that owns each parameter's
        # and state's memory keeps the pointers above valid while this engine lives
        self.pins = [weakref.ref(_memory_owner(a)) for k in range(n) for a in [params[k]] + list(states[k])]
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
        hyper, wd, maximize, decoupled, clip = self.validate(gi)
        cdef double* h = self.ghyper + gi * MAX_HYPER
        for j, x in enumerate(hyper):
            h[1 + j] = x
        self.gcommon[4 * gi + 0] = wd
        self.gcommon[4 * gi + 1] = maximize
        self.gcommon[4 * gi + 2] = decoupled
        self.gcommon[4 * gi + 3] = INFINITY if clip is None else clip
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
        if len(held) != n:
            raise ValueError(f"expected {n} gradients (one per parameter), got {len(held)}")
        for k in range(n):
            g = held[k]
            if g is None:
                continue
            if not self._fast_grad_ok(g, k):
                g = self._check_grad(g, k)     # raises with a message, or converts
                held[k] = g                    # a converted array must outlive the kernels
            self.run[nact] = self.slots[k]
            self.run[nact].buf[1] = <char*>cnp.PyArray_DATA(<cnp.ndarray>g)
            self.run[nact].noise_key = k            # parameter index until keys are made
            nact += 1
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
            if not isinstance(g, cnp.ndarray) or \
                    <char*>cnp.PyArray_DATA(<cnp.ndarray>g) != self.run[j].buf[1] or \
                    cnp.PyArray_SIZE(<cnp.ndarray>g) != self.slots[k].n or \
                    cnp.PyArray_TYPE(<cnp.ndarray>g) != self.typenum[k]:
                raise ValueError(f"grads[{k}] was resized or re-typed during the step (by a callback); "
                                 "nothing was updated")
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
                fill_common(row, h[0], self.gcommon[4 * gi], self.gcommon[4 * gi + 1] != 0.0,
                            self.gcommon[4 * gi + 2] != 0.0, self.gcommon[4 * gi + 3], sigma)
                memcpy(self.sstate_new + k * MAX_SSTATE, self.sstate + k * MAX_SSTATE, MAX_SSTATE * sizeof(double))
                e.scalars(h, t, self.sstate_new + k * MAX_SSTATE, row + N_COMMON)
            prev = k
            self.run[j].scal = row
            self.run[j].noise_key = noise_key(self.seed, <unsigned long long>(self.steps[k] + 1), k)
        nbytes = slots_bytes(self.run, nact)
        wanted = resolve_threads(0)
        nt = plan_threads(nbytes, wanted)                  # one plan for both passes
        self.last_skipped = False
        if (self.clip_norm > 0.0 or self.policy != 0) and self.norm_reducer is not None:
            rc = self._reduce_across(nact, nt, nbytes, wanted, &total)
        elif self.clip_norm > 0.0 or self.policy != 0:
            with nogil:
                rc = sumsq_slots(self.run, nact, nt, &total)
                pass_done(nbytes, nt, wanted)
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
        with nogil:
            run_slots(self.run, nact, nt)
            pass_done(nbytes, nt, wanted)
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
               int threads=0):
    """One step of ``rule`` on one parameter, inputs already validated (see
    ``fastopt.kernels``). Returns the new scalar state."""
    cdef Slot slot
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
    with nogil:
        update_slots(&slot, 1, nt)
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
