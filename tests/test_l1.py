"""The L1 / elastic-net option (group keys ``l1``, ``l1_coupled``; ``fastopt.kernels``'
``l1=``, ``l1_coupled=``) on every rule: the kernels against the NumPy reference bit for
bit (float32 and float64, odd lengths, many steps, with and without gradient noise and
weight decay), the same bits for any thread count, exact zeros, scikit-learn's Lasso as
the peer, and bad input refused before anything is written."""
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastopt
import fastopt.reference as ref
from fastopt.reference import rules as R
from fastopt.rules import BY_NAME
from optim_helpers import assert_unchanged, snapshot

F32, F64 = np.float32, np.float64

CLASSES = [("SGD", {}), ("SGD", dict(momentum=0.9, nesterov=True)), ("Adagrad", {}),
           ("RMSprop", dict(centered=True, momentum=0.3)), ("Adadelta", {}), ("Adam", {}),
           ("AdamW", dict(amsgrad=True)), ("AMSGrad", {}), ("NAdam", {}), ("NAdam", dict(variant="optax")),
           ("Adamax", {}), ("RAdam", {}), ("Lion", dict(weight_decay=0.1)), ("Momentum", {}), ("Nesterov", {}),
           ("AdaBelief", {}), ("AdEMAMix", {})]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in CLASSES]
LAYOUT = [[(0, F32), (1, F32), (7, F32), (1023, F32), (9001, F32)], [(1, F64), (7, F64), (1023, F64), (0, F64)]]


def make(mod, name, kw, init, l1, coupled, **options):
    rng = np.random.default_rng(init)
    groups = [[(0.05 * rng.standard_normal(n)).astype(dt) for n, dt in g] for g in LAYOUT]
    spec = [{"params": groups[0], "l1": l1, "l1_coupled": coupled},
            {"params": groups[1], "lr": 0.02, "weight_decay": 0.01, "l1": 2 * l1, "l1_coupled": coupled}]
    return getattr(mod, name)(spec, lr=0.01, **kw, **options)


def run_pair(name, kw, l1, coupled, steps=60, **options):
    a, b = make(fastopt, name, kw, 1, l1, coupled, **options), make(ref, name, kw, 1, l1, coupled, **options)
    rng = np.random.default_rng(2)
    for t in range(steps):
        gs = [(0.1 * rng.standard_normal(p.shape)).astype(p.dtype) for p in a.params]
        gs[2 if t % 4 else 6] = None
        a.step(gs), b.step(gs)
    return a, b


@pytest.mark.parametrize("coupled", [False, True], ids=["proximal", "coupled"])
@pytest.mark.parametrize("name,kw", CLASSES, ids=IDS)
def test_every_rule_with_l1_matches_the_reference_bitwise(name, kw, coupled):
    a, b = run_pair(name, kw, 3e-3, coupled)
    for x, y in zip(a.params, b.params):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    for sa, sb in zip(a.state, b.state):
        for key in sa:
            if isinstance(sa[key], np.ndarray):
                assert sa[key].tobytes() == sb[key].tobytes(), key
    if not coupled and name == "SGD" and not kw:
        # small weights and gradients: the proximal step has made exact zeros
        assert sum(int(np.sum(p == 0)) for p in a.params) > 0


@pytest.mark.parametrize("name,kw", [("Adam", {}), ("SGD", dict(momentum=0.9)), ("Lion", {}), ("Adagrad", {})])
@pytest.mark.parametrize("coupled", [False, True], ids=["proximal", "coupled"])
def test_l1_with_gradient_noise_matches_the_reference(name, kw, coupled):
    a, b = run_pair(name, kw, 3e-3, coupled, steps=40, grad_noise=0.01, seed=5)
    for x, y in zip(a.params, b.params):
        np.testing.assert_array_equal(x, y)     # the reference draws the noise with C's log/cos


