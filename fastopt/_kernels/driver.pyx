# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, cpow=True
"""Runs rule kernels over many parameters in one parallel region.

The elements of all parameters form one sequence; thread k owns the k-th of T equal
contiguous pieces of it (cut at multiples of 256 elements; a parameter with 8-bit state
starts at such a multiple, so its 256-element blocks are never split), so threads stay
balanced for any mix of sizes and each element is updated by exactly the same
arithmetic whatever T is.

A piece is worked through in chunks claimed from a shared counter, and a thread that
has finished its own piece claims the chunks other members have not started. On a
busy machine the OS may not schedule a team member until long after the region began;
its work is then done by the others instead of waiting for it. A member that arrives
after all the work is gone has cost the step a wait at the region's end, so the next
passes use fewer threads (see :func:`plan_threads`) and the full team is tried again
after a back-off. Which thread computes an element never changes its bits.

After ``fork()`` libgomp's worker threads are gone but the runtime still believes in
them, so a child's first parallel region would wait forever: a child forked from a
process that may have had a team runs serially (see :func:`forked_serial`).
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport calloc, malloc, free
from fastopt._kernels._types cimport Slot
from fastopt._kernels.layout cimport C_HAS_WD, C_WD, accesses

import numbers
import os
import sys

cdef extern from "fo_gomp_users.h":
    int fo_foreign_openmp_users() noexcept nogil

cdef extern from "fo_omp.h":
    int fo_openmp_enabled() noexcept nogil
    int fo_omp_max_threads() noexcept nogil
    int fo_omp_thread_limit() noexcept nogil
    int fo_num_procs() noexcept nogil
    Py_ssize_t fo_claim(Py_ssize_t* counter) noexcept nogil
    double fo_now() noexcept nogil
    void fo_sleep(double seconds) noexcept nogil
    double fo_pause_seconds(int n) noexcept nogil

# A step that moves fewer bytes than this runs on the calling thread: handing work to
# the team costs more than it saves. Measured on 2 cores with the team still spinning
# from the last region: 2 threads start to win at ~32k float32 elements for Adam
# (7 accesses, ~900 KB) and ~48k for SGD (3, ~580 KB).
cdef Py_ssize_t SERIAL_BELOW = 640 * 1024
# Once idle workers have gone to sleep (see waitpolicy.py), waking them costs ~45 us on
# the 2-core VM and 2 threads only win from 128k-256k Adam elements (3.6-7.2 MB). So a pass
# below SERIAL_BELOW_COLD uses the team only if the previous pass of at least
# SERIAL_BELOW bytes ended within HOT_WINDOW seconds: the team is still spinning, or
# the caller is in a tight loop and one wake-up buys a team that stays awake.
# HOT_WINDOW 0 (the user chose the wait policy): only SERIAL_BELOW applies. (With more
# threads than CPUs libgomp spins only 1,000 loops; such a team is then thought awake
# when it is not, which costs a wake-up, never a wrong result.)
cdef Py_ssize_t SERIAL_BELOW_COLD = 5 * 1024 * 1024
cdef double HOT_WINDOW = 0.0
cdef double _last_pass_end = -1e300
cdef int _last_pass_threads = 0
# Block of the deterministic reductions: fixed, so partial sums never depend on threads.
cdef Py_ssize_t REDUCE_BLOCK = 8192
cnp.import_array()

cdef int _threads = 0          # 0: follow OpenMP (OMP_NUM_THREADS, threadpoolctl)

# libgomp creates whatever team it is asked for: 40,000 threads exhaust the process
# ("Thread creation failed", exit) and 100,000 crash inside GOMP_parallel. No update
# gains from more threads than a few per processor, so counts are bounded here.
cdef int MAX_THREADS = max(16, 4 * fo_num_procs())
if fo_omp_thread_limit() > 0 and fo_omp_thread_limit() < MAX_THREADS:
    MAX_THREADS = fo_omp_thread_limit()

# Set in a child forked from a process that may have had a worker team: see fork().
cdef bint _fork_serial = False
# Set once a region with more than one thread ran: the team's threads then exist.
cdef bint _team_started = False

# Chunks claimed from the shared counters: small enough that a late member's share is
# taken over at a fine grain, large enough that claiming (one atomic add) is free.
cdef Py_ssize_t CHUNK = 16384
# A member that arrives this long after the region began and finds no work left was
# late because the OS had not scheduled it (a woken, spinning member takes a few us).
# For a team that should have been asleep the bar is LATE_ASLEEP: waking it takes 45 us
# to ~1 ms here, which is the wake-up's cost (the serial thresholds weigh it), not a busy
# machine. Awake means the team's last region ended within the hot window (or, where
# the spin is unknown, within TIGHT_LOOP: a loop of back-to-back steps).
cdef double LATE = 20e-6
cdef double LATE_ASLEEP = 2e-3      # 100 x LATE
cdef double TIGHT_LOOP = 100e-6
cdef double _team_last_end = -1e300
# Passes run with fewer threads after a late member. The number doubles each time the
# full team is late again (up to BACKOFF_MAX) and returns to BACKOFF_MIN only after
# ONTIME_RESET passes in a row on time: on a busy machine the full team is on time now
# and then, and the probes must still get rarer. Counting passes rather than seconds
# keeps the probes' cost a bounded share of the steps.
cdef int BACKOFF_MIN = 4
cdef int BACKOFF_MAX = 1024
cdef int ONTIME_RESET = 16
cdef int _cap_threads = 0      # 0: no cap
cdef int _cap_left = 0
cdef int _backoff = 4
cdef int _ontime = 0
cdef double _member_delay = 0.0   # tests: the last member sleeps this long first
cdef double _member_stall = 0.0   # tests: ... or this long after its first chunk


cdef int resolve_threads(int requested) noexcept nogil:
    cdef int n
    if _fork_serial:
        return 1
    if requested > 0:
        n = requested
    elif _threads > 0:
        n = _threads
    else:
        n = fo_omp_max_threads()
    return n if n <= MAX_THREADS else MAX_THREADS


cdef int plan_threads(Py_ssize_t nbytes, int nthreads) noexcept nogil:
    """Threads for a pass that moves ``nbytes``: ``nthreads``, or 1 when the pass is
    too small to repay handing it to the team, or fewer while members have recently
    been late (a busy machine)."""
    global _cap_left
    if nthreads <= 1 or nbytes < SERIAL_BELOW or not fo_openmp_enabled():
        return 1
    if nbytes < SERIAL_BELOW_COLD and HOT_WINDOW > 0.0 and fo_now() - _last_pass_end > HOT_WINDOW:
        return 1
    if _cap_left > 0:
        _cap_left -= 1
        if _cap_threads < nthreads:
            return _cap_threads
    return nthreads


cdef void _team_started_now() noexcept nogil:
    global _team_started
    _team_started = True


cdef void _team_report(int nthreads, int late) noexcept nogil:
    # after a pass with the full planned team: adapt the cap to the members that were late
    global _cap_threads, _cap_left, _backoff, _ontime
    if late > 0:
        _cap_threads = nthreads - late
        if _cap_left == 0:
            # a pass with the whole team (a probe): the next probe waits twice as long
            _cap_left = _backoff
            _backoff = _backoff * 2 if _backoff < BACKOFF_MAX else BACKOFF_MAX
        _ontime = 0
    elif _cap_left == 0:
        _ontime = _ontime + 1
        if _ontime >= ONTIME_RESET:
            _backoff = BACKOFF_MIN


cdef void pass_done(Py_ssize_t nbytes, int used, int wanted) noexcept nogil:
    """Call after a pass of ``nbytes`` that asked :func:`plan_threads` for ``wanted``
    threads and ran with ``used``. A pass that could have used the team (``wanted`` >
    1) marks the team awake: it is, or a tight loop makes waking it worthwhile."""
    global _last_pass_end, _last_pass_threads, _team_last_end
    _last_pass_threads = used
    if used > 1:
        _team_last_end = fo_now()
    if nbytes >= SERIAL_BELOW and wanted > 1 and HOT_WINDOW > 0.0:
        _last_pass_end = fo_now()


cdef Py_ssize_t slots_bytes(const Slot* slots, Py_ssize_t nslots) noexcept nogil:
    """Bytes one update of every slot moves (elements x accesses x itemsize)."""
    cdef Py_ssize_t k, nbytes = 0
    for k in range(nslots):
        if slots[k].bpe > 0:
            nbytes = nbytes + slots[k].n * slots[k].bpe
        else:
            nbytes = nbytes + slots[k].n * slots[k].itemsize * slots[k].accesses
    return nbytes


cdef inline Py_ssize_t _cut(Py_ssize_t total, Py_ssize_t part, Py_ssize_t parts) noexcept nogil:
    if part >= parts:
        return total
    # multiples of 256 elements: a piece of a slot with 8-bit state starts at a block
    # boundary (such slots also start at one, see _offset)
    cdef Py_ssize_t x = <Py_ssize_t>((<double>total) * part / parts)
    return x - x % 256


cdef inline Py_ssize_t _offset(const Slot* s, Py_ssize_t total) noexcept nogil:
    # where a slot starts in the element sequence: aligned slots on their boundary
    if s.align > 1 and total % s.align:
        return total + s.align - total % s.align
    return total


cdef inline bint _piece(Py_ssize_t off, Py_ssize_t n, Py_ssize_t lo, Py_ssize_t hi,
                        Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """For an array at [off, off + n) of the element sequence: its own indices [a, b)
    that fall in the sequence range [lo, hi); False if none do."""
    if off + n <= lo or off >= hi or n <= 0:
        return False
    a[0] = (lo if lo > off else off) - off
    b[0] = (hi if hi < off + n else off + n) - off
    return True


cdef void _run_range(Slot* slots, const Py_ssize_t* offs, Py_ssize_t nslots, Py_ssize_t lo,
                     Py_ssize_t hi) noexcept nogil:
    # offs[k]: where slot k starts in the element sequence; find the first slot that
    # ends after lo by bisection (a step over many small arrays claims many chunks)
    cdef Py_ssize_t k = 0, top = nslots, mid, a, b
    while k < top:
        mid = (k + top) // 2
        if offs[mid] + slots[mid].n <= lo:
            k = mid + 1
        else:
            top = mid
    while k < nslots and offs[k] < hi:
        if _piece(offs[k], slots[k].n, lo, hi, &a, &b):
            slots[k].fn(&slots[k], a, b - a)
        k = k + 1


cdef enum:
    PAD = 8        # one counter per 64-byte line: members do not share the line they claim from


cdef void _member(Slot* slots, const Py_ssize_t* offs, Py_ssize_t nslots, Py_ssize_t total, int nthreads,
                  int part, Py_ssize_t* next_chunk, Py_ssize_t* claimed, double* arrived,
                  double* finished) noexcept nogil:
    """Member ``part``'s share of a pass: the chunks of its own piece, then whatever is
    left of the others' pieces (each chunk is claimed by exactly one member)."""
    cdef int v, k
    cdef Py_ssize_t lo, hi, nch, c, a, b, mine = 0
    if _member_delay > 0.0 and part == nthreads - 1:
        fo_sleep(_member_delay)
    arrived[part * PAD] = fo_now()
    for v in range(nthreads):
        k = (part + v) % nthreads
        lo = _cut(total, k, nthreads)
        hi = _cut(total, k + 1, nthreads)
        nch = (hi - lo + CHUNK - 1) // CHUNK
        while True:
            c = fo_claim(&next_chunk[k * PAD])
            if c >= nch:
                break
            a = lo + c * CHUNK
            b = a + CHUNK if a + CHUNK < hi else hi
            _run_range(slots, offs, nslots, a, b)
            mine = mine + 1
            if mine == 1 and _member_stall > 0.0 and part == nthreads - 1:
                fo_sleep(_member_stall)
    claimed[part * PAD] = mine
    finished[part * PAD] = fo_now()


