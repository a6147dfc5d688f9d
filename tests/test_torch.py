"""fastopt.torch: the torch.optim drop-ins, against torch.optim itself.

Parity: an MLP classifier trained 200 steps on scikit-learn's bundled digits data with
fastopt.torch.X and torch.optim.X (single-tensor path, foreach=False), at the usual
learning rates, stays within 1e-10 in float64 (checked every 10 steps); in float32 its
distance to the float64 trajectory is at most twice torch's (summed over 4 seeds).
State dicts: the same keys and tensors as torch's, loadable both ways mid-run.
"""
import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from subproc import run_snippet  # noqa: E402

# (torch.optim class, arguments): every rule both libraries have
CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=False)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, initial_accumulator_value=0.1, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True)),
    ("Adadelta", dict(lr=1.0, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("NAdam", dict(lr=1e-2)),
    ("NAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
    ("Adamax", dict(lr=1e-2, weight_decay=1e-3)),
    ("RAdam", dict(lr=1e-2)),
    ("RAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CASES]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny layers: torch's 2-thread regions cost more than the ops on a busy machine (30x slower here)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)   # torch then keeps NAdam's mu_product in float64 too
    yield
    torch.set_default_dtype(old)


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16), torch.nn.GELU(),
                               torch.nn.Linear(16, 1)).to(dtype)


def data(dtype, n=64):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    return x.to(dtype), torch.sin(x.sum(1, keepdim=True)).to(dtype)


def train(model, opt, steps, x, y, every=10):
    """Train ``steps`` steps; the flat parameters every ``every`` steps (float64)."""
    out = []
    for s in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if (s + 1) % every == 0:
            out.append(torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]))
    return out


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def digits(dtype, n=256):
    """The first ``n`` of scikit-learn's bundled 8x8 digits, the always-blank pixels
    dropped and the rest standardised. (A blank pixel's weights see only weight decay,
    whose RMSprop step is lr * sign(p): a sign flip each step, which turns torch's and
    fastopt's last-bit differences into a different trajectory.)"""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x, y = x[:n], y[:n]
    x = x[:, x.std(0) > 0]
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=dtype), torch.tensor(y)