@pytest.mark.parametrize("coupled", (False, True))
@pytest.mark.parametrize("rows", (False, True), ids=("dense", "rows"))
def test_the_half_that_is_off_leaves_nan_and_signed_zeros_alone(coupled, rows):
    # coupled: no threshold, so a NaN parameter stays NaN and -0.0 stays -0.0; proximal:
    # no subgradient, so a -0.0 gradient stays -0.0 (beta1 = 0 shows it in exp_avg)
    p0 = np.array([[np.nan, -0.0, 1.0, -0.0], [2.0, np.nan, -0.0, 0.5]], np.float32)
    g = np.array([[0.0, 0.0, -0.0, -0.0], [-0.0, 1.0, 0.0, -0.0]], np.float32)
    out = []
    for mod in (fastopt, ref):
        w = p0.copy()
        opt = mod.Adam([w], lr=0.1, betas=(0.0, 0.9), l1=0.01, l1_coupled=coupled)
        for _ in range(2):
            opt.step([fastopt.SparseGrad(np.array([1, 0]), g[::-1].copy()) if rows else g.copy()])
        out.append((w, opt.state[0]["exp_avg"].copy()))
    for a, b in zip(out[0], out[1]):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), (a, b)
    if coupled:
        assert np.isnan(out[0][0][0, 0]) and np.isnan(out[0][0][1, 1])


def test_proximal_soft_threshold_formula_and_exact_zeros():
    p = np.array([1.0, -1.0, 0.004, -0.004, 0.0, 0.5], F32)
    g = np.zeros_like(p)
    fastopt.SGD([p], lr=0.1, l1=0.05).step([g])           # threshold lr λ1 = 0.005
    thr = F32(0.1 * 0.05)
    np.testing.assert_array_equal(p, np.array([1 - thr, -1 + thr, 0, 0, 0, F32(0.5) - thr], F32))
    assert not np.signbit(p[2:5]).any()                    # the zeros are +0


def test_coupled_subgradient_formula():
    p = np.array([2.0, -2.0, 0.0])
    g = np.array([0.5, 0.5, 0.5])
    fastopt.SGD([p], lr=0.1, l1=0.3, l1_coupled=True).step([g])
    np.testing.assert_array_equal(p, [2.0 - 0.1 * 0.8, -2.0 - 0.1 * 0.2, -0.1 * 0.5])


def test_elastic_net_is_l1_plus_weight_decay():
    for decoupled in (False, True):
        a = np.linspace(0, 0.1, 11)          # Adam's first step is ≈ lr = 0.05: 0.05 lands on 0
        b = a.copy()
        g = np.full(11, 0.1)
        fastopt.Adam([a], lr=0.05, weight_decay=0.1, decoupled_weight_decay=decoupled, l1=0.2).step([g])
        ref.Adam([b], lr=0.05, weight_decay=0.1, decoupled_weight_decay=decoupled, l1=0.2).step([g])
        assert a.tobytes() == b.tobytes()
        assert np.sum(a == 0) >= 1


def test_l1_off_is_the_plain_kernel_bit_for_bit():
    # l1=0 takes the unchanged loop: same bits as a run that never heard of L1
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(5000).astype(F32)
    a, b = x0.copy(), x0.copy()
    oa, ob = fastopt.Adam([a], lr=1e-2), fastopt.Adam([b], lr=1e-2, l1=0.0, l1_coupled=True)
    for _ in range(20):
        g = rng.standard_normal(5000).astype(F32)
        oa.step([g]), ob.step([g])
    assert a.tobytes() == b.tobytes()


def test_kernels_function_l1_matches_reference_rules():
    rng = np.random.default_rng(3)
    for dt in (F32, F64):
        p = rng.standard_normal(1001).astype(dt)
        m, v = np.zeros_like(p), np.zeros_like(p)
        q, mq, vq = p.copy(), m.copy(), v.copy()
        for t in range(1, 30):
            g = rng.standard_normal(1001).astype(dt)
            fastopt.kernels.adam(p, g, m, v, step=t, lr=1e-2, l1=0.5)
            gq = R.preprocess(q, g, lr=1e-2)
            R.adam(q, gq, mq, vq, t=t, lr=1e-2)
            R.l1_proximal(q, 1e-2 * 0.5)
            assert p.tobytes() == q.tobytes()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3000), f32=st.booleans(), lr=st.floats(1e-4, 0.5), l1=st.floats(0.0, 2.0),
       coupled=st.booleans(), rule=st.sampled_from(sorted(BY_NAME)),
       seed=st.integers(0, 2**16))
