"""Bad inputs to the low-level kernels (fastopt.kernels): each raises TypeError or
ValueError whose message names the offending argument, and leaves every buffer
(param, grad, state) bit for bit as it was."""
import math
import re

import numpy as np
import pytest

from conftest import assert_bitwise
from fastopt import kernels
from fastopt.rules import BY_NAME, CLIP_VALUE, LR, RULES, WEIGHT_DECAY

RULE_NAMES = [r.name for r in RULES]
STATEFUL = [r.name for r in RULES if r.state]
MULTI_STATE = [r.name for r in RULES if len(r.state) >= 2]


def buffers(name, shape=(8,), dtype=np.float64, seed=0):
    """param, grad and state filled with non-zero values, so that any write shows."""
    rule = BY_NAME[name]
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    states = [np.abs(rng.standard_normal(shape)).astype(dtype) + 0.5 for _ in rule.state]
    return p, g, states


def assert_rejected(name, p, g, states, exc, match, *, extra=(), **kw):
    """Call the kernel, expect ``exc`` matching ``match``; then every ndarray involved
    (and those in ``extra``, e.g. the base of a view) must be unchanged."""
    arrays = [a for a in (p, g, *states, *extra) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    kw.setdefault("step", 3)
    with pytest.raises(exc, match=match):
        getattr(kernels, name)(p, g, *states, **kw)
    for a, b in zip(arrays, before):
        assert_bitwise(a, b, "a buffer was written although the call was rejected")


def word(name):
    return rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])"


def either(a, b):
    return rf"({word(a)} and {word(b)}|{word(b)} and {word(a)}) share memory"


def arg_names(name):
    return ["param", "grad"] + list(BY_NAME[name].state)


def replace_arg(name, p, g, states, which, new):
    args = [p, g] + list(states)
    args[arg_names(name).index(which)] = new
    return args[0], args[1], args[2:]


def all_args():
    return [(n, a) for n in RULE_NAMES for a in arg_names(n)]


# --- dtypes -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_dtype", [np.int64, np.int32, np.float16, np.complex128, np.bool_,
                                       np.dtype(">f8"), np.longdouble], ids=str)
@pytest.mark.parametrize("name,which", all_args())
def test_wrong_dtype(name, which, bad_dtype):
    p, g, states = buffers(name)
    bad = np.ones(p.shape, dtype=bad_dtype)
    p2, g2, s2 = replace_arg(name, p, g, states, which, bad)
    assert_rejected(name, p2, g2, s2, TypeError, word(which))


@pytest.mark.parametrize("name,which", [(n, a) for n, a in all_args() if a != "param"])
@pytest.mark.parametrize("pdtype", [np.float32, np.float64])
def test_mixed_precision(name, which, pdtype):
    """One float32 among float64 buffers (and the other way round)."""
    p, g, states = buffers(name, dtype=pdtype)
    other = np.float64 if pdtype == np.float32 else np.float32
    p2, g2, s2 = replace_arg(name, p, g, states, which, np.ones(p.shape, other))
    assert_rejected(name, p2, g2, s2, TypeError, word(which))


def test_param_of_other_precision_names_first_mismatch():
    p, g, states = buffers("adam", dtype=np.float32)
    assert_rejected("adam", p.astype(np.float64), g, states, TypeError, word("grad"))


# --- layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["step2", "reversed", "transposed", "fortran", "column_slice"])
@pytest.mark.parametrize("name,which", all_args())
def test_not_contiguous(name, which, layout):
    if layout in ("transposed", "fortran", "column_slice"):
        shape = (4, 6)
    else:
        shape = (8,)
    p, g, states = buffers(name, shape=shape)
    base = np.arange(1.0, 97.0)
    if layout == "step2":
        bad = base[:16:2]
    elif layout == "reversed":
        bad = base[7::-1]
    elif layout == "transposed":
        bad = base[:24].reshape(6, 4).T
    elif layout == "fortran":
        bad = np.asfortranarray(base[:24].reshape(4, 6))
    else:
        bad = base[:48].reshape(4, 12)[:, :6]
    assert bad.shape == shape and not bad.flags.c_contiguous
    p2, g2, s2 = replace_arg(name, p, g, states, which, bad)
    assert_rejected(name, p2, g2, s2, ValueError, word(which) + r".*contiguous", extra=(base,))


