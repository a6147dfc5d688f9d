from fastopt._kernels._types cimport Slot

cdef int resolve_threads(int requested) noexcept nogil
cdef void run_slots(Slot* slots, Py_ssize_t nslots, int nthreads) noexcept nogil
cdef int sumsq_slots(const Slot* slots, Py_ssize_t nslots, int nthreads, double* sumsq) noexcept nogil
cdef Py_ssize_t serial_below() noexcept nogil