def test_kernels_l1_hypothesis(n, f32, lr, l1, coupled, rule, seed):
    dt = F32 if f32 else F64
    r = BY_NAME[rule]
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dt)
    states = [np.zeros_like(p) for _ in r.state]
    q, qs = p.copy(), [s.copy() for s in states]
    fn = getattr(fastopt.kernels, rule)
    for t in range(1, 4):
        g = rng.standard_normal(n).astype(dt)
        fn(p, g, *states, step=t, lr=lr, l1=l1, l1_coupled=coupled)
        gq = R.preprocess(q, g, lr=lr)
        if coupled and l1:
            gq = R.l1_subgradient(q, gq, l1)
        from fastopt.reference.engine import reference_function
        kwargs = {h.name: float(h.default) for h in r.hyper}
        reference_function(r)(q, gq, **dict(zip(r.state, qs)), t=t, lr=lr, **kwargs)
        if l1 and not coupled:
            R.l1_proximal(q, lr * l1)
        assert p.tobytes() == q.tobytes()


@pytest.mark.parametrize("coupled", [False, True])
def test_same_bits_for_any_thread_count(coupled, restore_threads):
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal(1_000_003).astype(F32)
    gs = [rng.standard_normal(x0.size).astype(F32) for _ in range(3)]
    results = []
    for threads in (1, 2, 3, 7):
        fastopt.set_num_threads(threads)
        x = x0.copy()
        opt = fastopt.Adam([x], lr=1e-2, l1=0.3, l1_coupled=coupled)
        for g in gs:
            opt.step([g])
        results.append(x.tobytes())
    assert len(set(results)) == 1


@pytest.fixture
def restore_threads():
    yield
    fastopt.set_num_threads(0)          # back to following OMP_NUM_THREADS / torch


def test_proximal_sgd_finds_sklearns_lasso():
    if importlib.util.find_spec("sklearn") is None:   # found, not imported: it loads its own libgomp
        pytest.skip("needs scikit-learn")
    from subproc import assert_ok, run_snippet
    # in a fresh interpreter: scikit-learn loads its own vendored libgomp
    assert_ok(run_snippet("""
        import numpy as np
        import fastopt
        from sklearn import linear_model as lm
        rng = np.random.default_rng(0)
        X = rng.standard_normal((200, 30))
        w_true = np.where(rng.random(30) < 0.3, rng.standard_normal(30) * 3, 0.0)
        y = X @ w_true + 0.1 * rng.standard_normal(200)
        alpha = 0.1
        sk = lm.Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y)
        w = np.zeros(30)
        L = np.linalg.eigvalsh(X.T @ X / 200).max()
        opt = fastopt.SGD([w], lr=1.0 / L, l1=alpha)     # ISTA: a gradient step, then the soft-threshold
        for _ in range(3000):
            opt.step([X.T @ (X @ w - y) / 200])
        np.testing.assert_allclose(w, sk.coef_, atol=1e-8)
        np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
        assert np.sum(w == 0) >= 10
        print("OK")
    """, timeout=300))


def test_l1_keys_in_state_dict_and_old_state_dicts_load():
    w = np.ones(5)
    opt = fastopt.Adam([w], lr=0.1, l1=0.01)
    opt.step([np.ones(5)])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["l1"] == 0.01 and sd["param_groups"][0]["l1_coupled"] is False
    other = fastopt.Adam([np.ones(5)], lr=0.1)
    other.load_state_dict(sd)
    assert other.param_groups[0]["l1"] == 0.01
    for key in ("l1", "l1_coupled"):
        del sd["param_groups"][0][key]                      # a state_dict saved before L1 existed
    fastopt.Adam([np.ones(5)], lr=0.1).load_state_dict(sd)


def test_bad_l1_is_refused_before_anything_changes():
    w = np.ones(4, F32)
    with pytest.raises(ValueError, match="l1"):
        fastopt.Adam([w], l1=-0.1)
    with pytest.raises(ValueError, match="l1"):
        fastopt.Adam([w], l1=float("nan"))
    with pytest.raises((TypeError, ValueError), match="l1_coupled"):
        fastopt.Adam([w], l1=0.1, l1_coupled="yes")
    opt = fastopt.Adam([w], lr=0.1)
    before = snapshot(opt)
    opt.param_groups[0]["l1"] = -1.0
    with pytest.raises(ValueError, match="l1"):
        opt.step([np.ones(4, F32)])
    assert_unchanged(opt, before, groups_too=False)
    m, v = np.zeros(4, F32), np.zeros(4, F32)
    with pytest.raises(ValueError, match="l1"):
        fastopt.kernels.adam(w, np.ones(4, F32), m, v, step=1, l1=-1.0)
    assert np.all(w == 1) and np.all(m == 0)
