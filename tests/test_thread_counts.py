"""Issue 10, reproducer 3: thread counts are bounded (libgomp cannot create tens of
thousands of threads: it exits or crashes) and must be ints."""
import numpy as np
import pytest

import fastopt
from fastopt import kernels
from fastopt._kernels import driver
from subproc import assert_ok, run_snippet


def _adam_args(n=1000):
    return np.zeros(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)


def test_the_bound_is_a_few_threads_per_processor():
    import os
    procs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert max(16, 4 * procs) >= driver.max_threads() >= min(16, 4 * procs)


@pytest.mark.parametrize("threads", [40_000, 100_000, 2**31, 2**64, driver.max_threads() + 1])
def test_huge_thread_counts_are_refused_before_anything_is_written(threads):
    p, g, m, v = _adam_args()
    with pytest.raises(ValueError, match=r"invalid threads .*must be in \[0, "):
        kernels.adam(p, g, m, v, step=1, threads=threads)
    assert not p.any() and not m.any() and not v.any()


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError),
                                      (None, TypeError)])
def test_thread_counts_must_be_ints_in_range(bad, exc):
    p, g, m, v = _adam_args()
    with pytest.raises(exc, match="threads"):
        kernels.adam(p, g, m, v, step=1, threads=bad)
    assert not p.any()


@pytest.mark.parametrize("bad, exc", [(100_000, ValueError), (-1, ValueError), (1.5, TypeError), (2**31, ValueError),
                                      (np.float64(2.0), TypeError)])
def test_set_num_threads_refuses_bad_counts_and_keeps_the_old_one(bad, exc, threads_restored):
    driver.set_num_threads(1)
    with pytest.raises(exc, match="n"):
        fastopt.set_num_threads(bad)
    assert fastopt.get_num_threads() == 1


def test_set_num_threads_takes_numpy_ints(threads_restored):
    fastopt.set_num_threads(np.int64(1))
    assert fastopt.get_num_threads() == 1


def test_a_huge_omp_num_threads_is_capped():
    # before: "libgomp: Thread creation failed" and exit, or a segfault in GOMP_parallel
    r = run_snippet("""
        import numpy as np, fastopt
        from fastopt._kernels import driver
        driver.set_serial_threshold(0)
        assert fastopt.get_num_threads() == driver.max_threads(), fastopt.get_num_threads()
        p = np.zeros(100_000, np.float32)
        fastopt.Adam([p], lr=1.0).step([np.ones_like(p)])
        assert np.allclose(p, -1.0)
        print("OK")
    """, env={"OMP_NUM_THREADS": "100000"})
    assert_ok(r)