cdef void run_slots(Slot* slots, Py_ssize_t nslots, int nthreads) noexcept nogil:
    """Apply every slot's kernel to all of its elements with at most ``nthreads``
    threads (1: the calling thread alone); see :func:`update_slots`."""
    cdef Py_ssize_t k, total = 0, part
    cdef int late = 0
    cdef bint awake
    cdef double t0, bar
    cdef Py_ssize_t* ran
    cdef double* arrived
    cdef double* finished
    cdef double waited
    cdef Py_ssize_t* offs = <Py_ssize_t*>malloc((nslots + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* shared = NULL
    if offs == NULL:
        nthreads = 1
    else:
        for k in range(nslots):
            total = _offset(&slots[k], total)
            offs[k] = total
            total = total + slots[k].n
        offs[nslots] = total
    if nthreads > 1:
        # next chunk per piece, chunks each member ran, when each arrived and finished
        shared = <Py_ssize_t*>calloc(4 * nthreads * PAD, sizeof(Py_ssize_t))
    if shared == NULL or nthreads <= 1:
        if offs == NULL:
            _run_range_scan(slots, nslots, 0, total)
        else:
            _run_range(slots, offs, nslots, 0, total)
        free(offs)
        return
    _team_started_now()
    t0 = fo_now()
    awake = t0 - _team_last_end <= (HOT_WINDOW if HOT_WINDOW > 0.0 else TIGHT_LOOP)
    bar = LATE if awake else LATE_ASLEEP
    for part in prange(nthreads, num_threads=nthreads, schedule="static", chunksize=1):
        _member(slots, offs, nslots, total, nthreads, part, shared, shared + nthreads * PAD,
                <double*>(shared + 2 * nthreads * PAD), <double*>(shared + 3 * nthreads * PAD))
    if bar < 1e300:
        ran = shared + nthreads * PAD
        arrived = <double*>(shared + 2 * nthreads * PAD)
        finished = <double*>(shared + 3 * nthreads * PAD)
        # member 0 is the caller. A member is late if it came after all the work was
        # gone, or if the caller waited for it longer than the caller itself worked (it
        # was descheduled inside a chunk it had claimed): fewer threads would have won
        for k in range(1, nthreads):
            waited = finished[k * PAD] - finished[0]
            if ((ran[k * PAD] == 0 and arrived[k * PAD] - t0 > bar)
                    or (waited > bar and waited > finished[0] - t0)):
                late = late + 1
        _team_report(nthreads, late if late < nthreads else nthreads - 1)
    free(shared)
    free(offs)


cdef void _run_range_scan(Slot* slots, Py_ssize_t nslots, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # the walk without the offsets table (only when allocating it failed)
    cdef Py_ssize_t k, off = 0, a, b
    for k in range(nslots):
        off = _offset(&slots[k], off)
        if _piece(off, slots[k].n, lo, hi, &a, &b):
            slots[k].fn(&slots[k], a, b - a)
        off = off + slots[k].n
        if off >= hi:
            break


cdef void update_slots(Slot* slots, Py_ssize_t nslots, int nthreads) noexcept nogil:
    """:func:`run_slots` with up to ``nthreads`` threads, as :func:`plan_threads` says."""
    cdef Py_ssize_t nbytes = slots_bytes(slots, nslots)
    cdef int used = plan_threads(nbytes, nthreads)
    run_slots(slots, nslots, used)
    pass_done(nbytes, used, nthreads)


ctypedef fused real:
    float
    double


cdef void _block(const real* g, const real* p, const double* scal, Py_ssize_t a, Py_ssize_t b,
                 double* res) noexcept nogil:
    # eight independent float64 lanes: fixed association, yet not one long dependency chain
    cdef int has_wd = scal[C_HAS_WD] != 0.0
    cdef real wd = <real>scal[C_WD]
    cdef double acc[8]
    cdef double bad[8]
    cdef Py_ssize_t i, k
    cdef real x
    for k in range(8):
        acc[k] = 0.0
        bad[k] = 0.0
    i = a
    while i + 8 <= b:
        for k in range(8):
            x = g[i + k]
            bad[k] += <double>(x - x)          # 0 for finite x, NaN for inf and NaN
            x = x + wd * p[i + k] if has_wd else x
            acc[k] += <double>x * <double>x
        i = i + 8
    for k in range(b - i):
        x = g[i + k]
        bad[k] += <double>(x - x)
        x = x + wd * p[i + k] if has_wd else x
        acc[k] += <double>x * <double>x
    res[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    res[1] = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]))


cdef int sumsq_slots(const Slot* slots, Py_ssize_t nslots, int nthreads, double* sumsq) noexcept nogil:
    """Sum of squares of every gradient (after coupled weight decay) in float64, over
    fixed blocks added in a fixed order, with exactly ``nthreads`` threads (the plan
    of the update that follows). Returns 1 if any gradient element is not finite,
    -1 if memory ran out, else 0."""
    cdef Py_ssize_t nblocks = count_blocks(slots, nslots), b
    sumsq[0] = 0.0
    if nblocks == 0:
        return 0
    cdef double* res = <double*>malloc(2 * nblocks * sizeof(double))
    if res == NULL or sumsq_partials(slots, nslots, nthreads, res) < 0:
        free(res)
        return -1
    cdef double total = 0.0, bad = 0.0
    for b in range(nblocks):
        total = total + res[2 * b]
        bad = bad + res[2 * b + 1]
    free(res)
    sumsq[0] = total
    return 0 if bad == 0.0 else 1


cdef Py_ssize_t count_blocks(const Slot* slots, Py_ssize_t nslots) noexcept nogil:
    """Blocks of :func:`sumsq_slots` over ``slots`` (each slot's blocks start at its element 0)."""
    cdef Py_ssize_t k, nblocks = 0
    for k in range(nslots):
        nblocks = nblocks + (slots[k].n + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    return nblocks


cdef int sumsq_partials(const Slot* slots, Py_ssize_t nslots, int nthreads, double* res) noexcept nogil:
    """The per-block terms of :func:`sumsq_slots` without their sum: ``res[2b]`` is block
    b's float64 sum of squares, ``res[2b + 1]`` 0 when its elements are finite (else NaN),
    blocks in slot order (``count_blocks`` of them). Summing ``res[0::2]`` left to right
    from 0.0 gives ``sumsq_slots``'s total bit for bit, so a caller that holds only some
    of the blocks (one rank of a sharded optimizer) can combine everyone's terms in the
    same order. Returns -1 if memory ran out, else 0."""
    cdef Py_ssize_t k, nblocks = count_blocks(slots, nslots), b, j
    if nblocks == 0:
        return 0
    cdef Py_ssize_t* owner = <Py_ssize_t*>malloc(nblocks * sizeof(Py_ssize_t))
    cdef Py_ssize_t* first = <Py_ssize_t*>malloc(nblocks * sizeof(Py_ssize_t))
    if owner == NULL or first == NULL:
        free(owner)
        free(first)
        return -1
    b = 0
    for k in range(nslots):
        j = 0
        while j < slots[k].n:
            owner[b] = k
            first[b] = j
            b = b + 1
            j = j + REDUCE_BLOCK
    if nthreads < 1:
        nthreads = 1
    if nthreads > 1:
        _team_started_now()
    # dynamic: blocks go to whichever member is running (a late one finds none left);
    # each block's partial sums land in its own slot, so the total does not depend on who
    for b in prange(nblocks, num_threads=nthreads, schedule="dynamic", chunksize=4):
        _reduce_block(&slots[owner[b]], first[b], res + 2 * b)
    free(owner)
    free(first)
    return 0


cdef void _reduce_block(const Slot* s, Py_ssize_t a, double* res) noexcept nogil:
    cdef Py_ssize_t b = a + REDUCE_BLOCK
    if b > s.n:
        b = s.n
    if s.gkind != 0:
        _block_half(s.gkind, s.buf[1], s.buf[0], s.scal, a, b, res)
    elif s.itemsize == 4:
        _block(<const float*>s.buf[1], <const float*>s.buf[0], s.scal, a, b, res)
    else:
        _block(<const double*>s.buf[1], <const double*>s.buf[0], s.scal, a, b, res)


cdef extern from "fo_lowprec.h":
    float fo_bf16_load(unsigned short b) noexcept nogil
    float fo_f16_load(unsigned short b) noexcept nogil

cdef enum:
    # Slot.gkind: how the norm pass reads a low-precision slot's gradient and parameter
    GK_BF16_F32 = 1     # bfloat16 gradient, float32 (master) parameter
    GK_F16_F32 = 2
    GK_BF16_BF16 = 3    # bfloat16 gradient and parameter
    GK_F16_F16 = 4


cdef inline float _half(int bf16, const unsigned short* x, Py_ssize_t i) noexcept nogil:
    return fo_bf16_load(x[i]) if bf16 else fo_f16_load(x[i])


cdef void _block_half(int kind, const char* gbuf, const char* pbuf, const double* scal, Py_ssize_t a,
                      Py_ssize_t b, double* res) noexcept nogil:
    # _block for half gradients: the same float32 arithmetic on the loaded values, the
    # same eight float64 lanes and order
    cdef int has_wd = scal[C_HAS_WD] != 0.0
    cdef float wd = <float>scal[C_WD]
    cdef int gbf = kind == GK_BF16_F32 or kind == GK_BF16_BF16
    cdef int phalf = kind == GK_BF16_BF16 or kind == GK_F16_F16
    cdef const unsigned short* g = <const unsigned short*>gbuf
    cdef double acc[8]
    cdef double bad[8]
    cdef Py_ssize_t i, k
    cdef float x, p
    for k in range(8):
        acc[k] = 0.0
        bad[k] = 0.0
    for i in range(a, b):
        k = (i - a) % 8
        x = _half(gbf, g, i)
        bad[k] += <double>(x - x)
        if has_wd:
            p = _half(gbf, <const unsigned short*>pbuf, i) if phalf else (<const float*>pbuf)[i]
            x = x + wd * p
        acc[k] += <double>x * <double>x
    res[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    res[1] = ((bad[0] + bad[1]) + (bad[2] + bad[3])) + ((bad[4] + bad[5]) + (bad[6] + bad[7]))


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fo_openmp_enabled())


def get_num_threads():
    """Threads a step uses: the value given to :func:`set_num_threads`, else OpenMP's
    (``OMP_NUM_THREADS``, or a ``threadpoolctl`` limit)."""
    return resolve_threads(0)


def max_threads():
    """The most threads a step may use: 4 per processor this process may run on (at
    least 16), or OpenMP's thread limit if lower. Larger counts are refused by
    :func:`set_num_threads` and ``threads=`` arguments, and an ``OMP_NUM_THREADS``
    above it is capped: libgomp fails to create (or crashes on) tens of thousands."""
    return MAX_THREADS


def check_threads(n, name="threads"):
    """``n`` as an int in [0, :func:`max_threads`], or TypeError/ValueError naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n).__name__} {n!r}")
    if not 0 <= n <= MAX_THREADS:
        raise ValueError(f"invalid {name} {n!r}: must be in [0, {MAX_THREADS}] (0: the default; at most "
                         f"4 per processor, see fastopt._kernels.driver.max_threads())")
    return int(n)


def set_num_threads(n):
    """Use ``n`` threads for every step (0 goes back to following OpenMP:
    ``OMP_NUM_THREADS`` or a ``threadpoolctl`` limit); ``n`` in [0, :func:`max_threads`]."""
    global _threads
    _threads = check_threads(n, "n")


def forked_serial():
    """True in a process forked from one whose OpenMP team may have been running: its
    steps run on the calling thread only (libgomp's workers do not survive ``fork``,
    and a parallel region would wait for them forever)."""
    return bool(_fork_serial)


def foreign_openmp_users():
    """How many loaded libraries other than fastopt's modules are linked to fastopt's
    OpenMP runtime (by its soname; a vendored, renamed copy is another runtime); -1 when
    that cannot be told. Any such library may have left a worker team behind, so a
    child forked now runs serially (:func:`forked_serial`)."""
    return fo_foreign_openmp_users()


def _before_fork():
    global _torch_loaded, _foreign_users
    # torch imported after fastopt shares this libgomp (one runtime per process), and
    # its own parallel regions leave a team behind that the child cannot use either.
    # Other threads do not tell: NumPy's OpenBLAS keeps a pool of its own in every process.
    _torch_loaded = "torch" in sys.modules
    _foreign_users = 0 if (_team_started or _torch_loaded) else fo_foreign_openmp_users()


def _after_fork_in_child():
    global _fork_serial
    if _team_started or _torch_loaded or _foreign_users != 0:
        _fork_serial = True


_torch_loaded = False
_foreign_users = 0
os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def team_cap():
    """``(threads, passes)``: after a member arrived too late to do any work (a busy
    machine), passes use at most ``threads`` for ``passes`` more passes; ``(0, 0)``
    when the whole team is in use."""
    if _cap_left > 0:
        return _cap_threads, _cap_left
    return 0, 0


def reset_team_cap():
    """Forget late members: the next pass uses the whole team (tests, benchmarks)."""
    global _cap_threads, _cap_left, _backoff, _ontime
    _cap_threads, _cap_left, _backoff, _ontime = 0, 0, BACKOFF_MIN, 0


def late_threshold():
    """Seconds by which an awake member may be late (arriving after all the work was
    gone, or finishing after the caller by more than the caller worked) before the next
    passes use fewer threads (inf: never adapt). A sleeping team gets 100x longer."""
    return LATE


def set_late_threshold(double seconds):
    """Set :func:`late_threshold` (``math.inf`` turns the adaptation off, e.g. for tests
    that check the planned thread count)."""
    global LATE, LATE_ASLEEP
    if not seconds > 0.0:
        raise ValueError(f"late threshold must be > 0 seconds, got {seconds}")
    LATE = seconds
    LATE_ASLEEP = 100.0 * seconds
    reset_team_cap()


def set_member_stall(double seconds):
    """Make the last member of every parallel pass sleep ``seconds`` after its first
    chunk, as when the OS takes its core in the middle of the pass (for tests)."""
    global _member_stall
    if not 0.0 <= seconds <= 1.0:
        raise ValueError(f"stall must be in [0, 1] seconds, got {seconds}")
    _member_stall = seconds


def set_member_delay(double seconds):
    """Make the last member of every parallel pass sleep ``seconds`` before it starts,
    as on a machine whose cores are busy (for tests of the late-member handling)."""
    global _member_delay
    if not 0.0 <= seconds <= 1.0:
        raise ValueError(f"delay must be in [0, 1] seconds, got {seconds}")
    _member_delay = seconds


def serial_threshold():
    """Bytes a step must move (elements x accesses x itemsize, over all parameters)
    before it uses more than the calling thread, while the team is awake."""
    return SERIAL_BELOW


def serial_thresholds():
    """``(awake, asleep)``: the serial threshold in bytes while the team is still
    spinning from a recent region, and once it has gone to sleep (see
    :func:`hot_window`)."""
    return SERIAL_BELOW, SERIAL_BELOW_COLD


def set_serial_threshold(Py_ssize_t n, cold=None):
    """Set the serial threshold in bytes to ``n`` while the team is awake and to
    ``cold`` (default: ``n`` too) once it sleeps. For tuning and tests."""
    global SERIAL_BELOW, SERIAL_BELOW_COLD
    cdef Py_ssize_t c = n if cold is None else cold
    if n < 0 or c < 0:
        raise ValueError(f"thresholds must be >= 0, got {n} and {c}")
    SERIAL_BELOW = n
    SERIAL_BELOW_COLD = c


def threshold_text():
    """The serial thresholds in bytes moved, as ``fastopt info`` and the bench print them."""
    if HOT_WINDOW <= 0.0 or SERIAL_BELOW_COLD <= SERIAL_BELOW:
        return f"{SERIAL_BELOW:,} bytes"
    return (f"{SERIAL_BELOW:,} bytes ({SERIAL_BELOW_COLD:,} once the team has been idle "
            f"{HOT_WINDOW * 1e6:.0f} µs)")


def hot_window():
    """Seconds after a parallel region during which the team counts as awake (0: it
    always does, and only the awake threshold applies)."""
    return HOT_WINDOW


def last_pass_threads():
    """Threads the last step (or stream pass) ran with: 1 when it stayed on the
    calling thread, e.g. below the serial threshold."""
    return _last_pass_threads


def pause_seconds():
    """Seconds one iteration of an idle libgomp worker's spin loop (one x86 ``pause``)
    takes here; 0.0 where that is unknown."""
    return fo_pause_seconds(2000)


def set_hot_window(double seconds):
    """Set :func:`hot_window`: no longer than idle workers really spin (GOMP_SPINCOUNT)."""
    global HOT_WINDOW
    if not seconds >= 0.0:
        raise ValueError(f"hot window must be >= 0 seconds, got {seconds}")
    HOT_WINDOW = seconds


cdef extern from "fo_simd.h":
    const char* FO_SIMD


def simd_level():
    """The widest SIMD instruction set the kernels were compiled for."""
    return FO_SIMD.decode()


# --- first touch of optimizer state ------------------------------------------------------
cdef enum:
    MAX_FILL = 6               # state buffers per parameter (Slot.buf holds p, g and 6)

cdef struct Fill:
    char* buf[MAX_FILL]
    double value[MAX_FILL]
    int nbuf
    int itemsize
    Py_ssize_t n


cdef void _fill_one(Fill* f, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t i
    cdef int j
    cdef float* s
    cdef double* d
    cdef float vs
    cdef double vd
    for j in range(f.nbuf):
        if f.itemsize == 4:
            s = <float*>f.buf[j]
            vs = <float>f.value[j]
            for i in range(a, b):
                s[i] = vs
        else:
            d = <double*>f.buf[j]
            vd = f.value[j]
            for i in range(a, b):
                d[i] = vd


cdef void _fill_range(Fill* fills, Py_ssize_t nf, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t k, off = 0, a, b
    for k in range(nf):
        if _piece(off, fills[k].n, lo, hi, &a, &b):
            _fill_one(&fills[k], a, b)
        off = off + fills[k].n
        if off >= hi:
            break


def first_touch(list states, list values):
    """Write ``values[k][j]`` into every element of ``states[k][j]`` (the j-th state
    buffer of parameter k), each thread writing the elements that a step over exactly
    these parameters gives it (one optimizer group: a step over several groups splits
    their elements together, so later groups line up only roughly).

    New state is written before the first step so that step does not pay the page
    faults, and written by the threads that will update it, so that on a NUMA machine
    each piece lives next to its thread (first-touch placement)."""
    cdef Py_ssize_t nf = len(states), k, total = 0, nbytes = 0, part
    cdef int j, nt
    if len(values) != nf:
        raise ValueError("states and values differ in length")
    cdef Fill* fills = <Fill*>malloc(max(nf, 1) * sizeof(Fill))
    if fills == NULL:
        raise MemoryError()
    try:
        for k in range(nf):
            bufs, vals = states[k], values[k]
            if len(bufs) != len(vals) or len(bufs) > MAX_FILL:
                raise ValueError(f"parameter {k}: {len(bufs)} buffers, {len(vals)} values (at most {MAX_FILL})")
            fills[k].nbuf = len(bufs)
            fills[k].n = bufs[0].size if bufs else 0
            fills[k].itemsize = bufs[0].itemsize if bufs else 4
            for j, (a, v) in enumerate(zip(bufs, vals)):
                if (a.dtype.char not in "fd" or not a.dtype.isnative or a.size != fills[k].n
                        or a.itemsize != fills[k].itemsize or not a.flags.c_contiguous or not a.flags.aligned
                        or not a.flags.writeable):
                    raise ValueError(f"parameter {k}, buffer {j}: need writeable, aligned, C-contiguous native "
                                     "float32/float64 buffers of one dtype and size")
                fills[k].buf[j] = <char*>cnp.PyArray_DATA(a)
                fills[k].value[j] = v
            total += fills[k].n
            # what the step will move (param, grad, and each buffer read and written)
            nbytes += fills[k].n * fills[k].itemsize * accesses(fills[k].nbuf)
        # the step's threads, even if they are asleep now: placement is the point
        nt = resolve_threads(0) if nbytes >= SERIAL_BELOW and fo_openmp_enabled() else 1
        with nogil:
            if nt > 1:
                _team_started_now()
            if nt <= 1:
                _fill_range(fills, nf, 0, total)
            else:
                for part in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                    _fill_range(fills, nf, _cut(total, part, nt), _cut(total, part + 1, nt))
            pass_done(nbytes, nt, nt)
    finally:
        free(fills)


# --- cheap checks for the per-call entry points ------------------------------------------
def data_span(cnp.ndarray arr not None):
    """``(first byte, one past the last byte)`` of a C-contiguous array's data."""
    cdef Py_ssize_t lo = <Py_ssize_t>cnp.PyArray_DATA(arr)
    return lo, lo + cnp.PyArray_NBYTES(arr)


cdef bint _plain_float(object a, bint writeable):
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(arr)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        return False
    if writeable:
        return cnp.PyArray_ISCARRAY(arr)           # C-contiguous, aligned, writeable
    return cnp.PyArray_ISCARRAY_RO(arr)


def arrays_ok(param, grad, tuple states):
    """True when ``param``, ``grad`` and ``states`` are plain ndarrays of one native
    float32/float64 dtype and one shape, C-contiguous and aligned, ``param`` and the
    states writeable, and no two share memory: the common case, checked in C. False
    means "run the full checks", which name what is wrong."""
    cdef Py_ssize_t k, j, n = 2 + len(states)
    cdef Py_ssize_t lo[8]
    cdef Py_ssize_t hi[8]
    if n > 8 or not _plain_float(param, True) or not _plain_float(grad, False):
        return False
    cdef cnp.ndarray p = <cnp.ndarray>param
    arrays = (param, grad) + states
    for k in range(n):
        a = arrays[k]
        if k >= 2 and not _plain_float(a, True):
            return False
        if k >= 1:
            if (cnp.PyArray_TYPE(<cnp.ndarray>a) != cnp.PyArray_TYPE(p)
                    or cnp.PyArray_NDIM(<cnp.ndarray>a) != cnp.PyArray_NDIM(p)):
                return False
            for j in range(cnp.PyArray_NDIM(p)):
                if cnp.PyArray_DIM(<cnp.ndarray>a, j) != cnp.PyArray_DIM(p, j):
                    return False
        lo[k] = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>a)
        hi[k] = lo[k] + cnp.PyArray_NBYTES(<cnp.ndarray>a)
    if cnp.PyArray_SIZE(p) == 0:
        return True
    for k in range(n):
        for j in range(k + 1, n):
            if lo[k] < hi[j] and lo[j] < hi[k]:
                return False
    return True
