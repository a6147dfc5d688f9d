"""Elastic Averaging SGD (Zhang, Choromanska, LeCun 2015) over MPI.

Every rank is a worker with its own parameters ``x_i``, stepped by any fastopt
optimizer on its own gradients. A centre variable ``x̃`` ties them together through an
elastic force of strength ``alpha`` (the paper's α = ηρ), applied every ``tau`` local
steps:

* synchronous (``mode="sync"``, the paper's Algorithm 2): one all-reduce of the sum of
  the workers' parameters, then on every rank, with the values from before the update

      x_i ← x_i − α (x_i − x̃)
      x̃  ← x̃ + α Σ_j (x_j − x̃)   =  (1 − Pα) x̃ + Pα · mean_j x_j

  every rank keeps a copy of x̃ (identical: the same all-reduce result and the same
  arithmetic on every rank; checked by the tests);
* asynchronous (``mode="async"``, Algorithm 1): x̃ lives in an MPI window on rank 0;
  worker i, on its own schedule, locks it, reads x̃, moves ``x_i ← x_i − e`` with
  ``e = α (x_i − x̃)`` and adds ``e`` to x̃ with ``MPI_Accumulate`` (one-sided, the
  exclusive lock makes read-and-add atomic), and unlocks. No rank waits for another.

Stability (the paper's condition for the synchronous round): ``0 < Pα < 1``; the
default ``alpha = 0.9 / P`` gives β = Pα = 0.9 as in the paper's experiments.
"""
import numbers

import numpy as np

from fastopt.distributed.comm import (DEFAULT_TIMEOUT, MPI, agree, agree_same_everywhere, check_optimizer_class,
                                      join, wait)

__all__ = ["EASGD"]

MODES = ("sync", "async")


class EASGD:
    """``EASGD(fastopt.SGD, params, tau=4, mode="sync", lr=0.05, momentum=0.9)``:
    every rank steps ``params`` with its own ``optimizer(params, **kwargs)`` and, every
    ``tau`` steps, pulls them towards the centre (and the centre towards them) with
    strength ``alpha`` (default ``0.9 / P``). ``center`` holds this rank's copy of x̃
    (synchronous) or, after :meth:`close`, the final centre (both modes). Collective:
    the constructor and :meth:`close`; ``step`` too in synchronous mode."""

    def __init__(self, optimizer, params, *, comm=None, tau=4, alpha=None, mode="sync", timeout=DEFAULT_TIMEOUT,
                 abort_on_error=True, **kwargs):
        comm = join(self, comm, timeout, abort_on_error)
        error = None
        try:
            check_optimizer_class(optimizer)
            if isinstance(tau, bool) or not isinstance(tau, numbers.Integral) or tau < 1:
                raise ValueError(f"tau must be an int >= 1, got {tau!r}")
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
            alpha = 0.9 / self.nranks if alpha is None else alpha
            if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha * self.nranks < 1:
                raise ValueError(f"alpha must satisfy 0 < P·alpha < 1 (P = {self.nranks}), got {alpha!r}")
            self.local = optimizer(params, **kwargs)
        except (TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        agree(comm, error, self.timeout, "EASGD's argument check")
        self.params = self.local.params
        sig = [[list(p.shape), p.dtype.str] for p in self.params]
        agree_same_everywhere(comm, (sig, tau, float(alpha), mode, optimizer.__name__),
                              "EASGD needs the same parameters (shapes, dtypes), tau, alpha, mode and optimizer",
                              self.timeout, "EASGD's setup")
        self.tau, self.alpha, self.mode = int(tau), float(alpha), mode
        self.steps = 0
        self.rounds = 0
        # the centre starts at rank 0's parameters, and so do the workers
        for p in self.params:
            comm.Bcast(p, root=0)
        self.center = [p.copy() for p in self.params]
        self._windows = []
        if mode == "async":
            for p in self.params:
                win = MPI.Win.Allocate(p.nbytes if self.rank == 0 else 0, p.itemsize, comm=comm)
                if self.rank == 0:
                    np.frombuffer(win.tomemory(), p.dtype)[:] = p.reshape(-1)
                self._windows.append(win)
            comm.Barrier()
        self._closed = False

    def step(self, grads):
        """A local step of the wrapped optimizer; every ``tau``-th step also the
        elastic update (collective in synchronous mode)."""
        if self._closed:
            raise RuntimeError("this EASGD was closed")
        ok = self.local.step(grads)
        self.steps += 1
        if self.steps % self.tau == 0:
            self._elastic_sync() if self.mode == "sync" else self._elastic_async()
            self.rounds += 1
        return ok

    def _elastic_sync(self):
        a, P = self.alpha, self.nranks
        for p, c in zip(self.params, self.center):
            total = np.empty_like(p)
            wait(self.comm.Iallreduce(p, total, op=MPI.SUM), "the EASGD all-reduce", self.timeout)
            p -= a * (p - c)                  # x_i ← x_i − α(x_i − x̃)
            c += a * (total - P * c)          # x̃ ← x̃ + α Σ_j (x_j − x̃)

    def _elastic_async(self):
        a = self.alpha
        for p, c, win in zip(self.params, self.center, self._windows):
            win.Lock(0, MPI.LOCK_EXCLUSIVE)
            win.Get(c, 0)
            win.Flush(0)
            e = a * (p - c)                   # e = α(x_i − x̃), with the x̃ read under the lock
            p -= e
            win.Accumulate(e, 0, op=MPI.SUM)  # x̃ ← x̃ + e
            win.Unlock(0)

    def close(self):
        """Collective: wait for every worker; ``center`` becomes the final centre on every
        rank (asynchronous: read from rank 0's window; its windows are freed)."""
        if self._closed:
            return
        self._closed = True
        wait(self.comm.Ibarrier(), "EASGD.close", self.timeout)
        if self.mode == "async":
            for c, win in zip(self.center, self._windows):
                if self.rank == 0:
                    win.Lock(0, MPI.LOCK_SHARED)
                    win.Get(c, 0)
                    win.Unlock(0)
                self.comm.Bcast(c, root=0)
                win.Free()
            self._windows = []
