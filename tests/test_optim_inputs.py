"""Bad input to the optimizer classes: construction, add_param_group, step() and
hyper-parameters set at run time. Every failure raises TypeError or ValueError with a
message naming the problem and changes nothing (parameters, state, steps, groups,
schedule position). Also: parameters given through the buffer protocol (bytearray,
array.array, memoryview, ctypes, torch) are updated in place.
"""
import array
import ctypes

import numpy as np
import pytest

import fastopt
from optim_helpers import assert_unchanged, snapshot

F32, F64 = np.float32, np.float64


def z(n=4, dt=F64):
    return np.zeros(n, dt)


# --- construction ------------------------------------------------------------------------------
def _ro():
    a = z()
    a.flags.writeable = False
    return a


def _shared():
    a = z(10)
    return [a[:6], a[4:]]


def _reshaped():
    a = z(12)
    return [a, a.reshape(3, 4)]


def _ro_buffer():
    return np.frombuffer(bytes(16), F32)


CONSTRUCTION = [
    # (id, callable, exception, message regex)
    ("empty list", lambda: fastopt.SGD([]), ValueError, "empty"),
    ("empty group", lambda: fastopt.Adam([{"params": []}]), ValueError, "empty"),
    ("group without params", lambda: fastopt.Adam([{"lr": 0.1}]), ValueError, "params"),
    ("arrays and dicts mixed", lambda: fastopt.Adam([z(), {"params": [z()]}]), TypeError, "all arrays or all"),
    ("int array", lambda: fastopt.SGD([np.zeros(3, int)]), TypeError, "int64"),
    ("float16 array", lambda: fastopt.Adam([np.zeros(3, np.float16)]), TypeError, "float16"),
    ("complex array", lambda: fastopt.Adam([np.zeros(3, complex)]), TypeError, "complex"),
    ("bool array", lambda: fastopt.Adam([np.zeros(3, bool)]), TypeError, "bool"),
    ("object array", lambda: fastopt.Adam([np.array([1.0, None])]), TypeError, "params"),
    ("string", lambda: fastopt.Adam(["abc"]), TypeError, "params"),
    ("strided", lambda: fastopt.SGD([z(10)[::2]]), ValueError, "C-contiguous"),
    ("Fortran order", lambda: fastopt.SGD([np.zeros((3, 4), order="F")]), ValueError, "C-contiguous"),
    ("transposed", lambda: fastopt.SGD([np.zeros((3, 4)).T]), ValueError, "C-contiguous"),
    ("read-only", lambda: fastopt.SGD([_ro()]), ValueError, "read-only"),
    ("read-only buffer", lambda: fastopt.SGD([_ro_buffer()]), ValueError, "read-only"),
    ("same array twice", lambda: (lambda a: fastopt.SGD([a, a]))(z()), ValueError, "share memory"),
    ("same array in two groups", lambda: (lambda a: fastopt.Adam([{"params": [a]}, {"params": [a]}]))(z()),
     ValueError, "share memory"),
    ("overlapping views", lambda: fastopt.SGD(_shared()), ValueError, "share memory"),
    ("reshaped view", lambda: fastopt.SGD(_reshaped()), ValueError, "share memory"),
    ("unknown group key", lambda: fastopt.SGD([{"params": [z()], "betas": (0.9, 0.9)}]), ValueError,
     "unknown keys.*betas"),
    ("unknown group key Adam", lambda: fastopt.Adam([{"params": [z()], "momentum": 0.9}]), ValueError,
     "unknown keys.*momentum"),
    ("lr negative", lambda: fastopt.SGD([z()], lr=-1.0), ValueError, "lr"),
    ("lr nan", lambda: fastopt.Adam([z()], lr=float("nan")), ValueError, "lr"),
    ("lr inf", lambda: fastopt.Adam([z()], lr=float("inf")), ValueError, "lr"),
    ("lr string", lambda: fastopt.Adam([z()], lr="0.1"), TypeError, "lr"),
    ("lr bool", lambda: fastopt.Adam([z()], lr=True), TypeError, "lr"),
    ("lr None", lambda: fastopt.Adam([z()], lr=None), TypeError, "lr"),
    ("group lr negative", lambda: fastopt.Adam([{"params": [z()]}, {"params": [z()], "lr": -0.1}]), ValueError,
     r"param_groups\[1\]\['lr'\]"),
    ("beta1 = 1", lambda: fastopt.Adam([z()], betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
    ("beta2 = 1", lambda: fastopt.Adam([z()], betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    ("beta1 = 1.5", lambda: fastopt.NAdam([z()], betas=(1.5, 0.9)), ValueError, r"betas\[0\]"),
    ("beta negative", lambda: fastopt.Adamax([z()], betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    ("beta nan", lambda: fastopt.RAdam([z()], betas=(float("nan"), 0.9)), ValueError, r"betas\[0\]"),
    ("Lion beta > 1", lambda: fastopt.Lion([z()], betas=(0.9, 1.1)), ValueError, r"betas\[1\]"),
    ("betas too short", lambda: fastopt.Adam([z()], betas=(0.9,)), ValueError, "betas"),
    ("betas a number", lambda: fastopt.Adam([z()], betas=0.9), ValueError, "betas"),
    ("eps negative", lambda: fastopt.Adam([z()], eps=-1e-8), ValueError, "eps"),
    ("eps nan", lambda: fastopt.RMSprop([z()], eps=float("nan")), ValueError, "eps"),
    ("eps string", lambda: fastopt.Adagrad([z()], eps="small"), TypeError, "eps"),
    ("momentum negative", lambda: fastopt.SGD([z()], momentum=-0.1), ValueError, "momentum"),
    ("momentum > 1", lambda: fastopt.SGD([z()], momentum=1.5), ValueError, "momentum"),
    ("momentum nan", lambda: fastopt.RMSprop([z()], momentum=float("nan")), ValueError, "momentum"),
    ("dampening > 1", lambda: fastopt.SGD([z()], momentum=0.9, dampening=2.0), ValueError, "dampening"),
    ("weight_decay negative", lambda: fastopt.AdamW([z()], weight_decay=-0.01), ValueError, "weight_decay"),
    ("weight_decay nan", lambda: fastopt.SGD([z()], weight_decay=float("nan")), ValueError, "weight_decay"),
    ("weight_decay inf", lambda: fastopt.SGD([z()], weight_decay=float("inf")), ValueError, "weight_decay"),
    ("clip_value 0", lambda: fastopt.SGD([z()], clip_value=0.0), ValueError, "clip_value"),
    ("clip_value negative", lambda: fastopt.Adam([z()], clip_value=-1.0), ValueError, "clip_value"),
    ("clip_value nan", lambda: fastopt.Adam([z()], clip_value=float("nan")), ValueError, "clip_value"),
    ("clip_norm 0", lambda: fastopt.SGD([z()], clip_norm=0.0), ValueError, "clip_norm"),
    ("clip_norm negative", lambda: fastopt.Adam([z()], clip_norm=-1.0), ValueError, "clip_norm"),
    ("clip_norm nan", lambda: fastopt.Adam([z()], clip_norm=float("nan")), ValueError, "clip_norm"),
    ("clip_norm string", lambda: fastopt.Adam([z()], clip_norm="1"), TypeError, "clip_norm"),
    ("grad_noise 0", lambda: fastopt.SGD([z()], grad_noise=0.0), ValueError, "grad_noise"),
    ("grad_noise negative", lambda: fastopt.SGD([z()], grad_noise=-0.1), ValueError, "grad_noise"),
    ("grad_noise gamma negative", lambda: fastopt.SGD([z()], grad_noise=(0.1, -1.0)), ValueError, "gamma"),
    ("grad_noise nan", lambda: fastopt.SGD([z()], grad_noise=float("nan")), ValueError, "grad_noise"),
    ("seed float", lambda: fastopt.SGD([z()], seed=1.5), TypeError, "seed"),
    ("seed bool", lambda: fastopt.SGD([z()], seed=True), TypeError, "seed"),
    ("nonfinite unknown", lambda: fastopt.SGD([z()], nonfinite="warn"), ValueError, "nonfinite"),
    ("nonfinite None", lambda: fastopt.SGD([z()], nonfinite=None), ValueError, "nonfinite"),
    ("unknown option", lambda: fastopt.SGD([z()], clipnorm=1.0), TypeError, "clipnorm"),
    ("maximize 2", lambda: fastopt.Adam([z()], maximize=2), TypeError, "maximize"),
    ("maximize string", lambda: fastopt.SGD([z()], maximize="yes"), TypeError, "maximize"),
    ("nesterov with dampening", lambda: fastopt.SGD([z()], momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening"),
    ("nesterov without momentum", lambda: fastopt.SGD([z()], nesterov=True), ValueError, "momentum"),
    ("Nesterov class with dampening", lambda: fastopt.Nesterov([z()], dampening=0.1), (TypeError, ValueError),
     "dampening"),
    ("Nesterov class momentum 0", lambda: fastopt.Nesterov([z()], momentum=0.0), ValueError, "momentum"),
    ("nesterov string", lambda: fastopt.SGD([z()], momentum=0.9, nesterov="yes"), TypeError, "nesterov"),
    ("NAdam variant", lambda: fastopt.NAdam([z()], variant="keras"), ValueError, "variant"),
    ("NAdam momentum_decay", lambda: fastopt.NAdam([z()], momentum_decay=-1.0), ValueError, "momentum_decay"),
    ("AdamW coupled", lambda: fastopt.AdamW([{"params": [z()], "decoupled_weight_decay": False}]), ValueError,
     "decoupled_weight_decay"),
    ("Lion coupled", lambda: fastopt.Lion([{"params": [z()], "decoupled_weight_decay": False}]), ValueError,
     "decoupled_weight_decay"),
    ("Adagrad lr_decay", lambda: fastopt.Adagrad([z()], lr_decay=-0.1), ValueError, "lr_decay"),
    ("Adagrad initial accumulator", lambda: fastopt.Adagrad([z()], initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value"),
    ("RMSprop alpha", lambda: fastopt.RMSprop([z()], alpha=1.5), ValueError, "alpha"),
    ("Adadelta rho", lambda: fastopt.Adadelta([z()], rho=-0.5), ValueError, "rho"),
    ("bad in second group only", lambda: fastopt.Adam([{"params": [z()]}, {"params": [z()], "eps": -1.0}]),
     ValueError, "eps"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in CONSTRUCTION], ids=[c[0] for c in CONSTRUCTION])
def test_bad_construction_raises(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_failed_construction_writes_nothing():
    a = np.arange(5.0)
    b = np.arange(3, dtype=F32)
    with pytest.raises(ValueError):
        fastopt.Adam([{"params": [a]}, {"params": [b], "betas": (2.0, 0.9)}])
    np.testing.assert_array_equal(a, np.arange(5.0))
    np.testing.assert_array_equal(b, np.arange(3, dtype=F32))
    # and the arrays are free to be used by a new optimizer
    fastopt.Adam([a, b]).step([np.ones(5), np.ones(3, F32)])


# --- snapshots -------------------------------------------------------------------------------------
def make_opt(name="Adam", **kw):
    from fastopt.schedules import CosineAnnealing
    rng = np.random.default_rng(0)
    ps32 = [rng.standard_normal(n).astype(F32) for n in (8, 4, 1000)]
    ps64 = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    opt = getattr(fastopt, name)([{"params": ps32, "lr": CosineAnnealing(0.01, 20)},
                                  {"params": ps64, "lr": 0.02}], **kw)
    good = [np.ones(p.shape, p.dtype) for p in opt.params]
    for _ in range(2):
        opt.step(good)
    return opt, good


def twin_check(opt, name="Adam", **kw):
    """After a failure the optimizer continues exactly like one that never saw it."""
    twin, good = make_opt(name, **kw)
    gs = [np.full(p.shape, 0.5, p.dtype) for p in opt.params]
    opt.step(gs), twin.step(gs)
    for x, y in zip(opt.params, twin.params):
        assert x.tobytes() == y.tobytes()


# --- step() input ----------------------------------------------------------------------------------
def _grads_with(k, value):
    def make(opt, good):
        gs = list(good)
        gs[k] = value(opt) if callable(value) else value
        return gs
    return make


STEP = [
    ("no grads", lambda opt, good: [], ValueError, "expected 5 gradients"),
    ("too few", lambda opt, good: good[:4], ValueError, "expected 5"),
    ("too many", lambda opt, good: good + [good[0].copy()], ValueError, "expected 5"),
    ("not a sequence", lambda opt, good: (g for g in good), TypeError, None),
    ("f64 for f32", _grads_with(0, np.ones(8, F64)), TypeError, r"grads\[0\].*float64"),
    ("f32 for f64", _grads_with(4, np.ones(5, F32)), TypeError, r"grads\[4\].*float32"),
    ("int grad", _grads_with(1, np.ones(4, int)), TypeError, r"grads\[1\]"),
    ("python list for f32", _grads_with(1, [1.0, 2.0, 3.0, 4.0]), TypeError, r"grads\[1\]"),
    ("string grad", _grads_with(1, "abcd"), TypeError, r"grads\[1\]"),
    ("wrong size", _grads_with(2, np.ones(999, F32)), ValueError, r"grads\[2\].*shape"),
    ("wrong shape", _grads_with(3, np.ones((4, 3))), ValueError, r"grads\[3\].*shape"),
    ("flattened", _grads_with(3, np.ones(12)), ValueError, r"grads\[3\].*shape"),
    ("0-d", _grads_with(4, np.array(1.0)), ValueError, r"grads\[4\].*shape"),
    ("strided", _grads_with(2, np.ones(2000, F32)[::2]), ValueError, r"grads\[2\].*contiguous"),
    ("Fortran order", _grads_with(3, np.ones((4, 3)).T), ValueError, r"grads\[3\].*contiguous"),
    ("the param itself", _grads_with(0, lambda opt: opt.params[0]), ValueError, r"grads\[0\].*shares memory"),
    ("view of the param", _grads_with(3, lambda opt: opt.params[3].reshape(3, 4)[:, :]), ValueError,
     "shares memory"),
    ("another param", _grads_with(1, lambda opt: opt.params[0][2:6]), ValueError, r"grads\[1\].*shares memory"),
    ("param of other group", _grads_with(4, lambda opt: opt.params[3].reshape(-1)[:5]), ValueError,
     "shares memory"),
    ("exp_avg", _grads_with(0, lambda opt: opt.state[0]["exp_avg"]), ValueError, "shares memory"),
    ("exp_avg_sq", _grads_with(3, lambda opt: opt.state[3]["exp_avg_sq"]), ValueError, "shares memory"),
    ("slice of state", _grads_with(1, lambda opt: opt.state[2]["exp_avg_sq"][10:14]), ValueError, "shares memory"),
    ("state of other param", _grads_with(4, lambda opt: opt.state[3]["exp_avg"].reshape(-1)[7:]), ValueError,
     "shares memory"),
    ("bad last grad only", _grads_with(4, np.ones(6)), ValueError, r"grads\[4\]"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in STEP], ids=[c[0] for c in STEP])
def test_bad_step_input_raises_and_changes_nothing(make, exc, match):
    opt, good = make_opt()
    snap = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step(make(opt, good))
    assert_unchanged(opt, snap)
    twin_check(opt)


def test_grads_may_alias_each_other_and_foreign_memory():
    opt, good = make_opt()
    shared = np.ones(8, F32)
    gs = [shared, shared[:4], np.ones(1000, F32), np.ones((3, 4)), np.ones(5)]
    assert opt.step(gs) is True
    np.testing.assert_array_equal(shared, np.ones(8, F32))      # grads are only read


@pytest.mark.parametrize("name,kw", [("SGD", dict(momentum=0.9)), ("RMSprop", dict(centered=True)),
                                     ("NAdam", {}), ("Lion", {}), ("Adagrad", {})])
def test_aliasing_any_state_buffer_is_rejected(name, kw):
    opt, good = make_opt(name, **kw)
    for k, entry in enumerate(opt.state):
        for key, buf in entry.items():
            if not isinstance(buf, np.ndarray):
                continue
            snap = snapshot(opt)
            gs = list(good)
            gs[k] = buf
            with pytest.raises(ValueError, match="shares memory"):
                opt.step(gs)
            assert_unchanged(opt, snap)


# --- hyper-parameters set at run time ----------------------------------------------------------------
RUNTIME = [
    ("lr -1", 1, "lr", -1.0, ValueError, "lr"),
    ("lr nan", 1, "lr", float("nan"), ValueError, "lr"),
    ("lr inf", 1, "lr", float("inf"), ValueError, "lr"),
    ("lr string", 1, "lr", "0.1", TypeError, "lr"),
    ("lr None", 0, "lr", None, TypeError, "lr"),
    ("betas (1.5, 0.9)", 0, "betas", (1.5, 0.9), ValueError, r"betas\[0\]"),
    ("betas (0.9, 1.0)", 1, "betas", (0.9, 1.0), ValueError, r"betas\[1\]"),
    ("betas short", 1, "betas", (0.9,), ValueError, "betas"),
    ("eps -1", 0, "eps", -1.0, ValueError, "eps"),
    ("weight_decay -1", 1, "weight_decay", -1.0, ValueError, "weight_decay"),
    ("clip_value 0", 0, "clip_value", 0.0, ValueError, "clip_value"),
    ("maximize 2", 1, "maximize", 2, TypeError, "maximize"),
    ("decoupled string", 1, "decoupled_weight_decay", "yes", TypeError, "decoupled_weight_decay"),
]


@pytest.mark.parametrize("gi,key,value,exc,match", [c[1:] for c in RUNTIME], ids=[c[0] for c in RUNTIME])
def test_invalid_runtime_hyper_raises_and_changes_nothing(gi, key, value, exc, match):
    opt, good = make_opt()
    snap = snapshot(opt)
    old = opt.param_groups[gi][key]
    opt.param_groups[gi][key] = value
    for _ in range(2):                       # still rejected the second time: nothing cached
        with pytest.raises(exc, match=match):
            opt.step(good)
        assert_unchanged(opt, snap, groups_too=False)
    opt.param_groups[gi][key] = old
    twin_check(opt)


def test_deleted_group_key_raises():
    opt, good = make_opt()
    snap = snapshot(opt)
    del opt.param_groups[1]["eps"]
    with pytest.raises(ValueError, match="eps"):
        opt.step(good)
    assert_unchanged(opt, snap, groups_too=False)
    opt.param_groups[1]["eps"] = 1e-8
    twin_check(opt)


# --- regressions: bugs found while writing these tests (fixed in the library since) -----------------
@pytest.mark.parametrize("make", [lambda: fastopt.Adam([z()], amsgrad="False"),
                                  lambda: fastopt.Adam([z()], amsgrad=2),
                                  lambda: fastopt.AdamW([z()], amsgrad="no"),
                                  lambda: fastopt.RMSprop([z()], centered="False")],
                         ids=["Adam-amsgrad-str", "Adam-amsgrad-2", "AdamW-amsgrad-str", "RMSprop-centered-str"])
def test_regression_kernel_flags_must_be_bools(make):
    """Bug: amsgrad/centered were not validated (nesterov and maximize were), so
    Adam(amsgrad="False") silently selected the AMSGrad kernel."""
    with pytest.raises((TypeError, ValueError), match="amsgrad|centered"):
        make()


def test_regression_add_param_group_rejects_a_state_buffer():
    """Bug: add_param_group checked the new params only against the other params, so an
    optimizer state buffer could become a parameter (its update then overwrote the state)."""
    opt, good = make_opt()
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="share memory"):
        opt.add_param_group({"params": [opt.state[2]["exp_avg"][100:200]]})
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("param", [[1.0, 2.0], (1.0, 2.0), 1.0], ids=["list", "tuple", "float"])
def test_regression_param_without_shared_memory_is_rejected(param):
    """Bug: a list/tuple/float param was copied by np.asarray and every update went to a
    private copy that the caller never sees."""
    with pytest.raises((TypeError, ValueError)):
        fastopt.SGD([param], lr=1.0)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f4", "f8"])
@pytest.mark.parametrize("wrap", [lambda g: g, memoryview], ids=["ndarray", "memoryview"])
def test_regression_byteswapped_grad_is_rejected_or_converted(dt, wrap):
    """Bug: engine.pyx compared only the type number of a gradient, so a byte-swapped
    ('>f4' on little-endian) gradient was read as native floats (garbage updates)."""
    p = np.zeros(3, dt)
    opt = fastopt.SGD([p], lr=1.0)
    g = np.array([1.0, 2.0, 3.0], np.dtype(dt).newbyteorder("S"))     # non-native byte order
    try:
        opt.step([wrap(g)])
    except (TypeError, ValueError) as exc:           # what the reference class does
        assert "dtype" in str(exc)
        np.testing.assert_array_equal(p, np.zeros(3))
        assert opt.state[0]["step"] == 0
        return
    np.testing.assert_array_equal(p, [-1.0, -2.0, -3.0])   # or a correct conversion


def test_reference_rejects_byteswapped_grad():
    import fastopt.reference as ref
    opt = ref.SGD([np.zeros(3, F32)], lr=1.0)
    with pytest.raises(TypeError, match="dtype"):
        opt.step([np.ones(3, np.dtype(F32).newbyteorder("S"))])


# --- add_param_group -----------------------------------------------------------------------------------
@pytest.mark.parametrize("group,exc,match", [
    ("not a dict", TypeError, "dict"),
    ({"params": []}, ValueError, "empty"),
    ({"lr": 0.1}, ValueError, "params"),
    ({"params": [np.zeros(3, int)]}, TypeError, "int64"),
    ({"params": [np.ones(3)], "lr": -1.0}, ValueError, "lr"),
    ({"params": [np.ones(3)], "foo": 1}, ValueError, "unknown"),
    ("existing param", ValueError, "share memory"),
    ("view of existing param", ValueError, "share memory"),
], ids=["not-dict", "empty", "no-params", "int", "lr", "unknown-key", "existing", "view"])
def test_add_param_group_errors_change_nothing(group, exc, match):
    opt, good = make_opt()
    if group == "existing param":
        group = {"params": [opt.params[4]]}
    elif group == "view of existing param":
        group = {"params": [np.ones(2), opt.params[2][500:]]}
    snap = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.add_param_group(group)
    assert_unchanged(opt, snap)
    twin_check(opt)


def test_add_param_group_keeps_state_and_steps():
    opt, good = make_opt("NAdam")
    twin, _ = make_opt("NAdam")
    new = np.ones(6, F32)
    opt.add_param_group({"params": [new], "lr": 0.05, "betas": (0.8, 0.9)})
    assert len(opt.param_groups) == 3 and opt.state[-1]["step"] == 0
    assert opt.state[-1]["mu_product"] == 1.0
    gs = [np.full(p.shape, 0.5, p.dtype) for p in twin.params]
    opt.step(gs + [np.ones(6, F32)]), twin.step(gs)
    for x, y in zip(opt.params, twin.params):
        assert x.tobytes() == y.tobytes()
    assert opt.state[0]["mu_product"] == twin.state[0]["mu_product"]
    ref_p = np.ones(6, F32)
    fastopt.NAdam([ref_p], lr=0.05, betas=(0.8, 0.9)).step([np.ones(6, F32)])
    assert new.tobytes() == ref_p.tobytes()


# --- buffer-protocol parameters are updated in place -------------------------------------------------
def _expected_sgd(start, g, lr=0.5):
    return (np.asarray(start, F32) - F32(lr) * np.asarray(g, F32)).astype(F32)


def test_frombuffer_bytearray_param_updated_in_place():
    raw = bytearray(np.arange(6, dtype=F32).tobytes())
    p = np.frombuffer(raw, F32)
    opt = fastopt.SGD([p], lr=0.5)
    g = np.linspace(-1, 1, 6).astype(F32)
    opt.step([g])
    np.testing.assert_array_equal(np.frombuffer(raw, F32), _expected_sgd(np.arange(6), g))


@pytest.mark.parametrize("typecode,dt", [("f", F32), ("d", F64)])
def test_array_array_param_updated_in_place(typecode, dt):
    arr = array.array(typecode, [1.0, 2.0, 3.0])
    opt = fastopt.Adam([arr], lr=0.5)
    assert opt.params[0].dtype == dt
    assert np.shares_memory(opt.params[0], np.frombuffer(arr, dt))
    opt.step([np.ones(3, dt)])
    ref_p = np.array([1.0, 2.0, 3.0], dt)
    fastopt.Adam([ref_p], lr=0.5).step([np.ones(3, dt)])
    np.testing.assert_array_equal(np.array(arr, dt), ref_p)


def test_memoryview_param_updated_in_place():
    raw = bytearray(4 * 5)
    mv = memoryview(raw).cast("f")
    opt = fastopt.SGD([mv], lr=0.5, momentum=0.9)
    g = np.arange(5, dtype=F32)
    opt.step([g])
    opt.step([memoryview(bytearray(g.tobytes())).cast("f")])       # grads through the buffer protocol too
    np.testing.assert_array_equal(np.array(mv.tolist(), F32), np.frombuffer(raw, F32))
    ref_p = np.zeros(5, F32)
    r = fastopt.SGD([ref_p], lr=0.5, momentum=0.9)
    r.step([g]), r.step([g])
    np.testing.assert_array_equal(np.frombuffer(raw, F32), ref_p)


def test_ctypes_param_updated_in_place():
    buf = (ctypes.c_double * 4)(1.0, 2.0, 3.0, 4.0)
    opt = fastopt.SGD([buf], lr=0.25)
    opt.step([np.ones(4)])
    assert list(buf) == [0.75, 1.75, 2.75, 3.75]


def test_torch_tensors_updated_in_place():
    torch = pytest.importorskip("torch")
    t32 = torch.linspace(-1, 1, 7, dtype=torch.float32)
    t64 = torch.linspace(-1, 1, 5, dtype=torch.float64).reshape(5, 1)
    start32, start64 = t32.clone(), t64.clone()
    opt = fastopt.Adam([t32.numpy(), t64.numpy()], lr=0.1)
    gs = [np.ones(7, F32), np.ones((5, 1))]
    opt.step(gs)
    r32, r64 = start32.numpy().copy(), start64.numpy().copy()
    fastopt.Adam([r32, r64], lr=0.1).step(gs)
    np.testing.assert_array_equal(t32.numpy(), r32)
    np.testing.assert_array_equal(t64.numpy(), r64)
    assert not torch.equal(t32, start32)
    # grads may be tensors too
    opt.step([torch.ones(7), torch.ones(5, 1, dtype=torch.float64)])
    # a tensor that requires grad cannot expose its memory: a clear TypeError
    with pytest.raises(TypeError):
        fastopt.SGD([torch.zeros(3, requires_grad=True)])
    # a non-contiguous tensor view is rejected, not silently copied
    with pytest.raises(ValueError, match="C-contiguous"):
        fastopt.SGD([torch.zeros(4, 4).t().numpy()])


@pytest.mark.parametrize("which", ["param", "grad"])
@pytest.mark.parametrize("dt", [F32, F64])
def test_unaligned_buffers_are_rejected_or_exact(dt, which):
    """np.frombuffer at an odd byte offset gives an unaligned (still C-contiguous)
    array: it must either raise ValueError naming the alignment and change nothing,
    or give exactly the aligned result, never garbage."""
    n = 37
    rng = np.random.default_rng(3)
    start = rng.standard_normal(n).astype(dt)
    raw = bytearray(1) + bytearray(start.tobytes())
    p = np.frombuffer(raw, dt, count=n, offset=1) if which == "param" else start.copy()
    assert p.flags.c_contiguous and p.flags.writeable
    q = start.copy()
    b = fastopt.Adam([q], lr=0.1, weight_decay=0.01)
    try:
        a = fastopt.Adam([p], lr=0.1, weight_decay=0.01)
    except ValueError as exc:
        assert which == "param" and "align" in str(exc)
        assert bytes(raw[1:]) == start.tobytes()
        return
    for _ in range(5):
        g = rng.standard_normal(n).astype(dt)
        graw = bytearray(3) + bytearray(g.tobytes())
        gu = np.frombuffer(graw, dt, count=n, offset=3) if which == "grad" else g
        before = p.copy()
        try:
            a.step([gu])
        except ValueError as exc:
            assert which == "grad" and "align" in str(exc)
            assert p.tobytes() == before.tobytes() and a.state[0]["step"] == 0
            return
        b.step([g])
    assert p.tobytes() == q.tobytes()


def test_numpy_bools_are_accepted_as_flags():
    p, q = np.ones(3), np.ones(3)
    a = fastopt.Adam([p], amsgrad=np.True_, maximize=np.False_)
    b = fastopt.Adam([q], amsgrad=True, maximize=False)
    assert "max_exp_avg_sq" in a.state[0]
    a.step([np.ones(3)]), b.step([np.ones(3)])
    assert p.tobytes() == q.tobytes()
