"""The :class:`Problem` interface every test problem implements, and its argument checks."""
import numpy as np

__all__ = ["Problem", "as_point"]


def as_point(x, name, dim=None):
    """``x`` as a float64 array (floats promoted, integers refused), checked finite and, when
    ``dim`` is given, with ``dim`` coordinates on its first axis. Raises naming ``name``."""
    a = np.asarray(x)
    if a.dtype.kind not in "f":
        raise TypeError(f"{name} must be a float array, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if dim is not None and (a.ndim == 0 or a.shape[0] != dim):
        raise ValueError(f"{name} must have {dim} coordinates on its first axis, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds inf or NaN")
    return a


class Problem:
    """An objective ``f`` on R^dim with its gradient and Hessian-vector product.

    * ``value(x)``, ``grad(x)``, ``hvp(x, v)``: plain NumPy. The surfaces (2-D test
      functions, the quadratic) are vectorised over trailing axes: ``x`` of shape
      ``(dim, ...)`` gives values of shape ``(...)`` — a whole contour grid in one call.
    * ``fun_and_grad(x) -> (float, grad)`` for :func:`fastopt.minimize` and the optimizers.
    * ``x0``: the default start; ``xmin``/``fmin``: a known minimiser and its value (None
      when there is none, e.g. the saddles); ``bounds``: the plot window of a 2-D problem.
    """

    name = "problem"
    dim = 0
    x0 = None
    xmin = None
    fmin = None
    bounds = None

    def value(self, x):
        raise NotImplementedError

    def grad(self, x):
        raise NotImplementedError

    def hvp(self, x, v):
        """Hessian-vector product ``∇²f(x) v``."""
        raise NotImplementedError

    def fun_and_grad(self, x):
        """``(f(x), ∇f(x))`` at one point ``x`` of shape ``(dim,)``."""
        return float(self.value(x)), self.grad(x)

    def hess(self, x):
        """The dense Hessian at ``x`` (built column by column from :meth:`hvp`: for
        small problems, e.g. Newton's method)."""
        x = np.asarray(x, np.float64)
        eye = np.eye(self.dim)
        return np.stack([self.hvp(x, eye[i]) for i in range(self.dim)], axis=1)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} dim={self.dim}>"
