"""The parallel coalescing of sparse gradients (fastopt/_kernels/sparse.pyx) against the
NumPy reference bit for bit, for every path a group of equal indices can take — one
row, two rows, a sorting network on whole rows (up to 256 KB), column blocks sorted by
radix (larger groups), insertion per column (very wide rows) — with 1, 2, 3 and 7
threads (forced, so the parallel loops run on tiny inputs too), input already in
order, empty input, many groups across the threads' chunk boundaries, reused
workspaces, and through an optimizer step."""
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


# group sizes: 1-2 (direct), 3..1024 float32 rows of 64 (network), beyond (radix blocks;
# from 4096 rows with 11-bit digits)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(1, 2, 3), (5, 17, 64, 65, 200), (1500,), (3, 1, 2100, 7, 1030, 2),
                                   (4097, 2, 5000)],
                         ids=["tiny", "network", "radix", "mixed", "radix-wide-digits"])
def test_every_group_path_matches_the_reference(sizes, dtype):
    rng = np.random.default_rng(len(sizes) * 31 + sum(sizes))
    dim = 64 if dtype == np.float32 else 33
    idx = np.repeat(rng.choice(10**7, len(sizes), replace=False), sizes).astype(np.int64)
    rng.shuffle(idx)
    vals = _values(rng, idx.size, dim, dtype)
    out = _check(idx, vals, 10**7)
    perm = rng.permutation(idx.size)            # any order of the duplicates: the same bits
    assert_bitwise(coalesce(idx[perm], vals[perm], 10**7, 3)[1], out, "permuted")


def test_wide_rows_sort_columns_by_insertion():
    # 20 rows of 5000 float64 are past the network's 256 KB: columns sorted one by one
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
    # an embedding batch with hot rows (groups past the network, through the engine's workspace)
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
    # +0 and -0 sum to +0 in any order; the reference moves values, it never rewrites
    # them (NumPy's SIMD sort hands back -0 for +0 in such a column). A group of 20 rows
    # (sorting network) and one of 1100 (radix blocks)
    small = np.zeros((20, 64), np.float32)
    small[7:] = -0.0
    large = np.zeros((1100, 64), np.float32)
    large[::3] = -0.0
    vals = np.concatenate([small, large])
    vals[:, 5] = -0.0                      # a column of -0 only stays -0
    idx = np.repeat(np.array([3, 8], np.int64), [20, 1100])
    out = _check(idx, vals, 10)
    assert not np.signbit(out[:, 0]).any() and np.signbit(out[:, 5]).all()
