"""Differential tests of the compiled update kernels (fastopt.kernels) against the
plain-NumPy reference (fastopt.reference.rules).

The contract: the kernels are compiled with -ffp-contract=off and follow the
reference's order of operations, with every per-step scalar computed in double and
rounded once to the buffer's precision, so a kernel's param and state must equal the
reference run in the same precision BIT FOR BIT, for every rule, precision, length,
option and thread count. Only the float32-vs-float64 tests (section 4) use a tolerance,
and that tolerance is a proven error bound (see ``Tracked``).
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from conftest import (EXP_RANGE, FLOATS, assert_bitwise, initial_scalar_state, kernel_step,
                      make_state, mixed_values, reference_step)
from fastopt._kernels import driver
from fastopt.rules import BY_NAME, RULES

RULE_NAMES = [r.name for r in RULES]
BIG = 10**6 + 3
SMALL_LENGTHS = (0, 1, 7, 1023)
SMALL_STEPS = 120

# Non-default hyper-parameters per rule (the defaults are the other setting tested).
CUSTOM = {
    "sgd": {},
    "momentum": {"momentum": 0.9, "dampening": 0.1},
    "nesterov": {"momentum": 0.9},
    "adagrad": {"lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-7},
    "rmsprop": {"alpha": 0.9, "eps": 1e-6},
    "rmsprop_momentum": {"alpha": 0.9, "eps": 1e-6, "momentum": 0.9},
    "rmsprop_centered": {"alpha": 0.95, "eps": 1e-6},
    "rmsprop_centered_momentum": {"alpha": 0.95, "eps": 1e-6, "momentum": 0.7},
    "adadelta": {"rho": 0.95, "eps": 1e-5},
    "adam": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    "adam_amsgrad": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    "nadam": {"beta1": 0.95, "beta2": 0.98, "eps": 1e-7, "momentum_decay": 0.01},
    "nadam_optax": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    "adamax": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    "radam": {"beta1": 0.8, "beta2": 0.95, "eps": 1e-7},   # ρ∞ = 39: both branches within 120 steps
    "lion": {"beta1": 0.95, "beta2": 0.98},
    "adabelief": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    "adabelief_optax": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7},
    # both warm-ups end within the tests' step counts
    "ademamix": {"beta1": 0.8, "beta2": 0.99, "beta3": 0.995, "alpha": 3.0, "eps": 1e-7, "t_alpha": 20.0,
                 "t_beta3": 30.0},
}
assert set(CUSTOM) == set(BY_NAME), "a rule was added: give it a CUSTOM entry"
# the default momentum of momentum/nesterov/rmsprop*_momentum is 0; keep a nonzero one
DEFAULTISH = {name: ({"momentum": 0.5} if name in ("momentum", "nesterov", "rmsprop_momentum",
                                                     "rmsprop_centered_momentum") else {})
              for name in BY_NAME}

# every combination of the common options; 0.3 is not a float32 number, so the
# clip bound's rounding to the buffer's precision is exercised too
# the coupled mode says so: Lion's low-level function decays decoupled by default
WD_MODES = ({}, {"weight_decay": 0.05, "decoupled_weight_decay": False},
            {"weight_decay": 0.05, "decoupled_weight_decay": True})
OPTION_COMBOS = [dict(maximize=m, **wd, **clip) for m in (False, True) for wd in WD_MODES
                 for clip in ({}, {"clip_value": 0.3})]


def combo_id(c):
    parts = [k if v is True else f"{k}={v}" for k, v in c.items()]
    return ",".join(parts) or "plain"


@functools.lru_cache(maxsize=None)
def gradients(dtype, n, steps, seed):
    """(steps, n) mixed-magnitude gradients, read-only (kernels must accept that)."""
    rng = np.random.default_rng([seed, n, steps, np.dtype(dtype).itemsize])
    lo, hi = EXP_RANGE[np.dtype(dtype)]
    g = mixed_values(rng, (steps, n), dtype, lo, hi)
    g.flags.writeable = False
    return g


@functools.lru_cache(maxsize=None)
def initial_param(dtype, n, seed):
    rng = np.random.default_rng([seed, n, 7])
    lo, hi = EXP_RANGE[np.dtype(dtype)]
    p = mixed_values(rng, (n,), dtype, lo / 2, hi / 2, zero_frac=0.05)
    p.flags.writeable = False
    return p


def run_both(rule, dtype, n, steps, hyper, opts, lr, seed=0, first_step=1):
    """Run ``steps`` steps through the kernel and the reference from the same start;
    assert bitwise equality after every step. Returns the kernel's param and state."""
    g_all = gradients(dtype, n, steps, seed)
    pk = initial_param(dtype, n, seed).copy()
    pr = pk.copy()
    sk = make_state(rule, n, dtype, hyper)
    sr = [s.copy() for s in sk]
    ssk = initial_scalar_state(rule)
    ssr = dict(ssk)
    for k in range(steps):
        t = first_step + k
        ssk = kernel_step(rule, pk, g_all[k], sk, t, lr, hyper, opts, ssk)
        ssr = reference_step(rule, pr, g_all[k], sr, t, lr, hyper, opts, ssr)
        what = f"{rule.name} {np.dtype(dtype).name} n={n} step {t} {opts} {hyper}"
        assert ssk == ssr, what
        assert_bitwise(pk, pr, what + ": param")
        for name, a, b in zip(rule.state, sk, sr):
            assert_bitwise(a, b, f"{what}: {name}")
    return pk, sk


