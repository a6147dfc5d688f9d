"""Shared helpers for the kernel tests: run one step of a rule through the compiled
kernel or through the NumPy reference, build state, compare bit for bit."""
import numpy as np
import pytest

from fastopt import kernels
from fastopt._kernels import driver
from fastopt.reference import rules as ref
from fastopt.reference.engine import reference_function
from fastopt.rules import RULES

# rule name -> reference function (Rule.reference); the state goes in by keyword (the
# reference's parameter names are the rule's state names, e.g. rmsprop(p, g,
# square_avg, grad_avg=None, momentum_buffer=None), adam(..., max_exp_avg_sq=None))
REF_FN = {rule.name: reference_function(rule) for rule in RULES}

FLOATS = (np.float32, np.float64)


def make_state(rule, shape, dtype, hyper):
    """The rule's state buffers as the caller must initialise them (zeros, or the
    hyper-parameter named in ``rule.state_init``, e.g. adagrad's initial_accumulator_value)."""
    out = []
    for name in rule.state:
        h = rule.state_init.get(name)
        init = 0.0
        if h is not None:
            init = hyper.get(h, next(x.default for x in rule.hyper if x.name == h))
        out.append(np.full(shape, init, dtype=dtype))
    return out


def initial_scalar_state(rule):
    return {n: v for n, v in rule.scalar_state}


def kernel_step(rule, p, g, states, t, lr, hyper, opts, sstate, **kw):
    """One step through fastopt.kernels; returns the new scalar state dict."""
    out = getattr(kernels, rule.name)(p, g, *states, step=t, lr=lr, **hyper, **opts, **sstate, **kw)
    if rule.scalar_state:
        return {rule.scalar_state[0][0]: out}
    assert out is None
    return {}


def reference_step(rule, p, g, states, t, lr, hyper, opts, sstate):
    """One step through fastopt.reference (preprocess, then the rule)."""
    with np.errstate(all="ignore"):
        g2 = ref.preprocess(p, g, lr=lr, **opts)
        out = REF_FN[rule.name](p, g2, **dict(zip(rule.state, states)), t=t, lr=lr, **hyper, **sstate)
    if rule.scalar_state:
        return {rule.scalar_state[0][0]: out}
    return {}


def assert_bitwise(actual, desired, what=""):
    """Equal bit for bit (so +0.0 != -0.0), dtype and shape included. NaNs must sit at
    the same places; their payload/sign bits are not compared (the compiler may commute
    the operands of a commutative op, which changes which NaN propagates)."""
    assert actual.dtype == desired.dtype and actual.shape == desired.shape, what
    ui = np.uint32 if actual.dtype == np.float32 else np.uint64
    if np.array_equal(actual.reshape(-1).view(ui), desired.reshape(-1).view(ui)):
        return                                    # the fast path: every bit equal
    an, dn = np.isnan(actual), np.isnan(desired)
    np.testing.assert_array_equal(an, dn, err_msg=f"{what}: NaN at different places")
    a = np.where(an, 0, actual).view(ui)
    d = np.where(dn, 0, desired).view(ui)
    if not np.array_equal(a, d):
        bad = np.flatnonzero(a.ravel() != d.ravel())
        k = bad[0]
        raise AssertionError(f"{what}: {bad.size} of {a.size} elements differ in their bits; first at "
                             f"{k}: {actual.ravel()[k]!r} vs {desired.ravel()[k]!r}")


def mixed_values(rng, shape, dtype, lo_exp, hi_exp, zero_frac=0.1):
    """Random values of mixed magnitudes: exact zeros, standard normals, and
    ±10**U(lo_exp, hi_exp) in about equal shares of the rest."""
    n = int(np.prod(shape, dtype=np.int64))
    kind = rng.random(n)
    wide = rng.choice((-1.0, 1.0), n) * 10.0 ** rng.uniform(lo_exp, hi_exp, n)
    x = np.where(kind < 0.55, wide, rng.standard_normal(n))
    x[kind < zero_frac] = 0.0
    return x.astype(dtype).reshape(shape)


# exponent ranges for "very large/small" gradients: g² (and adagrad's sum of ~10² of
# them) stays finite: float32 max ~3.4e38, float64 ~1.8e308
EXP_RANGE = {np.dtype(np.float32): (-20.0, 17.0), np.dtype(np.float64): (-30.0, 30.0)}


@pytest.fixture
def threads_restored():
    """Lets a test call driver.set_num_threads / set_serial_threshold; puts the
    defaults back afterwards (0 = follow OpenMP, and the threshold found at start)."""
    thresholds = driver.serial_thresholds()
    late = driver.late_threshold()
    # a busy machine must not change the planned thread counts these tests check
    driver.set_late_threshold(float("inf"))
    try:
        yield driver
    finally:
        driver.set_num_threads(0)
        driver.set_serial_threshold(*thresholds)
        driver.set_late_threshold(late)
