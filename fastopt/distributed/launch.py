"""Starting ``mpiexec`` from Python (tests, ``fastopt bench --mpi``) without importing
mpi4py in the calling process (which would make it an MPI process of its own)."""
import os
import shutil
import subprocess
import sys
import sysconfig

__all__ = ["mpiexec_path", "oversubscribed_env", "run_mpi"]


def mpiexec_path():
    """The ``mpiexec`` of this Python's environment (the mpich wheel installs it among
    the scripts), else the one on PATH, else None."""
    for d in (os.path.dirname(sys.executable), sysconfig.get_path("scripts"),
              sysconfig.get_path("scripts", f"{os.name}_user")):
        exe = os.path.join(d, "mpiexec")
        if os.path.exists(exe):
            return exe
    return shutil.which("mpiexec")


def oversubscribed_env():
    """Environment for ranks that share cores (more ranks than processors, or a busy
    machine). MPICH's ch4 progress loop polls without pause by default, so a rank
    waiting for a message takes the core of the rank that would send it; with
    ``MPIR_CVAR_CH4_PROGRESS_THROTTLE`` it sleeps after 64 empty polls, and
    ``MPIR_CVAR_ENABLE_HEAVY_YIELD`` makes its yields short sleeps instead of
    ``sched_yield`` calls.
    OpenMP threads: one per rank unless the caller chose."""
    env = {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1", "MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT": "64",
           "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}
    env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return env


def run_mpi(nranks, args, *, timeout, env=None, python=sys.executable):
    """``mpiexec -n nranks python args...`` with :func:`oversubscribed_env`;
    ``subprocess.CompletedProcess`` (text), or ``subprocess.TimeoutExpired``."""
    exe = mpiexec_path()
    if exe is None:
        raise FileNotFoundError("mpiexec not found: pip install 'fastopt[mpi]' (mpi4py and mpich)")
    full = dict(os.environ)
    full.update(oversubscribed_env())
    full.update(env or {})
    return subprocess.run([exe, "-n", str(nranks), python] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, env=full)
