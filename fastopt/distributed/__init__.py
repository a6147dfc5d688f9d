"""fastopt over MPI (mpi4py): sharded data parallelism (ZeRO stages 1 and 2), Elastic
Averaging SGD and Downpour-style asynchronous SGD. Install with ``pip install
"fastopt[mpi]"`` (mpi4py and MPICH from PyPI) and launch as usual,
``mpiexec -n 4 python train.py``.

* :class:`ShardedOptimizer` — every rank keeps the full parameters and 1/P of any
  fastopt optimizer's state; a step is the same bits for any number of ranks and the
  same as one process stepping on :func:`mean_gradient` of the ranks' gradients.
* :class:`EASGD` — synchronous (every ``tau`` steps) and asynchronous elastic averaging.
* :class:`Downpour` — parameter-server ranks own shards and apply any fastopt rule to
  the gradients workers push.

:func:`mean_gradient` and :class:`ShardLayout` need only NumPy; the rest imports mpi4py
on first use and says how to install it when it is missing.
"""
from fastopt.distributed.layout import ShardLayout
from fastopt.distributed.reduce import mean_gradient, mean_into

_LAZY = {"ShardedOptimizer": "zero", "EASGD": "easgd", "Downpour": "downpour", "DistributedError": "comm"}

__all__ = ["ShardLayout", "mean_gradient", "mean_into"] + sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"fastopt.distributed.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fastopt.distributed' has no attribute {name!r}")
