"""MPI plumbing shared by the distributed optimizers: importing mpi4py with a useful
message, checking a communicator, agreeing on errors, waiting with a deadline, and
aborting the job when a rank fails.

No hang: an error found on one rank (bad input, an incompatible checkpoint) is
exchanged before any data moves, so every rank raises the same :class:`DistributedError`
naming the rank and the problem. A rank that dies is cleaned up by ``mpiexec`` (Hydra
kills the job). A rank that raises out of the script would leave the others blocked in
their next collective, and MPI_Finalize would wait for them forever; so the first
distributed object installs an exception hook that prints the error with the rank and
calls ``MPI_Abort`` (pass ``abort_on_error=False`` to keep the default hook). Every
wait in this package has a deadline (``timeout`` seconds, default 300): a rank that
never arrives makes the others raise :class:`DistributedError` instead of waiting.
"""
import fcntl
import os
import stat
import sys
import termios
import time
import traceback

import numpy as np

try:
    from mpi4py import MPI
except ImportError as exc:      # pragma: no cover - the message is the point
    raise ImportError("fastopt.distributed needs mpi4py and an MPI library: pip install 'fastopt[mpi]' "
                      "(mpi4py and mpich from PyPI)") from exc

__all__ = ["MPI", "DistributedError", "check_comm", "install_abort_hook", "wait", "agree", "DEFAULT_TIMEOUT",
           "join", "check_optimizer_class", "agree_same_everywhere"]

DEFAULT_TIMEOUT = 300.0


class DistributedError(RuntimeError):
    """An error found on one or more ranks, raised on every rank of the communicator."""


def check_comm(comm, name="comm"):
    """``comm`` (default ``MPI.COMM_WORLD``) if it is an mpi4py intra-communicator."""
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or isinstance(comm, MPI.Intercomm):
        raise TypeError(f"{name} must be an mpi4py intra-communicator (e.g. MPI.COMM_WORLD), got "
                        f"{type(comm).__module__}.{type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise TypeError(f"{name} is MPI.COMM_NULL")
    return comm


_HOOKED = False


def _wait_until_read(stream, timeout):
    """Wait (at most ``timeout`` s) until the reader of ``stream``'s pipe has taken every
    byte written to it.

    mpiexec's proxy reads each rank's stderr through a pipe and kills the ranks as soon
    as one calls MPI_Abort; bytes still in the pipe then are lost, and the job ends with
    no word of why. A fixed pause would not do: it lets the ranks that need not wait for
    the failing one run on. Polling the pipe's fill level (FIONREAD) waits only as long
    as the proxy needs."""
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        buf = bytearray(4)
        deadline = time.monotonic() + timeout
        while True:
            fcntl.ioctl(fd, termios.FIONREAD, buf)
            if int.from_bytes(buf, sys.byteorder) == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.001)
    except (OSError, ValueError, AttributeError):     # no real fd (a test's capture) or a closed one
        return


def install_abort_hook():
    """Make an uncaught exception print its traceback with the rank and abort the whole
    job (``MPI_Abort``), so no other rank is left waiting for this one."""
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    previous = sys.excepthook

    def hook(kind, value, tb):
        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"fastopt.distributed: rank {rank} of {size} failed; aborting all ranks "
                         f"(MPI_Abort):\n{text}")
        sys.stderr.flush()
        _wait_until_read(sys.stderr, 2.0)
        if size > 1 and MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.COMM_WORLD.Abort(1)
        previous(kind, value, tb)

    sys.excepthook = hook


def wait(req, what, timeout):
    """Wait for the request(s) ``req``, at most ``timeout`` seconds; else
    :class:`DistributedError` naming ``what``."""
    reqs = req if isinstance(req, list) else [req]
    deadline = time.monotonic() + timeout
    polls = 0
    while not MPI.Request.Testall(reqs):
        polls += 1
        if polls & 255 == 0:
            if time.monotonic() > deadline:
                raise DistributedError(f"rank {MPI.COMM_WORLD.Get_rank()}: {what} did not complete within "
                                       f"{timeout:g} s (another rank failed, hung or took another path); "
                                       "the communicator is no longer usable")
            if polls > 4096:
                time.sleep(0.0002)     # long waits: give oversubscribed peers the core


def agree(comm, error, timeout, what="the check"):
    """Every rank's ``error`` (a message or None) becomes everyone's: if any rank has
    one, every rank raises the same :class:`DistributedError` listing them."""
    flag = np.array([0 if error is None else 1], np.int32)
    flags = np.zeros(comm.Get_size(), np.int32)
    wait(comm.Iallgather(flag, flags), what, timeout)
    if not flags.any():
        return
    # now everyone is known to be here: the messages may take a blocking collective
    messages = comm.allgather(error)
    lines = [f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None]
    raise DistributedError(f"{what} failed on {len(lines)} of {comm.Get_size()} ranks:\n  " + "\n  ".join(lines))


def join(obj, comm, timeout, abort_on_error):
    """The opening of every distributed object: set ``obj.comm`` (checked), ``timeout``,
    ``rank`` and ``nranks``, and install the abort hook unless told not to. Returns the
    communicator."""
    obj.comm = comm = check_comm(comm)
    if abort_on_error:
        install_abort_hook()
    obj.timeout = float(timeout)
    obj.rank, obj.nranks = comm.Get_rank(), comm.Get_size()
    return comm


def check_optimizer_class(optimizer):
    """``optimizer`` must be a fastopt optimizer class (not an instance): every rank builds
    its own from it."""
    from fastopt.optim.base import Optimizer
    if not (isinstance(optimizer, type) and issubclass(optimizer, Optimizer)):
        raise TypeError(f"optimizer must be a fastopt optimizer class (e.g. fastopt.Adam), got {optimizer!r}")


def agree_same_everywhere(comm, sig, needs, timeout, what):
    """Every rank raises the same :class:`DistributedError` unless ``sig`` is equal on all
    ranks; the message says what the job ``needs`` and lists each rank that differs
    from rank 0."""
    sigs = comm.allgather(sig)
    bad = [f"rank {r}: {s}" for r, s in enumerate(sigs) if s != sigs[0]]
    agree(comm, None if not bad else f"{needs} on every rank; rank 0 has {sigs[0]}, " + "; ".join(bad),
          timeout, what)
