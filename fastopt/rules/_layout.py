"""The layout every kernel shares, stated once.

``fastopt/_kernels/_codegen.py`` writes these into the generated ``layout.pxd`` (the
``C_*`` slot enum, ``N_COMMON`` and :func:`accesses`), which the engine, the driver and
``_types.pxd`` cimport; nothing else restates them.
"""

#: Slots of the per-step scalar vector that every kernel reads before its rule's own
#: outputs (the engine fills them; the kernels see them as locals of these names).
#: ``l1_sub`` (λ1 of the coupled L1 subgradient) and ``l1_thr`` (lr λ1 of the proximal
#: soft-threshold) come last: 0 for both runs a kernel's loop without L1.
COMMON_SCALARS = ("sign", "has_wd", "wd", "coef", "clip", "decay", "sigma", "lr", "l1_sub", "l1_thr")

#: Array elements one element step touches besides the state: param read and written, grad read.
ACCESSES_FIXED = 3
#: Each state buffer is read and written.
ACCESSES_PER_STATE = 2


def accesses(n_state):
    """Array elements read or written per parameter element: ``3 + 2 · n_state``."""
    return ACCESSES_FIXED + ACCESSES_PER_STATE * n_state