@pytest.mark.parametrize("bad_shape", [(9,), (7,), (8, 1), (1, 8), (2, 4), (0,), ()], ids=str)
@pytest.mark.parametrize("name,which", [(n, a) for n, a in all_args() if a != "param"])
def test_shape_mismatch(name, which, bad_shape):
    p, g, states = buffers(name)
    p2, g2, s2 = replace_arg(name, p, g, states, which, np.ones(bad_shape))
    assert_rejected(name, p2, g2, s2, ValueError, word(which) + r".*shape")


# --- read-only --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,which", [(n, a) for n, a in all_args() if a != "grad"])
def test_read_only(name, which):
    p, g, states = buffers(name)
    args = [p, g] + states
    args[arg_names(name).index(which)].flags.writeable = False
    assert_rejected(name, p, g, states, ValueError, word(which) + r".*read-only")


def test_read_only_broadcast_view_param():
    p = np.broadcast_to(np.ones(1), (8,))
    assert_rejected("sgd", p, np.ones(8), [], ValueError, word("param"))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_read_only_grad_is_fine(name):
    """grad is only read: a read-only gradient is accepted and gives the same update."""
    p, g, states = buffers(name)
    p2, s2 = p.copy(), [s.copy() for s in states]
    ro = g.copy()
    ro.flags.writeable = False
    getattr(kernels, name)(p, g, *states, step=3)
    getattr(kernels, name)(p2, ro, *s2, step=3)
    assert_bitwise(p2, p)
    for a, b in zip(s2, states):
        assert_bitwise(a, b)
    assert not np.array_equal(p, buffers(name)[0])


# --- aliasing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RULE_NAMES)
def test_grad_is_param(name):
    p, g, states = buffers(name)
    assert_rejected(name, p, p, states, ValueError, either("param", "grad"))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_grad_overlaps_param(name):
    base = np.linspace(1.0, 2.0, 12)
    _, _, states = buffers(name)
    assert_rejected(name, base[:8], base[4:12], states, ValueError, either("param", "grad"), extra=(base,))


@pytest.mark.parametrize("name", STATEFUL)
@pytest.mark.parametrize("shift", [0, 1, 7, -7])
def test_state_overlaps_param(name, shift):
    """The first state is param itself (shift 0) or a view overlapping it by some elements."""
    base = np.linspace(1.0, 2.0, 24)
    p = base[8:16]
    s0 = base[8 + shift:16 + shift]
    _, g, states = buffers(name)
    states[0] = s0
    assert_rejected(name, p, g, states, ValueError, either("param", BY_NAME[name].state[0]), extra=(base,))


@pytest.mark.parametrize("name", STATEFUL)
def test_state_overlaps_grad(name):
    base = np.linspace(1.0, 2.0, 16)
    p, _, states = buffers(name)
    states[-1] = base[3:11]
    assert_rejected(name, p, base[:8], states, ValueError, either("grad", BY_NAME[name].state[-1]),
                    extra=(base,))


@pytest.mark.parametrize("name", MULTI_STATE)
def test_two_states_overlap(name):
    rule = BY_NAME[name]
    base = np.linspace(1.0, 2.0, 16)
    p, g, states = buffers(name)
    states[0], states[-1] = base[:8], base[5:13]
    assert_rejected(name, p, g, states, ValueError, either(rule.state[0], rule.state[-1]), extra=(base,))


def test_overlap_through_2d_view():
    """A 2-D param and a 1-D state into the same memory."""
    base = np.linspace(1.0, 2.0, 16)
    p = base[:12].reshape(3, 4)
    assert_rejected("momentum", p, np.ones((3, 4)), [base[4:16].reshape(3, 4)], ValueError,
                    either("param", "momentum_buffer"), extra=(base,), momentum=0.9)


