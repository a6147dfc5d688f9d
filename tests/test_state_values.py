"""Issue 10, reproducer 5: load_state_dict refuses state no step of the rule can
produce (checked against the rule's declared domains, the same definition the
low-level kernels use), and unknown or invalid options; nothing changes on refusal."""
import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference
from fastopt.rules import BY_NAME

CLASSES = [fastopt, reference]


def _trained(mod, cls="NAdam", **kw):
    p = np.linspace(-1, 1, 64)
    opt = getattr(mod, cls)([p], **kw)
    for k in range(3):
        opt.step([np.sin(p + k)])
    return p, opt


def _assert_refused(opt, p, sd, match):
    before_p, before_sd = p.copy(), opt.state_dict()
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    np.testing.assert_array_equal(p, before_p)
    after = opt.state_dict()
    for k, entry in before_sd["state"].items():
        for name, v in entry.items():
            np.testing.assert_array_equal(after["state"][k][name], v)
    assert after["options"] == before_sd["options"]


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("value", [5.0, -0.5, 1.0 + 1e-12])
def test_nadam_mu_product_outside_its_domain_is_refused(mod, value):
    # before: 5.0 was accepted and the next step moved the parameter the wrong way
    p, opt = _trained(mod)
    sd = opt.state_dict()
    sd["state"][0]["mu_product"] = value
    _assert_refused(opt, p, sd, r"state\[0\]\['mu_product'\]")


def test_kernels_and_load_state_dict_share_the_scalar_domain():
    p, g, m, v = (np.zeros(8) for _ in range(4))
    with pytest.raises(ValueError, match="mu_product"):
        kernels.nadam(p, g, m, v, step=1, mu_product=5.0)
    assert BY_NAME["nadam"].domains["mu_product"].check(0.5) == 0.5


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("cls, name", [("Adam", "exp_avg_sq"), ("AMSGrad", "max_exp_avg_sq"),
                                       ("Adagrad", "sum"), ("RMSprop", "square_avg"),
                                       ("Adadelta", "acc_delta"), ("Adamax", "exp_inf"),
                                       ("NAdam", "exp_avg_sq"), ("RAdam", "exp_avg_sq")])
def test_negative_second_moments_are_refused(mod, cls, name):
    # before: accepted, and the next step gave NaN
    p, opt = _trained(mod, cls)
    sd = opt.state_dict()
    sd["state"][0][name] = sd["state"][0][name].copy()
    sd["state"][0][name][17] = -1e-3
    _assert_refused(opt, p, sd, rf"state\[0\]\['{name}'\] holds -0.001 at index 17")


@pytest.mark.parametrize("mod", CLASSES)
def test_state_the_optimizer_produced_loads_back_even_with_nan(mod):
    # under nonfinite="ignore" a NaN gradient makes NaN state: a checkpoint of it loads
    p, opt = _trained(mod, "Adam")
    with np.errstate(invalid="ignore"):
        opt.step([np.full_like(p, np.nan)])
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    assert np.isnan(opt.state[0]["exp_avg_sq"]).all()


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("options, match", [
    ({"nonfinite": "zzz"}, "nonfinite"),
    ({"clip_norm": -1.0}, "clip_norm"),
    ({"seed": 1.5}, "seed"),
    ({"grad_noise": [0.1, 0.5, 9]}, "grad_noise"),
    ({"colour": "red"}, "options"),
    ("raise", "options"),
])
def test_invalid_options_are_refused(mod, options, match):
    # before: unknown option values were silently ignored
    p, opt = _trained(mod, "Adam")
    sd = opt.state_dict()
    sd["options"] = options if not isinstance(options, dict) else dict(sd["options"], **options)
    _assert_refused(opt, p, sd, match)


@pytest.mark.parametrize("mod", CLASSES)
def test_saved_options_are_restored(mod):
    # a resumed run continues the saved run exactly: same noise seed, same policy
    p1 = np.linspace(-1, 1, 50)
    a = mod.Adam([p1], grad_noise=0.01, seed=7, nonfinite="skip", clip_norm=2.0)
    for k in range(3):
        a.step([np.cos(p1 * k)])
    sd = a.state_dict()
    p2 = p1.copy()
    b = mod.Adam([p2])
    b.load_state_dict(sd)
    assert b.state_dict()["options"] == sd["options"]
    for k in range(3, 6):
        a.step([np.cos(p1 * k)])
        b.step([np.cos(p2 * k)])
    np.testing.assert_array_equal(p1, p2)
    assert b.step([np.full_like(p2, np.inf)]) is False       # nonfinite="skip" came along
