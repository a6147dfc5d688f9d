"""AdEMAMix (fastopt/rules/ademamix.py) against bitsandbytes, the library that ships it:
its reference optimizer (float64, the same formula), its fused 32-bit optimizer and its
8-bit one, whose state layout ours shares. The kernels against fastopt's own NumPy
reference are in the registries of test_kernels.py, test_optim.py and test_lowprec.py."""
import numpy as np
import pytest

import fastopt
from fastopt import Precision

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")

SETTINGS = [{}, {"t_alpha": 40, "t_beta3": 60, "weight_decay": 0.0}, {"betas": (0.8, 0.99, 0.995), "alpha": 2.0,
                                                                        "weight_decay": 0.1}]


def _bnb_reference():
    mod = pytest.importorskip("bitsandbytes.optim.ademamix")
    ref = getattr(mod, "_ReferenceAdEMAMix", None)
    if ref is None:
        pytest.skip("this bitsandbytes has no _ReferenceAdEMAMix")
    return ref


def _theirs(kw):
    # bitsandbytes spells "no warm-up" None
    return {k: (v or None) if k.startswith("t_") else v for k, v in kw.items()}


@pytest.mark.parametrize("kw", SETTINGS, ids=["defaults", "warm-ups", "betas-wd"])
def test_float64_follows_bitsandbytes_reference_for_200_steps(kw):
    Ref = _bnb_reference()
    rng = np.random.default_rng(3)
    n = 1001
    w0 = rng.standard_normal(n)
    w = w0.copy()
    opt = fastopt.AdEMAMix([w], lr=1e-2, **kw)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = Ref([tp], lr=1e-2, **_theirs(kw))
    for t in range(200):
        g = rng.standard_normal(n)
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        if t % 10 == 9:
            theirs = tp.detach().numpy()
            # the decoupled decay is p (1 - lr λ) - lr u here, p - lr (u + λ p) there
            np.testing.assert_allclose(w, theirs, rtol=1e-10, atol=1e-12, err_msg=f"step {t + 1}")
    st = topt.state[tp]
    np.testing.assert_allclose(opt.state[0]["exp_avg_slow"], st["m1_m2"][1].numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], st["nu"].numpy(), rtol=1e-10, atol=1e-14)


def test_float32_close_to_bitsandbytes_fused_32bit():
    rng = np.random.default_rng(1)
    n = 5000
    w0 = rng.standard_normal(n).astype(np.float32)
    w = w0.copy()
    opt = fastopt.AdEMAMix([w], lr=1e-2)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = bnb.optim.AdEMAMix([tp], lr=1e-2, optim_bits=32)
    for _ in range(50):
        g = rng.standard_normal(n).astype(np.float32)
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    moved = np.abs(w - w0).max()
    assert moved > 0.1
    assert np.abs(w - tp.detach().numpy()).max() < 1e-5 * moved * 50


def test_8bit_state_loads_bitsandbytes_state_and_steps_alike():
    """bitsandbytes' AdEMAMix8bit state (state1 = [m1; m2] codes, absmax1, state2 = ν
    codes, absmax2) is fastopt's exp_avg / exp_avg_slow / exp_avg_sq with their
    _absmax: loaded into fastopt, one step from it lands where bitsandbytes' lands."""
    rng = np.random.default_rng(2)
    n = 4096 * 3 + 77
    w0 = rng.standard_normal(n).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = bnb.optim.AdEMAMix8bit([tp], lr=1e-2)
    for _ in range(20):
        tp.grad = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
        topt.step()
    st = topt.state[tp]
    w = tp.detach().numpy().copy()
    opt = fastopt.AdEMAMix([w], lr=1e-2, precision=Precision("8bit"))
    sd = opt.state_dict()
    entry = sd["state"][0]
    entry.update(step=20, exp_avg=st["state1"][0].numpy().copy(), exp_avg_absmax=st["absmax1"][0].numpy().copy(),
                 exp_avg_slow=st["state1"][1].numpy().copy(), exp_avg_slow_absmax=st["absmax1"][1].numpy().copy(),
                 exp_avg_sq=st["state2"].numpy().copy(), exp_avg_sq_absmax=st["absmax2"].numpy().copy())
    opt.load_state_dict(sd)
    g = rng.standard_normal(n).astype(np.float32)
    before = w.copy()
    opt.step([g])
    tp.grad = torch.from_numpy(g.copy())
    topt.step()
    theirs = tp.detach().numpy()
    step = np.abs(theirs - before)
    assert step.max() > 1e-3
    # bitsandbytes' CPU quantiser picks a farther code for a few values (fastopt/lowprec/q8.py)
    assert np.abs(w - theirs).max() <= 1e-3 * step.max()
    new = opt.state[0]
    for ours, theirs_codes in ((new["exp_avg"], st["state1"][0]), (new["exp_avg_slow"], st["state1"][1]),
                               (new["exp_avg_sq"], st["state2"])):
        diff = np.abs(ours.astype(int) - theirs_codes.numpy().astype(int))
        assert (diff == 0).mean() > 0.97 and diff.max() <= 8


def test_8bit_update_deviation_no_worse_than_bitsandbytes():
    rng = np.random.default_rng(4)
    n = 1 << 16
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(60)]
    w32, w8 = w0.copy(), w0.copy()
    o32 = fastopt.AdEMAMix([w32], lr=1e-3)
    o8 = fastopt.AdEMAMix([w8], lr=1e-3, precision=Precision("8bit"))
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = bnb.optim.AdEMAMix8bit([tp], lr=1e-3)
    for g in grads:
        o32.step([g])
        o8.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    total = np.linalg.norm(w32 - w0)
    ours = np.linalg.norm(w8 - w32) / total
    theirs = np.linalg.norm(tp.detach().numpy() - w32) / total
    assert 0 < ours <= theirs * 1.02 + 1e-4, (ours, theirs)


def test_bad_hyper_parameters_are_refused():
    z = np.zeros(10)
    with pytest.raises(ValueError, match="t_beta3 > 0.*betas"):
        fastopt.AdEMAMix([z], betas=(0.0, 0.999, 0.9999), t_beta3=100)
    with pytest.raises(ValueError, match=r"betas\[2\]"):
        fastopt.AdEMAMix([z], betas=(0.9, 0.999, 1.0))
    with pytest.raises(ValueError, match="betas"):
        fastopt.AdEMAMix([z], betas=(0.9, 0.999))
    with pytest.raises(ValueError, match="t_alpha"):
        fastopt.AdEMAMix([z], t_alpha=-1)
    with pytest.raises(ValueError, match="decoupled_weight_decay"):
        fastopt.AdEMAMix([{"params": [z], "decoupled_weight_decay": False}])
    assert (z == 0).all()
