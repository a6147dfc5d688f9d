"""Newton's method with a line search: dense (Cholesky) and Newton-CG (Hessian-vector
products).

* Dense: solve ``(H + δI) d = -g`` with a Cholesky factorisation — never an inverse.
  ``δ = 0`` when H is positive definite; otherwise (Nocedal & Wright Alg. 3.3) ``δ``
  starts at ``max(β s - min Hᵢᵢ, β s, δ_prev / 2)`` with ``β = 1e-3``,
  ``s = max(1, max |Hᵢᵢ|)`` and doubles until the factorisation succeeds, so a
  singular or indefinite Hessian gives a damped (Levenberg-Marquardt) descent step;
  the previous iterate's δ seeds the next. No learning rate: the first trial is t = 1.
  Cost: O(n³) per iteration for the factorisation and O(n²) memory for H.
* Newton-CG: conjugate gradient on ``H d = -g`` using only products ``H v``, stopped
  at negative curvature (``pᵀHp ≤ 0``: the last iterate, or ``-g`` on the first CG
  step) or at the relative residual ``‖r‖ ≤ min(0.5, √‖g‖) ‖g‖`` (N&W Alg. 7.1).

Vector operations run on the fused kernels of :mod:`fastopt._kernels.vecops` (``ops``
may be the NumPy reference, :mod:`fastopt.reference.second_order`).
"""
import math

import numpy as np

from fastopt._kernels import vecops
from fastopt._lifetime import pin_memory
from fastopt.second_order._common import MESSAGES, NonFiniteValueError, Status, unpack_loss_grads
from fastopt.second_order.linesearch import armijo, strong_wolfe

__all__ = ["cholesky_direction", "cg_direction", "newton_loop"]

BETA = 1e-3
#: evaluations one Newton line search may make. Larger than L-BFGS's PyTorch cap (26):
#: a damped step ``(H + δI)⁻¹g`` of a singular H is long (δ ~ 1e-3), and the zoom needs
#: ~30 evaluations to come back from t = 1; the cap still keeps a search with
#: ``tolerance_change = 0`` at the minimum from spending the whole budget.
NEWTON_SEARCH_EVALS = 60


def _solve_lower(L, b, trans):
    try:
        from scipy.linalg import solve_triangular
    except ImportError:                       # NumPy alone: an LU solve of the triangle
        return np.linalg.solve(L.T if trans else L, b)
    return solve_triangular(L, b, lower=True, trans=1 if trans else 0, check_finite=False)


def cholesky_direction(H, g, delta_prev=0.0, max_tries=64):
    """``(d, δ)`` with ``(H + δI) d = -g`` solved by Cholesky (see the module docstring
    for δ). Returns ``(None, δ)`` when no δ made ``H + δI`` factorisable (non-finite H)."""
    n = g.shape[0]
    diag = np.diag(H)
    delta = 0.0
    for _ in range(max_tries):
        try:
            L = np.linalg.cholesky(H if delta == 0.0 else H + delta * np.eye(n))
        except np.linalg.LinAlgError:
            scale = max(1.0, float(np.max(np.abs(diag))))
            delta = max(2.0 * delta, BETA * scale - float(np.min(diag)), BETA * scale, 0.5 * delta_prev)
            continue
        if not np.isfinite(L).all():
            return None, delta
        z = _solve_lower(L, -g, trans=False)
        return _solve_lower(L, z, trans=True), delta
    return None, delta


def cg_direction(hessp, g, ops=vecops, max_cg=None):
    """Truncated CG for ``H d = -g`` (N&W Alg. 7.1): ``z₀ = 0, r₀ = g, p₀ = -g``;
    ``α = rᵀr / pᵀHp``, ``z += α p``, ``r += α Hp``, ``β = r'ᵀr' / rᵀr``, ``p = -r + β p``;
    stop when ``‖r‖ ≤ min(0.5, √‖g‖) ‖g‖`` or at ``pᵀHp ≤ 0`` (returning z, or -g if
    that happens at once). Returns ``(d, cg_iterations)``."""
    lay = ops.Layout([g.size])
    n = g.size
    max_cg = 20 * n if max_cg is None else max_cg
    (gg,), _ = ops.lincomb(lay, None, 1.0, g, dots=((g, g),))
    gnorm = math.sqrt(gg)
    tol = min(0.5, math.sqrt(gnorm)) * gnorm
    z = np.zeros_like(g)
    r = g.copy()
    p = np.empty_like(g)
    ops.lincomb(lay, p, -1.0, g)
    rr = gg
    for j in range(max_cg):
        Hp = np.ascontiguousarray(hessp(p), dtype=g.dtype).reshape(-1)
        if Hp.shape != g.shape:
            raise ValueError(f"hessp returned shape {Hp.shape}, expected {g.shape}")
        (pHp,), _ = ops.lincomb(lay, None, 1.0, p, dots=((p, Hp),))
        if not math.isfinite(pHp):
            raise FloatingPointError("hessp returned a non-finite product")
        if pHp <= 0:
            if j == 0:
                return -g, 0
            return z, j
        alpha = rr / pHp
        ops.lincomb(lay, z, alpha, p, 1.0, z)
        (rr_new,), _ = ops.lincomb(lay, r, alpha, Hp, 1.0, r, dots=((r, r),))
        if math.sqrt(rr_new) <= tol:
            return z, j + 1
        ops.lincomb(lay, p, -1.0, r, rr_new / rr, p)
        rr = rr_new
    return z, max_cg