@pytest.mark.parametrize("name", MULTI_STATE)
def test_disjoint_views_of_one_buffer_are_fine(name):
    """Adjacent (touching, not overlapping) slices of one allocation are legitimate."""
    rule = BY_NAME[name]
    p, g, states = buffers(name)
    n = p.size
    base = np.empty((2 + len(states)) * n)
    views = [base[k * n:(k + 1) * n] for k in range(2 + len(states))]
    for v, a in zip(views, [p, g] + states):
        v[...] = a
    getattr(kernels, name)(p, g, *states, step=2)
    getattr(kernels, name)(views[0], views[1], *views[2:], step=2)
    for v, a in zip(views, [p, g] + states):
        assert_bitwise(v, a)
    assert len(rule.state) == len(views) - 2


# --- argument counts and step ----------------------------------------------------------------
@pytest.mark.parametrize("name,delta", [(n, +1) for n in RULE_NAMES] + [(n, -1) for n in STATEFUL])
def test_wrong_number_of_states(name, delta):
    p, g, states = buffers(name)
    states = states[:-1] if delta < 0 else states + [np.zeros_like(p)]
    assert_rejected(name, p, g, states, TypeError, r"state arrays")


@pytest.mark.parametrize("step", [0, -1, -(2**70), 1.0, 2.5, "1", None, True, False, [1], math.nan],
                         ids=repr)
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "nadam", "radam"])
def test_bad_step(name, step):
    p, g, states = buffers(name)
    assert_rejected(name, p, g, states, (TypeError, ValueError), word("step"), step=step)


def test_missing_step():
    p, g, states = buffers("adam")
    arrays = [p, g] + states
    before = [a.copy() for a in arrays]
    with pytest.raises(TypeError, match=word("step")):
        kernels.adam(p, g, *states)
    for a, b in zip(arrays, before):
        assert_bitwise(a, b)


