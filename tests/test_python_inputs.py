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


@pytest.mark.parametrize("view", [False, True])
def test_parameters_cannot_be_reallocated_while_the_optimizer_lives(view):
    # ndarray.resize(refcheck=False) would free the block the optimizer's pointers lead
    # to; the optimizer's weak references make NumPy refuse it (also for a view's base)
    base = np.zeros(100_000)
    p = base[:50_000] if view else base
    opt = fastopt.Adam([p], lr=1.0)
    with pytest.raises(ValueError, match="cannot resize"):
        base.resize(200_000, refcheck=False)
    with pytest.raises(ValueError, match="cannot resize"):
        opt.state[0]["exp_avg"].resize(200_000, refcheck=False)
    opt.step([np.ones(50_000 if view else 100_000)])
    del opt
    __import__("gc").collect()                    # the optimizer and its engine form a cycle
    base.resize(200_000, refcheck=False)          # released with the optimizer


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("grads, match", [
    (None, "grads must be a sequence .* got NoneType"),
    ((np.ones(3) for _ in range(1)), "got generator; pass list"),
    ({0: np.ones(3)}, "got dict"),
    (np.float64(1.0), "got float64"),
    (np.array(1.0), "0-d array"),
    (__import__("types").MappingProxyType({0: np.ones(3)}), "got mappingproxy"),
    (__import__("collections").UserDict({0: np.ones(3)}), "got UserDict"),
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


def test_param_groups_cannot_be_replaced():
    p = np.zeros(3)
    opt = fastopt.SGD([p], lr=1.0)
    with pytest.raises(AttributeError, match="param_groups cannot be replaced"):
        opt.param_groups = [{"params": [p], "lr": 0.0}]
    opt.step([np.ones(3)])
    assert (p == -1).all()


def test_a_group_replaced_by_a_dict_subclass_is_refused():
    p = np.zeros(3)
    opt = fastopt.SGD([p], lr=1.0)

    class Lying(dict):
        def __getitem__(self, key):
            return 0.1 if key == "lr" else super().__getitem__(key)

    opt.param_groups[0] = Lying(opt.param_groups[0], lr=float("nan"))
    with pytest.raises(TypeError, match=r"param_groups\[0\] must be a dict"):
        opt.step([np.ones(3)])
    assert not p.any()


@pytest.mark.parametrize("mod", CLASSES)
def test_add_param_group_failing_for_memory_leaves_the_optimizer_as_it_was(mod, monkeypatch):
    import fastopt.optim.base as base
    p = np.zeros(4)
    opt = mod.Adam([p], lr=1.0)
    opt.step([np.ones(4)])

    def no_memory(_):
        raise MemoryError("test")

    monkeypatch.setattr(base, "state_buffer", no_memory)
    with pytest.raises(MemoryError):
        opt.add_param_group({"params": [np.zeros(5)]})
    monkeypatch.undo()
    assert len(opt.param_groups) == 1 and len(opt.params) == 1
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["state"][0]["step"] == 1
    opt.step([np.ones(4)])
    opt.add_param_group({"params": [np.zeros(5)]})
    assert opt.state_dict()["param_groups"][1]["params"] == [1]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_parameters_are_updated_elementwise_by_both_engines():
    # np.matrix's * is a matrix product: the reference must not use it
    a, b = np.matrix(np.full((2, 2), 0.5)), np.matrix(np.full((2, 2), 0.5))
    g = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    fastopt.Adam([a], lr=0.1).step([g])
    reference.Adam([b], lr=0.1).step([g])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(a), 0.4, rtol=1e-6)


@pytest.mark.parametrize("mod", CLASSES)
@pytest.mark.parametrize("cls, key", [("AMSGrad", "amsgrad"), ("Nesterov", "nesterov")])
def test_a_group_cannot_undo_what_the_class_is(mod, cls, key):
    # AMSGrad with amsgrad=False would silently run Adam
    with pytest.raises(ValueError, match=f"{cls} always uses {key}=True"):
        getattr(mod, cls)([{"params": [np.zeros(3)], key: False}])
