"""Downpour-style asynchronous SGD (Dean et al. 2012) over MPI point-to-point messages.

Ranks ``0 .. n_servers-1`` are parameter servers; each owns a shard of the parameters
(:class:`ShardLayout` over the servers) and the state of any fastopt optimizer for it
(Adagrad in the paper). The other ranks are workers: each computes gradients on its
own data at its (possibly stale) copy of the parameters and

* every ``n_push`` steps pushes the mean of its gradients since the last push to the
  servers (non-blocking sends, one per server, of that server's shard); a server
  applies its optimizer's fused step to each push as it arrives;
* every ``n_fetch`` steps fetches fresh parameters: it posts non-blocking receives for
  every server's shard, then asks each server for it.

Servers run :meth:`Downpour.serve` until every worker has called :meth:`close`; then
:meth:`gather_params` (collective) gives every rank the servers' final parameters.
No sockets of our own: only MPI point-to-point (``Isend``/``Irecv``/``Iprobe``).
"""
import numbers
import time

import numpy as np

from fastopt.distributed.comm import (DEFAULT_TIMEOUT, MPI, DistributedError, agree, agree_same_everywhere,
                                      check_optimizer_class, join, wait)
from fastopt.distributed.layout import ShardLayout, packed_view

__all__ = ["Downpour"]

TAG_PUSH, TAG_FETCH, TAG_PARAMS, TAG_DONE = 11, 12, 13, 14


def _hindexed(blocks):
    blocks = [(a, n) for a, n in blocks if n > 0]
    return MPI.BYTE.Create_hindexed([n for _, n in blocks], [a for a, _ in blocks]).Commit()