# --- hyper-parameters --------------------------------------------------------------------------
def invalid_values(h):
    """(value, exception) pairs outside the Hyper's valid range, or of the wrong type."""
    out = [(math.nan, ValueError), (-math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
           (np.float64(math.nan), ValueError), ("0.5", TypeError), (1 + 0j, TypeError), (True, TypeError),
           (np.array(0.5), TypeError), ([0.5], TypeError)]
    if h.name != "clip_value":
        out.append((None, TypeError))               # None means "no clipping" for clip_value
    if math.isfinite(h.lo):
        out += [(h.lo - 1.0, ValueError), (float(np.nextafter(h.lo, -math.inf)), ValueError)]
        if h.lo_open:
            out.append((h.lo, ValueError))
    if math.isfinite(h.hi):
        out += [(h.hi + 1.0, ValueError), (float(np.nextafter(h.hi, math.inf)), ValueError)]
        if h.hi_open:
            out.append((h.hi, ValueError))
    return out


def hyper_cases():
    cases = []
    for rule in RULES:
        for h in (kernels.LR, kernels.WEIGHT_DECAY, kernels.CLIP_VALUE) + tuple(rule.hyper):
            for value, exc in invalid_values(h):
                cases.append(pytest.param(rule.name, h.name, value, exc, id=f"{rule.name}-{h.name}={value!r}"))
    return cases


@pytest.mark.parametrize("name,hyper,value,exc", hyper_cases())
def test_invalid_hyper_parameter(name, hyper, value, exc):
    p, g, states = buffers(name)
    assert_rejected(name, p, g, states, exc, word(hyper), **{hyper: value})


def test_adam_family_betas():
    """The betas must be rejected at 1 (Adam family: [0, 1)) and accepted at 0."""
    assert BY_NAME["adam"].hyper[0].hi_open and BY_NAME["adam"].hyper[1].hi_open
    for name in ("adam", "adam_amsgrad", "nadam", "nadam_optax", "adamax", "radam"):
        p, g, states = buffers(name)
        assert_rejected(name, p, g, states, ValueError, word("beta1"), beta1=1.0)
        assert_rejected(name, p, g, states, ValueError, word("beta2"), beta2=1.0)
        assert_rejected(name, p, g, states, ValueError, word("beta1"), beta1=-0.1)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_boundary_values_are_accepted(name):
    """The closed ends of every range are valid, and the call then writes."""
    rule = BY_NAME[name]
    for h in rule.hyper:
        for x, open_ in ((h.lo, h.lo_open), (h.hi, h.hi_open)):
            if math.isfinite(x) and not open_:
                p, g, states = buffers(name)
                before = p.copy()
                # a nonzero momentum, so that dampening=1 still moves the parameter
                base = {"momentum": 0.5} if "momentum" in rule.hyper_names and h.name != "momentum" else {}
                getattr(kernels, name)(p, g, *states, step=3, lr=0.1, **{**base, h.name: x})
                assert not np.array_equal(p, before), f"{h.name}={x}: nothing written"


@pytest.mark.parametrize("flag", ["maximize", "decoupled_weight_decay"])
@pytest.mark.parametrize("value", [2, -1, 0.5, 1.0, "yes", None, [True]], ids=repr)
@pytest.mark.parametrize("name", ["sgd", "adam", "lion"])
def test_bad_bool_flag(name, flag, value):
    p, g, states = buffers(name)
    assert_rejected(name, p, g, states, TypeError, word(flag), **{flag: value})


@pytest.mark.parametrize("name", RULE_NAMES)
def test_unknown_keyword(name):
    p, g, states = buffers(name)
    assert_rejected(name, p, g, states, TypeError, word("betas"), betas=(0.9, 0.99))
    assert_rejected(name, p, g, states, TypeError, word("lr_dcay"), lr_dcay=0.1)
    # a hyper-parameter of another rule is unknown here too
    foreign = next(h.name for r in RULES for h in r.hyper if h.name not in BY_NAME[name].hyper_names)
    assert_rejected(name, p, g, states, TypeError, word(foreign), **{foreign: 0.5})
    if name != "nadam":
        assert_rejected(name, p, g, states, TypeError, word("mu_product"), mu_product=0.5)


# --- inputs that once slipped through -----------------------------------------------------
@pytest.mark.parametrize("which", ["param", "state"])
def test_param_or_state_that_cannot_be_written_in_place(which):
    p, g, states = buffers("momentum")
    if which == "param":
        p = p.tolist()
    else:
        states = [states[0].tolist()]
    with pytest.raises((TypeError, ValueError), match=word(which if which == "param" else "momentum_buffer")):
        kernels.momentum(p, g, *states, step=2, momentum=0.9)
        raise AssertionError("accepted: the update went into a temporary copy")


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5, "x"], ids=repr)
def test_nadam_mu_product_is_validated(value):
    p, g, states = buffers("nadam")
    assert_rejected("nadam", p, g, states, (TypeError, ValueError), word("mu_product"), mu_product=value)


@pytest.mark.parametrize("value", [-1, 2.5, "2"], ids=repr)
def test_threads_is_validated(value):
    p, g, states = buffers("adam")
    assert_rejected("adam", p, g, states, (TypeError, ValueError), word("threads"), threads=value)


def test_lion_decays_decoupled_by_default():
    # ALGORITHMS.md: p = p (1 - lr λ) - lr sign(c); the low-level function follows the rule
    p = np.full(5, 2.0)
    m = np.zeros(5)
    kernels.lion(p, np.ones(5), m, step=1, lr=0.1, weight_decay=0.5)
    np.testing.assert_array_equal(p, 2.0 * (1 - 0.1 * 0.5) - 0.1)


# --- the C fast path (driver.arrays_ok) must never accept what the full checks reject ----------
class Subclass(np.ndarray):
    pass


