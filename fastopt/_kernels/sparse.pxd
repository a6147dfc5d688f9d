from fastopt._kernels._types cimport Slot

cdef int sumsq_rows(const Slot* slots, Py_ssize_t nslots, double* sumsq) noexcept nogil
cdef void mark_rows(const Slot* slots, Py_ssize_t nslots) noexcept nogil
