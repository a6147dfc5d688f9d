# The contract between the generated rule kernels and the driver that runs them.

# N_COMMON: the common pre-processing scalars at the head of Slot.scal (generated from
# fastopt/rules/_layout.py, with their slots C_SIGN ... C_LR and accesses())
from fastopt._kernels.layout cimport N_COMMON

cdef enum:
    MAX_BUFFERS = 9     # param, grad, up to six state buffers (three 8-bit states) and a working copy
    NOISE_BLOCK = 256   # gradient-noise draws made per block, on the stack

cdef struct Slot

# Apply one rule to elements [start, start + n) of one parameter.
ctypedef void (*RangeFn)(const Slot* slot, Py_ssize_t start, Py_ssize_t n) noexcept nogil

# Per-step scalars of a rule: reads the hyper vector (lr first) and the 1-based step,
# updates the rule's scalar state and writes the rule's outputs.
ctypedef void (*ScalarsFn)(const double* hyper, double t, double* scalar_state, double* out) noexcept nogil

cdef struct Slot:
    char* buf[MAX_BUFFERS]      # 0: param, 1: grad, 2..: state, in the rule's order
    Py_ssize_t n                # elements
    const double* scal          # N_COMMON common scalars, then the rule's outputs
    RangeFn fn                  # the rule kernel for this buffer's precision
    int itemsize                # 4 (float32) or 8 (float64)
    int accesses                # array elements read or written per element (layout.accesses)
    unsigned long long noise_key
    # Sparse row-wise steps (fastopt/_kernels/rows.pyx; NULL rows: a dense slot). buf[1]
    # holds the coalesced gradient rows, (n / dim, dim); element e of the slot is column
    # e % dim of parameter row rows[e // dim].
    const Py_ssize_t* rows      # the touched rows, sorted and unique
    Py_ssize_t dim              # elements per row
    const long long* last       # "exact" mode: per row, the step it was last updated at (NULL: lazy)
    long long step              # this step's 1-based count (exact mode's catch-up)
    # Uncoalesced input, coalesced without copying the rows that appear once (NULL src:
    # buf[1] holds row r's gradient at row r): touched row r's gradient is row src[r] of
    # buf[1] (the caller's values) if src[r] >= 0, else row -1 - src[r] of dup (the sums
    # of the duplicated rows).
    const Py_ssize_t* src
    const char* dup
    # low-precision storage (fastopt/lowprec; all zero for the float32/float64 kernels):
    int gkind                   # storage of grad/param for the norm pass (driver.pyx: GK_*)
    int sround                  # 1: bfloat16 parameter stores round stochastically
    int align                   # pieces of this slot start at multiples of it (8-bit state: 256)
    Py_ssize_t bpe              # bytes one element step moves (0: itemsize * accesses)

cdef struct RuleEntry:
    RangeFn f32
    RangeFn f64
    ScalarsFn scalars
    int n_state
    int n_out
    int n_scalar_state
    int n_hyper
