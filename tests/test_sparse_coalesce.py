"""The parallel coalescing of sparse gradients (fastopt/_kernels/sparse.pyx) against the
NumPy reference bit for bit, for every path a group of equal indices can take — one
row, two rows, the binned sum of a whole group (up to 256 KB) and of the column blocks
of a larger one, lines narrower than a cache line — with 1, 2, 3 and 7 threads
(forced, so the parallel loops run on tiny inputs too), input already in order, empty
input, many groups across the threads' chunk boundaries, reused workspaces, and through
an optimizer step; and the binned sum against an independent oracle (``math.fsum``)
and at the ends of the floating-point range."""
import math

import numpy as np
import pytest

import fastopt
import fastopt.reference as ref
from fastopt._kernels.sparse import coalesce, coalesce_index, new_workspace, sorted_order
from fastopt.reference import sparse as RS
from fastopt.sparse import SparseGrad
from conftest import assert_bitwise

THREADS = (1, 2, 3, 7)


def _values(rng, n, dim, dtype):
    # signed zeros, subnormals, infinities of both signs are rare but present: the keys'
    # order must be the values' order for all of them
    v = rng.standard_normal((n, dim)).astype(dtype)
    if n:
        pick = rng.random((n, dim))
        v[pick < 0.05] = 0.0
        v[(pick >= 0.05) & (pick < 0.1)] = -0.0
        tiny = np.finfo(dtype).smallest_subnormal
        v[(pick >= 0.1) & (pick < 0.12)] *= tiny
        v[(pick >= 0.12) & (pick < 0.125)] *= np.asarray(1e30, dtype) if dtype == np.float32 else 1e300
    return v


def _expand(src, dup, vals):
    """The coalesced rows that (rows, src, dup) stand for."""
    out = np.empty((src.size, vals.shape[1]), vals.dtype)
    once = src >= 0
    out[once] = vals[src[once]]
    out[~once] = dup[-1 - src[~once]]
    return out


def _check(idx, vals, nrows):
    rrows, rout = RS.coalesce(idx, vals)
    for threads in THREADS:
        rows, out = coalesce(idx, vals, nrows, threads)
        assert np.array_equal(rows, rrows)
        assert_bitwise(out, rout, f"coalesce, {threads} threads")
        rows2, src, dup = coalesce_index(idx, vals, nrows, threads)
        assert np.array_equal(rows2, rrows)
        assert_bitwise(_expand(src, dup, vals), rout, f"coalesce_index, {threads} threads")
    return rout


# group sizes: 1-2 (direct), 3..1024 float32 rows of 64 (one group, one thread), beyond
# (column blocks shared by the threads)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(1, 2, 3), (5, 17, 64, 65, 200), (1500,), (3, 1, 2100, 7, 1030, 2),
                                   (4097, 2, 5000)],
                         ids=["tiny", "whole", "blocks", "mixed", "blocks-large"])
def test_every_group_path_matches_the_reference(sizes, dtype):
    rng = np.random.default_rng(len(sizes) * 31 + sum(sizes))
    dim = 64 if dtype == np.float32 else 33
    idx = np.repeat(rng.choice(10**7, len(sizes), replace=False), sizes).astype(np.int64)
    rng.shuffle(idx)
    vals = _values(rng, idx.size, dim, dtype)
    out = _check(idx, vals, 10**7)
    perm = rng.permutation(idx.size)            # any order of the duplicates: the same bits
    assert_bitwise(coalesce(idx[perm], vals[perm], 10**7, 3)[1], out, "permuted")


def test_wide_rows_are_summed_in_column_blocks():
    # 20 rows of 5000 float64 are past 256 KB: column blocks, the last one 8 columns wide
    rng = np.random.default_rng(5)
    idx = np.repeat(np.array([4, 9], np.int64), [20, 3])
    vals = _values(rng, idx.size, 5000, np.float64)
    _check(idx, vals, 100)


def test_many_groups_across_chunk_boundaries():
    # thousands of groups of every size 1..40, shuffled: the groups' parallel loop hands
    # out chunks of 64 groups, so groups land on every thread and chunk boundary
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 41, 3000)
    idx = np.repeat(rng.choice(10**6, sizes.size, replace=False), sizes).astype(np.int64)
    rng.shuffle(idx)
    _check(idx, _values(rng, idx.size, 8, np.float32), 10**6)


