"""Issue 10, the smaller findings: what crosses from Python is refused with an error
naming the argument, before anything is written."""
import numpy as np
import pytest

import fastopt
from fastopt import kernels, reference

CLASSES = [fastopt, reference]


@pytest.mark.parametrize("mod", CLASSES)
def test_an_overflowing_lr_is_a_value_error_naming_lr(mod):
    with pytest.raises(ValueError, match="lr"):
        mod.Adam([np.zeros(3)], lr=10**400)
    p = np.zeros(3)
    with pytest.raises(ValueError, match="lr"):
        kernels.sgd(p, np.ones(3), step=1, lr=10**400)
    assert not p.any()


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("betas", [(0.9, 0.999, 0.5), (0.9,), [0.9, 0.99, 0.1]])
def test_betas_must_have_exactly_two_elements(mod, betas):
    with pytest.raises(ValueError, match="betas must be a tuple of 2 numbers"):
        mod.Adam([np.zeros(3)], betas=betas)
    p = np.zeros(3)
    opt = mod.Adam([p])
    opt.param_groups[0]["betas"] = betas
    with pytest.raises(ValueError, match="betas"):
        opt.step([np.ones(3)])
    assert not p.any()


@pytest.mark.parametrize("mod", CLASSES)
def test_masked_gradients_are_refused(mod):
    p = np.zeros(4)
    opt = mod.SGD([p], lr=1.0)
    g = np.ma.masked_array(np.ones(4), mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match=r"grads\[0\] is a masked array"):
        opt.step([g])
    assert not p.any()
    with pytest.raises(TypeError, match="masked"):
        kernels.sgd(p, g, step=1)
    with pytest.raises(TypeError, match="masked"):
        mod.SGD([np.ma.masked_array(np.zeros(3))])
    assert not p.any()


@pytest.mark.parametrize("mod", CLASSES)
def test_a_parameter_made_read_only_after_construction_is_not_written(mod):
    p, q = np.zeros(5), np.zeros(5)
    opt = mod.Adam([q, p], lr=1.0)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        opt.step([np.ones(5), np.ones(5)])
    assert not p.any() and not q.any() and opt.state[0]["step"] == 0
    p.flags.writeable = True
    opt.step([np.ones(5), np.ones(5)])
    assert (p < 0).all()


@pytest.mark.parametrize("mod", CLASSES)
def test_a_state_buffer_made_read_only_is_not_written(mod):
    p = np.zeros(5)
    opt = mod.Adam([p], lr=1.0)
    opt.state[0]["exp_avg"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        opt.step([np.ones(5)])
    assert not p.any()


def test_a_parameter_reallocated_in_place_is_refused():
    # ndarray.resize(refcheck=False) frees the block the optimizer's pointers lead to
    p = np.zeros(100_000)
    opt = fastopt.SGD([p], lr=1.0)
    p.resize(200_000, refcheck=False)
    with pytest.raises(ValueError, match=r"params\[0\] no longer has the memory"):
        opt.step([np.ones(200_000)])


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("grads, match", [
    (None, "grads must be a sequence .* got NoneType"),
    ((np.ones(3) for _ in range(1)), "got generator; pass list"),
    ({0: np.ones(3)}, "got dict"),
    (np.float64(1.0), "got float64"),
    (np.array(1.0), "0-d array"),
])
def test_grads_that_are_not_a_sequence_are_named(mod, grads, match):
    p = np.zeros(3)
    with pytest.raises(TypeError, match=match):
        mod.SGD([p], lr=1.0).step(grads)
    assert not p.any()


@pytest.mark.parametrize("mod", CLASSES)
def test_any_sequence_of_gradients_is_accepted(mod):
    p = np.zeros((2, 3))
    opt = mod.SGD([p[0], p[1]], lr=1.0)
    opt.step(np.ones((2, 3)))                       # rows of a 2-D array
    opt.step((np.ones(3), None))
    np.testing.assert_array_equal(p, [[-2, -2, -2], [-1, -1, -1]])