def newton_loop(fun_and_grad, x, direction, *, line_search="strong_wolfe", max_iter=100, max_eval=None,
                tolerance_grad=1e-10, tolerance_change=1e-12, callback=None, ops=vecops):
    """Minimise from ``x`` (updated in place): each iteration ``d = direction(x, g)``,
    then a line search from ``t = 1`` (a fixed ``t = 1`` with ``line_search=None``).
    Returns ``(status, fun, grad, nit, nfev)``; on a non-finite value, a failed
    factorisation or a failed search ``x`` stays at the last accepted point."""
    shape, dtype = x.shape, x.dtype
    n = x.size
    xf = x.reshape(-1)
    lay = ops.Layout([n])
    max_eval = max_iter * 5 // 4 + 10 if max_eval is None else max_eval
    G = [np.empty(n, dtype) for _ in range(4)]
    x0 = np.empty(n, dtype)
    # the kernels read and write x without the GIL, between calls of user code
    pins = pin_memory([x])          # noqa: F841 (alive until the loop returns)

    def call(slot, d=None):
        """Evaluate at x; the gradient is copied into ``G[slot]`` in the pass that also
        reduces its stats and, with ``d``, ``gᵀd`` (no second pass for the slope)."""
        held = []
        loss, (g,) = unpack_loss_grads(fun_and_grad(x), [shape], dtype, "fun_and_grad(x)", pins=held)
        dots, st = ops.lincomb(lay, G[slot], 1.0, g.reshape(-1), dots=() if d is None else ((G[slot], d),),
                               stats=True)
        return loss, st, (dots[0] if dots else None)

    f, st, _ = call(0)
    nfev, cur = 1, 0
    if not (math.isfinite(f) and st[3]):
        raise NonFiniteValueError("fun_and_grad(x0) returned a non-finite value or gradient")
    nit, status = 0, None
    while status is None:
        if st[1] <= tolerance_grad:
            status = Status.CONVERGED
            break
        if nit >= max_iter:
            status = Status.MAX_ITER
            break
        if nfev >= max_eval:
            status = Status.MAX_EVAL
            break
        g = G[cur]
        d = direction(x, g)
        if d is None:
            status = Status.HESSIAN_FAILED
            break
        d = np.ascontiguousarray(d, dtype=dtype)
        (gtd,), dst = ops.lincomb(lay, None, 1.0, d, dots=((g, d),), stats=True)
        if not (math.isfinite(gtd) and dst[3]):
            status = Status.HESSIAN_FAILED
            break
        if gtd >= 0:
            status = Status.NOT_DESCENT
            break
        nit += 1
        ops.lincomb(lay, x0, 1.0, xf)
        slots = [cur] + [i for i in range(4) if i != cur]
        stats = {}

        def evaluate(t, slot):
            ops.lincomb(lay, xf, t, d, 1.0, x0)
            try:
                fv, sv, gd = call(slots[slot], d)
            except BaseException:
                ops.lincomb(lay, xf, 1.0, x0)
                raise
            stats[slot] = sv
            if not (math.isfinite(fv) and sv[3] and math.isfinite(gd)):
                return math.inf, math.nan
            return fv, gd

        budget = max_eval - nfev
        f_prev = f
        if line_search is None:
            f_new, _ = evaluate(1.0, 1)
            t, slot, nev = 1.0, 1, 1
            if not math.isfinite(f_new):
                t, slot, f_new = 0.0, 0, f
                status = Status.NON_FINITE
        elif line_search == "strong_wolfe":
            f_new, _, t, slot, nev = strong_wolfe(evaluate, 1.0, f, gtd, dst[1], tolerance_change=tolerance_change,
                                                  max_evals=min(budget, NEWTON_SEARCH_EVALS))
        else:
            f_new, _, t, slot, nev = armijo(evaluate, 1.0, f, gtd, max_evals=min(budget, NEWTON_SEARCH_EVALS))
        nfev += nev
        ops.lincomb(lay, xf, t, d, 1.0, x0)
        cur, f = slots[slot], f_new
        st = stats.get(slot, st)
        if status is not None:
            break
        if t == 0:
            status = Status.LINE_SEARCH_FAILED
        elif st[1] <= tolerance_grad:
            status = Status.CONVERGED
        elif abs(t) * dst[1] <= tolerance_change:
            status = Status.SMALL_STEP
        elif abs(f - f_prev) < tolerance_change:
            status = Status.SMALL_CHANGE
        if callback is not None and callback(f) and status is None:
            status = Status.CALLBACK
    return status, f, G[cur].reshape(shape).copy(), nit, nfev


def message(status):
    return MESSAGES[status]