def test_parallel_index_sort_is_the_stable_sort():
    # from 2^20 indices the radix sort runs its chunks on the team: stable, any thread count
    rng = np.random.default_rng(2)
    idx = (rng.zipf(1.3, (1 << 20) + 3) % 50_000_000).astype(np.int64)
    expected = np.argsort(idx, kind="stable")
    for threads in THREADS:
        keys, order = sorted_order(idx, 50_000_000, threads)
        assert np.array_equal(order, expected), threads
        assert np.array_equal(keys, idx[expected])


def test_input_in_order_and_empty_input():
    rng = np.random.default_rng(3)
    idx = np.sort(rng.integers(0, 50, 300)).astype(np.int64)       # non-decreasing: not sorted again
    _check(idx, _values(rng, idx.size, 5, np.float64), 50)
    for threads in THREADS:
        rows, out = coalesce(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), 10, threads)
        assert rows.size == 0 and out.shape == (0, 4)
        rows, src, dup = coalesce_index(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), 10, threads)
        assert rows.size == src.size == 0 and dup.shape == (0, 4)


def test_a_workspace_is_reused_and_gives_the_same_results():
    rng = np.random.default_rng(4)
    ws = new_workspace()
    kept = None
    for n in (5000, 300, 0, 7000, 7000):
        idx = rng.integers(0, 2000, n).astype(np.int64)
        vals = _values(rng, n, 16, np.float32)
        rows, src, dup = coalesce_index(idx, vals, 2000, 2, ws)
        rrows, rout = RS.coalesce(idx, vals) if n else (np.zeros(0, np.int64), np.zeros((0, 16), np.float32))
        assert np.array_equal(rows, rrows)
        assert_bitwise(_expand(src, dup, vals), rout, f"workspace, n={n}")
        if n == 7000:
            base = rows.base if rows.base is not None else rows
            if kept is not None:
                assert base is kept                # the second 7000 reuses the first one's buffer
            kept = base


@pytest.mark.parametrize("threads", THREADS)
def test_a_power_law_step_matches_the_reference(threads, threads_restored):
    # an embedding batch with hot rows (column blocks, through the engine's workspace)
    fastopt.set_num_threads(threads)
    rng = np.random.default_rng(7)
    table = rng.standard_normal((5000, 64)).astype(np.float32)
    fast = fastopt.Adam([table.copy()], lr=1e-2)
    slow = ref.Adam([table.copy()], lr=1e-2)
    for _ in range(3):
        idx = ((rng.zipf(1.2, 6000) - 1) % 5000).astype(np.int64)
        vals = rng.standard_normal((idx.size, 64)).astype(np.float32)
        fast.step([SparseGrad(idx, vals)])
        slow.step([SparseGrad(idx, vals)])
    assert_bitwise(fast.params[0], slow.params[0], "param")
    for name in ("exp_avg", "exp_avg_sq"):
        assert_bitwise(fast.state[0][name], slow.state[0][name], name)


def test_a_column_of_mixed_signed_zeros():
    # +0 and -0 sum to +0 in any order, -0 alone to -0 (the grids lose the sign: a
    # special case). A group of 20 rows (whole) and one of 1100 (column blocks)
    small = np.zeros((20, 64), np.float32)
    small[7:] = -0.0
    large = np.zeros((1100, 64), np.float32)
    large[::3] = -0.0
    vals = np.concatenate([small, large])
    vals[:, 5] = -0.0                      # a column of -0 only stays -0
    idx = np.repeat(np.array([3, 8], np.int64), [20, 1100])
    out = _check(idx, vals, 10)
    assert not np.signbit(out[:, 0]).any() and np.signbit(out[:, 5]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [3, 4, 7, 64, 1500])
def test_the_binned_sum_is_the_exact_sum_rounded_once(m, dtype):
    # values within a few dozen binades of each other lose no bit to the grids: the result
    # is the exact sum (math.fsum: correctly rounded to double) rounded to the type, an
    # oracle independent of the reference; widths 1..17 cover lines of every width
    rng = np.random.default_rng(m)
    for dim in (1, 7, 8, 9, 16, 17):
        vals = (rng.standard_normal((m, dim)) * np.exp2(rng.integers(-8, 8, (m, dim)))).astype(dtype)
        vals[0, 0] = -vals[1, 0]                 # cancellation too
        for threads in (1, 3):
            _, out = coalesce(np.zeros(m, np.int64), vals, 1, threads)
            want = np.array([math.fsum(vals[:, c].astype(float)) for c in range(dim)]).astype(dtype)
            assert_bitwise(out[0], want, f"m={m} dim={dim} threads={threads}")
        assert_bitwise(RS.coalesce(np.zeros(m, np.int64), vals)[1][0], want, "reference")


