"""fastopt.problems: values, gradients and Hessian-vector products of every test problem,
against SciPy / scikit-learn where they have the same function, and against finite
differences everywhere."""
import importlib.util

import numpy as np
import pytest

from fastopt import check_grad
from fastopt.problems import (PROBLEMS, SURFACES, Beale, Booth, IllConditionedQuadratic, LogisticRegression,
                              MonkeySaddle, Rosenbrock, Saddle, SoftmaxRegression, TwoLayerMLP, get_problem,
                              extended_rosenbrock, logistic_regression, rosenbrock, synthetic_classification)

SMALL = {"mlp": lambda: TwoLayerMLP(*synthetic_classification(n=40, dim=6, classes=3), hidden=8)}


def small(name):
    return SMALL[name]() if name in SMALL else get_problem(name)


def _points(p, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [p.x0 + 0.3 * rng.standard_normal(p.dim) for _ in range(k)]


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gradient_matches_centred_differences(name):
    p = small(name)
    for x in _points(p):
        r = check_grad(p.value, p.grad, x, rtol=1e-5)
        assert r.ok, str(r)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_hvp_matches_differences_of_the_gradient(name):
    p = small(name)
    rng = np.random.default_rng(1)
    for x in _points(p):
        v = rng.standard_normal(p.dim)
        h = 1e-6
        fd = (p.grad(x + h * v) - p.grad(x - h * v)) / (2 * h)
        hv = p.hvp(x, v)
        assert hv.shape == (p.dim,)
        np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-6 * np.abs(hv).max())