# --- 1. every rule x precision x option combination, many steps ---------------------------
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=combo_id)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", RULE_NAMES)
def test_matches_reference_bitwise(name, dtype, combo):
    rule = BY_NAME[name]
    for i, n in enumerate(SMALL_LENGTHS):
        # alternate default-ish and custom hyper-parameters over the lengths
        hyper = CUSTOM[name] if i % 2 else DEFAULTISH[name]
        p, _ = run_both(rule, dtype, n, SMALL_STEPS, hyper, combo, lr=1e-2, seed=i)
        if n:
            # the test is only meaningful if the run moved the parameters and the
            # values stayed (mostly) finite
            assert not np.array_equal(p, initial_param(dtype, n, i)), "param never changed"
            if n > 100 and "centered" not in name:
                assert np.isfinite(p).mean() > 0.99, f"{name}: the run overflowed; pick smaller data"


# The big one: fewer steps and two option combos per rule.
BIG_COMBOS = [dict(maximize=True, weight_decay=0.05, decoupled_weight_decay=False, clip_value=0.3),
              dict(weight_decay=0.02, decoupled_weight_decay=True)]


@pytest.mark.parametrize("combo", BIG_COMBOS, ids=combo_id)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", RULE_NAMES)
def test_matches_reference_bitwise_large(name, dtype, combo):
    rule = BY_NAME[name]
    hyper = CUSTOM[name] if combo is BIG_COMBOS[0] else DEFAULTISH[name]
    run_both(rule, dtype, BIG, 3, hyper, combo, lr=1e-3, seed=11)


# --- 2. the thread count never changes a bit -------------------------------------------------
def _run_kernel_only(rule, dtype, n, steps, hyper, opts, **kw):
    g_all = gradients(dtype, n, steps, 5)
    p = initial_param(dtype, n, 5).copy()
    s = make_state(rule, n, dtype, hyper)
    ss = initial_scalar_state(rule)
    for k in range(steps):
        ss = kernel_step(rule, p, g_all[k], s, k + 1, 1e-3, hyper, opts, ss, **kw)
    return [p] + s, ss


@pytest.mark.parametrize("name", RULE_NAMES)
def test_thread_count_invariance_large(name, threads_restored):
    rule = BY_NAME[name]
    opts = dict(maximize=True, weight_decay=0.05, clip_value=0.3)
    for dtype in FLOATS:
        results = {}
        for nt in (1, 2, 3):
            threads_restored.set_num_threads(nt)
            assert threads_restored.get_num_threads() == nt
            results[nt] = _run_kernel_only(rule, dtype, BIG, 2, CUSTOM[name], opts)
        for nt in (2, 3):
            assert results[nt][1] == results[1][1]
            for k, (a, b) in enumerate(zip(results[nt][0], results[1][0])):
                assert_bitwise(a, b, f"{name} {np.dtype(dtype).name}: buffer {k}, {nt} threads vs 1")


