"""state_dict / load_state_dict, in memory and through np.savez (no pickle).

A run of 2k steps in one optimizer must equal k steps, a state_dict, a new optimizer
built the same way (schedule objects included), load_state_dict and k more steps:
bitwise params, states, steps, current_lr and schedule state. Every mismatched
state_dict raises ValueError and leaves the optimizer exactly as it was.
"""
import math

import numpy as np
import pytest

import fastopt
from optim_helpers import assert_unchanged, snapshot
import fastopt.reference as ref
from fastopt.schedules import CosineAnnealing, ReduceOnPlateau, Warmup

F32, F64 = np.float32, np.float64

CASES = [("SGD", {}), ("SGD", dict(momentum=0.9, dampening=0.1)), ("Nesterov", {}), ("Momentum", {}),
         ("Adagrad", dict(initial_accumulator_value=0.1, lr_decay=0.01)),
         ("RMSprop", dict(centered=True, momentum=0.4)), ("RMSprop", {}), ("Adadelta", {}), ("Adam", {}),
         ("Adam", dict(amsgrad=True)), ("AdamW", {}),
         ("AMSGrad", {}), ("NAdam", {}), ("NAdam", dict(variant="optax")), ("Adamax", {}), ("RAdam", {}),
         ("Lion", dict(weight_decay=0.01))]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in CASES]

SCHEDULES = {
    "cosine": lambda: CosineAnnealing(0.05, 30, min_lr=1e-4),
    "warmup+cosine": lambda: Warmup(CosineAnnealing(0.05, 20), 6, start_lr=1e-3),
    "plateau": lambda: ReduceOnPlateau(0.05, patience=1, factor=0.5, cooldown=1),
    "float": lambda: 0.05,
}

LAYOUT = [[((7,), F32), ((0,), F32), ((1023,), F32)], [((5,), F64), ((3, 4), F64), ((1,), F64)]]
METRICS = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
           0.8, 0.9, 1.0, 1.0]


def layout_arrays(layout, seed):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dt) for shape, dt in group] for group in layout]


def construct(mod, name, kw, lr0, layout=LAYOUT, init_seed=0, **options):
    groups = layout_arrays(layout, init_seed)
    spec = [{"params": groups[0], "lr": lr0}]
    for g in groups[1:]:
        spec.append({"params": g, "lr": 0.02, "weight_decay": 0.01})
    return getattr(mod, name)(spec, **kw, **options)


def grad_list(params, steps, seed):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        gs = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        if t % 4 == 1:
            gs[0] = None                    # per-parameter steps differ from the group steps
        out.append(gs)
    return out


def drive(opt, grads, t0):
    for t, gs in enumerate(grads, start=t0):
        assert opt.step(gs) is True
        lr = opt.param_groups[0]["lr"]
        if isinstance(lr, ReduceOnPlateau):
            lr.report(METRICS[t % len(METRICS)])


