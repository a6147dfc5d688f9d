"""Row-wise AdaGrad (issue 13): one accumulator per row, the kernel against the NumPy
reference bit for bit (float32/float64, duplicates, empty lists, options, 1/2/3/7
threads), against AdaGrad where the two must agree (one column), and bad input."""
import numpy as np
import pytest

import fastopt
import fastopt.reference as ref
from fastopt.sparse import SparseGrad
from conftest import assert_bitwise, mixed_values

OPTS = [{}, {"lr_decay": 0.05, "initial_accumulator_value": 0.3}, {"weight_decay": 0.1, "maximize": True},
        {"eps": 0.0, "initial_accumulator_value": 1.0}]


@pytest.mark.parametrize("threads", (1, 2, 3, 7))
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("dim", (1, 37, 64))
def test_matches_the_reference(dim, opts, dtype, threads, threads_restored):
    threads_restored.set_serial_threshold(0)
    threads_restored.set_num_threads(threads)
    rng = np.random.default_rng(dim + threads)
    tables = [rng.standard_normal((83, dim)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)]
    fast = fastopt.RowwiseAdagrad([t.copy() for t in tables], lr=0.05, **opts)
    slow = ref.RowwiseAdagrad([t.copy() for t in tables], lr=0.05, **opts)
    for step in range(6):
        n = 0 if step == 2 else 70
        idx = np.concatenate([rng.integers(0, 83, n), rng.integers(0, 4, n // 4)])
        vals = mixed_values(rng, (idx.size, dim), dtype, -3.0, 2.0)
        g2 = rng.standard_normal((5, 3)).astype(dtype)
        grads = [SparseGrad(idx, vals) if step != 4 else rng.standard_normal((83, dim)).astype(dtype),
                 None if step == 3 else g2]
        fast.step(grads)
        slow.step(grads)
        for a, b in zip(fast.params + [s["sum"] for s in fast.state], slow.params + [s["sum"] for s in slow.state]):
            assert_bitwise(a, b, f"step {step}")
    assert [s["step"] for s in fast.state] == [6, 5]


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_one_column_is_adagrad(dtype):
    # mean(g²) of one element is g² (the double product rounds to the float product)
    rng = np.random.default_rng(8)
    table = rng.standard_normal((40, 1)).astype(dtype)
    kw = dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.2, eps=1e-8, weight_decay=0.05)
    a = fastopt.RowwiseAdagrad([table.copy()], **kw)
    b = fastopt.Adagrad([table.copy()], **kw)
    for _ in range(5):
        idx = rng.choice(40, 12, replace=False)
        vals = rng.standard_normal((12, 1)).astype(dtype)
        a.step([SparseGrad(idx, vals)])
        b.step([SparseGrad(idx, vals)])
        assert_bitwise(a.params[0], b.params[0])
        assert_bitwise(a.state[0]["sum"], b.state[0]["sum"][:, 0])


def test_state_is_one_float_per_row():
    table = np.zeros((100_000, 64), np.float32)
    opt = fastopt.RowwiseAdagrad([table])
    (entry,) = opt.state
    assert entry["sum"].shape == (100_000,) and entry["sum"].nbytes == 4 * 100_000


def test_the_accumulator_is_the_mean_square_of_the_row():
    opt = fastopt.RowwiseAdagrad([np.zeros((3, 4))], lr=1.0, eps=0.0)
    opt.step([SparseGrad([2], np.array([[1.0, 2.0, 3.0, 4.0]]))])
    assert opt.state[0]["sum"].tolist() == [0.0, 0.0, 7.5]
    np.testing.assert_allclose(opt.params[0][2], -np.array([1, 2, 3, 4]) / np.sqrt(7.5), rtol=1e-15)
    assert not opt.params[0][:2].any()


def test_state_dict_round_trip_continues_the_same_run():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((20, 6))
    a = fastopt.RowwiseAdagrad([table.copy()], lr=fastopt.schedules.StepDecay(0.1, 2, 0.5))
    grads = [SparseGrad(rng.integers(0, 20, 8), rng.standard_normal((8, 6))) for _ in range(6)]
    for g in grads[:3]:
        a.step([g])
    sd = a.state_dict()
    b = fastopt.RowwiseAdagrad([a.params[0].copy()], lr=a.param_groups[0]["lr"])
    b.load_state_dict(sd)
    for g in grads[3:]:
        a.step([g])
        b.step([g])
    assert_bitwise(a.params[0], b.params[0])
    assert_bitwise(a.state[0]["sum"], b.state[0]["sum"])


BAD = [(SparseGrad([7], np.ones((1, 3))), ValueError, r"grads\[0\]\.indices\[0\] = 7 is out of range"),
       (SparseGrad([-2], np.ones((1, 3))), ValueError, r"grads\[0\]\.indices\[0\] = -2 is negative"),
       (SparseGrad(np.array([1.0]), np.ones((1, 3))), TypeError, r"grads\[0\]\.indices has dtype float64"),
       (SparseGrad([1], np.ones((1, 3), np.float32)), TypeError, r"grads\[0\]\.values has dtype float32"),
       (SparseGrad([1], np.ones((2, 3))), ValueError, r"grads\[0\]\.values has shape"),
       (np.ones((6, 2)), ValueError, r"grads\[0\] has shape"),
       (SparseGrad([1], np.full((1, 3), np.nan)), fastopt.NonFiniteGradientError, "nothing was updated")]


@pytest.mark.parametrize("bad, exc, match", BAD)
def test_bad_input_is_refused_and_nothing_is_written(bad, exc, match):
    table, other = np.ones((6, 3)), np.ones((2, 2))
    opt = fastopt.RowwiseAdagrad([table, other], nonfinite="raise")
    with pytest.raises(exc, match=match):
        opt.step([bad, SparseGrad([1], np.ones((1, 2)))])     # the valid second gradient is not applied either
    assert (table == 1).all() and (other == 1).all()
    assert [s["step"] for s in opt.state] == [0, 0] and not any(s["sum"].any() for s in opt.state)


def test_one_dimensional_parameters_are_refused():
    with pytest.raises(ValueError, match=r"params\[0\] has shape \(5,\)"):
        fastopt.RowwiseAdagrad([np.zeros(5)])


def test_callback_rewriting_checked_indices_is_not_used():
    # a later gradient's __array__ rewrites an earlier sparse gradient's indices after
    # they were checked (before: the kernel indexed out of range, a segfault); the step
    # works on its private, checked copy
    p, q = np.zeros((4, 8), np.float32), np.zeros((3, 8), np.float32)
    idx = np.array([0, 1], np.int64)

    class Evil:
        def __array__(self, dtype=None, copy=None):
            idx[1] = 10 ** 7
            return np.ones((3, 8), np.float32)

    opt = fastopt.RowwiseAdagrad([p, q], lr=0.1)
    opt.step([SparseGrad(idx, np.ones((2, 8), np.float32)), Evil()])
    wp, wq = np.zeros((4, 8), np.float32), np.zeros((3, 8), np.float32)
    fastopt.RowwiseAdagrad([wp, wq], lr=0.1).step([SparseGrad(np.array([0, 1]), np.ones((2, 8), np.float32)),
                                                    np.ones((3, 8), np.float32)])
    np.testing.assert_array_equal(p, wp)
    np.testing.assert_array_equal(q, wq)
    assert not p[2:].any()


def test_callback_resizing_a_parameter_is_refused():
    # ndarray.resize(refcheck=False) frees the block the kernel would write (use after free)
    p, q = np.zeros((4, 8), np.float32), np.zeros((3, 8), np.float32)

    class Evil:
        def __array__(self, dtype=None, copy=None):
            p.resize((1, 1), refcheck=False)
            return np.ones((3, 8), np.float32)

    opt = fastopt.RowwiseAdagrad([p, q], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\]"):
        opt.step([np.ones((4, 8), np.float32), Evil()])
    assert not q.any() and opt.state[1]["step"] == 0


def test_zero_columns_leave_the_accumulator_alone():
    # the mean over no columns was 0/0: every row's accumulator became NaN
    p = np.zeros((4, 0), np.float32)
    opt = fastopt.RowwiseAdagrad([p], lr=0.1)
    opt.step([np.zeros((4, 0), np.float32)])
    assert np.array_equal(opt.state[0]["sum"], np.zeros(4, np.float32))


def test_duplicate_rows_are_coalesced_into_the_parameters_workspace():
    # steps with duplicated indices reuse the parameter's buffers (no fresh pages every
    # step) and give the reference's bits
    rng = np.random.default_rng(3)
    table = rng.standard_normal((500, 7))
    opt = fastopt.RowwiseAdagrad([table.copy()], lr=0.1)
    slow = ref.RowwiseAdagrad([table.copy()], lr=0.1)
    buffers = None
    for step in range(4):
        idx = rng.integers(0, 40, 300)                 # many duplicates
        vals = rng.standard_normal((300, 7))
        opt.step([SparseGrad(idx, vals)])
        slow.step([SparseGrad(idx, vals)])
        now = [id(b) for b in opt._ws[0] if b is not None]
        assert now and (buffers is None or now == buffers)
        buffers = now
    assert_bitwise(opt.params[0], slow.params[0])