def test_threads_keyword_invariance(threads_restored):
    """The per-call ``threads=`` argument: 1, 2, 3 and 7 threads agree bit for bit."""
    rule = BY_NAME["adam_amsgrad"]
    base, _ = _run_kernel_only(rule, np.float32, BIG, 2, CUSTOM[rule.name], {}, threads=1)
    for nt in (2, 3, 7):
        other, _ = _run_kernel_only(rule, np.float32, BIG, 2, CUSTOM[rule.name], {}, threads=nt)
        for a, b in zip(other, base):
            assert_bitwise(a, b, f"threads={nt}")


@pytest.mark.parametrize("nthreads", (2, 3))
@pytest.mark.parametrize("name", RULE_NAMES)
def test_parallel_path_small_arrays(name, nthreads, threads_restored):
    """With the serial threshold at 0 even 1-element arrays go through the parallel
    region (pieces cut at multiples of 256 elements, so most threads get nothing)."""
    threads_restored.set_serial_threshold(0)
    threads_restored.set_num_threads(nthreads)
    assert threads_restored.serial_threshold() == 0
    rule = BY_NAME[name]
    for i, n in enumerate((0, 1, 7, 33, 1023)):
        run_both(rule, np.float64 if i % 2 else np.float32, n, 5, CUSTOM[name],
                 OPTION_COMBOS[(i + 5) % len(OPTION_COMBOS)], lr=1e-2, seed=100 + i)


DEFAULT_THRESHOLD = driver.serial_thresholds()
DEFAULT_THREADS = driver.get_num_threads()


def test_thread_settings_restored():
    # runs after the tests above in file order: the fixture put the defaults back
    assert driver.serial_thresholds() == DEFAULT_THRESHOLD
    assert driver.get_num_threads() == DEFAULT_THREADS


# --- 3. hypothesis: any valid hyper-parameters, shapes, dtypes ---------------------------------
def hyper_strategy(h):
    if h.kind == "bool":
        return st.booleans()
    hi = min(h.hi, 10.0)                  # unbounded above: any value up to 10
    inner = st.floats(min_value=h.lo, max_value=hi, exclude_min=h.lo_open,
                      exclude_max=h.hi_open and hi == h.hi, allow_nan=False, allow_infinity=False)
    edges = [x for x, open_ in ((h.lo, h.lo_open), (h.hi, h.hi_open)) if math.isfinite(x) and not open_]
    return st.one_of(st.sampled_from(edges), inner) if edges else inner


@st.composite
def cases(draw):
    rule = BY_NAME[draw(st.sampled_from(RULE_NAMES))]
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9))
    hyper = {h.name: draw(hyper_strategy(h)) for h in rule.hyper}
    # AdEMAMix's β3 warm-up runs on a log scale between β1 and β3: with t_beta3 > 0 its
    # class refuses β1 or β3 <= 0 (ln 0), and the reference's math.log raises on them
    assume(not (hyper.get("t_beta3", 0.0) > 0.0 and min(hyper["beta1"], hyper["beta3"]) <= 0.0))
    lo, hi = EXP_RANGE[np.dtype(dtype)]
    a = draw(st.floats(lo, hi))
    b = draw(st.floats(lo, hi))
    opts = {}
    if draw(st.booleans()):
        opts["maximize"] = True
    wd = draw(st.sampled_from([0.0, 0.0, 1e-4, 0.1, 1.0]))
    if wd:
        opts["weight_decay"] = wd
        opts["decoupled_weight_decay"] = draw(st.booleans())
    if draw(st.booleans()):
        opts["clip_value"] = draw(st.floats(1e-6, 1e6))
    return dict(rule=rule, dtype=dtype, shape=shape, hyper=hyper, opts=opts,
                exps=(min(a, b), max(a, b)), lr=draw(st.floats(0.0, 1.0)),
                first=draw(st.sampled_from([1, 1, 2, 10, 1000, 10**6])),
                steps=draw(st.integers(1, 6)), seed=draw(st.integers(0, 2**32 - 1)))


