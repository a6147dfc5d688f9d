"""Issue 10, reproducer 1: the step owns a reference to every gradient until its
kernels are done, whoever else holds (or drops) them."""
import threading

import numpy as np
import pytest

import fastopt
from fastopt.sparse import SparseGrad
from subproc import assert_ok, run_snippet


def test_gradients_built_on_demand_are_kept_alive():
    # each __getitem__ makes a new array that nothing but the step references: before
    # the fix the kernels read freed memory (garbage, or a segfault for large arrays)
    r = run_snippet("""
        import numpy as np, fastopt
        class Lazy:
            def __len__(self): return 2
            def __getitem__(self, k): return np.full(200_000, k + 1.0, np.float32)
        p0, p1 = np.zeros(200_000, np.float32), np.zeros(200_000, np.float32)
        for _ in range(3):
            fastopt.SGD([p0, p1], lr=1.0).step(Lazy())
        assert (p0 == -3.0).all() and (p1 == -6.0).all(), (p0[:4], p1[:4])
        print("OK")
    """)
    assert_ok(r)


def test_each_gradient_of_a_sequence_is_read_once():
    calls = []

    class Counting:
        def __len__(self):
            return 2

        def __getitem__(self, k):
            calls.append(k)
            return np.ones(10)

    p = [np.zeros(10), np.zeros(10)]
    fastopt.SGD(p, lr=1.0).step(Counting())
    assert calls == [0, 1]
    assert (p[0] == -1).all() and (p[1] == -1).all()


@pytest.mark.parametrize("n", [2_000_000])
def test_a_gradient_dropped_by_another_thread_during_the_step_stays_valid(n):
    # the schedule runs inside the step, before the kernels: it wakes a thread that
    # drops the caller's only reference while the kernels run without the GIL
    p = np.zeros(n)
    grads = [np.full(n, 2.0)]
    dropped = threading.Event()
    go = threading.Event()

    def drop():
        go.wait()
        grads[0] = None
        dropped.set()

    def lr(step):
        go.set()
        return 0.5

    t = threading.Thread(target=drop)
    t.start()
    opt = fastopt.SGD([p], lr=lr)
    opt.step(grads)
    t.join()
    assert dropped.is_set()
    assert (p == -1.0).all()


def test_a_gradient_whose_array_reenters_the_optimizer_is_refused():
    p = np.zeros(100)
    opt = fastopt.SGD([p], lr=1.0)

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            opt.step([np.ones(100)])
            return np.ones(100)

    with pytest.raises(fastopt.ReentryError, match="re-entered"):
        opt.step([Sneaky()])
    assert (p == 0).all()
    opt.step([np.ones(100)])                 # the guard was released
    assert (p == -1).all()


def test_a_schedule_that_reenters_the_optimizer_is_refused():
    p = np.zeros(10)
    holder = []

    def lr(step):
        holder[0].state_dict()
        return 0.1

    opt = fastopt.Adam([p], lr=lr)
    holder.append(opt)
    with pytest.raises(RuntimeError, match="re-entered"):
        opt.step([np.ones(10)])
    assert (p == 0).all() and opt.state[0]["step"] == 0


def test_a_parameter_changed_by_a_schedule_during_the_step_is_refused():
    # the schedule runs after the gradients were checked: the pointers are checked again
    # after the last callback, before the kernels (before: a write into a freed block)
    p = np.zeros(100_000)

    def lr(step):
        try:
            p.resize(300_000, refcheck=False)          # refused: the optimizer pins p
        except ValueError:
            p.flags.writeable = False
        return 0.1

    opt = fastopt.SGD([p], lr=lr)
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        opt.step([np.ones(100_000)])
    assert not p.any()


def test_a_gradient_resized_by_a_later_gradient_is_refused():
    p, q = np.zeros(100_000), np.zeros(100_000)
    g0 = np.ones(100_000)

    class Resizer:
        def __array__(self, dtype=None, copy=None):
            g0.resize(300_000, refcheck=False)
            return np.ones(100_000)

    with pytest.raises(ValueError, match=r"grads\[0\] was resized or re-typed during the step"):
        fastopt.SGD([p, q], lr=1.0).step([g0, Resizer()])
    assert not p.any() and not q.any()


@pytest.mark.parametrize("sparse", [False, True])
def test_a_gradient_cannot_be_freed_while_the_kernels_read_it(sparse):
    # Another thread runs while the kernels run without the GIL: it must not be able to
    # free a gradient's memory (resize with refcheck=False). The norm reducer is called
    # at that point of the step, with the GIL, so it can try what such a thread would.
    n = 40_000 if not sparse else 400
    p = np.zeros((n, 100) if sparse else n)
    owner = np.ones(n) if not sparse else np.ones((3, 100))
    g = owner if not sparse else SparseGrad(np.array([5, 1, 5]), owner)
    tried = []

    def reducer(terms):
        try:
            owner.resize(300_000, refcheck=False)
            tried.append("resized")
        except ValueError as exc:
            tried.append(str(exc))
        return 0.0, False

    opt = fastopt.SGD([p], lr=1.0, clip_norm=None if sparse else 1e9)
    opt._engine.set_norm_reducer(reducer)   # no norm needed (sparse): called with None, all the same
    opt.step([g])
    assert tried and "cannot resize" in tried[0], tried
    want = -np.ones(n) if not sparse else -np.bincount([5, 1, 5], minlength=n)[:, None] * np.ones(100)
    np.testing.assert_array_equal(p, want)
    owner.resize(300_000, refcheck=False)       # after the step, the caller's array is its own again
    assert owner.size == 300_000


def test_sparse_indices_rewritten_while_the_kernels_run_are_not_used():
    # another thread may rewrite the caller's (sorted, int64: usable in place) indices
    # while the kernels address rows with them; the norm reducer runs at that point of
    # the step and does it here: the step uses the indices it checked
    p = np.zeros((1000, 16))
    idx = np.array([1, 5, 9], np.int64)

    def reducer(terms):
        idx[:] = 10**9
        return 0.0, False

    opt = fastopt.SGD([p], lr=1.0)
    opt._engine.set_norm_reducer(reducer)
    opt.step([SparseGrad(idx, np.ones((3, 16)))])
    want = np.zeros_like(p)
    want[[1, 5, 9]] = -1.0
    np.testing.assert_array_equal(p, want)


def test_removed_param_groups_are_refused_not_read():
    p, q = np.zeros(3), np.zeros(3)
    opt = fastopt.SGD([{"params": [p]}, {"params": [q]}], lr=1.0)
    opt.param_groups.pop()
    with pytest.raises(ValueError, match="param_groups has 1 groups"):
        opt.step([np.ones(3), np.ones(3)])
    opt.param_groups.clear()
    with pytest.raises(ValueError, match="param_groups has 0 groups"):
        opt.step([np.ones(3), np.ones(3)])
    assert not p.any() and not q.any()


def test_a_byte_swapped_parameter_is_refused():
    p = np.zeros(10, np.float32)
    opt = fastopt.SGD([p], lr=1.0)
    p.dtype = ">f4"
    with pytest.raises(ValueError, match="byte order"):
        opt.step([np.ones(10, ">f4").astype(np.float32)])
