"""Keeping arrays' memory alive while kernels read it without the GIL.

NumPy refuses ``ndarray.resize`` (which may free and move the block) on an array that
has weak references, whatever ``refcheck`` says. Holding a weak reference to the array
that owns a block is therefore enough to stop another Python thread from freeing it
under a kernel that runs without the GIL, and costs nothing on the hot path.
"""
import weakref

import numpy as np


def memory_owner(a):
    """The last ndarray of ``a``'s chain of bases: the one NumPy could resize."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def pin_memory(arrays):
    """Weak references to the memory owners of ``arrays`` (``None`` entries skipped).

    Keep the returned list alive for as long as kernels may read the arrays: until
    then NumPy raises ``ValueError: cannot resize an array that has weak references``
    to anybody who tries to reallocate one of them."""
    return [weakref.ref(memory_owner(a)) for a in arrays if isinstance(a, np.ndarray)]
