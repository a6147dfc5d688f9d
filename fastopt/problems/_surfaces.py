"""The classic optimisation test surfaces: value, gradient and Hessian-vector product,
vectorised over trailing axes (``x`` of shape ``(dim, ...)``)."""
import numpy as np

from fastopt.problems._base import Problem

__all__ = ["Rosenbrock", "Beale", "Booth", "Saddle", "MonkeySaddle", "IllConditionedQuadratic"]


def _xv(x, v=None):
    x = np.asarray(x, np.float64)
    return x if v is None else (x, np.asarray(v, np.float64))


class Rosenbrock(Problem):
    """Extended Rosenbrock on R^dim (dim >= 2): ``f = Σ_i b (x_{i+1} − x_i²)² + (a − x_i)²``,
    minimum 0 at ``x = (a, a², ...)`` — for a = 1 at ``x = 1``: a long curved valley."""

    def __init__(self, dim=2, a=1.0, b=100.0):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        self.dim, self.a, self.b = dim, float(a), float(b)
        self.name = "rosenbrock" if dim == 2 else f"rosenbrock{dim}"
        self.x0 = np.array([-1.2 if i % 2 == 0 else 1.0 for i in range(dim)])
        self.xmin = np.full(dim, self.a) if self.a == 1.0 else None
        self.fmin = 0.0
        self.bounds = ((-2.0, 2.0), (-1.0, 3.0))

    def value(self, x):
        x = _xv(x)
        return np.sum(self.b * (x[1:] - x[:-1] ** 2) ** 2 + (self.a - x[:-1]) ** 2, axis=0)

    def grad(self, x):
        x = _xv(x)
        g = np.zeros_like(x)
        r = x[1:] - x[:-1] ** 2
        g[:-1] = -4.0 * self.b * x[:-1] * r - 2.0 * (self.a - x[:-1])
        g[1:] += 2.0 * self.b * r
        return g

    def hvp(self, x, v):
        x, v = _xv(x, v)
        # H is tridiagonal: d² / dx_i² = 12 b x_i² − 4 b x_{i+1} + 2 (+ 2 b from the previous
        # term), d² / dx_i dx_{i+1} = −4 b x_i
        diag = np.zeros_like(x)
        diag[:-1] = 12.0 * self.b * x[:-1] ** 2 - 4.0 * self.b * x[1:] + 2.0
        diag[1:] += 2.0 * self.b
        off = -4.0 * self.b * x[:-1]
        out = diag * v
        out[:-1] += off * v[1:]
        out[1:] += off * v[:-1]
        return out


class Beale(Problem):
    """Beale: ``f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``, minimum 0
    at (3, 0.5); flat plateaus and steep walls."""

    name, dim = "beale", 2
    _c = (1.5, 2.25, 2.625)

    def __init__(self):
        self.x0 = np.array([1.0, 1.5])
        self.xmin, self.fmin = np.array([3.0, 0.5]), 0.0
        self.bounds = ((-4.5, 4.5), (-4.5, 4.5))

    def _terms(self, x):
        x, y = _xv(x)
        return x, y, [(c - x + x * y ** k, y ** k - 1.0, k) for k, c in enumerate(self._c, 1)]

    def value(self, x):
        _, _, terms = self._terms(x)
        return sum(t * t for t, _, _ in terms)

    def grad(self, x):
        x_, y, terms = self._terms(x)
        gx = sum(2.0 * t * dx for t, dx, _ in terms)
        gy = sum(2.0 * t * (k * x_ * y ** (k - 1)) for t, _, k in terms)
        return np.stack([gx, gy])

    def hvp(self, x, v):
        x_, y, terms = self._terms(x)
        v = np.asarray(v, np.float64)
        hxx = hxy = hyy = 0.0
        for t, dx, k in terms:
            dy = k * x_ * y ** (k - 1)
            hxx = hxx + 2.0 * dx * dx
            hxy = hxy + 2.0 * (dx * dy + t * k * y ** (k - 1))
            hyy = hyy + 2.0 * (dy * dy + t * (k * (k - 1) * x_ * y ** (k - 2) if k > 1 else 0.0))
        return np.stack([hxx * v[0] + hxy * v[1], hxy * v[0] + hyy * v[1]])