SIGNED_STATE = {"exp_avg", "grad_avg", "momentum_buffer"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_hypothesis_matches_reference(case):
    rule, dtype, shape = case["rule"], case["dtype"], case["shape"]
    rng = np.random.default_rng(case["seed"])
    lo, hi = case["exps"]
    p = mixed_values(rng, shape, dtype, lo, hi)
    pr = p.copy()
    if case["first"] == 1:
        sk = make_state(rule, shape, dtype, case["hyper"])
    else:
        # resuming mid-run: random state; squares, sums and maxima are >= 0
        sk = [mixed_values(rng, shape, dtype, lo, hi) for _ in rule.state]
        sk = [s if name in SIGNED_STATE else np.abs(s, out=s) for name, s in zip(rule.state, sk)]
    sr = [s.copy() for s in sk]
    ssk = initial_scalar_state(rule)
    if rule.scalar_state and case["first"] > 1:
        ssk = {rule.scalar_state[0][0]: float(rng.uniform(0.01, 1.0))}
    ssr = dict(ssk)
    for k in range(case["steps"]):
        g = mixed_values(rng, shape, dtype, lo, hi)
        t = case["first"] + k
        ssk = kernel_step(rule, p, g, sk, t, case["lr"], case["hyper"], case["opts"], ssk)
        ssr = reference_step(rule, pr, g, sr, t, case["lr"], case["hyper"], case["opts"], ssr)
        assert ssk == ssr
        assert_bitwise(p, pr, "param")
        for name, a, b in zip(rule.state, sk, sr):
            assert_bitwise(a, b, name)


# --- 4. numerics: float32 kernel vs float64 reference, with a proven bound ---------------
U = 2.0**-24 + 2.0**-52   # unit roundoff of float32 plus that of the float64 run (see below)
ETA = 2.0**-148           # absolute error of one op in the float32 (or float64) subnormal range


class Tracked:
    """A float64 value ``v`` (computed exactly as the float64 reference computes it)
    with a rigorous bound ``e`` on |x32 - v|, where x32 is what the float32 kernel
    computes by the same sequence of operations (running error analysis).

    Standard model (IEEE 754, round to nearest): one float32 op on float32 inputs gives
    fl32(z) = z(1 + d) + h with |d| <= 2^-24 and |h| <= 2^-150 (underflow). The float64
    reference gives fl64(z64) likewise with 2^-53. If the inputs carry errors ex, ey
    (|x32 - xv| <= ex), the exact result z of the op on the float32 inputs is within
    ``prop`` of the exact op on the float64 values (propagation formulas below, all exact
    inequalities, no first-order truncation), and

        |fl32(z) - fl64(zv)| <= prop + 2^-24 |z| + 2^-53 |zv| + 2^-149
                             <= prop (1 + 2^-24) + (2^-24 + 2^-52) |fl64(zv)| + 2^-148

    (|zv| <= |fl64(zv)| (1 + 2^-53)). That is the ``_round`` step. Scalars are computed
    in double by both sides and rounded once to float32 by the kernel: a constant c
    carries e = |fl32(c) - c| exactly. The bound itself is evaluated in float64 with
    about 10 roundings per element per step, i.e. a relative 1e-14 over 100 steps: the
    comparison adds a relative 1e-9 to cover that, nothing else. The tolerance is thus
    a few hundred 2^-24 relative per step where the update is well-conditioned, and
    grows exactly where it must (division by a small denominator, cancellation).
    """
    __slots__ = ("v", "e")

    def __init__(self, v, e):
        self.v, self.e = v, e

    @staticmethod
    def exact(x):
        return Tracked(np.asarray(x, np.float64), np.zeros(np.shape(x)))

    @staticmethod
    def const(c):
        return Tracked(c, abs(float(np.float32(c)) - c))

    @staticmethod
    def _round(v, prop):
        # the underflow term wherever the exact float32 result z can lie below float32's
        # normal range (|z| >= |v| (1 - 2^-52) - prop), except for an exact zero on both
        # sides (v == 0 and prop == 0: the inputs are the same numbers and the exact result
        # is 0 or below float64's least subnormal, which float32 rounds to 0 as well)
        tiny = np.where((np.abs(v) * (1.0 - 2.0**-52) - prop < 2.0**-125) & ((v != 0) | (prop != 0)), ETA, 0.0)
        return Tracked(v, prop * (1.0 + 2.0**-24) + U * np.abs(v) + tiny)

    def __add__(self, o):
        return self._round(self.v + o.v, self.e + o.e)

    def __sub__(self, o):
        return self._round(self.v - o.v, self.e + o.e)

    def __mul__(self, o):
        return self._round(self.v * o.v, np.abs(self.v) * o.e + np.abs(o.v) * self.e + self.e * o.e)

    def __truediv__(self, o):
        ov = np.abs(o.v)
        margin = ov - o.e
        assert np.all(margin > 0), "denominator error bound exceeds the denominator: no bound"
        prop = (self.e * ov + np.abs(self.v) * o.e) / (ov * margin)
        return self._round(self.v / o.v, prop)

    def sqrt(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            lin = np.where(self.v > 0, self.e / np.sqrt(self.v), np.inf)
        prop = np.minimum(lin, np.sqrt(self.e))      # |√x - √y| <= min(|x-y|/√y, √|x-y|)
        return self._round(np.sqrt(self.v), prop)

    def sign(self):
        """sign(c): exact where the bound keeps c away from 0 (or c is exactly 0 on both
        sides), else anything in [-1, 1] may come out: error up to 2."""
        sure = (np.abs(self.v) > self.e) | ((self.v == 0) & (self.e == 0))
        return Tracked(np.sign(self.v), np.where(sure, 0.0, 2.0))


C = Tracked.const


def tr_sgd_momentum(p, g, b, t, lr, momentum, dampening):
    # reference: b = g (t == 1) else momentum*b + (1-dampening)*g; p -= lr*b
    b = g if t == 1 else C(momentum) * b + C(1.0 - dampening) * g
    return p - C(lr) * b, [b]


def tr_adagrad(p, g, s, t, lr, lr_decay, initial_accumulator_value, eps):
    clr = lr / (1.0 + (t - 1) * lr_decay)
    s = s + g * g
    return p - C(clr) * (g / (s.sqrt() + C(eps))), [s]


def tr_rmsprop(p, g, v, t, lr, alpha, eps):
    v = C(alpha) * v + C(1.0 - alpha) * (g * g)
    return p - C(lr) * (g / (v.sqrt() + C(eps))), [v]


def tr_adam(p, g, m, v, t, lr, beta1, beta2, eps):
    m = C(beta1) * m + C(1.0 - beta1) * g
    v = C(beta2) * v + C(1.0 - beta2) * (g * g)
    step_size = lr / (1.0 - beta1 ** t)
    sqrt_bc2 = math.sqrt(1.0 - beta2 ** t)
    return p - C(step_size) * (m / (v.sqrt() / C(sqrt_bc2) + C(eps))), [m, v]


def tr_lion(p, g, m, t, lr, beta1, beta2):
    c = C(beta1) * m + C(1.0 - beta1) * g
    p = p - C(lr) * c.sign()
    return p, [C(beta2) * m + C(1.0 - beta2) * g]


NUMERIC_CASES = {
    # id: (rule, tracked function, hyper, lr, common options)
    "adam": ("adam", tr_adam, dict(beta1=0.9, beta2=0.999, eps=1e-8), 1e-3, {}),
    "adamw": ("adam", tr_adam, dict(beta1=0.9, beta2=0.999, eps=1e-8), 1e-3,
              dict(weight_decay=1e-2, decoupled_weight_decay=True)),
    "adam_l2": ("adam", tr_adam, dict(beta1=0.9, beta2=0.999, eps=1e-8), 1e-3, dict(weight_decay=1e-2)),
    "rmsprop": ("rmsprop", tr_rmsprop, dict(alpha=0.99, eps=1e-8), 1e-2, {}),
    "adagrad": ("adagrad", tr_adagrad, dict(lr_decay=1e-3, initial_accumulator_value=0.1, eps=1e-10),
                1e-2, {}),
    "lion": ("lion", tr_lion, dict(beta1=0.9, beta2=0.99), 1e-4, dict(weight_decay=0.1,
                                                                     decoupled_weight_decay=True)),
    "sgd_momentum": ("momentum", tr_sgd_momentum, dict(momentum=0.9, dampening=0.0), 1e-2, {}),
}


@pytest.mark.parametrize("case", sorted(NUMERIC_CASES))
def test_float32_within_proven_bound_of_float64(case):
    name, fn, hyper, lr, opts = NUMERIC_CASES[case]
    rule = BY_NAME[name]
    n, steps = 4096, 100
    rng = np.random.default_rng(sum(map(ord, case)))
    p32 = rng.standard_normal(n).astype(np.float32)
    p64 = p32.astype(np.float64)
    s64 = make_state(rule, n, np.float64, hyper)
    s32 = [s.astype(np.float32) for s in s64]
    P = Tracked.exact(p32)
    # a state starts at fl32(init) in the kernel, at init in the float64 run (adagrad's 0.1)
    S = [Tracked(s.copy(), np.abs(s32_ - s)) for s, s32_ in zip(s64, s32)]
    ambiguous = np.zeros(n, bool)
    wd, decoupled = opts.get("weight_decay", 0.0), opts.get("decoupled_weight_decay", False)
    for t in range(1, steps + 1):
        # float32 gradients: N(0,1) * 10**U(-2, 1), 5% exact zeros; exactly the same
        # numbers go to the float64 run
        g32 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-2, 1, n)).astype(np.float32)
        g32[rng.random(n) < 0.05] = 0
        kernel_step(rule, p32, g32, s32, t, lr, hyper, opts, {})
        reference_step(rule, p64, g32.astype(np.float64), s64, t, lr, hyper, opts, {})
        G = Tracked.exact(g32)
        if wd and not decoupled:
            G = G + C(wd) * P
        if wd and decoupled:
            P = P * C(1.0 - lr * wd)
        before = P.e
        P, S = fn(P, G, *S, t, lr, **hyper)
        if name == "lion":
            ambiguous |= (P.e - before) >= 1.0 * lr
        # the tracked values are the float64 reference's own numbers, bit for bit
        assert_bitwise(P.v, p64, f"{case} tracked param, step {t}")
        for k, (x, s) in enumerate(zip(S, s64)):
            assert_bitwise(x.v, s, f"{case} tracked state {k}")
    for label, got, want in [("param", p32, P)] + [(nm, a, b) for nm, a, b in zip(rule.state, s32, S)]:
        err = np.abs(got.astype(np.float64) - want.v)
        bound = want.e * (1.0 + 1e-9)
        worst = np.argmax(err - bound)
        assert np.all(err <= bound), (f"{case} {label}: |float32 - float64| = {err[worst]:.3g} exceeds the "
                                      f"proven bound {bound[worst]:.3g} at {worst}")
        # the bound must be informative: elementwise for the parameter (relative to
        # |p| + lr, lr being the size of one step), normwise for signed state sums
        # (elementwise they cancel), relative for non-negative state
        if label == "param":
            useful = ~ambiguous
            rel = np.max((bound / (np.abs(want.v) + lr))[useful])
        elif np.all(want.v >= 0):
            rel = np.max(np.where(want.v > 0, bound / np.where(want.v > 0, want.v, 1.0), 0.0))
        else:
            rel = np.max(bound) / np.max(np.abs(want.v))
        assert rel < 5e-3, f"{case} {label}: the bound is vacuous (relative {rel:.2g})"
    if name == "lion":
        # sign(c) is ill-conditioned where |c| is within the rounding bound of 0: there
        # the bound above allows 2 lr per such step; such elements must be rare
        assert ambiguous.mean() < 0.01, f"too many sign-ambiguous elements: {ambiguous.mean():.3%}"


