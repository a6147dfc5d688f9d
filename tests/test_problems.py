"""fastopt.problems: values, gradients and Hessian-vector products of every test problem,
against SciPy / scikit-learn where they have the same function, and against finite
differences everywhere."""
import numpy as np
import pytest

from fastopt import check_grad
from fastopt.problems import (PROBLEMS, SURFACES, Beale, Booth, IllConditionedQuadratic, LogisticRegression,
                              MonkeySaddle, Rosenbrock, Saddle, SoftmaxRegression, TwoLayerMLP, get_problem,
                              logistic_regression, rosenbrock, synthetic_classification)

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


def test_softmax_loss_matches_sklearn_log_loss():
    metrics = pytest.importorskip("sklearn.metrics")
    X, y = synthetic_classification(n=60, dim=4, classes=3)
    p = SoftmaxRegression(X, y, lam=0.0)
    w = np.random.default_rng(0).standard_normal(p.dim)
    W = w.reshape(5, 3)
    Z = X @ W[:4] + W[4]
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    assert p.value(w) == pytest.approx(metrics.log_loss(y, P, labels=[0, 1, 2]), rel=1e-12)


def test_logistic_minimiser_matches_sklearn():
    lm = pytest.importorskip("sklearn.linear_model")
    import fastopt
    X, y = synthetic_classification(n=200, dim=5)
    lam = 1e-2
    p = LogisticRegression(X, y, lam=lam)
    r = fastopt.minimize(p.fun_and_grad, p.x0, method="newton", hess=p.hess)
    # sklearn: C Σ loss + ½‖w‖² (intercept not penalised): the same minimiser as ours when the
    # intercept is penalised too, which scikit-learn does for fit_intercept=False on [X 1]
    Xb = np.hstack([X, np.ones((200, 1))])
    sk = lm.LogisticRegression(C=1.0 / (lam * 200), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(Xb, y)
    np.testing.assert_allclose(r.x, sk.coef_.ravel(), rtol=1e-5, atol=1e-6)
    assert p.accuracy(r.x) == pytest.approx(sk.score(Xb, y))


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
