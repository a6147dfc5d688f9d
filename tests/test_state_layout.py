"""Where a parameter's state buffers go (fastopt.optim.base.state_buffer): at the
parameter's page offset, or, for huge parameters off a 64-byte boundary, on one half a
page away. The layout is a speed choice only: it never changes a result."""
import numpy as np
import pytest

import fastopt
from fastopt.optim import base
from fastopt.sparse import SparseGrad

SMALL_LIMIT = 1 << 16        # ALIGNED_STATE_BYTES lowered: the rule without 128 MiB arrays


def at_offset(shape, dtype, offset):
    """An array of ``shape`` whose data starts ``offset`` bytes into a 4 KiB page."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 8192, np.uint8)
    start = (offset - raw.ctypes.data) % 4096
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def page(a):
    return a.ctypes.data % 4096


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [16, 8, 24, 48, 1040, 4080])
def test_huge_misaligned_parameter_gets_line_aligned_state(monkeypatch, dtype, offset):
    monkeypatch.setattr(base, "ALIGNED_STATE_BYTES", SMALL_LIMIT)
    p = at_offset((SMALL_LIMIT // np.dtype(dtype).itemsize + 96,), dtype, offset)
    p[:] = 1.0
    m, v = fastopt.Adam([p])._states[0]
    for s in (m, v):
        assert page(s) % 64 == 0
        gap = (page(s) - page(p)) % 4096
        assert 1024 <= gap <= 4096 - 1024, gap          # far from the parameter in the low 12 bits
        assert s.shape == p.shape and s.dtype == p.dtype and s.flags.c_contiguous
        np.testing.assert_array_equal(s, 0)
    assert page(m) == page(v)


@pytest.mark.parametrize("offset", [0, 64, 2048])
def test_huge_aligned_parameter_keeps_its_offset(monkeypatch, offset):
    monkeypatch.setattr(base, "ALIGNED_STATE_BYTES", SMALL_LIMIT)
    p = at_offset((SMALL_LIMIT // 4 + 96,), np.float32, offset)
    p[:] = 1.0
    assert {page(s) for s in fastopt.Adam([p])._states[0]} == {offset}


def test_below_the_limit_state_keeps_the_parameters_offset(monkeypatch):
    monkeypatch.setattr(base, "ALIGNED_STATE_BYTES", SMALL_LIMIT)
    p = at_offset((SMALL_LIMIT // 4 - 1,), np.float32, 16)
    p[:] = 1.0
    assert {page(s) for s in fastopt.Adam([p])._states[0]} == {16}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_layout_changes_no_bits(monkeypatch, threads_restored, threads, dtype):
    # dense and sparse steps, with the global-norm clipping's blocked reduction, on a
    # parameter 16 bytes into its page: aligned state and state at the parameter's
    # offset end with the same bits
    threads_restored.set_num_threads(threads)
    rows, dim = SMALL_LIMIT // (16 * np.dtype(dtype).itemsize) + 37, 16
    rng = np.random.default_rng(threads)
    init = rng.standard_normal((rows, dim)).astype(dtype)
    grads = [rng.standard_normal((rows, dim)).astype(dtype) for _ in range(3)]
    batches = [(rng.integers(0, rows, 500), rng.standard_normal((500, dim)).astype(dtype)) for _ in range(3)]
    runs = []
    for limit in (SMALL_LIMIT, 1 << 62):
        monkeypatch.setattr(base, "ALIGNED_STATE_BYTES", limit)
        p = at_offset((rows, dim), dtype, 16)
        p[...] = init
        opt = fastopt.Adam([p], lr=1e-2, weight_decay=0.1, clip_norm=5.0)
        for g, (idx, vals) in zip(grads, batches):
            opt.step([g])
            opt.step([SparseGrad(idx, vals)])
        runs.append((p.copy(), [s.copy() for s in opt._states[0]], [page(s) for s in opt._states[0]]))
    (p_new, s_new, pages_new), (p_old, s_old, pages_old) = runs
    assert pages_old == [16, 16] and [x % 64 for x in pages_new] == [0, 0]      # both layouts were in use
    np.testing.assert_array_equal(p_new, p_old)
    for a, b in zip(s_new, s_old):
        np.testing.assert_array_equal(a, b)
