"""The optimizer-wide options: clip_value (per group), clip_norm, grad_noise / seed,
nonfinite, and the thread-count independence of everything they add (the global-norm
reduction and the counter-based noise).

Tolerances: without clip_norm / grad_noise the compiled classes equal the reference
bitwise (tests/test_optim.py). With clip_norm the kernels sum squares over fixed
8192-element blocks with 8 accumulators while the reference uses numpy's pairwise
sum, so the float64 norm (and the clip coefficient) can differ in the last bit; the
gradient noise is drawn with C's log/cos in the kernels and numpy's in the reference,
which may also differ by an ulp. In float32 those double-precision differences vanish
when the coefficient / noise is rounded to float32 (bitwise in practice); in float64
they survive, and grow mildly through the optimizer recursions, so float64 is compared
with rtol 1e-12 (observed: <= 1e-13 after 100 steps) and an atol of 1e-13 for
elements that cross zero (parameters are O(1)).
"""
import math

import numpy as np
import pytest

import fastopt
from optim_helpers import assert_unchanged, snapshot
import fastopt.reference as ref
from fastopt._kernels import driver

F32, F64 = np.float32, np.float64

CLASSES = [("SGD", {}), ("SGD", dict(momentum=0.9, nesterov=True)), ("Adagrad", {}),
           ("RMSprop", dict(centered=True, momentum=0.3)), ("Adadelta", {}), ("Adam", {}),
           ("AdamW", dict(amsgrad=True)), ("AMSGrad", {}), ("NAdam", {}), ("NAdam", dict(variant="optax")),
           ("Adamax", {}), ("RAdam", {}), ("Lion", dict(weight_decay=0.1)), ("Momentum", {}), ("Nesterov", {})]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in CLASSES]

LAYOUT = [[(0, F32), (1, F32), (7, F32), (1023, F32), (9000, F32)],
          [(1, F64), (7, F64), (1023, F64), (0, F64)]]


def make(mod, name, kw, init_seed=0, layout=LAYOUT, **options):
    rng = np.random.default_rng(init_seed)
    groups = [[rng.standard_normal(n).astype(dt) for n, dt in g] for g in layout]
    spec = [{"params": groups[0]}] + [{"params": g, "lr": 0.02, "weight_decay": 0.01} for g in groups[1:]]
    return getattr(mod, name)(spec, lr=0.01, **kw, **options)


def grads(params, rng, scale=1.0):
    return [(scale * rng.standard_normal(p.shape)).astype(p.dtype) for p in params]


def compare(a, b, what="params"):
    for k, (x, y) in enumerate(zip(a, b)):
        if x.dtype == F32:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}[{k}] (float32: bitwise)")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}[{k}] (float64: bitwise)")


def compare_state(sa, sb):
    for k, (a, b) in enumerate(zip(sa, sb)):
        assert a.keys() == b.keys()
        assert a["step"] == b["step"]
        compare([a[n] for n in a if isinstance(a[n], np.ndarray)], [b[n] for n in b if isinstance(b[n], np.ndarray)],
                f"state[{k}]")


# --- clip_value ---------------------------------------------------------------------------------
def test_clip_value_is_elementwise_after_maximize_and_coupled_decay():
    p = np.array([1.0, 2.0, -3.0, 0.5, 0.0, 10.0])
    g = np.array([-5.0, -0.5, 0.0, 0.25, 4.0, 0.1])
    start = p.copy()
    opt = fastopt.SGD([p], lr=1.0, clip_value=1.0, maximize=True, weight_decay=0.1)
    opt.step([g])
    expected_g = np.clip(-g + 0.1 * start, -1.0, 1.0)
    np.testing.assert_array_equal(p, start - expected_g)
    # no clip_value: None means no clipping at all
    q = np.zeros(3)
    fastopt.SGD([q], lr=1.0).step([np.array([1e30, -1e30, 3.0])])
    np.testing.assert_array_equal(q, [-1e30, 1e30, -3.0])


@pytest.mark.parametrize("name,kw", CLASSES, ids=IDS)
def test_clip_value_per_group_matches_reference(name, kw):
    a, b = make(fastopt, name, kw, 1), make(ref, name, kw, 1)
    for opt in (a, b):
        opt.param_groups[0]["clip_value"] = 0.3
        opt.param_groups[1]["clip_value"] = 2.0
    rng = np.random.default_rng(2)
    for _ in range(30):
        gs = grads(a.params, rng, 2.0)
        a.step(gs), b.step(gs)
    for x, y in zip(a.params, b.params):
        np.testing.assert_array_equal(x, y)    # no reduction involved: bitwise in both dtypes


