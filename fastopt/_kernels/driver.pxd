from fastopt._kernels._types cimport Slot

cdef int resolve_threads(int requested) noexcept nogil
cdef void run_slots(Slot* slots, Py_ssize_t nslots, int nthreads) noexcept nogil
cdef int sumsq_slots(const Slot* slots, Py_ssize_t nslots, int nthreads, double* sumsq) noexcept nogil
cdef Py_ssize_t count_blocks(const Slot* slots, Py_ssize_t nslots) noexcept nogil
cdef int sumsq_partials(const Slot* slots, Py_ssize_t nslots, int nthreads, double* res) noexcept nogil
cdef int plan_threads(Py_ssize_t nbytes, int nthreads) noexcept nogil
cdef void pass_done(Py_ssize_t nbytes, int used, int wanted) noexcept nogil
cdef Py_ssize_t slots_bytes(const Slot* slots, Py_ssize_t nslots) noexcept nogil
cdef void update_slots(Slot* slots, Py_ssize_t nslots, int nthreads) noexcept nogil
cdef void _team_started_now() noexcept nogil