class Booth(Problem):
    """Booth: ``f = (x + 2y − 7)² + (2x + y − 5)²``, a convex quadratic, minimum 0 at (1, 3)."""

    name, dim = "booth", 2

    def __init__(self):
        self.x0 = np.array([-8.0, -6.0])
        self.xmin, self.fmin = np.array([1.0, 3.0]), 0.0
        self.bounds = ((-10.0, 10.0), (-10.0, 10.0))

    def value(self, x):
        x, y = _xv(x)
        return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2

    def grad(self, x):
        x, y = _xv(x)
        r1, r2 = x + 2 * y - 7, 2 * x + y - 5
        return np.stack([2 * r1 + 4 * r2, 4 * r1 + 2 * r2])

    def hvp(self, x, v):
        v = np.asarray(v, np.float64)
        return np.stack([10.0 * v[0] + 8.0 * v[1], 8.0 * v[0] + 10.0 * v[1]])


class Saddle(Problem):
    """The saddle ``f = x² − y²``: a stationary point at 0 that is no minimum (unbounded
    below along y). From a start just off the ridge ``y = 0`` the ``y`` gradient is tiny:
    plain SGD leaves only slowly, rules that rescale the gradient leave at once."""

    name, dim = "saddle", 2

    def __init__(self):
        self.x0 = np.array([-1.0, 1e-3])
        self.bounds = ((-1.5, 1.5), (-1.5, 1.5))

    def value(self, x):
        x, y = _xv(x)
        return x * x - y * y

    def grad(self, x):
        x, y = _xv(x)
        return np.stack([2.0 * x, -2.0 * y])

    def hvp(self, x, v):
        v = np.asarray(v, np.float64)
        return np.stack([2.0 * v[0], -2.0 * v[1]])


class MonkeySaddle(Problem):
    """The monkey saddle ``f = x³ − 3xy²``: three valleys meet at 0, where gradient and
    Hessian both vanish."""

    name, dim = "monkey_saddle", 2

    def __init__(self):
        self.x0 = np.array([0.8, 1e-3])
        self.bounds = ((-1.5, 1.5), (-1.5, 1.5))

    def value(self, x):
        x, y = _xv(x)
        return x ** 3 - 3.0 * x * y * y

    def grad(self, x):
        x, y = _xv(x)
        return np.stack([3.0 * x * x - 3.0 * y * y, -6.0 * x * y])

    def hvp(self, x, v):
        (x, y), v = _xv(x, v)
        return np.stack([6.0 * x * v[0] - 6.0 * y * v[1], -6.0 * y * v[0] - 6.0 * x * v[1]])


class IllConditionedQuadratic(Problem):
    """``f = ½ Σ_i λ_i x_i²`` with ``λ_i = κ^(i/(dim−1))``, from 1 to the condition number
    ``κ``: a long narrow valley along ``x_0`` (gradient descent zig-zags across it)."""

    def __init__(self, dim=2, condition=20.0):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        condition = float(condition)
        if not (np.isfinite(condition) and condition >= 1.0):
            raise ValueError(f"condition must be a finite number >= 1, got {condition!r}")
        self.dim, self.condition = dim, condition
        self.name = "quadratic" if dim == 2 else f"quadratic{dim}"
        self.lam = condition ** (np.arange(dim) / (dim - 1))
        self.x0 = np.array([-4.0] + [1.0] * (dim - 1))
        self.xmin, self.fmin = np.zeros(dim), 0.0
        self.bounds = ((-4.5, 4.5), (-1.5, 1.5))

    def _lam(self, x):
        return self.lam.reshape((-1,) + (1,) * (x.ndim - 1))

    def value(self, x):
        x = _xv(x)
        return 0.5 * np.sum(self._lam(x) * x * x, axis=0)

    def grad(self, x):
        x = _xv(x)
        return self._lam(x) * x

    def hvp(self, x, v):
        v = np.asarray(v, np.float64)
        return self._lam(v) * v
