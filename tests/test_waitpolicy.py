"""The OpenMP wait policy fastopt sets up (waitpolicy.py) and the driver's choice of
serial or parallel for a team that may be asleep (plan_threads in driver.pyx)."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastopt
from fastopt._kernels import driver, waitpolicy

needs_libgomp = pytest.mark.skipif(
    not driver.openmp_enabled() or waitpolicy._libgomp_loaded() is not True,
    reason="kernels not built against libgomp on Linux")

PROBE = """
import os, sys
import fastopt
from fastopt._kernels import driver, waitpolicy
print(waitpolicy.policy, driver.hot_window(), "GOMP_SPINCOUNT" in os.environ,
      os.environ.get("GOMP_SPINCOUNT"), file=sys.stdout)
"""


# run the very package under test (installed or built in place), whatever the cwd holds
HOME = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))


def package_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([HOME, os.environ.get("PYTHONPATH", "")]))


def probe(extra_env=None, prelude=""):
    """Import fastopt in a fresh interpreter with a clean OpenMP environment plus
    ``extra_env``; returns (policy, hot_window, spincount variable left set, its value,
    libgomp's OMP_DISPLAY_ENV report)."""
    env = {k: v for k, v in package_env().items() if k not in waitpolicy.USER_VARIABLES}
    env.update({"OMP_DISPLAY_ENV": "verbose"}, **(extra_env or {}))
    out = subprocess.run([sys.executable, "-P", "-c", prelude + PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    policy, window, left, value = out.stdout.split()
    return policy, float(window), left == "True", value, out.stderr


@needs_libgomp
def test_fastopt_caps_the_spin_and_restores_the_environment():
    policy, window, left, value, report = probe()
    assert policy == "fastopt"
    assert f"GOMP_SPINCOUNT = '{waitpolicy.SPINCOUNT}'" in report      # what libgomp itself read
    assert not left and value == "None"                                  # children don't inherit it
    assert 0.0 < window < 0.1


@needs_libgomp
@pytest.mark.parametrize("variable,value,shown", [("GOMP_SPINCOUNT", "123", "GOMP_SPINCOUNT = '123'"),
                                                  ("OMP_WAIT_POLICY", "active", "OMP_WAIT_POLICY = 'ACTIVE'")])
def test_a_policy_in_the_environment_is_left_alone(variable, value, shown):
    policy, window, _, _, report = probe({variable: value})
    assert policy == "environment"
    assert shown in report
    assert window == 0.0                   # the team's idle time is unknown: no asleep threshold


@needs_libgomp
def test_libgomp_loaded_before_fastopt_keeps_its_settings():
    policy, window, _, _, report = probe(prelude="import ctypes; ctypes.CDLL('libgomp.so.1')\n")
    assert policy == "preloaded"
    assert "GOMP_SPINCOUNT = '300000'" in report                         # libgomp's default stands
    assert window == 0.0


def test_describe_names_the_policy():
    assert waitpolicy.describe()
    out = subprocess.run([sys.executable, "-P", "-m", "fastopt", "info"], capture_output=True, text=True,
                         env=package_env())
    assert out.returncode == 0, out.stderr
    # the spin time in brackets is timed anew by each process
    assert "OpenMP wait policy: " + waitpolicy.describe().split("(")[0] in out.stdout


# --- serial or parallel: plan_threads ------------------------------------------------------------
@pytest.fixture
def planning(threads_restored):
    window = driver.hot_window()
    driver.set_num_threads(2)
    yield driver
    driver.set_hot_window(window)


def adam_step(n):
    p = np.zeros(n, np.float32)
    opt = fastopt.Adam([p])
    g = [np.ones(n, np.float32)]
    return lambda: opt.step(g)


needs_openmp = pytest.mark.skipif(not driver.openmp_enabled(), reason="built without OpenMP")


@needs_openmp
def test_below_the_awake_threshold_a_step_stays_serial(planning):
    planning.set_serial_threshold(28 * 1000 + 1, cold=10**9)     # one byte more than 1000 Adam elements
    planning.set_hot_window(100.0)
    step = adam_step(1000)
    step()
    step()
    assert planning.last_pass_threads() == 1


@needs_openmp
def test_an_idle_team_is_not_woken_for_a_mid_sized_step(planning):
    planning.set_serial_threshold(1000, cold=28 * 5000 + 1)
    planning.set_hot_window(0.25)
    step = adam_step(5000)
    time.sleep(0.3)
    step()
    assert planning.last_pass_threads() == 1          # the team slept: stays on the caller
    step()
    assert planning.last_pass_threads() == 2          # a tight loop: worth one wake-up
    step()
    assert planning.last_pass_threads() == 2
    time.sleep(0.3)
    step()
    assert planning.last_pass_threads() == 1


@needs_openmp
def test_a_large_step_always_uses_the_team(planning):
    planning.set_serial_threshold(1000, cold=28 * 5000)
    planning.set_hot_window(0.25)
    step = adam_step(5000)
    time.sleep(0.3)
    step()
    assert planning.last_pass_threads() == 2


@needs_openmp
def test_without_a_window_only_the_awake_threshold_counts(planning):
    planning.set_serial_threshold(1000, cold=10**9)
    planning.set_hot_window(0.0)
    step = adam_step(5000)
    time.sleep(0.01)
    step()
    assert planning.last_pass_threads() == 2


@needs_openmp
def test_stream_kernels_follow_the_same_plan(planning):
    from fastopt._kernels import stream
    planning.set_serial_threshold(1000, cold=10**9)
    planning.set_hot_window(0.25)
    a, b = np.zeros(5000), np.ones(5000)
    time.sleep(0.3)
    stream.copy(a, b)
    assert planning.last_pass_threads() == 1
    stream.copy(a, b)
    assert planning.last_pass_threads() == 2
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [(-1, None), (10, -5)])
def test_invalid_thresholds_are_rejected(bad, threads_restored):
    before = driver.serial_thresholds()
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        driver.set_serial_threshold(*bad)
    assert driver.serial_thresholds() == before


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_invalid_hot_window_is_rejected(bad):
    before = driver.hot_window()
    with pytest.raises(ValueError, match="hot window"):
        driver.set_hot_window(bad)
    assert driver.hot_window() == before


@needs_openmp
def test_a_serial_pass_for_one_thread_does_not_wake_the_plan(planning):
    planning.set_serial_threshold(1000, cold=10**9)
    planning.set_hot_window(0.25)
    step = adam_step(5000)
    time.sleep(0.3)
    planning.set_num_threads(1)
    step()                                   # the team was never asked for: still asleep
    planning.set_num_threads(2)
    step()
    assert planning.last_pass_threads() == 1


@needs_openmp
def test_a_skipped_step_reports_its_threads(planning):
    planning.set_serial_threshold(0)
    p = np.zeros(5000, np.float32)
    opt = fastopt.Adam([p], nonfinite="skip")
    planning.set_num_threads(1)
    opt.step([np.ones_like(p)])
    planning.set_num_threads(2)
    assert opt.step([np.full_like(p, np.nan)]) is False
    assert planning.last_pass_threads() == 2


def test_data_span_rejects_none():
    with pytest.raises(TypeError):
        driver.data_span(None)
