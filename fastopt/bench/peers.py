"""PyTorch as a peer (optional): its optimizers on fastopt's arrays, and thread counts
set in both libraries at once."""
from __future__ import annotations

import inspect

import fastopt
from fastopt._kernels import waitpolicy

__all__ = ["TORCH_FUSED", "load_torch", "torch_optimizer", "torch_tensors", "set_threads", "pinned",
           "shares_libgomp"]

#: PyTorch optimizers that take ``fused=True`` on the CPU (torch >= 2.4); others use foreach.
TORCH_FUSED = ("SGD", "Adam", "AdamW", "Adagrad")


def load_torch(wanted=True):
    """The ``torch`` module, or None when it is not wanted or not importable."""
    if not wanted:
        return None
    try:
        import torch
    except Exception:       # ImportError, or a broken install
        return None
    return torch


def torch_optimizer(torch, algo, tensors):
    """``(optimizer, mode)`` for ``algo`` over ``tensors`` (their ``.grad`` already set):
    ``fused=True`` where supported on the CPU, else ``foreach=True``; None if torch has
    no such optimizer."""
    if algo.torch_cls is None or not hasattr(torch.optim, algo.torch_cls):
        return None
    cls = getattr(torch.optim, algo.torch_cls)
    params = inspect.signature(cls).parameters
    if algo.torch_cls in TORCH_FUSED and "fused" in params:
        try:
            return cls(tensors, fused=True, **algo.torch_kwargs), "fused"
        except (RuntimeError, ValueError, TypeError):
            pass                     # an older torch without CPU fused kernels
    kwargs = dict(algo.torch_kwargs, foreach=True) if "foreach" in params else dict(algo.torch_kwargs)
    return cls(tensors, **kwargs), ("foreach" if "foreach" in kwargs else "for-loop")


def torch_tensors(torch, params, grads):
    """Tensors sharing memory with the NumPy ``params``, with ``.grad`` set to ``grads``."""
    tensors = []
    for p, g in zip(params, grads):
        t = torch.from_numpy(p)
        t.grad = torch.from_numpy(g)
        tensors.append(t)
    return tensors


def set_threads(n, torch=None):
    """Use ``n`` threads in fastopt (and in torch when given)."""
    fastopt.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def pinned(n, torch=None):
    """A setup function for :class:`~fastopt.bench.timing.Job`: ``set_threads(n, torch)``."""
    return lambda: set_threads(n, torch)


def shares_libgomp():
    """True when torch's OpenMP runtime is fastopt's (one thread pool for both)."""
    import torch
    from fastopt._kernels import driver

    mine = waitpolicy.openmp_runtime(driver.__file__)
    return mine is not None and mine == waitpolicy.torch_openmp_runtime(torch)
