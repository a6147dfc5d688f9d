"""New optimizer state is written by the step's threads (driver.first_touch)."""
import time

import numpy as np
import pytest

import fastopt
from fastopt._kernels import driver
from fastopt.reference.engine import ReferenceEngine

SIZES = (0, 1, 7, 1023, 10**6 + 3)


def new_state(sizes, dtypes, nbuf, values):
    states = [tuple(np.full(n, np.nan, dt) for _ in range(nbuf)) for n, dt in zip(sizes, dtypes)]
    return states, [tuple(values[:nbuf])] * len(states)


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("nbuf", (1, 2, 6))
def test_every_element_gets_its_value(threads, nbuf, threads_restored):
    threads_restored.set_serial_threshold(0)            # even tiny fills go through the team
    threads_restored.set_num_threads(threads)
    values = (0.0, 0.1, -2.5, 1e-8, 3.0, 7.0)
    dtypes = [np.float32, np.float64] * 3
    states, vals = new_state(SIZES, dtypes, nbuf, values)
    driver.first_touch(states, vals)
    assert driver.last_pass_threads() == threads
    for bufs, dt in zip(states, dtypes):
        for a, v in zip(bufs, values):
            np.testing.assert_array_equal(a, np.full(a.size, v, dt))


def test_fill_uses_the_steps_threads_even_when_the_team_sleeps(threads_restored):
    threads_restored.set_num_threads(2)
    n = 300_000                     # Adam: 8.4 MB a step, but only 2.4 MB of state to fill
    states, vals = new_state([n], [np.float32], 2, (0.0, 0.0))
    time.sleep(0.01)                # longer than the hot window: the team is asleep
    driver.first_touch(states, vals)
    assert driver.last_pass_threads() == (2 if driver.openmp_enabled() else 1)


def test_reference_engine_fills_the_same():
    values = (0.5, 0.0)
    a, va = new_state(SIZES, [np.float32] * 5, 2, values)
    b, vb = new_state(SIZES, [np.float32] * 5, 2, values)
    driver.first_touch(a, va)
    ReferenceEngine.first_touch(b, vb)
    for x, y in zip(a, b):
        for u, w in zip(x, y):
            np.testing.assert_array_equal(u, w)


def bad_cases():
    ok = np.zeros(8, np.float32)
    yield [(ok,)], [(1.0, 2.0)], "1 buffers, 2 values"
    yield [(ok,)], [], "differ in length"
    yield [(ok, np.zeros(9, np.float32))], [(1.0, 1.0)], "buffer 1"
    yield [(ok, np.zeros(8, np.float64))], [(1.0, 1.0)], "buffer 1"
    yield [(ok, np.zeros(16, np.float32)[::2])], [(1.0, 1.0)], "C-contiguous"
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    yield [(ok, ro)], [(1.0, 1.0)], "writeable"
    yield [(ok, np.zeros(8, np.int32))], [(1.0, 1.0)], "float32/float64"
    yield [(ok, np.zeros(8, ">f4"))], [(1.0, 1.0)], "native"
    raw = np.zeros(8 * 4 + 1, np.uint8)[1:].view(np.float32)
    yield [(ok, raw)], [(1.0, 1.0)], "aligned"
    yield [tuple(np.zeros(8, np.float32) for _ in range(7))], [(0.0,) * 7], "at most 6"


@pytest.mark.parametrize("states,values,match", list(bad_cases()))
def test_bad_buffers_are_rejected_before_any_write(states, values, match):
    before = [tuple(a.copy() for a in bufs) for bufs in states]
    with pytest.raises(ValueError, match=match):
        driver.first_touch(states, values)
    for bufs, old in zip(states, before):
        for a, b in zip(bufs, old):
            np.testing.assert_array_equal(a, b)


def test_optimizer_state_starts_at_its_initial_value():
    p = [np.ones(5000, np.float32), np.ones(7, np.float64)]
    opt = fastopt.Adagrad(p, initial_accumulator_value=0.25)
    for k, arr in enumerate(p):
        (acc,) = opt._states[k]
        np.testing.assert_array_equal(acc, np.full(arr.shape, 0.25, arr.dtype))


@pytest.mark.parametrize("n,shift", [(1024, 0), (10**5, 1), (10**5 + 3, 3), (300, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_sits_at_the_parameters_page_offset(n, shift, dtype):
    p = np.ones(n + shift, dtype)[shift:]                  # a parameter at an odd offset
    opt = fastopt.Adam([p])
    m, v = opt._states[0]
    for s in (m, v):
        assert s.shape == p.shape and s.dtype == p.dtype and s.flags.c_contiguous and s.flags.writeable
        if p.nbytes >= 4096:                               # smaller ones are plain np.empty
            assert (s.ctypes.data - p.ctypes.data) % 4096 == 0
        np.testing.assert_array_equal(s, 0)
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in (p, m, v))
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