# --- 5. the reference itself, against the formulas of ALGORITHMS.md (scalar Python) -------
def spec_step(name, p, g, st, t, lr, h, *, maximize=False, weight_decay=0.0,
              decoupled_weight_decay=False, clip_value=None, mu_product=1.0):
    """One step of ALGORITHMS.md on Python floats, written from the document's table,
    independently of the reference's code. Returns (p, state, mu_product)."""
    if maximize:
        g = -g
    if weight_decay and not decoupled_weight_decay:
        g = g + weight_decay * p
    if clip_value is not None:
        g = max(-clip_value, min(clip_value, g))
    if weight_decay and decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    st = dict(st)
    b1, b2 = h.get("beta1"), h.get("beta2")
    if name == "sgd":
        p -= lr * g
    elif name in ("momentum", "nesterov"):
        mu = h["momentum"]
        st["b"] = g if t == 1 else mu * st["b"] + (1 - h.get("dampening", 0.0)) * g
        p -= lr * (st["b"] if name == "momentum" else g + mu * st["b"])
    elif name == "adagrad":
        clr = lr / (1 + (t - 1) * h["lr_decay"])
        st["s"] += g * g
        p -= clr * g / (math.sqrt(st["s"]) + h["eps"])
    elif name.startswith("rmsprop"):
        a = h["alpha"]
        st["v"] = a * st["v"] + (1 - a) * g * g
        if "centered" in name:
            st["gbar"] = a * st["gbar"] + (1 - a) * g
            den = math.sqrt(st["v"] - st["gbar"] ** 2) + h["eps"]
        else:
            den = math.sqrt(st["v"]) + h["eps"]
        if "momentum" in name:
            st["b"] = h["momentum"] * st["b"] + g / den
            p -= lr * st["b"]
        else:
            p -= lr * g / den
    elif name == "adadelta":
        r, e = h["rho"], h["eps"]
        st["v"] = r * st["v"] + (1 - r) * g * g
        d = math.sqrt(st["u"] + e) / math.sqrt(st["v"] + e) * g
        st["u"] = r * st["u"] + (1 - r) * d * d
        p -= lr * d
    elif name.startswith("adabelief"):
        # pytorch form: g - m with the new m, den = √s/√bc2 + ε; optax: the old m, √(s/bc2) + ε
        m_old = st["m"]
        st["m"] = b1 * st["m"] + (1 - b1) * g
        d = g - (st["m"] if name == "adabelief" else m_old)
        st["v"] = b2 * st["v"] + (1 - b2) * d * d + h["eps"]
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if name == "adabelief":
            p -= (lr / bc1) * st["m"] / (math.sqrt(st["v"]) / math.sqrt(bc2) + h["eps"])
        else:
            p -= lr * (st["m"] / bc1) / (math.sqrt(st["v"] / bc2) + h["eps"])
    elif name == "ademamix":
        # the paper's Algorithm 1 with its warm-ups (bitsandbytes' form of the denominator)
        alpha, b3 = h["alpha"], h["beta3"]
        if h["t_alpha"] > 0:
            alpha = min(t * alpha / h["t_alpha"], alpha)
        if h["t_beta3"] > 0:
            s, l1, l3 = t / h["t_beta3"], math.log(b1), math.log(b3)
            b3 = min(math.exp(l1 * l3 / ((1 - s) * l3 + s * l1)), b3)
        st["m1"] = b1 * st["m1"] + (1 - b1) * g
        st["m2"] = b3 * st["m2"] + (1 - b3) * g
        st["nu"] = b2 * st["nu"] + (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        p -= lr * (st["m1"] / bc1 + alpha * st["m2"]) / (math.sqrt(st["nu"]) / math.sqrt(bc2) + h["eps"])
    elif name == "lion":
        c = b1 * st["m"] + (1 - b1) * g
        p -= lr * ((c > 0) - (c < 0))
        st["m"] = b2 * st["m"] + (1 - b2) * g
    else:
        st["m"] = b1 * st["m"] + (1 - b1) * g
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if name == "adamax":
            st["v"] = max(b2 * st["v"], abs(g) + h["eps"])
            p -= lr / bc1 * st["m"] / st["v"]
            return p, st, mu_product
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        if name in ("adam", "adam_amsgrad"):
            v = st["v"]
            if name == "adam_amsgrad":
                st["vmax"] = v = max(st["vmax"], v)
            p -= (lr / bc1) * st["m"] / (math.sqrt(v) / math.sqrt(bc2) + h["eps"])
        elif name == "nadam":
            psi = h["momentum_decay"]
            mu_t = b1 * (1 - 0.5 * 0.96 ** (t * psi))
            mu_n = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
            mu_product *= mu_t
            den = math.sqrt(st["v"] / bc2) + h["eps"]
            p -= lr * (1 - mu_t) / (1 - mu_product) * g / den
            p -= lr * mu_n / (1 - mu_product * mu_n) * st["m"] / den
        elif name == "nadam_optax":
            mbar = b1 * st["m"] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
            p -= lr * mbar / (math.sqrt(st["v"] / bc2) + h["eps"])
        elif name == "radam":
            rinf = 2 / (1 - b2) - 1
            rt = rinf - 2 * t * b2 ** t / bc2
            if rt > 5:
                r = math.sqrt((rt - 4) * (rt - 2) * rinf / ((rinf - 4) * (rinf - 2) * rt))
                p -= lr * (st["m"] / bc1) * r * math.sqrt(bc2) / (math.sqrt(st["v"]) + h["eps"])
            else:
                p -= lr * st["m"] / bc1
    return p, st, mu_product


SPEC_STATE = {"momentum": ["b"], "nesterov": ["b"], "adagrad": ["s"], "rmsprop": ["v"],
              "rmsprop_momentum": ["v", "b"], "rmsprop_centered": ["v", "gbar"],
              "rmsprop_centered_momentum": ["v", "gbar", "b"], "adadelta": ["v", "u"], "lion": ["m"],
              "adam_amsgrad": ["m", "v", "vmax"], "ademamix": ["m1", "m2", "nu"]}


@pytest.mark.parametrize("combo", [{}, dict(maximize=True, weight_decay=0.1, decoupled_weight_decay=False,
                                                clip_value=0.8),
                                   dict(weight_decay=0.1, decoupled_weight_decay=True)], ids=combo_id)
@pytest.mark.parametrize("name", RULE_NAMES)
def test_kernel_float64_follows_algorithms_md(name, combo):
    """Independent of the reference: the float64 kernel against ALGORITHMS.md written
    out on Python floats (different association in places, hence a tolerance of a few
    hundred float64 roundings; no cancellation-prone data: g, p ~ N(0, 1))."""
    rule = BY_NAME[name]
    hyper = {h.name: h.default for h in rule.hyper}
    hyper.update(CUSTOM[name])
    names = SPEC_STATE.get(name, ["m", "v"][:len(rule.state)])
    rng = np.random.default_rng(sum(map(ord, name)))
    n, steps, lr = 6, 8, 0.05
    p = rng.standard_normal(n)
    state = make_state(rule, n, np.float64, hyper)
    ss = initial_scalar_state(rule)
    sp = [p.tolist(), [{k: float(s[i]) for k, s in zip(names, state)} for i in range(n)], 1.0]
    for t in range(1, steps + 1):
        g = rng.standard_normal(n)
        ss = kernel_step(rule, p, g, state, t, lr, hyper, combo, ss)
        for i in range(n):
            sp[0][i], sp[1][i], mp = spec_step(name, sp[0][i], float(g[i]), sp[1][i], t, lr, hyper,
                                               mu_product=sp[2], **combo)
        sp[2] = mp
        np.testing.assert_allclose(p, sp[0], rtol=1e-12, atol=1e-14, err_msg=f"{name} step {t}")
        for k, s in zip(names, state):
            np.testing.assert_allclose(s, [d[k] for d in sp[1]], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} {k} step {t}")
        if rule.scalar_state:
            assert ss["mu_product"] == pytest.approx(sp[2], rel=1e-14)
