"""Issue 10, reproducer 4: a child forked after the parent used the OpenMP team does not
hang: libgomp's workers do not survive fork, so such a child steps serially."""
import os

import pytest

from fastopt._kernels import driver
from subproc import assert_ok, run_snippet

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
needs_openmp = pytest.mark.skipif(not driver.openmp_enabled(), reason="built without OpenMP")

_PARENT = """
import os, sys, numpy as np, fastopt
from fastopt._kernels import driver
fastopt.set_num_threads(2)
driver.set_serial_threshold(0)
driver.set_late_threshold(float("inf"))   # a busy machine must not shrink the team here
def run():
    p = np.zeros(1_000_000, np.float32)
    opt = fastopt.Adam([p], lr=0.1, clip_norm=1.0)
    g = np.linspace(-1, 1, p.size, dtype=np.float32)
    for _ in range(3):
        opt.step([g])
    return p
expected = run()                 # the parent's team now exists
assert driver.last_pass_threads() == 2 and not driver.forked_serial()
"""


@needs_fork
@needs_openmp
def test_a_forked_child_steps_serially_and_gets_the_same_bits():
    # before: the child's first parallel region waited forever
    r = run_snippet(_PARENT + """
pid = os.fork()
if pid == 0:
    ok = driver.forked_serial() and (run() == expected).all() and driver.last_pass_threads() == 1
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert not driver.forked_serial() and driver.get_num_threads() == 2
print("OK")
""", timeout=60)
    assert_ok(r)


@needs_fork
@needs_openmp
def test_multiprocessing_fork_workers_do_not_hang():
    r = run_snippet(_PARENT + """
import multiprocessing as mp
def work(_):
    return bool((run() == expected).all()), driver.get_num_threads()
with mp.get_context("fork").Pool(2) as pool:
    out = pool.map(work, range(2))
assert out == [(True, 1), (True, 1)], out
print("OK")
""", timeout=60)
    assert_ok(r)


@needs_fork
def test_a_child_of_a_process_without_a_team_keeps_its_threads():
    # nothing ran in parallel and no other thread existed: no team was lost in the fork
    r = run_snippet("""
import os
from fastopt._kernels import driver
pid = os.fork()
if pid == 0:
    os._exit(3 if driver.forked_serial() else 0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
print("OK")
""", timeout=60)
    assert_ok(r)


@needs_fork
def test_a_child_forked_while_another_thread_steps_can_step():
    # the child inherits the optimizer's lock held by a thread it does not have
    r = run_snippet("""
import os, threading, numpy as np, fastopt
p = np.zeros(100)
go, release = threading.Event(), threading.Event()
def lr(step):
    go.set()
    release.wait()
    return 0.1
opt = fastopt.SGD([p], lr=lr)
t = threading.Thread(target=lambda: opt.step([np.ones(100)]))
t.start()
go.wait()
pid = os.fork()
if pid == 0:
    opt.param_groups[0]["lr"] = 1.0
    opt.step([np.ones(100)])
    os._exit(0 if (p < 0).all() else 3)
release.set()
t.join()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("OK")
""", timeout=60)
    assert_ok(r)


_FOREIGN_C = """
double foreign_sum(int n) {
    double s = 0;
    #pragma omp parallel for reduction(+:s) num_threads(2)
    for (int i = 0; i < n; i++) s += i;
    return s;
}
"""


def _foreign_openmp_library(tmp_path):
    # a library of someone else's linked to the same libgomp as fastopt (as xgboost or a
    # user's -fopenmp extension is), built with the compiler that built fastopt
    import shutil
    import subprocess
    import sysconfig
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) to build a foreign OpenMP library")
    src, lib = tmp_path / "foreign.c", tmp_path / "libforeign.so"
    src.write_text(_FOREIGN_C)
    r = subprocess.run([cc, "-O1", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{cc} -fopenmp failed: {r.stderr[-300:]}")
    return lib


@needs_fork
@needs_openmp
def test_a_child_forked_after_another_librarys_parallel_region_does_not_hang(tmp_path):
    # fastopt never ran a team, but a foreign library on the same runtime did: before,
    # the child's first two-thread step waited forever
    lib = _foreign_openmp_library(tmp_path)
    r = run_snippet(f"""
import ctypes, os, numpy as np, fastopt
from fastopt._kernels import driver
fastopt.set_num_threads(2)
driver.set_serial_threshold(0)
assert driver.foreign_openmp_users() == 0
foreign = ctypes.CDLL({str(lib)!r})
foreign.foreign_sum.restype = ctypes.c_double
assert foreign.foreign_sum(100000) == 4999950000.0
assert driver.foreign_openmp_users() == 1
pid = os.fork()
if pid == 0:
    p = np.zeros(1_000_000, np.float32)
    fastopt.SGD([p], lr=0.5).step([np.ones_like(p)])
    os._exit(0 if driver.forked_serial() and (p == -0.5).all() else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("OK")
""", timeout=60)
    assert_ok(r)


@needs_openmp
def test_a_vendored_renamed_libgomp_is_not_fastopts_runtime():
    # scikit-learn's wheel brings libgomp-<hash>.so.1, a runtime of its own: importing it
    # must not make forked children serial
    pytest.importorskip("sklearn")
    r = run_snippet("""
from fastopt._kernels import driver
before = driver.foreign_openmp_users()
import sklearn.ensemble  # noqa: F401  (loads its compiled, OpenMP-using modules)
assert driver.foreign_openmp_users() == before == 0, (before, driver.foreign_openmp_users())
print("OK")
""", timeout=60)
    assert_ok(r)