def test_rosenbrock_matches_scipy():
    opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(2)
    for dim in (2, 3, 7):
        p = Rosenbrock(dim)
        x, v = rng.standard_normal(dim), rng.standard_normal(dim)
        assert p.value(x) == pytest.approx(opt.rosen(x), rel=1e-14)
        np.testing.assert_allclose(p.grad(x), opt.rosen_der(x), rtol=1e-13)
        np.testing.assert_allclose(p.hvp(x, v), opt.rosen_hess_prod(x, v), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(p.hess(x), opt.rosen_hess(x), rtol=1e-12, atol=1e-12)


def test_extended_rosenbrock_is_independent_pairs():
    # Moré-Garbow-Hillstrom problem 21: the sum of 2-D Rosenbrock functions of (x1, x2),
    # (x3, x4), ...; scipy's rosen of each pair
    so = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(10)
    f, g = extended_rosenbrock(x)
    pairs = x.reshape(5, 2)
    assert f == pytest.approx(sum(so.rosen(q) for q in pairs), rel=1e-14)
    np.testing.assert_allclose(g.reshape(5, 2), [so.rosen_der(q) for q in pairs], rtol=1e-13)
    assert extended_rosenbrock(np.ones(6))[0] == 0.0 and not extended_rosenbrock(np.ones(6))[1].any()
    with pytest.raises(ValueError, match="even number"):
        extended_rosenbrock(np.ones(5))


def test_the_shared_function_forms_are_unchanged():
    # fastopt.second_order's tests and benchmarks import these two
    x = np.array([-1.2, 1.0, 0.5, 2.0])
    f, g = rosenbrock(x)
    assert f == pytest.approx(Rosenbrock(4).value(x), rel=1e-15)
    np.testing.assert_allclose(g, Rosenbrock(4).grad(x), rtol=1e-15)
    fg, hess, dim = logistic_regression(n=50, dim=5)
    assert dim == 5 and hess(np.zeros(5)).shape == (5, 5) and np.isfinite(fg(np.zeros(5))[0])


def test_surfaces_are_vectorised_over_a_grid():
    for name in SURFACES:
        p = get_problem(name)
        X, Y = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 2, 4))
        Z = p.value(np.stack([X, Y]))
        G = p.grad(np.stack([X, Y]))
        assert Z.shape == X.shape and G.shape == (2,) + X.shape
        for i in range(4):
            for j in range(5):
                pt = np.array([X[i, j], Y[i, j]])
                assert Z[i, j] == pytest.approx(p.value(pt), rel=1e-14, abs=1e-14)
                np.testing.assert_allclose(G[:, i, j], p.grad(pt), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("cls, xmin", [(Rosenbrock, (1, 1)), (Beale, (3, 0.5)), (Booth, (1, 3)),
                                        (IllConditionedQuadratic, (0, 0))])
def test_known_minima_are_stationary_with_value_fmin(cls, xmin):
    p = cls()
    np.testing.assert_allclose(p.xmin, xmin)
    assert p.value(p.xmin) == pytest.approx(p.fmin, abs=1e-14)
    np.testing.assert_allclose(p.grad(p.xmin), 0, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(p.hess(p.xmin)) > 0)


def test_saddles_have_a_stationary_point_that_is_no_minimum():
    for p in (Saddle(), MonkeySaddle()):
        np.testing.assert_allclose(p.grad(np.zeros(2)), 0)
        assert p.fmin is None
        assert p.value(np.array([0.0, 0.5])) < 0 or p.value(np.array([-0.5, 0.0])) < 0
    ev = np.linalg.eigvalsh(Saddle().hess(np.zeros(2)))
    assert ev[0] < 0 < ev[1]
    np.testing.assert_allclose(MonkeySaddle().hess(np.zeros(2)), 0)


def test_quadratic_has_the_chosen_condition_number():
    for dim, kappa in ((2, 20.0), (10, 1e4)):
        p = IllConditionedQuadratic(dim, kappa)
        ev = np.linalg.eigvalsh(p.hess(np.zeros(dim)))
        assert ev.max() / ev.min() == pytest.approx(kappa, rel=1e-12)


# scikit-learn is imported in a fresh interpreter: it loads its own vendored libgomp, which
# in this process would sit beside the one fastopt and torch share (tests/test_torch.py)
SKLEARN_PEERS = """
import numpy as np
import fastopt
from sklearn import linear_model as lm, metrics
from sklearn.datasets import load_digits as sk_digits
from fastopt.problems import LogisticRegression, SoftmaxRegression, load_digits, synthetic_classification

# softmax loss = scikit-learn's log_loss of the same probabilities
X, y = synthetic_classification(n=60, dim=4, classes=3)
p = SoftmaxRegression(X, y, lam=0.0)
w = np.random.default_rng(0).standard_normal(p.dim)
W = w.reshape(5, 3)
Z = X @ W[:4] + W[4]
P = np.exp(Z - Z.max(1, keepdims=True))
P /= P.sum(1, keepdims=True)
assert abs(p.value(w) - metrics.log_loss(y, P, labels=[0, 1, 2])) <= 1e-12 * p.value(w)

# the L2 logistic minimiser (Newton) = scikit-learn's, which penalises every weight of
# [X 1] when fit_intercept=False, as ours does: C = 1 / (λ n)
X, y = synthetic_classification(n=200, dim=5)
lam = 1e-2
p = LogisticRegression(X, y, lam=lam)
r = fastopt.minimize(p.fun_and_grad, p.x0, method="newton", hess=p.hess)
Xb = np.hstack([X, np.ones((200, 1))])
sk = lm.LogisticRegression(C=1.0 / (lam * 200), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(Xb, y)
np.testing.assert_allclose(r.x, sk.coef_.ravel(), rtol=1e-5, atol=1e-6)
assert p.accuracy(r.x) == sk.score(Xb, y)

# load_digits reads scikit-learn's own file: the same images and labels
Xtr, ytr, Xte, yte = load_digits(test_fraction=0.0)
d = sk_digits()
order = np.random.default_rng(0).permutation(1797)
np.testing.assert_array_equal(Xtr, d.data[order] / 16.0)
np.testing.assert_array_equal(ytr, d.target[order])
print("OK")
"""


def test_against_scikit_learn():
    if importlib.util.find_spec("sklearn") is None:   # found, not imported: it loads its own libgomp
        pytest.skip("needs scikit-learn")
    from subproc import assert_ok, run_snippet
    assert_ok(run_snippet(SKLEARN_PEERS, timeout=300))


def test_load_digits_does_not_import_sklearn():
    if importlib.util.find_spec("sklearn") is None:   # found, not imported: it loads its own libgomp
        pytest.skip("needs scikit-learn")
    from subproc import assert_ok, run_snippet
    assert_ok(run_snippet("""
        import sys
        from fastopt.problems import load_digits
        Xtr, ytr, Xte, yte = load_digits()
        assert Xtr.shape == (1438, 64) and Xte.shape == (359, 64) and set(ytr.tolist()) == set(range(10))
        assert 0.0 <= Xtr.min() and Xtr.max() <= 1.0
        assert "sklearn" not in sys.modules
        print("OK")
    """))


def test_data_problems_evaluate_on_minibatch_rows():
    p = SoftmaxRegression()
    w = np.random.default_rng(0).standard_normal(p.dim)
    idx = np.array([3, 17, 5])
    sub = SoftmaxRegression(p.X[idx, :-1], p.y[idx], classes=p.classes, lam=p.lam)
    assert p.value(w, idx) == pytest.approx(sub.value(w), rel=1e-14)
    np.testing.assert_allclose(p.grad(w, idx), sub.grad(w), rtol=1e-13)


def test_mlp_parameters_unpack_into_views():
    p = SMALL["mlp"]()
    W1, b1, W2, b2 = p.unpack(p.x0)
    assert W1.shape == (6, 8) and b1.shape == (8,) and W2.shape == (8, 3) and b2.shape == (3,)
    assert np.shares_memory(W1, p.x0) and p.dim == 6 * 8 + 8 + 8 * 3 + 3


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="problem must be one of"):
        get_problem("rosenbrok")
    with pytest.raises(ValueError, match="dim"):
        Rosenbrock(1)
    with pytest.raises(ValueError, match="condition"):
        IllConditionedQuadratic(2, 0.5)
    with pytest.raises(ValueError, match="y must"):
        LogisticRegression(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="X holds inf"):
        LogisticRegression(np.array([[0.0], [np.inf]]), np.array([0, 1]))