# --- clip_norm / grad_noise vs the reference -----------------------------------------------------
OPTIONS = {"clip_norm": dict(clip_norm=0.5), "noise": dict(grad_noise=(0.05, 0.55), seed=3),
           "clip+noise": dict(clip_norm=2.0, grad_noise=0.01, seed=11),
           "clip+raise": dict(clip_norm=50.0, nonfinite="raise")}


OPTION_CASES = ([(n, kw, o) for n, kw in CLASSES for o in ("clip_norm", "noise", "clip+noise")]
                + [("SGD", dict(momentum=0.9), "clip+raise"), ("Adam", {}, "clip+raise"),
                   ("NAdam", {}, "clip+raise")])


@pytest.mark.parametrize("name,kw,opt_id", OPTION_CASES,
                         ids=[n + "".join(f"-{k}={v}" for k, v in kw.items()) + "-" + o for n, kw, o in OPTION_CASES])
def test_options_match_reference(name, kw, opt_id):
    options = OPTIONS[opt_id]
    a, b = make(fastopt, name, kw, 3, **options), make(ref, name, kw, 3, **options)
    rng = np.random.default_rng(4)
    for t in range(100):
        gs = grads(a.params, rng, 1.0 if t % 3 else 0.05)      # some steps below the clip threshold
        gs[2 if t % 4 else 6] = None
        assert a.step(gs) is True and b.step(gs) is True
        if "clip_norm" in options:
            assert a.last_grad_norm == pytest.approx(b.last_grad_norm, rel=1e-12)
    compare(a.params, b.params)
    compare_state(a.state, b.state)


# --- clip_norm semantics -------------------------------------------------------------------------
def test_clip_norm_bounds_the_update_and_reports_the_norm():
    rng = np.random.default_rng(5)
    ps = [np.zeros(n) for n in (3, 1000, 50_000)] + [np.zeros(7, F32)]
    opt = fastopt.SGD(ps, lr=1.0, clip_norm=1.5)
    for scale in (10.0, 1.0, 1e-3, 1e5):
        for p in ps:
            p[...] = 0
        gs = grads(ps, rng, scale)
        norm = np.linalg.norm(np.concatenate([g.astype(F64) for g in gs]))
        opt.step(gs)
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
        upd = np.linalg.norm(np.concatenate([p.astype(F64) for p in ps]))
        if norm > 1.5:
            # coef = c / (norm + 1e-6): the clipped norm is just under clip_norm
            assert upd <= 1.5 * (1 + 1e-7)
            assert upd == pytest.approx(1.5 * norm / (norm + 1e-6), rel=1e-6)
            for p, g in zip(ps, gs):
                np.testing.assert_allclose(p, -g * (1.5 / (norm + 1e-6)), rtol=2e-7 if p.dtype == F32 else 1e-14)
        else:
            for p, g in zip(ps, gs):                       # not clipped: untouched gradients
                np.testing.assert_array_equal(p, -g)


def test_last_grad_norm_counts_coupled_weight_decay_and_skips_none():
    rng = np.random.default_rng(6)
    ps = [rng.standard_normal(n) for n in (100, 30, 20_000)]
    q = rng.standard_normal(50).astype(F32)
    opt = fastopt.Adam([{"params": ps[:2], "weight_decay": 0.5},
                        {"params": [ps[2]], "weight_decay": 0.3, "decoupled_weight_decay": True},
                        {"params": [q]}], clip_norm=1e9)
    gs = grads(opt.params, rng)
    expected = np.linalg.norm(np.concatenate([gs[0] + 0.5 * ps[0], gs[1] + 0.5 * ps[1], gs[2],
                                              gs[3].astype(F64)]))
    opt.step(gs)
    assert opt.last_grad_norm == pytest.approx(expected, rel=1e-12)
    gs = grads(opt.params, rng)
    gs[1] = None
    expected = np.linalg.norm(np.concatenate([gs[0] + 0.5 * ps[0], gs[2], gs[3].astype(F64)]))
    opt.step(gs)
    assert opt.last_grad_norm == pytest.approx(expected, rel=1e-12)


