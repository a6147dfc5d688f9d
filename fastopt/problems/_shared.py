"""The function-style objectives the second-order tests and benchmarks share (kept
with their original signatures; :mod:`fastopt.problems` re-exports them).

Each returns ``(f, g)`` for a point ``x`` (float64 arithmetic for float64 input)."""
import numpy as np

__all__ = ["rosenbrock", "logistic_regression", "sparse_logistic_regression"]


def rosenbrock(x):
    """Chained (generalised) Rosenbrock, ``scipy.optimize.rosen``: ``f = Σ_i 100
    (x_{i+1} - x_i²)² + (1 - x_i)²`` over consecutive pairs, and its gradient, minimum 0
    at ``x = 1``. Each coordinate couples to the next, so quasi-Newton methods need
    iterations growing with n (thousands at n = 1000)."""
    f = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return f, g


def extended_rosenbrock(x):
    """Extended Rosenbrock (Moré, Garbow & Hillstrom 1981, problem 21): ``n/2``
    independent 2-D Rosenbrock functions, ``f = Σ_i 100 (x_{2i} - x_{2i-1}²)² +
    (1 - x_{2i-1})²`` (1-based), and its gradient; ``n`` even, minimum 0 at ``x = 1``,
    the standard start ``(-1.2, 1, -1.2, 1, ...)``."""
    if x.size % 2:
        raise ValueError(f"extended Rosenbrock needs an even number of variables, got {x.size}")
    a, b = x[0::2], x[1::2]
    d = b - a * a
    f = np.sum(100.0 * d * d + (1.0 - a) ** 2)
    g = np.empty_like(x)
    g[0::2] = -400.0 * a * d - 2.0 * (1.0 - a)
    g[1::2] = 200.0 * d
    return f, g


def logistic_regression(n=400, dim=30, lam=1e-2, seed=0):
    """L2-regularised logistic regression on ``n`` synthetic examples in ``dim``
    dimensions (labels ±1 from a random plane, with noise), from ``seed``:
    ``f(w) = mean(log(1 + exp(-y Aw))) + ½ λ ‖w‖²``. Returns ``(fun_and_grad, hess, dim)``,
    where ``hess(w) = Aᵀ diag(σ(1-σ)) A / n + λ I`` with ``σ = σ(Aw)``."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, dim))
    y = np.where(A @ rng.standard_normal(dim) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)

    def fun_and_grad(w):
        z = y * (A @ w)
        f = np.mean(np.logaddexp(0.0, -z)) + 0.5 * lam * w @ w
        s = -y / (1.0 + np.exp(z))
        return f, A.T @ s / n + lam * w

    def hess(w):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        return (A.T * (p * (1 - p))) @ A / n + lam * np.eye(dim)
    return fun_and_grad, hess, dim


def sparse_logistic_regression(n=400, dim=30, density=0.05, lam=1e-2, seed=0):
    """:func:`logistic_regression` on a sparse design: ``A`` is a SciPy CSR matrix with
    ``density`` of its entries standard normal (the rest zero), labels ±1 from a
    random plane with noise. Returns ``(fun_and_grad, hess, dim)``; needs SciPy."""
    try:
        import scipy.sparse as sparse
    except ImportError:  # pragma: no cover - the test extra has scipy
        raise ImportError("sparse_logistic_regression needs scipy (pip install 'fastopt[test]')") from None
    rng = np.random.default_rng(seed)
    A = sparse.random(n, dim, density=density, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    y = np.where(A @ rng.standard_normal(dim) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)

    def fun_and_grad(w):
        z = y * (A @ w)
        f = np.mean(np.logaddexp(0.0, -z)) + 0.5 * lam * w @ w
        s = -y / (1.0 + np.exp(z))
        return f, A.T @ s / n + lam * w

    def hess(w):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        return (A.T @ sparse.diags(p * (1 - p)) @ A).toarray() / n + lam * np.eye(dim)
    return fun_and_grad, hess, dim
