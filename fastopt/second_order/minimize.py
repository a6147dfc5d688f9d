"""``fastopt.minimize``: the SciPy-style functional interface over L-BFGS, Newton,
Newton-CG and every first-order rule."""
import math

import numpy as np

from fastopt.second_order._common import (MESSAGES, NonFiniteValueError, Status, check_count, check_line_search,
                                          check_tolerance, unpack_loss_grads)
from fastopt.second_order.lbfgs import LBFGS
from fastopt.second_order.newton import cg_direction, cholesky_direction, newton_loop

__all__ = ["minimize", "OptimizeResult"]


class OptimizeResult(dict):
    """A dict with attribute access, as SciPy's: ``x``, ``fun``, ``jac``, ``nit``,
    ``nfev``, ``status`` (a :class:`fastopt.second_order.Status` code), ``message``,
    ``success`` (stopped at a stationary point: the gradient test, or — as SciPy
    counts its ``ftol`` stop — a step, change or slope below ``tolerance_change``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self):
        return "OptimizeResult(" + ", ".join(f"{k}={v!r}" for k, v in self.items()) + ")"


def _first_order_classes():
    from fastopt import optim
    return {cls.__name__.lower(): cls for cls in optim.ALL}


def _result(x, fun, jac, nit, nfev, status):
    return OptimizeResult(x=x, fun=fun, jac=jac, nit=nit, nfev=nfev, status=status, message=MESSAGES[status],
                          success=status in Status.SUCCESS)


def minimize(fun_and_grad, x0, method="lbfgs", *, hess=None, hessp=None, line_search="strong_wolfe",
             max_iter=None, max_eval=None, tolerance_grad=None, tolerance_change=None, history_size=10, lr=None,
             callback=None, first_step="scipy", **options):
    """Minimise ``f`` from ``x0``; ``fun_and_grad(x) -> (f, g)`` with g of x's shape.

    ``method``:

    * ``"lbfgs"`` — :class:`fastopt.LBFGS` (``history_size`` pairs, ``lr`` = 1, one
      ``step`` of ``max_iter`` iterations, default 1000; ``tolerance_grad`` 1e-7,
      ``tolerance_change`` 1e-9 as in PyTorch; ``first_step`` "scipy" by default:
      L-BFGS-B's first trial step ``1/‖g‖₂``, with which the evaluations match SciPy's;
      "torch" gives PyTorch's iterates).
    * ``"newton"`` — dense Newton, ``hess(x) -> (n, n)`` array, Cholesky solve with
      Levenberg-Marquardt damping when H is not positive definite (default 100
      iterations, ``tolerance_grad`` 1e-10, ``tolerance_change`` 0).
    * ``"newton-cg"`` — truncated CG on ``hessp(x, v) -> H v`` (or ``hess(x) @ v``).
    * any first-order rule (``"adam"``, ``"sgd"``, ...): the fastopt optimizer class
      with ``lr`` and ``options`` as its hyper-parameters; ``max_iter`` steps (default
      1000), stopping at ``‖g‖∞ ≤ tolerance_grad`` (default 1e-7).

    ``line_search``: ``"strong_wolfe"``, ``"armijo"`` or None (fixed step ``lr``; t = 1
    for Newton). ``max_eval`` is honoured exactly. ``callback(result)`` is called after
    every iteration with an :class:`OptimizeResult` holding ``x`` (a copy), ``fun`` and
    ``nit``; returning True stops (status 9).

    Returns an :class:`OptimizeResult`. A non-finite value or gradient, a failed line
    search or an unfactorisable Hessian end the run with their status (``x`` at the
    last accepted point); a non-finite value at ``x0`` gives status 7 with ``x = x0``.
    Wrong shapes or types from the callbacks raise TypeError/ValueError."""
    if not callable(fun_and_grad):
        raise TypeError("fun_and_grad must be callable: x -> (f, grad)")
    x = np.array(x0, copy=True)
    if x.dtype.kind in "iub":
        x = x.astype(np.float64)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x0 must be a real float32/float64 array, got {x.dtype}")
    if x.size == 0:
        raise ValueError("x0 is empty")
    x = np.ascontiguousarray(x)
    check_line_search(line_search)
    method = method.lower() if isinstance(method, str) else method
    nit_box = [0]

    def cb(fun):
        nit_box[0] += 1
        return bool(callback(OptimizeResult(x=x.copy(), fun=fun, nit=nit_box[0]))) if callback else False

    if method == "lbfgs":
        if options:
            raise TypeError(f"unknown options for lbfgs: {sorted(options)}")
        max_iter = check_count(1000 if max_iter is None else max_iter, "max_iter")
        opt = LBFGS([x], lr=1.0 if lr is None else lr, max_iter=max_iter,
                    max_eval=max_iter * 5 // 4 if max_eval is None else max_eval,
                    tolerance_grad=1e-7 if tolerance_grad is None else tolerance_grad,
                    tolerance_change=1e-9 if tolerance_change is None else tolerance_change,
                    history_size=history_size, line_search=line_search, first_step=first_step)
        try:
            opt._step(lambda: fun_and_grad(x), cb)
        except NonFiniteValueError:
            return _result(x, math.nan, None, 0, 1, Status.NON_FINITE)
        info = opt.last_step
        return _result(x, info.fun, opt._G[opt._cur].reshape(x.shape).copy(), info.nit, info.nfev, info.status)
    if method in ("newton", "newton-cg"):
        if options:
            raise TypeError(f"unknown options for {method}: {sorted(options)}")
        max_iter = check_count(100 if max_iter is None else max_iter, "max_iter")
        tolerance_grad = check_tolerance(1e-10 if tolerance_grad is None else tolerance_grad, "tolerance_grad")
        tolerance_change = check_tolerance(0.0 if tolerance_change is None else tolerance_change, "tolerance_change")
        if max_eval is not None:
            max_eval = check_count(max_eval, "max_eval")
        n = x.size
        if method == "newton":
            if not callable(hess):
                raise TypeError("method='newton' needs hess(x) -> (n, n) array")
            damping = [0.0]

            def direction(xc, g):
                H = np.asarray(hess(xc), dtype=np.float64)
                if H.shape != (n, n):
                    raise ValueError(f"hess(x) returned shape {H.shape}, expected {(n, n)}")
                if not np.isfinite(H).all():
                    return None
                d, damping[0] = cholesky_direction(H, g.astype(np.float64), damping[0])
                return d
        else:
            if hessp is None and not callable(hess):
                raise TypeError("method='newton-cg' needs hessp(x, v) -> H v (or hess(x))")

            def direction(xc, g):
                if hessp is not None:
                    def prod(v):
                        return np.asarray(hessp(xc, v.reshape(xc.shape))).reshape(-1)
                else:
                    H = np.asarray(hess(xc))

                    def prod(v):
                        return H @ v
                try:
                    return cg_direction(prod, g)[0]
                except FloatingPointError:
                    return None
        try:
            status, fun, jac, nit, nfev = newton_loop(
                fun_and_grad, x, direction, line_search=line_search, max_iter=max_iter, max_eval=max_eval,
                tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, callback=cb)
        except NonFiniteValueError:
            return _result(x, math.nan, None, 0, 1, Status.NON_FINITE)
        return _result(x, fun, jac, nit, nfev, status)
    classes = _first_order_classes()
    if method not in classes:
        raise ValueError(f"unknown method {method!r}: 'lbfgs', 'newton', 'newton-cg' or one of {sorted(classes)}")
    max_iter = check_count(1000 if max_iter is None else max_iter, "max_iter")
    tolerance_grad = check_tolerance(1e-7 if tolerance_grad is None else tolerance_grad, "tolerance_grad")
    kwargs = dict(options)
    if lr is not None:
        kwargs["lr"] = lr
    opt = classes[method]([x], **kwargs)
    prev = np.empty_like(x)
    nfev, nit, status, fun, jac = 0, 0, None, math.nan, None
    while True:
        if max_eval is not None and nfev >= max_eval:
            status = Status.MAX_EVAL
            break
        f, (g,) = unpack_loss_grads(fun_and_grad(x), [x.shape], x.dtype, "fun_and_grad(x)")
        nfev += 1
        if not (math.isfinite(f) and np.isfinite(g).all()):
            if nit:
                x[...] = prev
            status = Status.NON_FINITE
            break
        fun, jac = f, g
        if float(np.max(np.abs(g))) <= tolerance_grad:
            status = Status.CONVERGED
            break
        if nit >= max_iter:
            status = Status.MAX_ITER
            break
        prev[...] = x
        opt.step([g])
        nit += 1
        if cb(f):
            status = Status.CALLBACK
            break
    return _result(x, fun, jac, nit, nfev, status)