def test_last_grad_norm_is_nan_unless_computed():
    p = np.zeros(4)
    opt = fastopt.SGD([p])
    opt.step([np.ones(4)])
    assert math.isnan(opt.last_grad_norm)
    opt = fastopt.SGD([np.zeros(4)], nonfinite="skip")          # the non-finite check needs the norm too
    opt.step([np.ones(4)])
    assert opt.last_grad_norm == pytest.approx(2.0, rel=1e-15)


# --- grad_noise ------------------------------------------------------------------------------
def _noise_run(seed, steps=2, n=5000, dtype=F32, **kw):
    ps = [np.zeros(n, dtype), np.zeros(n // 2, dtype)]
    opt = fastopt.SGD(ps, lr=1.0, grad_noise=0.1, seed=seed, **kw)
    for _ in range(steps):
        opt.step([np.zeros_like(p) for p in ps])
    return ps


def test_grad_noise_reproducible_and_seed_dependent():
    a, b, c = _noise_run(7), _noise_run(7), _noise_run(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, z in zip(a, c):
        assert np.mean(x == z) < 0.01
    # parameters, steps and elements get independent draws
    one = _noise_run(7, steps=1)
    assert np.mean(one[0][: one[1].size] == one[1]) < 0.01
    assert abs(np.corrcoef(one[0][:-1], one[0][1:])[0, 1]) < 0.1
    two = _noise_run(7, steps=2)
    assert abs(np.corrcoef(one[0], two[0] - one[0])[0, 1]) < 0.1
    # the seed accepts any int (reduced modulo 2**64), negative ones included
    for s in (-1, 2**70):
        assert np.isfinite(_noise_run(s, steps=1)[0]).all()


@pytest.mark.parametrize("eta,gamma", [(0.1, None), (2.0, 1.0), (0.5, 0.0)])
def test_grad_noise_statistics(eta, gamma):
    n = 1_000_000
    p = np.zeros(n)
    opt = fastopt.SGD([p], lr=1.0, grad_noise=eta if gamma is None else (eta, gamma), seed=123)
    g = np.zeros(n)
    for t in (1, 2, 3):
        p[...] = 0.0
        opt.step([g])
        x = -p                                       # lr = 1, g = 0: the step is exactly -noise
        var = eta / (1.0 + t) ** (0.55 if gamma is None else gamma)
        se_mean = math.sqrt(var / n)
        se_var = var * math.sqrt(2.0 / (n - 1))
        assert abs(x.mean()) < 5 * se_mean, (t, x.mean(), se_mean)
        assert abs(x.var() - var) < 5 * se_var, (t, x.var(), var, se_var)
        # Gaussian shape: P(|z| < 1) = 0.6827, P(|z| < 2) = 0.9545, 4th moment 3σ⁴
        z = x / math.sqrt(var)
        for k, prob in ((1, 0.682689492), (2, 0.954499736)):
            assert abs(np.mean(np.abs(z) < k) - prob) < 5 * math.sqrt(prob * (1 - prob) / n)
        assert abs(np.mean(z ** 4) - 3.0) < 5 * math.sqrt(96.0 / n)


def test_grad_noise_is_added_to_the_preprocessed_gradient():
    # SGD lr = 1: p1 = p0 - (clip(g) + noise); the noise part is the same as with g = 0
    a = _noise_run(5, steps=1, n=4000, dtype=F64)
    ps = [np.zeros(4000), np.zeros(2000)]
    opt = fastopt.SGD(ps, lr=1.0, grad_noise=0.1, seed=5, clip_value=0.5)
    gs = [np.full(4000, 3.0), np.full(2000, -0.25)]
    opt.step(gs)
    np.testing.assert_allclose(ps[0], a[0] - 0.5, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ps[1], a[1] + 0.25, rtol=0, atol=1e-15)


# --- nonfinite ---------------------------------------------------------------------------------
NONFINITE = [("SGD", dict(momentum=0.9)), ("Adam", dict(amsgrad=True)), ("NAdam", {}), ("Lion", {}),
             ("RMSprop", dict(centered=True))]


def _bad_grads(opt, rng, where, value):
    gs = grads(opt.params, rng)
    gs[where].reshape(-1)[len(gs[where].reshape(-1)) // 2] = value
    return gs


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name,kw", NONFINITE)
def test_nonfinite_raise_changes_nothing(name, kw, value):
    from fastopt.schedules import CosineAnnealing
    opt = make(fastopt, name, kw, 7, nonfinite="raise", clip_norm=1.0)
    opt.param_groups[0]["lr"] = CosineAnnealing(0.01, 50)
    rng = np.random.default_rng(8)
    for _ in range(3):
        opt.step(grads(opt.params, rng))
    for where in (4, 6):                          # a large float32 array, a float64 one
        snap = snapshot(opt)
        with pytest.raises(fastopt.NonFiniteGradientError, match="inf or NaN"):
            opt.step(_bad_grads(opt, rng, where, value))
        assert_unchanged(opt, snap)
    assert issubclass(fastopt.NonFiniteGradientError, ValueError)
    assert issubclass(fastopt.NonFiniteGradientError, FloatingPointError)
    # a finite step afterwards is normal
    a = make(fastopt, name, kw, 7, clip_norm=1.0)
    a.param_groups[0]["lr"] = CosineAnnealing(0.01, 50)
    rng2 = np.random.default_rng(8)
    for _ in range(3):
        a.step(grads(a.params, rng2))
    gs = grads(opt.params, np.random.default_rng(9))
    opt.step(gs), a.step(gs)
    for x, y in zip(opt.params, a.params):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name,kw", NONFINITE)
def test_nonfinite_skip_then_resume(name, kw):
    from fastopt.schedules import Warmup, CosineAnnealing
    sk = make(fastopt, name, kw, 10, nonfinite="skip", grad_noise=0.01, seed=1)
    ok = make(fastopt, name, kw, 10, grad_noise=0.01, seed=1)            # never sees the bad steps
    r = make(ref, name, kw, 10, nonfinite="skip", grad_noise=0.01, seed=1)
    for o in (sk, ok, r):
        o.param_groups[1]["lr"] = Warmup(CosineAnnealing(0.02, 40), 5)
    rng = np.random.default_rng(11)
    for t in range(20):
        gs = grads(sk.params, rng)
        if t in (3, 4, 11):
            snap = snapshot(sk)
            bad = _bad_grads(sk, rng, t % 2 + 4, np.nan if t != 4 else np.inf)
            assert sk.step(bad) is False
            assert r.step(bad) is False
            assert not math.isfinite(sk.last_grad_norm)
            assert_unchanged(sk, snap)                 # params, state, steps, schedule position
        assert sk.step(gs) is True and r.step(gs) is True and ok.step(gs) is True
    for x, y, z in zip(sk.params, ok.params, r.params):
        np.testing.assert_array_equal(x, y)            # the same seeds and steps: bitwise
        compare([x], [z])
    assert [s["step"] for s in sk.state] == [20] * len(sk.params)


@pytest.mark.parametrize("name,kw", NONFINITE + [("Adamax", {}), ("RAdam", {}), ("Adagrad", {})])
def test_nonfinite_ignore_propagates_like_reference(name, kw):
    a, b = make(fastopt, name, kw, 12), make(ref, name, kw, 12)
    rng = np.random.default_rng(13)
    for t in range(6):
        gs = grads(a.params, rng)
        if t == 2:
            gs[3][5] = np.nan
            gs[6][0] = np.inf
            gs[5][0] = -np.inf
        with np.errstate(all="ignore"):
            assert a.step(gs) is True
            b.step(gs)
    for x, y in zip(a.params, b.params):
        np.testing.assert_array_equal(x, y)            # NaN positions equal, finite values bitwise
    assert np.isnan(a.params[3][5])                    # it did propagate
    for sa, sb in zip(a.state, b.state):
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])


# --- thread-count independence ---------------------------------------------------------------------
@pytest.fixture
def restore_threads():
    thresholds = driver.serial_thresholds()
    yield
    fastopt.set_num_threads(0)
    driver.set_serial_threshold(*thresholds)


def _threaded_run(n_threads, layout, steps=3):
    fastopt.set_num_threads(n_threads)
    assert fastopt.get_num_threads() == n_threads
    opt = make(fastopt, "Adam", {}, 21, layout, clip_norm=1.0, grad_noise=(0.1, 0.55), seed=99)
    rng = np.random.default_rng(22)
    norms = []
    for _ in range(steps):
        opt.step(grads(opt.params, rng))
        norms.append(opt.last_grad_norm)
    return opt, norms


def _assert_thread_independent(layout):
    runs = {nt: _threaded_run(nt, layout) for nt in (1, 2, 3)}
    base, base_norms = runs[1]
    for nt in (2, 3):
        opt, norms = runs[nt]
        assert norms == base_norms, nt
        for k, (x, y) in enumerate(zip(opt.params, base.params)):
            assert x.tobytes() == y.tobytes(), (nt, k)
        for k, (sa, sb) in enumerate(zip(opt.state, base.state)):
            for key in ("exp_avg", "exp_avg_sq"):
                assert sa[key].tobytes() == sb[key].tobytes(), (nt, k, key)
    return base


def test_thread_count_independent_1e6(restore_threads):
    layout = [[(600_001, F32), (7, F32)], [(399_992, F64), (0, F64)]]      # 1e6 elements
    base = _assert_thread_independent(layout)
    # and equal to the reference (float32 bitwise, float64 to the tolerance above)
    r = make(ref, "Adam", {}, 21, layout, clip_norm=1.0, grad_noise=(0.1, 0.55), seed=99)
    rng = np.random.default_rng(22)
    for _ in range(3):
        r.step(grads(r.params, rng))
    compare(base.params, r.params)


def test_thread_count_independent_without_serial_threshold(restore_threads):
    driver.set_serial_threshold(0)          # even tiny steps use the thread team
    assert driver.serial_threshold() == 0
    _assert_thread_independent([[(0, F32), (1, F32), (7, F32), (1023, F32), (9000, F32)],
                                [(17, F64), (8193, F64)]])


def test_set_num_threads_restores(restore_threads):
    default = fastopt.get_num_threads()
    fastopt.set_num_threads(3)
    assert fastopt.get_num_threads() == 3
    fastopt.set_num_threads(0)
    assert fastopt.get_num_threads() == default
    with pytest.raises(ValueError):
        fastopt.set_num_threads(-1)
    assert fastopt.get_num_threads() == default


def test_threadpoolctl_limits_are_followed(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastopt.set_num_threads(0)
    with threadpoolctl.threadpool_limits(1):
        assert fastopt.get_num_threads() == 1


# --- hypothesis: random layouts and hyper-parameters with the options, vs the reference ----------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_optim import grads_for, scenario  # noqa: E402  (the group-layout strategy lives there)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.sampled_from([None, 0.1, 10.0]), st.sampled_from([None, 0.01, (1.0, 0.0)]),
       st.integers(0, 2**64 - 1))
def test_random_layouts_with_options_match_reference(sc, clip_norm, noise, seed):
    name, groups, steps, init_seed, scale = sc

    def build(mod):
        rng = np.random.default_rng(init_seed)
        spec = [dict(g, params=[rng.standard_normal(n).astype(dt) for n, dt in arrays]) for arrays, g in groups]
        return getattr(mod, name)(spec, clip_norm=clip_norm, grad_noise=noise, seed=seed)

    a, b = build(fastopt), build(ref)
    rng = np.random.default_rng(init_seed + 1)
    for _ in range(steps):
        gs = grads_for(a.params, rng, scale)
        gs = [None if rng.random() < 0.15 else g for g in gs]
        with np.errstate(all="ignore"):
            a.step(gs)
            b.step(gs)
    compare(a.params, b.params)


def test_gradient_noise_is_the_references_to_the_last_bit_on_many_elements():
    # 2e5 draws: NumPy's SIMD float64 log/cos (AVX-512) differ from glibc's in the last
    # bit for some ~1e-4 of the arguments; the reference must use the kernels' functions
    from fastopt.reference import rules as R
    n = 200_000
    p = np.zeros(n)
    fastopt.SGD([p], lr=1.0, grad_noise=(0.5, 0.55), seed=11).step([np.zeros(n)])
    np.testing.assert_array_equal(-p, R.gradient_noise(11, 1, 0, n, 0.5, 0.55, np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_clip_norm_is_the_references_to_the_last_bit_over_several_arrays(dtype, wd):
    # the norm runs over all arrays' 8192-element blocks in one left-to-right sum; a
    # per-array total added afterwards differs in the last bit, and a clipped float64
    # step (RMSprop centered above all: v - avg² cancels) carries that into the params
    rng = np.random.default_rng(3)
    sizes = (3, 30001, 8192, 7, 8193 * 2)
    ps = [rng.standard_normal(n).astype(dtype) for n in sizes]
    a = fastopt.RMSprop([p.copy() for p in ps], lr=0.01, centered=True, clip_norm=1.0, weight_decay=wd)
    b = ref.RMSprop([p.copy() for p in ps], lr=0.01, centered=True, clip_norm=1.0, weight_decay=wd)
    for _ in range(4):
        gs = [rng.standard_normal(n).astype(dtype) * 1e3 for n in sizes]
        a.step(gs)
        b.step(gs)
        assert a.last_grad_norm == b.last_grad_norm
    compare(a.params, b.params)