def assert_tree_equal(a, b, path="sd"):
    """Nested dict/list/array equality; arrays bitwise with equal dtype and shape."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, sorted(map(str, a)), sorted(map(str, b)))
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}[{k}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def save_load_npz(sd, tmp_path):
    flat = fastopt.flatten_state_dict(sd)
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in flat.values())
    path = tmp_path / "opt.npz"
    np.savez(path, **flat)
    with np.load(path, allow_pickle=False) as f:
        return fastopt.unflatten_state_dict(f)


def resume_check(name, kw, sched, tmp_path, via, k=12, mod_b=fastopt):
    a = construct(fastopt, name, kw, SCHEDULES[sched]())
    grads = grad_list(a.params, 2 * k, 1)
    drive(a, grads[:k], 0)
    sd = a.state_dict()
    params_k = [p.copy() for p in a.params]
    drive(a, grads[k:], k)                        # sd must be a snapshot, not live buffers
    if via == "npz":
        sd = save_load_npz(sd, tmp_path)
    b = construct(mod_b, name, kw, SCHEDULES[sched](), init_seed=99)      # other initial values
    for dst, src in zip(b.params, params_k):      # parameters are the caller's to restore
        dst[...] = src
    b.load_state_dict(sd)
    drive(b, grads[k:], k)
    for x, y in zip(a.params, b.params):
        assert x.tobytes() == y.tobytes()
    assert_tree_equal(a.state, b.state, "state")
    assert a.current_lrs == b.current_lrs
    assert_tree_equal(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("via", ["memory", "npz"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_resume_every_class(name, kw, via, tmp_path):
    resume_check(name, kw, "cosine", tmp_path, via)


@pytest.mark.parametrize("via", ["memory", "npz"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("name,kw", [("NAdam", {}), ("Adam", dict(amsgrad=True)), ("SGD", dict(momentum=0.9))])
def test_resume_with_schedules(name, kw, sched, via, tmp_path):
    resume_check(name, kw, sched, tmp_path, via)


def test_resume_into_reference_class(tmp_path):
    # the state_dict format is the engine's business only: the reference continues it
    resume_check("NAdam", {}, "plateau", tmp_path, "npz", mod_b=ref)


def test_resume_with_options(tmp_path):
    # the noise depends on the per-parameter step, which the state_dict carries
    opts = dict(clip_norm=1.0, grad_noise=0.01, seed=5, nonfinite="skip")
    a = construct(fastopt, "Adam", {}, SCHEDULES["warmup+cosine"](), **opts)
    grads = grad_list(a.params, 20, 2)
    drive(a, grads[:10], 0)
    sd = save_load_npz(a.state_dict(), tmp_path)
    assert sd["options"] == {"clip_norm": 1.0, "grad_noise": [0.01, 0.55], "seed": 5, "nonfinite": "skip"}
    params = [p.copy() for p in a.params]
    drive(a, grads[10:], 10)
    b = construct(fastopt, "Adam", {}, SCHEDULES["warmup+cosine"](), **opts)
    for dst, src in zip(b.params, params):
        dst[...] = src
    b.load_state_dict(sd)
    drive(b, grads[10:], 10)
    for x, y in zip(a.params, b.params):
        assert x.tobytes() == y.tobytes()


def test_nadam_scalar_state_and_callable_lr(tmp_path):
    sched = lambda s: 0.01 / (1 + s)          # noqa: E731 - a plain callable works as lr
    a = construct(fastopt, "NAdam", {}, sched)
    grads = grad_list(a.params, 16, 3)
    drive(a, grads[:8], 0)
    sd = a.state_dict()
    assert sd["param_groups"][0]["lr"] == {"callable": "<lambda>"}
    mu = [s["mu_product"] for s in sd["state"].values()]
    assert all(isinstance(m, float) and 0 < m < 1 for m in mu)
    assert len(set(mu)) == 2                   # param 0 missed steps: its own product
    sd = save_load_npz(sd, tmp_path)
    params = [p.copy() for p in a.params]
    drive(a, grads[8:], 8)
    b = construct(fastopt, "NAdam", {}, sched)
    for dst, src in zip(b.params, params):
        dst[...] = src
    b.load_state_dict(sd)
    assert [s["mu_product"] for s in b.state] == mu
    assert b.current_lr == sched(8)
    drive(b, grads[8:], 8)
    for x, y in zip(a.params, b.params):
        assert x.tobytes() == y.tobytes()


def test_state_dict_is_a_copy_and_loading_copies():
    a = construct(fastopt, "Adam", {}, 0.01)
    drive(a, grad_list(a.params, 3, 4), 0)
    sd = a.state_dict()
    for k, entry in sd["state"].items():
        for key, v in entry.items():
            if isinstance(v, np.ndarray):
                assert not np.shares_memory(v, a.state[k][key])
    b = construct(fastopt, "Adam", {}, 0.01)
    b.load_state_dict(sd)
    sd["state"][2]["exp_avg"][...] = 123.0   # mutating the dict later does not reach b
    assert not (b.state[2]["exp_avg"] == 123.0).any()
    sd["param_groups"][0]["betas"][0] = 0.1
    assert b.param_groups[0]["betas"] == (0.9, 0.999)


def test_saved_hyper_parameters_are_restored():
    a = construct(fastopt, "Adam", {}, 0.01)
    drive(a, grad_list(a.params, 3, 5), 0)
    a.param_groups[1]["betas"] = (0.5, 0.6)
    a.param_groups[1]["lr"] = 0.3
    a.param_groups[0]["maximize"] = True
    b = construct(fastopt, "Adam", {}, 0.01)
    drive(b, grad_list(b.params, 2, 6), 0)    # b has a cached kernel setup already
    b.load_state_dict(a.state_dict())
    assert b.param_groups[1]["betas"] == (0.5, 0.6) and isinstance(b.param_groups[1]["betas"], tuple)
    assert b.param_groups[1]["lr"] == 0.3 and b.param_groups[0]["maximize"] is True
    for dst, src in zip(b.params, a.params):
        dst[...] = src
    gs = grad_list(a.params, 3, 7)
    drive(a, gs, 3), drive(b, gs, 3)
    for x, y in zip(a.params, b.params):
        assert x.tobytes() == y.tobytes()


def test_flatten_rejects_objects_and_unflatten_rejects_foreign_archives():
    with pytest.raises(TypeError):
        fastopt.flatten_state_dict({"x": object()})
    with pytest.raises(ValueError):
        fastopt.unflatten_state_dict({"a": np.zeros(3)})


# --- mismatches: ValueError, nothing changed ------------------------------------------------------
def _target(lr0=None, kw=None, name="Adam"):
    opt = construct(fastopt, name, kw or {}, lr0 if lr0 is not None else CosineAnnealing(0.05, 30))
    drive(opt, grad_list(opt.params, 4, 8), 0)
    return opt


def _other(name="Adam", kw=None, lr0=None, layout=LAYOUT, steps=6):
    opt = construct(fastopt, name, kw or {}, lr0 if lr0 is not None else CosineAnnealing(0.05, 30), layout)
    drive(opt, grad_list(opt.params, steps, 9), 0)
    return opt.state_dict()


def _edit(fn):
    def make():
        sd = _other()
        fn(sd)
        return sd
    return make


def _set_state(k, key, value):
    return _edit(lambda sd: sd["state"][k].__setitem__(key, value))


def _set_group(g, key, value):
    return _edit(lambda sd: sd["param_groups"][g].__setitem__(key, value))


def _late_failure(sd):
    # valid changes in the groups and early parameters, an invalid array at the very end:
    # the checks must all run before anything is written
    sd["param_groups"][0]["betas"] = [0.1, 0.2]
    sd["param_groups"][1]["lr"] = 0.7
    sd["param_groups"][0]["lr"]["schedule"]["total_steps"] = 5
    last = len(sd["state"]) - 1
    sd["state"][last]["exp_avg"] = sd["state"][last]["exp_avg"].astype(F32)


BAD = {
    "other algorithm": lambda: _other("AdamW"),
    "other algorithm (AMSGrad class)": lambda: _other("AMSGrad"),
    "not a dict": lambda: [1, 2],
    "wrong version": _edit(lambda sd: sd.__setitem__("version", 99)),
    "fewer groups": _edit(lambda sd: sd.__setitem__("param_groups", sd["param_groups"][:1])),
    "more groups": lambda: _other(layout=LAYOUT + [[((2,), F64)]]),
    "more params": lambda: _other(layout=[LAYOUT[0] + [((3,), F32)], LAYOUT[1]]),
    "params moved between groups": lambda: _other(layout=[LAYOUT[0][:2], LAYOUT[0][2:] + LAYOUT[1]]),
    "missing param state": _edit(lambda sd: sd["state"].pop(5)),
    "wrong shape": _set_state(2, "exp_avg", np.zeros(1024, F32)),
    "wrong shape 2-D": _set_state(4, "exp_avg_sq", np.zeros((4, 3))),
    "wrong dtype": _set_state(2, "exp_avg", np.zeros(1023, F64)),
    "wrong dtype f64": _set_state(3, "exp_avg", np.zeros(5, F32)),
    "list instead of array": _set_state(3, "exp_avg", [0.0] * 5),
    "missing state key": _edit(lambda sd: sd["state"][1].pop("exp_avg_sq")),
    "extra state key": _set_state(1, "max_exp_avg_sq", np.zeros(0, F32)),
    "amsgrad saved": lambda: _other(kw=dict(amsgrad=True)),
    "amsgrad flag only": _set_group(1, "amsgrad", True),
    "negative step": _set_state(0, "step", -1),
    "float step": _set_state(0, "step", 2.5),
    "bool step": _set_state(0, "step", True),
    "negative group_step": _set_group(0, "group_step", -3),
    "invalid betas": _set_group(1, "betas", [1.5, 0.9]),
    "invalid lr": _set_group(1, "lr", -1.0),
    "nan eps": _set_group(0, "eps", float("nan")),
    "invalid weight_decay": _set_group(1, "weight_decay", -0.1),
    "invalid clip_value": _set_group(1, "clip_value", 0.0),
    "unknown group key": _set_group(0, "momentum", 0.9),
    "schedule saved, float in optimizer": "float-target",
    "other schedule kind": _set_group(0, "lr", {"schedule": Warmup(CosineAnnealing(0.05, 20), 6).state_dict()}),
    "broken schedule dict": _edit(lambda sd: sd["param_groups"][0]["lr"]["schedule"].pop("total_steps")),
    "invalid schedule value": _edit(lambda sd: sd["param_groups"][0]["lr"]["schedule"].__setitem__("lr", -1.0)),
    "callable saved, float in optimizer": "callable-saved",
    "late failure": _edit(_late_failure),
}


@pytest.mark.parametrize("case", list(BAD))
def test_mismatched_state_dict_raises_and_changes_nothing(case, tmp_path):
    make = BAD[case]
    if make == "float-target":
        opt, sd = _target(lr0=0.05), _other()
    elif make == "callable-saved":
        opt, sd = _target(lr0=0.05), _other(lr0=lambda s: 0.01)
    else:
        opt, sd = _target(), make()
    snap = snapshot(opt)
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)
    # and the optimizer still works: the next step equals an untouched twin's
    twin = _target(lr0=0.05) if isinstance(make, str) else _target()
    gs = grad_list(opt.params, 2, 10)
    drive(opt, gs, 4), drive(twin, gs, 4)
    for x, y in zip(opt.params, twin.params):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("name,kw", [("NAdam", {})])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.5", None, True])
def test_invalid_scalar_state(name, kw, value):
    opt = _target(name=name)
    sd = _other(name=name)
    sd["state"][1]["mu_product"] = value
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="mu_product"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)


def test_state_keys_may_be_strings():
    # e.g. a state_dict that went through JSON
    opt = _target()
    sd = _other()
    sd["state"] = {str(k): v for k, v in sd["state"].items()}
    opt.load_state_dict(sd)
    assert [s["step"] for s in opt.state] == [s["step"] for s in _other()["state"].values()]


# --- regressions: bugs found while writing these tests (fixed in the library since) ---------------
@pytest.mark.parametrize("where", ["step", "group_step"])
def test_regression_huge_step_raises_valueerror_before_committing(where):
    """Bug: step/group_step were checked only for >= 0; a value beyond a C long raised
    OverflowError in the engine AFTER groups and state arrays were committed."""
    opt = _target()
    sd = _other()
    sd["param_groups"][1]["lr"] = 0.5                    # a valid change that must not be committed
    if where == "step":
        sd["state"][0]["step"] = 2**63
    else:
        sd["param_groups"][1]["group_step"] = 2**64
    snap = snapshot(opt)
    try:
        with pytest.raises(ValueError, match="step"):
            opt.load_state_dict(sd)
    finally:
        assert_unchanged(opt, snap)


@pytest.mark.parametrize("bad", ["group None", "params int"])
def test_regression_malformed_group_entry_raises_valueerror(bad):
    """Bug (minor): a malformed param_groups entry raised AttributeError/TypeError."""
    opt = _target()
    sd = _other()
    if bad == "group None":
        sd["param_groups"][1] = None
    else:
        sd["param_groups"][0]["params"] = 3
    snap = snapshot(opt)
    try:
        with pytest.raises(ValueError):
            opt.load_state_dict(sd)
    finally:
        assert_unchanged(opt, snap)


def test_number_in_state_dict_for_a_schedule_is_refused():
    opt = _target()                                   # lr is a CosineAnnealing
    sd = _other(lr0=0.01)                             # saved with a plain number
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="schedule in the optimizer"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)


def test_state_dict_cannot_undo_a_fixed_setting():
    p = np.zeros(8, np.float32)
    opt = fastopt.AdamW([p])
    sd = opt.state_dict()
    sd["param_groups"][0]["decoupled_weight_decay"] = False
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="always uses decoupled_weight_decay=True"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)
