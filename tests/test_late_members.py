"""Issue 10, "under load": when the OS has not scheduled a team member, the others take
over its chunks, the step's bits do not change, and the next passes use fewer threads
until a back-off has passed (then the whole team is tried again)."""
import numpy as np
import pytest

import fastopt
from fastopt._kernels import driver
from conftest import assert_bitwise

needs_openmp = pytest.mark.skipif(not driver.openmp_enabled(), reason="built without OpenMP")


@pytest.fixture
def late_member(threads_restored):
    window, late = driver.hot_window(), driver.late_threshold()
    driver.set_serial_threshold(0)
    driver.set_hot_window(10.0)               # the team counts as awake: a late member is "late"
    driver.set_late_threshold(20e-6)
    driver.reset_team_cap()
    yield driver
    driver.set_member_delay(0.0)
    driver.set_member_stall(0.0)
    driver.set_hot_window(window)
    driver.set_late_threshold(late)
    driver.reset_team_cap()


def _run(cls, n, threads, steps, dtype=np.float32, **kw):
    driver.set_num_threads(threads)
    p = np.linspace(-1, 1, n, dtype=dtype)
    opt = cls([p], **kw)
    for k in range(steps):
        opt.step([np.sin(p * (k + 1)).astype(dtype)])
    return p, opt


@needs_openmp
@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("cls, kw", [(fastopt.Adam, {}), (fastopt.Adam, {"clip_norm": 0.5}),
                                     (fastopt.RMSprop, {"centered": True, "momentum": 0.9})])
def test_work_taken_over_from_a_late_member_gives_the_same_bits(late_member, threads, cls, kw):
    serial, _ = _run(cls, 300_001, 1, 3, **kw)
    late_member.set_member_delay(0.003)
    late, _ = _run(cls, 300_001, threads, 3, **kw)
    assert_bitwise(late, serial, "a late member's chunks were run by the others")


# The delays are long against the caller's whole pass (40k elements: a few chunks), so
# that a slow build (the sanitizers' is several times slower) still sees a late member.
@needs_openmp
def test_a_late_member_shrinks_the_team_then_the_team_is_tried_again(late_member):
    p = np.zeros(40_000, np.float32)
    opt = fastopt.Adam([p])
    g = [np.ones_like(p)]
    late_member.set_num_threads(2)
    opt.step(g)                                # wakes the team
    assert late_member.last_pass_threads() == 2
    late_member.reset_team_cap()               # (a busy test machine may have made it late)
    late_member.set_member_delay(0.03)
    opt.step(g)                                # the last member sleeps 30 ms: the caller does it all
    assert late_member.team_cap() == (1, 4)
    late_member.set_member_delay(0.0)
    for _ in range(4):
        opt.step(g)
        assert late_member.last_pass_threads() == 1
    opt.step(g)                                # the back-off is over: the whole team again
    assert late_member.last_pass_threads() == 2


@needs_openmp
def test_the_back_off_doubles_while_members_stay_late(late_member):
    p = np.zeros(40_000, np.float32)
    opt = fastopt.Adam([p])
    g = [np.ones_like(p)]
    late_member.set_num_threads(2)
    opt.step(g)
    late_member.reset_team_cap()
    late_member.set_member_delay(0.03)
    opt.step(g)
    assert late_member.team_cap() == (1, 4)
    for _ in range(4):
        opt.step(g)                            # serial: the delay applies to no one
    opt.step(g)                                # the probe: late again
    assert late_member.team_cap() == (1, 8)


@needs_openmp
@pytest.mark.parametrize("delay, cap", [(0.01, (0, 0)), (0.3, (1, 4))])
def test_a_waking_team_gets_a_hundred_times_longer(late_member, delay, cap):
    # members asleep (the last region ended long ago) take 45 us to ~1 ms to wake: that
    # is the wake-up's cost, which the serial thresholds weigh, not a busy machine; but
    # one that takes 100x the awake bar was kept off its core. Bars of 1 ms and 100 ms
    # here, so that a loaded test machine's own delays stay far from both
    late_member.set_late_threshold(1e-3)
    late_member.set_hot_window(1e-9)
    p = np.zeros(200_000, np.float32)
    opt = fastopt.Adam([p])
    late_member.set_num_threads(2)
    late_member.set_member_delay(delay)
    opt.step([np.ones_like(p)])
    assert late_member.team_cap() == cap


@needs_openmp
def test_a_member_descheduled_inside_its_chunks_counts_as_late(late_member):
    # it claimed its first chunk and was then kept off its core: the caller waited for
    # it longer than the caller itself worked
    p = np.zeros(2_000_000, np.float32)
    opt = fastopt.Adam([p])
    late_member.set_num_threads(2)
    opt.step([np.ones_like(p)])
    late_member.reset_team_cap()
    late_member.set_member_stall(0.3)
    opt.step([np.ones_like(p)])
    assert late_member.team_cap() == (1, 4)


def test_late_threshold_and_delay_are_checked():
    with pytest.raises(ValueError, match="late threshold"):
        driver.set_late_threshold(0.0)
    with pytest.raises(ValueError, match="delay"):
        driver.set_member_delay(-1.0)