def test_the_binned_sum_does_not_depend_on_the_order_where_sorted_sums_do():
    # 1 + 2^-24 * 8 in float32: added left to right each 2^-24 is lost; the binned sum
    # keeps them, whatever the order
    vals = np.array([[1.0]] + [[2.0 ** -24]] * 8, np.float32)
    idx = np.zeros(9, np.int64)
    for perm in (np.arange(9), np.arange(9)[::-1], np.roll(np.arange(9), 4)):
        _, out = coalesce(idx[perm], vals[perm], 1, 2)
        assert out[0, 0] == np.float32(1.0 + 8 * 2.0 ** -24)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_columns(dtype):
    # all -0 -> -0; mixed zeros -> +0; inf -> inf; -inf with finite -> -inf; +inf with -inf
    # -> NaN; NaN -> NaN; huge values whose sum overflows the type -> inf, one that cancels
    # back into range -> finite (exact); subnormals only
    big = np.finfo(dtype).max
    tiny = np.finfo(dtype).smallest_subnormal
    cols = [[-0.0, -0.0, -0.0], [0.0, -0.0, -0.0], [np.inf, 1.0, 2.0], [-np.inf, 1.0, -np.inf],
            [np.inf, -np.inf, 1.0], [np.nan, 1.0, np.inf], [big, big, 1.0], [big, big, -big],
            [tiny, tiny, 3 * tiny], [-tiny, tiny, -tiny]]
    vals = np.array(cols, dtype).T.copy()
    out = _check(np.zeros(3, np.int64), vals, 1)[0]
    assert np.signbit(out[0]) and out[0] == 0 and not np.signbit(out[1]) and out[1] == 0
    assert out[2] == np.inf and out[3] == -np.inf and np.isnan(out[4]) and np.isnan(out[5])
    assert out[6] == np.inf and out[7] == big
    assert out[8] == 5 * tiny and out[9] == -tiny


def test_float64_at_the_ends_of_the_range():
    # near 2^1024 the grids are scaled by 2^-64; near the smallest normals the second grid's
    # constant is subnormal: both exact for values close together
    rng = np.random.default_rng(9)
    for scale in (2.0 ** 1000, 2.0 ** -1000, 2.0 ** -1060):
        vals = rng.standard_normal((37, 11)) * scale
        _, out = coalesce(np.zeros(37, np.int64), vals, 1, 2)
        want = np.array([math.fsum(vals[:, c]) for c in range(11)])
        assert_bitwise(out[0], want, f"scale {scale}")
        assert_bitwise(RS.coalesce(np.zeros(37, np.int64), vals)[1][0], want, "reference")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_binned_sum_keeps_its_error_bound_under_cancellation(dtype):
    # what lies below the second grid is dropped: |sum - exact| <= m 2^(e + 2L - 106) (before
    # the final rounding), relative to the largest value 2^e, however much the sum cancels
    rng = np.random.default_rng(13)
    for m in (3, 4, 31, 1023):
        L = m.bit_length()
        for _ in range(20):
            col = rng.standard_normal(m) * np.exp2(rng.integers(-60, 60, m))
            col[m // 2:] = -col[:m - m // 2]                  # pairs cancel except one value
            vals = col.astype(dtype)[:, None]
            out = float(coalesce(np.zeros(m, np.int64), vals, 1, 2)[1][0, 0])
            exact = math.fsum(vals[:, 0].astype(float))
            e = math.frexp(float(np.abs(vals).max()))[1]     # |x| < 2^e
            rounding = float(np.spacing(dtype(abs(out)))) + float(np.spacing(dtype(abs(exact))))   # the last roundings
            assert abs(out - exact) <= m * 2.0 ** (e + 2 * L - 106) + rounding, (m, out, exact)
    # [1, -1, 1e-30] in float32: 1e-30 on the 2^-100 grid (a fixed order gives 1e-30 or 0)
    out = coalesce(np.zeros(3, np.int64), np.array([[1.0], [-1.0], [1e-30]], np.float32), 1, 1)[1][0, 0]
    assert out == np.float32(round(1e-30 / 2.0 ** -100) * 2.0 ** -100)
