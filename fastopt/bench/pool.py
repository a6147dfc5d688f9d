"""The shared arrays of one (size, dtype) and the stream kernel's jobs on them."""
from __future__ import annotations

import numpy as np

from fastopt._kernels import stream as _stream
from fastopt.bench.peers import pinned
from fastopt.bench.timing import Job, gbps, measure
from fastopt._kernels.driver import data_span
from fastopt.optim.base import page_placed, state_buffer

__all__ = ["Pool"]


class Pool:
    """The arrays of one (size, dtype), allocated and first-touched once and shared by
    every algorithm: the gradient, the initial parameters, one parameter array per
    engine, the read-modify-write arrays of the stream kernel, and 16-element copies of
    the stream arrays that measure the stream call's fixed cost.

    The stream kernel runs on ``grad`` and ``stream_rw``, laid out as a fastopt step's
    arrays are: the same gradient, ``stream_rw[0]`` (the parameter's stand-in) at the
    offset within a 4 KiB page of ``params["fastopt"]``, and the other read-modify-write
    arrays where the optimizer puts that parameter's state
    (:func:`fastopt.optim.base.state_buffer`: at the same offset, or from 128 MiB on a
    64-byte boundary when the parameter is not on one). Loads that share the
    low 12 address bits with a pending store wait for it (4K aliasing), so in cache the
    stream's time moved by up to 2x with its arrays' page offsets, and NumPy's default
    allocator puts them anywhere (16 bytes into a page when mmap serves them, scattered
    when the heap does). Placed like the step, the stream meets the same aliasing.
    """

    TINY = 16

    def __init__(self, n, dtype, nstream, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.dtype = n, np.dtype(dtype)
        self.grad = rng.standard_normal(n, dtype=self.dtype) * self.dtype.type(1e-2)
        self.init = rng.standard_normal(n, dtype=self.dtype)
        self.params = {name: self.init.copy() for name in ("fastopt", "numpy", "torch")}
        self.stream_rw = self._stream_copies(nstream)
        self.tiny_grad = self.grad[:self.TINY].copy()
        self.tiny_rw = [a[:self.TINY].copy() for a in self.stream_rw]

    def _stream_copies(self, nstream):
        """The stream's read-modify-write arrays: the parameter's stand-in, then the state's."""
        return [self._placed_copy(self.init, k > 0) for k in range(nstream)]

    def _placed_copy(self, values, state):
        """A copy of ``values`` where the optimizer would put a state buffer of the fastopt
        parameter (``state``) or at the parameter's own page offset (written serially, as
        ``init.copy()`` writes the parameters)."""
        p = self.params["fastopt"]
        out = state_buffer(p) if state or p.nbytes < 4096 else page_placed(p, data_span(p)[0] % 4096)
        out[...] = values
        return out

    def reset(self):
        """Copy the initial values into every engine's parameters."""
        for p in self.params.values():
            _stream.copy(p, self.init)

    def stream_arrays(self, nw):
        """``(grad, rw)``: the arrays the stream kernel reads and updates for a rule with
        ``nw - 1`` state buffers (``rw[0]`` stands for the parameter)."""
        return self.grad, self.stream_rw[:nw]

    def stream_job(self, nw, threads, repeats):
        """A :class:`~fastopt.bench.timing.Job` running the stream kernel over ``nw``
        read-modify-write arrays."""
        g, rw = self.stream_arrays(nw)
        return Job(lambda: _stream.stream(g, rw, threads), repeats, pinned(threads))

    def stream_overhead_job(self, nw, repeats):
        """The same stream call on 16 elements: its fixed cost, to subtract."""
        g, rw = self.tiny_grad, self.tiny_rw[:nw]
        return Job(lambda: _stream.stream(g, rw, 1), repeats)

    def copy_gbps(self, threads, repeats):
        """``{threads: GB/s}`` of the parallel streaming copy (one array read, one written),
        net of the call's fixed cost."""
        dst, src, tdst, tsrc = self.stream_rw[0], self.init, self.tiny_rw[0], self.tiny_grad
        jobs = {t: Job(lambda t=t: _stream.copy(dst, src, t), repeats) for t in threads}
        jobs["tiny"] = Job(lambda: _stream.copy(tdst, tsrc, 1), repeats)
        t = measure(jobs)
        return {th: gbps(2, self.dtype.itemsize, self.n, max(t[th] - t["tiny"], 1e-9)) for th in threads}