def classifier(dtype, inputs, seed=0):
    """A tanh MLP for the 10 digit classes, initialised in float32 for every ``dtype``
    (so the float32 and float64 runs start at the same point)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(inputs, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).to(dtype)
    finally:
        torch.set_default_dtype(old)


def train_classifier(model, opt, steps, x, y, every=10):
    """Full-batch cross-entropy steps; the flat parameters every ``every`` steps (float64)."""
    out = []
    for s in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if (s + 1) % every == 0:
            out.append(torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]))
    return out


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_float64_parity_with_torch_single_tensor(name, kw, float64):
    x, y = digits(torch.float64)
    a, b = classifier(torch.float64, x.shape[1]), classifier(torch.float64, x.shape[1])
    ta = train_classifier(a, getattr(torch.optim, name)(a.parameters(), foreach=False, **kw), 200, x, y)
    tb = train_classifier(b, getattr(ft, name)(b.parameters(), **kw), 200, x, y)
    errors = [(u - v).abs().max().item() for u, v in zip(ta, tb)]
    assert max(errors) <= 1e-10, errors
    assert (ta[-1] - ta[0]).abs().max() > 0.1        # it did train


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_float32_is_as_close_to_float64_as_torch(name, kw):
    # One run's distance is luck (which of two equally rounded runs lands nearer; single
    # seeds give ratios of 0.3-3 either way): the sum over 4 initialisations is not.
    x64, y = digits(torch.float64)
    x32 = x64.float()
    d_torch = d_fast = 0.0
    for seed in range(4):
        ref = classifier(torch.float64, x64.shape[1], seed)
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)      # torch keeps NAdam's mu_product in the default dtype
        try:
            t64 = train_classifier(ref, getattr(torch.optim, name)(ref.parameters(), foreach=False, **kw),
                                   200, x64, y)
        finally:
            torch.set_default_dtype(old)
        a, b = classifier(torch.float32, x32.shape[1], seed), classifier(torch.float32, x32.shape[1], seed)
        ta = train_classifier(a, getattr(torch.optim, name)(a.parameters(), foreach=False, **kw), 200, x32, y)
        tb = train_classifier(b, getattr(ft, name)(b.parameters(), **kw), 200, x32, y)
        d_torch += max((u - r).abs().max().item() for u, r in zip(ta, t64))
        d_fast += max((u - r).abs().max().item() for u, r in zip(tb, t64))
        assert all(p.dtype == torch.float32 for p in b.parameters())
    assert 0 < d_fast <= 2 * d_torch, (d_fast, d_torch)


def assert_same_format(sd_torch, sd_fast):
    assert sd_torch["state"].keys() == sd_fast["state"].keys()
    for k, entry in sd_torch["state"].items():
        mine = sd_fast["state"][k]
        assert entry.keys() == mine.keys(), k
        for n, t in entry.items():
            assert isinstance(mine[n], torch.Tensor) and mine[n].dtype == t.dtype and mine[n].shape == t.shape, (k, n)
    for g, h in zip(sd_torch["param_groups"], sd_fast["param_groups"]):
        assert g.keys() == h.keys()
        assert g["params"] == h["params"]


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_checkpoint_round_trip_torch_fastopt_torch(name, kw, float64):
    x, y = data(torch.float64)
    tcls, fcls = getattr(torch.optim, name), getattr(ft, name)
    # never switching
    ref = mlp(torch.float64)
    ref_opt = tcls(ref.parameters(), foreach=False, **kw)
    train(ref, ref_opt, 60, x, y)
    # torch 20 steps -> fastopt.torch 20 steps -> torch 20 steps
    m = mlp(torch.float64)
    o1 = tcls(m.parameters(), foreach=False, **kw)
    train(m, o1, 20, x, y)
    sd1 = copy.deepcopy(o1.state_dict())
    o2 = fcls(m.parameters(), **kw)
    o2.load_state_dict(sd1)
    assert_same_format(sd1, o2.state_dict())
    for e1, e2 in zip(sd1["state"].values(), o2.state_dict()["state"].values()):
        for n in e1:                          # the transfer itself is lossless
            assert torch.equal(e1[n], e2[n]), n
    train(m, o2, 20, x, y)
    sd2 = o2.state_dict()
    assert_same_format(ref_opt.state_dict(), sd2)
    o3 = tcls(m.parameters(), foreach=False, **kw)
    o3.load_state_dict(sd2)
    train(m, o3, 20, x, y)
    assert (flat(m) - flat(ref)).abs().max().item() <= 1e-10
    for k, e in ref_opt.state_dict()["state"].items():
        for n, t in e.items():
            assert (o3.state_dict()["state"][k][n] - t).abs().max().item() <= 1e-10, (k, n)


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_a_transfer_and_back_is_bitwise_the_same_run(name, kw, float64):
    # torch -> fastopt.torch -> torch with no fastopt step between: bit for bit torch's run
    x, y = data(torch.float64)
    tcls, fcls = getattr(torch.optim, name), getattr(ft, name)
    ref = mlp(torch.float64)
    ref_opt = tcls(ref.parameters(), foreach=False, **kw)
    train(ref, ref_opt, 30, x, y)
    m = mlp(torch.float64)
    o1 = tcls(m.parameters(), foreach=False, **kw)
    train(m, o1, 15, x, y)
    o2 = fcls(m.parameters(), **kw)
    o2.load_state_dict(o1.state_dict())
    o3 = tcls(m.parameters(), foreach=False, **kw)
    o3.load_state_dict(o2.state_dict())
    train(m, o3, 15, x, y)
    assert torch.equal(flat(m), flat(ref))


def test_classes_follow_the_rule_specs():
    assert [c.__name__ for c in ft.ALL] == [c.__name__ for c in fastopt.optim.ALL]
    for cls in ft.ALL:
        assert issubclass(cls, torch.optim.Optimizer) and cls.__doc__ and "``" in cls.__doc__
    import inspect
    sig = inspect.signature(ft.Adam)
    assert list(sig.parameters)[:6] == ["params", "lr", "betas", "eps", "weight_decay", "amsgrad"]
    assert {"foreach", "fused", "capturable", "differentiable", "maximize"} <= set(sig.parameters)


def test_import_fastopt_does_not_import_torch_and_a_missing_torch_is_explained():
    # the installed package (-P keeps the source tree in the cwd off sys.path)
    out = run_snippet("import sys, fastopt; print('torch' in sys.modules)", timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import fastopt.torch\nexcept ImportError as e:\n    print(e)")
    out = run_snippet(code, timeout=60)
    assert "pip install torch" in out.stdout, out.stderr


def test_model_parameters_are_updated_in_place_without_copies():
    model = mlp(torch.float32)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    ptrs = [p.data_ptr() for p in model.parameters()]
    before = flat(model).clone()
    x, y = data(torch.float32)
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert not torch.equal(before, flat(model))
    p = next(model.parameters())
    st = opt.state[p]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq"} and st["step"].item() == 1.0
    st["exp_avg"].zero_()                            # a live view of fastopt's buffer
    assert not opt.state[p]["exp_avg"].any()


def test_lr_schedulers_drive_the_step(float64):
    x, y = data(torch.float64)
    schedules = [
        lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=40),   # also cycles betas
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 40),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)),
    ]
    for make in schedules:
        a, b = mlp(torch.float64), mlp(torch.float64)
        oa, ob = torch.optim.Adam(a.parameters(), lr=1e-2, foreach=False), ft.Adam(b.parameters(), lr=1e-2)
        sa, sb = make(oa), make(ob)
        for _ in range(40):
            for m, o, s in ((a, oa, sa), (b, ob, sb)):
                o.zero_grad()
                ((m(x) - y) ** 2).mean().backward()
                o.step()
                s.step()
        assert ob.param_groups[0]["lr"] == oa.param_groups[0]["lr"]
        assert (flat(a) - flat(b)).abs().max() <= 1e-10
    # ReduceLROnPlateau watches a metric
    b = mlp(torch.float64)
    ob = ft.SGD(b.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(ob, patience=0, factor=0.5)
    p0 = flat(b).clone()
    for _ in range(3):
        sched.step(1.0)                               # no improvement: lr halves
    ob.param_groups[0]["lr"] == 0.025
    next(b.parameters()).grad = torch.ones_like(next(b.parameters()))
    ob.step()
    first = next(b.parameters()).detach().reshape(-1)
    assert torch.allclose(first, p0[:first.numel()] - ob.param_groups[0]["lr"])


def test_closure_none_gradients_zero_grad_and_accumulation(float64):
    x, y = data(torch.float64)
    a, b = mlp(torch.float64), mlp(torch.float64)
    oa, ob = torch.optim.RMSprop(a.parameters(), foreach=False), ft.RMSprop(b.parameters())
    for m, o in ((a, oa), (b, ob)):
        def closure(m=m, o=o):
            o.zero_grad()
            loss = ((m(x) - y) ** 2).mean()
            loss.backward()
            return loss
        with torch.no_grad():                        # torch's step enables grad for the closure
            loss = o.step(closure)
        assert loss.requires_grad
        # accumulation: two half batches, then a step
        o.zero_grad(set_to_none=False)
        ((m(x[:32]) - y[:32]) ** 2).mean().backward()
        ((m(x[32:]) - y[32:]) ** 2).mean().backward()
        o.step()
        # a parameter without a gradient is skipped, state and all
        o.zero_grad(set_to_none=True)
        first = next(m.parameters())
        others = list(m.parameters())[1:]
        (sum((p ** 2).sum() for p in others)).backward()
        o.step()
        assert first.grad is None
    assert (flat(a) - flat(b)).abs().max() <= 1e-12
    pa, pb = next(a.parameters()), next(b.parameters())
    assert ob.state[pb]["step"].item() == oa.state[pa]["step"].item() == 2.0
    assert ob.state[list(b.parameters())[1]]["step"].item() == 3.0
    # zeroed (not None) gradients do step; zero_grad leaves a None gradient None
    ob.zero_grad(set_to_none=False)
    ob.step()
    assert ob.state[pb]["step"].item() == 2.0 and ob.state[list(b.parameters())[1]]["step"].item() == 4.0


def test_add_param_group_mid_run(float64):
    x, y = data(torch.float64)
    a, b = mlp(torch.float64), mlp(torch.float64)
    pa, pb = list(a.parameters()), list(b.parameters())
    oa = torch.optim.NAdam(pa[:2], lr=1e-2, foreach=False)
    ob = ft.NAdam(pb[:2], lr=1e-2)
    for s in range(20):
        if s == 5:
            oa.add_param_group({"params": pa[2:], "lr": 3e-3})
            ob.add_param_group({"params": pb[2:], "lr": 3e-3})
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
    assert (flat(a) - flat(b)).abs().max() <= 1e-10
    assert ob.param_groups[1]["lr"] == 3e-3 and ob.param_groups[1]["betas"] == (0.9, 0.999)
    sd = ob.state_dict()
    assert_same_format(oa.state_dict(), sd)


def test_autograd_sees_the_in_place_update():
    # as with torch.optim: a graph that saved a parameter refuses to backward after a step
    p = torch.ones(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    loss = (p * p).sum()
    p.grad = torch.ones(3)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_threads_follow_torch():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fastopt.get_num_threads() == 1
        torch.set_num_threads(2)
        assert fastopt.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    from fastopt.bench.peers import shares_libgomp
    assert shares_libgomp()


def test_a_third_libgomp_copy_does_not_hide_the_shared_one():
    # scikit-learn's wheel maps its own renamed libgomp; torch and fastopt still share theirs
    helpers = pytest.importorskip("sklearn.utils._openmp_helpers")
    from fastopt._kernels import driver, waitpolicy
    from fastopt.bench.peers import shares_libgomp
    from fastopt.torch import _adapter
    sklearn_omp = waitpolicy.openmp_runtime(helpers.__file__)
    assert sklearn_omp is not None and "libgomp" in sklearn_omp
    assert sklearn_omp != waitpolicy.openmp_runtime(driver.__file__)
    assert len(waitpolicy._libgomp_paths()) >= 2
    assert shares_libgomp() and not _adapter._separate_runtime()
    assert waitpolicy.openmp_runtime("/nonexistent/lib.so") is None


# --- bad input: a clear error naming the parameter, nothing written ---------------------------
def test_bad_parameters_are_named():
    good = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\] is on meta"):
        ft.Adam([good, torch.zeros(3, device="meta", requires_grad=True)])
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\] is not contiguous"):
        ft.Adam([{"params": [good]}, {"params": [torch.zeros(4, 4).t().requires_grad_()]}])
    with pytest.raises(TypeError, match=r"\[0\] is torch.float16: float16 parameters .* need precision="):
        ft.Adam([torch.zeros(3, dtype=torch.float16, requires_grad=True)])
    with pytest.raises(TypeError, match="float16"):
        ft.SGD([torch.zeros(3, dtype=torch.float16, requires_grad=True)])
    with pytest.raises(TypeError, match="sparse"):
        ft.SGD([torch.zeros(3).to_sparse().requires_grad_()])
    base = torch.zeros(10)
    with pytest.raises(ValueError, match=r"\['params'\]\[0\] and .*\['params'\]\[1\] share memory"):
        ft.Adam([base[:6].detach().requires_grad_(), base[4:].detach().requires_grad_()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # torch warns about the duplicate itself
        with pytest.raises(ValueError, match="share memory"):
            ft.Adam([good, good])
    with pytest.raises(ValueError, match="capturable"):
        ft.Adam([good], capturable=True)
    opt = ft.Adam([good])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] and param_groups\[1\]\['params'\]\[0\] "
                                         "share memory"):
        opt.add_param_group({"params": [good.detach()]})    # the same memory as another tensor
    assert len(opt.param_groups) == 1


def test_bad_gradients_are_named_and_nothing_is_written():
    p = [torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    opt = ft.Adam([{"params": p[:1]}, {"params": p[1:]}], lr=0.1)
    for q in p:
        q.grad = torch.ones(3, dtype=torch.float64)
    p[2].grad.data = torch.ones(3, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"gradient of param_groups\[1\]\['params'\]\[1\] is torch.float32, the "
                                        r"parameter torch.float64"):
        opt.step()
    p[2].grad = None
    p[2].grad = torch.ones(6, dtype=torch.float64)[::2]
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\] is not contiguous"):
        opt.step()
    p[2].grad = torch.ones(3, dtype=torch.float64).to_sparse()
    with pytest.raises(ValueError, match="fastopt steps sparse gradients of 2-D parameters"):
        opt.step()
    assert all(not q.any() for q in p) and not opt.state
    p[0].data = torch.ones(3, dtype=torch.float64)           # the storage replaced under the optimizer
    p[2].grad = None
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] no longer has the memory"):
        opt.step()


def test_foreign_or_broken_state_dicts_are_refused_and_change_nothing():
    model = mlp(torch.float32)
    x, y = data(torch.float32)
    opt = ft.Adam(model.parameters(), lr=1e-2)
    train(model, opt, 3, x, y)
    before = opt.state_dict()
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])

    def unchanged():
        after = opt.state_dict()
        for k, e in before["state"].items():
            for n, t in e.items():
                assert torch.equal(after["state"][k][n], t)
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before

    other = mlp(torch.float32)
    sgd = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    train(other, sgd, 2, x, y)
    with pytest.raises(ValueError, match=r"param_groups\[0\] lacks \['amsgrad', 'betas', 'eps'\] and has "
                                         r"\['dampening', 'momentum', 'nesterov'\].*another optimizer"):
        opt.load_state_dict(sgd.state_dict())
    unchanged()
    adamax = torch.optim.Adamax(other.parameters())
    train(other, adamax, 2, x, y)
    with pytest.raises(ValueError, match="another optimizer"):
        opt.load_state_dict(adamax.state_dict())
    unchanged()
    broken = copy.deepcopy(before)
    del broken["state"][3]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"state\[3\] \(param_groups\[0\]\['params'\]\[3\]\) has keys"):
        opt.load_state_dict(broken)
    unchanged()
    broken = copy.deepcopy(before)
    broken["state"][2]["exp_avg_sq"][0] = -1.0                # no Adam step makes a negative second moment
    broken["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match=r"state\[2\].*param_groups\[0\]\['params'\]\[2\]"):
        opt.load_state_dict(broken)
    unchanged()
    broken = copy.deepcopy(before)
    broken["state"][1]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"state\[1\] \(param_groups\[0\]\['params'\]\[1\]\)\['exp_avg'\] has shape"):
        opt.load_state_dict(broken)
    unchanged()
    amsgrad = copy.deepcopy(before)
    amsgrad["param_groups"][0]["amsgrad"] = True
    with pytest.raises(ValueError):
        opt.load_state_dict(amsgrad)
    unchanged()
    # a float64 state loads into float32 parameters cast, as torch does
    cast = copy.deepcopy(before)
    cast["state"][0]["exp_avg"] = cast["state"][0]["exp_avg"].double()
    opt.load_state_dict(cast)
    assert opt.state_dict()["state"][0]["exp_avg"].dtype == torch.float32


def test_rules_torch_lacks_save_and_load_their_own_state(float64):
    x, y = data(torch.float64)
    for cls in (ft.Lion, ft.AdaBelief):
        a = mlp(torch.float64)
        oa = cls(a.parameters(), lr=1e-3)
        train(a, oa, 5, x, y)
        b = copy.deepcopy(a)
        ob = cls(b.parameters(), lr=1e-3)
        ob.load_state_dict(oa.state_dict())
        train(a, oa, 5, x, y)
        train(b, ob, 5, x, y)
        assert torch.equal(flat(a), flat(b))


def test_fastopt_options_and_group_keys_pass_through():
    p = torch.zeros(4, requires_grad=True)
    opt = ft.SGD([p], lr=1.0, clip_value=0.5, clip_norm=None)
    p.grad = torch.tensor([2.0, -2.0, 0.1, 0.0])
    opt.step()
    assert np.allclose(p.detach().numpy(), [-0.5, 0.5, -0.1, 0.0])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["clip_value"] == 0.5           # fastopt's keys kept when set
    assert "clip_value" not in ft.SGD([torch.zeros(1, requires_grad=True)]).state_dict()["param_groups"][0]
    with pytest.raises(ValueError, match="nonfinite"):
        ft.SGD([torch.zeros(1, requires_grad=True)], nonfinite="explode")
