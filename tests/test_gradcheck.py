"""fastopt.check_grad: centred differences, per-element relative error, subsets, float64."""
import numpy as np
import pytest

from fastopt import check_grad
from fastopt.problems import Rosenbrock, SoftmaxRegression


def test_a_right_gradient_passes_and_matches_scipy_differences():
    opt = pytest.importorskip("scipy.optimize")
    p = Rosenbrock(5)
    x = np.array([-1.2, 1.0, 0.3, 0.7, 1.5])
    r = check_grad(p.value, p.grad, x)
    assert r.ok and r.max_rel_error < 1e-7
    np.testing.assert_allclose(r.numeric, opt.approx_fprime(x, p.value, 1e-7), rtol=1e-5)
    np.testing.assert_allclose(r.analytic, p.grad(x))


def test_a_wrong_element_is_the_worst_reported():
    p = Rosenbrock(6)
    x = np.linspace(-1, 1, 6).reshape(2, 3)

    def bad(z):
        g = p.grad(z.ravel()).reshape(2, 3)
        g[1, 2] *= 1.01             # a 1% error in one element
        return g
    r = check_grad(lambda z: p.value(z.ravel()), bad, x, report=3)
    assert not r.ok
    assert r.worst[0][0] == (1, 2)
    assert r.worst[0][3] == pytest.approx(0.01 / 1.01, rel=1e-4)
    assert len(r.worst) == 3 and r.worst[0][3] >= r.worst[1][3] >= r.worst[2][3]
    assert "(1, 2)" in str(r) and "FAILED" in str(r)


def test_relative_error_is_per_element_and_zero_where_both_vanish():
    r = check_grad(lambda z: float(z[0] ** 2), lambda z: np.array([2 * z[0], 0.0]), np.array([1.0, 5.0]))
    assert r.rel_error[1] == 0.0 and r.rel_error[0] < 1e-9
    # a gradient of ~1e-14 against a difference of 0: noise over noise without the floor
    g = lambda z: np.array([2 * z[0], 1e-14])                                  # noqa: E731
    assert check_grad(lambda z: float(z[0] ** 2), g, np.array([1.0, 5.0])).ok
    bare = check_grad(lambda z: float(z[0] ** 2), g, np.array([1.0, 5.0]), floor=0.0)
    assert bare.rel_error[1] == 1.0 and not bare.ok


def test_large_x_checks_a_random_subset_and_x_is_not_changed():
    p = SoftmaxRegression()
    x = np.random.default_rng(0).standard_normal(p.dim)
    keep = x.copy()
    calls = []

    def f(z):
        calls.append(1)
        return p.value(z)
    r = check_grad(f, p.grad, x, max_elements=10, seed=3)
    assert len(r.indices) == 10 and len(set(r.indices.tolist())) == 10 and len(calls) == 20
    assert not np.array_equal(r.indices, np.arange(10))
    np.testing.assert_array_equal(check_grad(p.value, p.grad, x, max_elements=10, seed=3).indices, r.indices)
    np.testing.assert_array_equal(x, keep)
    assert r.ok


def test_float32_input_is_checked_in_float64():
    seen = []

    def f(z):
        seen.append(z.dtype)
        return float(np.sum(np.sin(z)))
    x = np.linspace(0, 1, 7, dtype=np.float32)
    r = check_grad(f, lambda z: np.cos(z), x)
    assert set(seen) == {np.dtype(np.float64)}
    # in float32 the differences would be noise at the 1e-3 level
    assert r.max_rel_error < 1e-8


def test_bad_input_names_the_argument():
    f, g = (lambda z: float(z @ z)), (lambda z: 2 * z)
    with pytest.raises(TypeError, match="x must be a float array"):
        check_grad(f, g, np.arange(3))
    with pytest.raises(ValueError, match="grad returned shape"):
        check_grad(f, lambda z: np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="x holds inf or NaN"):
        check_grad(f, g, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="grad returned inf or NaN"):
        check_grad(f, lambda z: z * np.inf, np.ones(2))
    with pytest.raises(ValueError, match="f returned a non-finite"):
        check_grad(lambda z: np.inf, g, np.ones(2))
    with pytest.raises(ValueError, match="f must return a real scalar"):
        check_grad(lambda z: z, g, np.ones(2))
    with pytest.raises(TypeError, match="grad must be callable"):
        check_grad(f, None, np.ones(2))
    with pytest.raises(ValueError, match="h must be"):
        check_grad(f, g, np.ones(2), h=0)
    with pytest.raises(ValueError, match="floor must be"):
        check_grad(f, g, np.ones(2), floor=-1.0)
    with pytest.raises(ValueError, match="max_elements"):
        check_grad(f, g, np.ones(2), max_elements=0)
