"""How idle OpenMP workers wait between steps (pure Python: runs before libgomp loads).

After every parallel region libgomp keeps each worker spinning for GOMP_SPINCOUNT
pause loops, 300,000 by default: about 9 ms on the 2-core reference machine. For that
long after each ``opt.step`` a worker holds a core that the caller's own threaded code
(BLAS, PyTorch, the next forward pass) wants: a 2-thread 300x300 matmul run right after
a step took 3.6 ms instead of 0.9 ms. fastopt therefore caps the spin at
:data:`SPINCOUNT` loops (about 0.25 ms there), still long enough for the back-to-back
regions of one step (gradient-norm pass, then update) and for steps called in a tight
loop. Waking a sleeping team costs more (~45 us there), so the driver keeps a higher
serial threshold for a team that has been idle longer than the hot window: 80% of the
spin, timed here from the length of one ``pause``.

libgomp reads its environment once, when it is loaded, so :func:`load_kernels` sets
the variable only while the compiled kernels are first imported and then restores
``os.environ``: child processes do not inherit it. libgomp is one runtime per process,
though: whatever later loads a ``libgomp.so.1`` gets this one and shares the cap
(PyTorch 2.13's bundled ``torch/lib/libgomp.so.1`` does, when torch is imported after
fastopt); only renamed copies (``libgomp-<hash>.so.1`` from auditwheel) keep their own.
A policy the user chose (``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` in the environment) is left alone, and then a team always counts
as awake; so is a libgomp that was already loaded.
"""
import os

#: pause loops an idle libgomp worker spins before it sleeps (libgomp default 300,000)
SPINCOUNT = 10_000
#: hot window where the length of a spin loop is unknown (not x86): 3 ns a loop
FALLBACK_WINDOW = 30e-6
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: what applied: "fastopt" (the cap above), "environment" (the user's variables),
#: "preloaded" (libgomp was loaded before fastopt, so its settings stand) or
#: "unknown" (no /proc/self/maps to tell, or the kernels do not use libgomp) or
#: "serial" (built without OpenMP)
policy = "unknown"


def _libgomp_paths():
    """Paths of the libgomp copies mapped into this process (``libgomp.so.1`` or a
    wheel's renamed ``libgomp-<hash>.so.1``), or None without /proc/self/maps."""
    try:
        with open("/proc/self/maps") as maps:
            return {path for path in (line.split()[-1] for line in maps if "/" in line)
                    if os.path.basename(path).startswith("libgomp") and ".so" in os.path.basename(path)}
    except OSError:
        return None


def openmp_runtime(path):
    """The file of the OpenMP runtime that the loaded shared object ``path`` calls
    (where its ``omp_get_max_threads`` resolves), or None when that cannot be told.

    Counting the libgomp copies a process maps is not enough: scikit-learn's wheel,
    for one, brings a renamed copy of its own (``libgomp-<hash>.so.1``) that neither
    fastopt nor torch uses."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    try:
        function = ctypes.CDLL(path).omp_get_max_threads
        info = DlInfo()
        if not ctypes.CDLL(None).dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)):
            return None
        return os.path.realpath(info.dli_fname.decode())
    except (OSError, AttributeError):      # not loadable, no OpenMP, or no dladdr (not glibc)
        return None


def torch_openmp_runtime(torch):
    """:func:`openmp_runtime` of torch's CPU library (where its intra-op regions run)."""
    return openmp_runtime(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))


def _libgomp_loaded():
    """True/False when /proc/self/maps tells whether any libgomp is mapped, else None."""
    paths = _libgomp_paths()
    return None if paths is None else bool(paths)


def load_kernels():
    """Import the compiled driver under fastopt's wait policy; returns the policy."""
    global policy
    user = any(name in os.environ for name in USER_VARIABLES)
    before = None if user else _libgomp_paths()
    if user or before is None:
        from fastopt._kernels import driver
        policy = "environment" if user else "unknown"
    else:
        os.environ["GOMP_SPINCOUNT"] = str(SPINCOUNT)
        try:
            from fastopt._kernels import driver
        finally:
            del os.environ["GOMP_SPINCOUNT"]
        after = _libgomp_paths() or set()
        if after - before:                    # the kernels brought their libgomp: it read the cap
            policy = "fastopt"
            pause = driver.pause_seconds()
            driver.set_hot_window(0.8 * SPINCOUNT * pause if pause > 0.0 else FALLBACK_WINDOW)
        else:                                 # theirs was loaded already (or they use another runtime)
            policy = "preloaded" if after else "unknown"
    if not driver.openmp_enabled():
        policy = "serial"
    return policy


def _spin_us():
    from fastopt._kernels import driver
    return driver.hot_window() / 0.8 * 1e6


def describe():
    """One line for ``fastopt info``."""
    return {
        "fastopt": f"idle workers spin {SPINCOUNT:,} loops (~{_spin_us():.0f} us), then sleep "
                   f"(fastopt's cap; set OMP_WAIT_POLICY or GOMP_SPINCOUNT to choose)",
        "environment": "as set by OMP_WAIT_POLICY / GOMP_SPINCOUNT in the environment",
        "preloaded": "libgomp's own (it was loaded before fastopt)",
        "unknown": "the OpenMP runtime's default",
        "serial": "no worker threads (built without OpenMP)",
    }[policy]