class Downpour:
    """``Downpour(fastopt.Adagrad, params, n_servers=1, n_fetch=1, n_push=1, lr=0.1)``:
    every rank passes the same parameters (shapes, dtypes; rank 0's values are the
    start); ``is_server`` says which part this rank plays. Keyword arguments beyond
    those below go to the servers' optimizer."""

    def __init__(self, optimizer, params, *, comm=None, n_servers=1, n_fetch=1, n_push=1, timeout=DEFAULT_TIMEOUT,
                 abort_on_error=True, **kwargs):
        comm = join(self, comm, timeout, abort_on_error)
        error = None
        try:
            check_optimizer_class(optimizer)
            for name, v in (("n_servers", n_servers), ("n_fetch", n_fetch), ("n_push", n_push)):
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                    raise ValueError(f"{name} must be an int >= 1, got {v!r}")
            if n_servers >= self.nranks:
                raise ValueError(f"n_servers={n_servers} leaves no worker among {self.nranks} ranks")
            params = [params] if isinstance(params, np.ndarray) else list(params)
            for k, p in enumerate(params):
                if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64) or \
                        not p.flags.c_contiguous or not p.flags.writeable or p.size == 0:
                    raise TypeError(f"params[{k}] must be a non-empty, C-contiguous, writeable float32/float64 "
                                    "NumPy array")
        except (TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        agree(comm, error, self.timeout, "Downpour's argument check")
        sig = ([[list(p.shape), p.dtype.str] for p in params], n_servers, n_fetch, n_push, optimizer.__name__)
        agree_same_everywhere(comm, sig, "Downpour needs the same parameters (shapes, dtypes) and settings",
                              self.timeout, "Downpour's setup")
        self.params, self._flat = params, [p.reshape(-1) for p in params]
        self.n_servers, self.n_fetch, self.n_push = int(n_servers), int(n_fetch), int(n_push)
        self.is_server = self.rank < self.n_servers
        for p in params:
            comm.Bcast(p, root=0)
        self.layout = ShardLayout([p.size for p in params], [p.itemsize for p in params], self.n_servers)
        # servers whose shard is empty (fewer reduction blocks than servers) only count workers out
        self._active = [s for s in range(self.n_servers) if self.layout.pieces[s]]
        self._types = [_hindexed([(self._flat[k][a:].ctypes.data, (b - a) * params[k].itemsize)
                                  for k, a, b in self.layout.pieces[s]]) if self.layout.pieces[s] else None
                       for s in range(self.n_servers)]
        self.pushes = self.fetches = self.steps = 0
        if self.is_server:
            pieces = self.layout.pieces[self.rank]
            self.optimizer = optimizer([self._flat[k][a:b] for k, a, b in pieces], **kwargs) if pieces else None
            offsets, size = self.layout.packed(self.rank)
            self._gbuf = np.empty(size, np.uint8)
            self._gviews = [packed_view(self._gbuf, o, b - a, params[k].dtype)
                            for (k, a, b), o in zip(pieces, offsets)]
        else:
            self._acc = [np.zeros(p.shape, p.dtype) for p in params]
            self._since_push = 0
            self._send = [np.empty(self.layout.packed(s)[1], np.uint8) for s in range(self.n_servers)]
            self._pending = []
        self._closed = False

    # --- workers -----------------------------------------------------------------------------
    def step(self, grads):
        """Worker: add ``grads`` to the accumulated gradient; push every ``n_push`` steps
        and fetch every ``n_fetch`` steps. Parameters change only when fetched."""
        if self.is_server:
            raise RuntimeError(f"rank {self.rank} is a parameter server: call serve(), not step()")
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients, got {len(grads)}")
        for k, (a, g) in enumerate(zip(self._acc, grads)):
            if not isinstance(g, np.ndarray) or g.shape != a.shape or g.dtype != a.dtype:
                raise ValueError(f"grads[{k}] must be a {a.dtype} array of shape {a.shape}")
            a += g
        self.steps += 1
        self._since_push += 1
        if self._since_push == self.n_push:
            self._push()
        if self.steps % self.n_fetch == 0:
            self.fetch()

    def _push(self):
        # a push stays in flight while the next gradients are computed; its buffers are
        # refilled only once it is out
        bufs = self._send
        if self._pending:
            wait(self._pending, "the previous gradient push", self.timeout)
            self._pending = []
        inv = 1.0 / self._since_push
        for s in self._active:
            offsets, _ = self.layout.packed(s)
            for (k, a, b), o in zip(self.layout.pieces[s], offsets):
                view = packed_view(bufs[s], o, b - a, self.params[k].dtype)
                np.multiply(self._acc[k].reshape(-1)[a:b], inv, out=view)
            self._pending.append(self.comm.Isend(bufs[s], dest=s, tag=TAG_PUSH))
        for a in self._acc:
            a.fill(0)
        self._since_push = 0
        self.pushes += 1

    def fetch(self):
        """Worker: replace this rank's parameters with the servers' current ones."""
        recvs = [self.comm.Irecv([MPI.BOTTOM, 1, self._types[s]], source=s, tag=TAG_PARAMS) for s in self._active]
        asks = [self.comm.Isend(np.zeros(1, np.int8), dest=s, tag=TAG_FETCH) for s in self._active]
        wait(recvs + asks, "a parameter fetch", self.timeout)
        self.fetches += 1

    def close(self):
        """Worker: push what is accumulated, then tell the servers this worker is done."""
        if self._closed or self.is_server:
            return
        if self._since_push:
            self._push()
        wait(self._pending, "the last gradient push", self.timeout)
        self._pending = []
        done = [self.comm.Isend(np.zeros(1, np.int8), dest=s, tag=TAG_DONE) for s in range(self.n_servers)]
        wait(done, "the end-of-work message", self.timeout)
        self._closed = True

    # --- servers -----------------------------------------------------------------------------
    def serve(self):
        """Server: apply pushed gradients and answer fetches until every worker is done.
        Returns the number of updates applied. A worker silent for ``timeout`` seconds
        raises :class:`DistributedError`."""
        if not self.is_server:
            raise RuntimeError(f"rank {self.rank} is a worker")
        workers, done, updates = self.nranks - self.n_servers, 0, 0
        status, token = MPI.Status(), np.zeros(1, np.int8)
        last = time.monotonic()
        idle = 0
        while done < workers:
            if not self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                idle += 1
                if idle > 64:
                    time.sleep(0.0002)
                if time.monotonic() - last > self.timeout:
                    raise DistributedError(f"rank {self.rank} (server): no message from any worker for "
                                           f"{self.timeout:g} s with {workers - done} still working")
                continue
            idle, last = 0, time.monotonic()
            src, tag = status.Get_source(), status.Get_tag()
            if tag == TAG_PUSH:
                self.comm.Recv(self._gbuf, source=src, tag=TAG_PUSH)
                self.optimizer.step(self._gviews)
                updates += 1
            elif tag == TAG_FETCH:
                self.comm.Recv(token, source=src, tag=TAG_FETCH)
                self.comm.Send([MPI.BOTTOM, 1, self._types[self.rank]], dest=src, tag=TAG_PARAMS)
            elif tag == TAG_DONE:
                self.comm.Recv(token, source=src, tag=TAG_DONE)
                done += 1
            else:
                raise DistributedError(f"rank {self.rank} (server): unexpected message tag {tag} from rank {src}")
        self.updates = updates
        return updates

    def gather_params(self):
        """Collective, after :meth:`serve` / :meth:`close`: every rank's parameters become
        the servers' final ones."""
        for s in self._active:
            self.comm.Bcast([MPI.BOTTOM, 1, self._types[s]], root=s)
        return self.params
