# Counter-based normal draws for gradient noise: the value for an element depends only
# on (seed, step, parameter index, element index), never on threads or chunking.
from libc.math cimport log, cos, sqrt

ctypedef unsigned long long u64

cdef inline u64 mix64(u64 z) noexcept nogil:
    # splitmix64's finaliser: a bijection with good avalanche
    z = (z ^ (z >> 30)) * <u64>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <u64>0x94D049BB133111EBULL
    return z ^ (z >> 31)

cdef inline u64 noise_key(u64 seed, u64 step, u64 param_index) noexcept nogil:
    return mix64(mix64(mix64(seed) ^ step) ^ param_index)

cdef inline void fill_normals(u64 key, Py_ssize_t start, Py_ssize_t m, double* z) noexcept nogil:
    """Standard normals for elements start..start+m-1 by Box-Muller on two hashed uniforms."""
    cdef Py_ssize_t j
    cdef u64 h1, h2
    cdef double u1, u2
    for j in range(m):
        h1 = mix64(key + <u64>(start + j) * <u64>0x9E3779B97F4A7C15ULL)
        h2 = mix64(h1)
        u1 = (<double>(h1 >> 11) + 1.0) * 1.1102230246251565e-16   # (0, 1]
        u2 = <double>(h2 >> 11) * 1.1102230246251565e-16           # [0, 1)
        z[j] = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)