def fast_path_cases():
    """(label, param, grad, states, ok) for one Adam call (2 states)."""
    def fresh(dtype=np.float32, shape=(6, 5)):
        return [np.zeros(shape, dtype) for _ in range(4)]

    p, g, m, v = fresh()
    yield "plain float32", p, g, (m, v), True
    p, g, m, v = fresh(np.float64, (0,))
    yield "empty float64", p, g, (m, v), True
    p, g, m, v = fresh()
    g.flags.writeable = False
    yield "read-only grad", p, g, (m, v), True
    buf = np.zeros(40, np.float32)
    yield "disjoint views", buf[:10], buf[10:20], (buf[20:30], buf[30:]), True
    p, g, m, v = fresh()
    yield "grad is param", p, p, (m, v), False
    yield "state overlaps param", buf[:20], g.ravel()[:20], (buf[19:39], m.ravel()[:20]), False
    yield "float16", *[a.astype(np.float16) for a in (p, g)], (m, v), False
    yield "mixed dtypes", p, g.astype(np.float64), (m, v), False
    yield "int grad", p, g.astype(np.int32), (m, v), False
    yield "byte-swapped", p, g.astype(">f4"), (m, v), False
    yield "shape mismatch", p, g.reshape(5, 6), (m, v), False
    yield "ndim mismatch", p, g.ravel(), (m, v), False
    yield "strided grad", p, np.zeros((6, 10), np.float32)[:, ::2], (m, v), False
    yield "Fortran state", p, g, (np.asfortranarray(m), v), False
    ro = np.zeros_like(m)
    ro.flags.writeable = False
    yield "read-only state", p, g, (ro, v), False
    ro_p = np.zeros_like(p)
    ro_p.flags.writeable = False
    yield "read-only param", ro_p, g, (m, v), False
    raw = np.zeros(31 * 4 + 1, np.uint8)[1:].view(np.float32)
    yield "unaligned param", raw[:30].reshape(6, 5), g, (m, v), False
    sub = [a.view(Subclass) for a in (p, g, m, v)]
    yield "subclass", sub[0], sub[1], tuple(sub[2:]), False
    yield "list", p, g.tolist(), (m, v), False
    yield "too many arrays", p, g, tuple(np.zeros_like(p) for _ in range(7)), False


@pytest.mark.parametrize("label,p,g,states,ok", list(fast_path_cases()), ids=lambda x: x if isinstance(x, str) else "")
def test_fast_array_check_agrees_with_the_full_checks(label, p, g, states, ok):
    from fastopt._kernels.driver import arrays_ok
    assert arrays_ok(p, g, states) is ok, label
    if len(states) != 2:
        return
    try:
        kernels._checked_arrays(BY_NAME["adam"], p, g, states)
    except (TypeError, ValueError):
        assert not ok, label                     # what the fast path takes, the full path takes too
    else:
        # what the fast path refused, the full path must too; a subclass is an ndarray
        # all the same: checked in full, then accepted
        assert ok or label == "subclass", label


def boundary_values(h):
    for x in (h.lo, h.hi, h.default):
        if math.isfinite(x):
            yield from (x, math.nextafter(x, -math.inf), math.nextafter(x, math.inf))
    yield from (0.0, 1.0, -1.0, 1e300, -1e300, math.inf, -math.inf, math.nan)


@pytest.mark.parametrize("h", sorted({h for r in RULES for h in r.hyper if h.kind == "float"}
                                    | {LR, WEIGHT_DECAY, CLIP_VALUE}, key=lambda h: h.name), ids=lambda h: h.name)
def test_hyper_check_fast_path_agrees_with_the_general_one(h):
    for x in boundary_values(h):
        def outcome(value):
            try:
                return h.check(value)
            except (TypeError, ValueError) as exc:
                return type(exc)
        fast, slow = outcome(x), outcome(np.float64(x))          # np.float64 takes the general path
        assert fast == slow or (fast != fast and slow != slow), (h.name, x, fast, slow)


@pytest.mark.parametrize("value", [True, False, 1, 0, 2, 0.5, 1.0, None, "yes"])
def test_bool_check_fast_path_agrees_with_the_general_one(value):
    from fastopt.rules import FLAG

    def outcome(v):
        try:
            return FLAG.check(v, "flag")
        except (TypeError, ValueError) as exc:
            return type(exc)
    general = {True: np.True_, False: np.False_}.get(value, value) if isinstance(value, bool) else value
    assert outcome(value) == outcome(general)                 # np.bool_ takes the general path
    assert outcome(value) == ((1.0 if value else 0.0) if value in (0, 1) and not isinstance(value, float)
                              else TypeError)
