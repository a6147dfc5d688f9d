"""The second-order methods in plain NumPy, doing the compiled kernels' arithmetic.

Reductions are float64 over fixed 8192-element blocks that start afresh at every
segment; a block is summed in eight interleaved lanes (``np.add.accumulate`` along
the block: strictly in order) combined as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``, and
the blocks are added in order — the same bits as :mod:`fastopt._kernels.vecops`.

:class:`LBFGS` is written independently of :class:`fastopt.LBFGS`, close to
PyTorch's code (Python lists for the history, fresh arrays), sharing only the scalar
line searches; the tests require identical iterates. ``Layout``/``lincomb``/
``two_loop`` mirror the kernels' interface so Newton-CG can run on them
(``fastopt.second_order.newton.cg_direction(..., ops=this module)``).
"""
import math

import numpy as np

from fastopt.second_order._common import MESSAGES, NonFiniteValueError, Status, unpack_loss_grads
from fastopt.second_order.compact import coefficients
from fastopt.second_order.lbfgs import CURVATURE_EPS, StepInfo, check_hyper
from fastopt.second_order.linesearch import MAX_SEARCH_EVALS, armijo, strong_wolfe
from fastopt.second_order.newton import NEWTON_SEARCH_EVALS

BLOCK = 8192

__all__ = ["Layout", "block_sum", "dot", "lincomb", "stats", "two_loop", "multidot", "combine", "lbfgs_direction",
           "LBFGS", "cholesky_direction", "cg_direction",
           "newton"]


class Layout:
    """Segment sizes of one logical vector (as :class:`fastopt._kernels.vecops.Layout`)."""

    def __init__(self, sizes):
        self.sizes = tuple(int(s) for s in sizes)
        self.off = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n = int(self.off[-1])
        self.nseg = len(self.sizes)

    def segments(self, v):
        """``v`` (flat array or list) as the list of its segments."""
        if isinstance(v, np.ndarray):
            return [v.reshape(-1)[self.off[k]:self.off[k + 1]] for k in range(self.nseg)]
        return [np.asarray(a).reshape(-1) for a in v]


def _lanes_tree(lanes):
    lanes = lanes + 0.0                        # the kernel's lanes start at +0.0: no -0.0 sums
    return ((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])) + \
        ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7]))


def _block_sums(x):
    """The per-block sums of the float64 terms ``x`` of one segment, in block order."""
    n = x.size
    full = n // BLOCK
    out = []
    if full:
        lanes = np.add.accumulate(x[:full * BLOCK].reshape(full, BLOCK // 8, 8), axis=1)[:, -1, :]
        out += list(_lanes_tree(lanes))
    tail = x[full * BLOCK:]
    if tail.size:
        pad = np.zeros(-(-tail.size // 8) * 8)
        pad[:tail.size] = tail
        out.append(float(_lanes_tree(np.add.accumulate(pad.reshape(-1, 8), axis=0)[-1])))
    return out


def block_sum(terms_per_segment):
    """Sum float64 terms segment by segment, block by block, in order."""
    total = 0.0
    for x in terms_per_segment:
        for b in _block_sums(x):
            total = total + float(b)
    return total


def dot(lay, u, v):
    return block_sum([a.astype(np.float64) * b.astype(np.float64) for a, b in zip(lay.segments(u), lay.segments(v))])


def stats(lay, x):
    """``(‖x‖₁, ‖x‖∞, ‖x‖₂², finite)`` as the kernels reduce them."""
    segs = [s.astype(np.float64) for s in lay.segments(x)]
    l1 = block_sum([np.abs(s) for s in segs])
    sq = block_sum([np.abs(s) * np.abs(s) for s in segs])
    with np.errstate(invalid="ignore"):        # inf - inf: NaN, as the kernels' lanes
        bad = block_sum([s - s for s in segs])
    # the kernels' max skips NaN (0 when nothing else is there); `finite` reports it
    linf = max((float(np.max(np.where(np.isnan(s), 0.0, np.abs(s)))) for s in segs if s.size), default=0.0)
    return l1, linf, sq, bad == 0.0


def lincomb(lay, z, a, x, b=0.0, w=None, dots=(), stats=False, threads=0):
    """As :func:`fastopt._kernels.vecops.lincomb`: ``z = a x + b w``, then dots/stats."""
    xs = lay.segments(x)
    dt = xs[0].dtype.type
    if z is not None:
        ws = lay.segments(w) if w is not None else None
        for k, zk in enumerate(lay.segments(z)):
            zk[...] = dt(a) * xs[k] if ws is None else dt(a) * xs[k] + dt(b) * ws[k]
    out = [dot(lay, u, v) for u, v in dots]
    return out, (globals()["stats"](lay, z if z is not None else x) if stats else None)


def two_loop(lay, g, q, d, S, Y, rho, order, gamma, al, threads=0):
    """As :func:`fastopt._kernels.vecops.two_loop`, one operation after the other."""
    m = len(order)
    q[...] = -g
    for i in range(m - 1, -1, -1):
        r = order[i]
        al[r] = dot(lay, S[r], q) * rho[r]
        q[...] = q.dtype.type(-al[r]) * Y[r] + q
    d[...] = d.dtype.type(gamma) * q
    for i in range(m):
        r = order[i]
        be = dot(lay, Y[r], d) * rho[r]
        d[...] = d.dtype.type(al[r] - be) * S[r] + d
    return stats(lay, d)[1], dot(lay, g, d)


def multidot(lay, vectors, pairs, writes=(), threads=0):
    """As :func:`fastopt._kernels.vecops.multidot`: the writes, then each pair's dot."""
    for z, a, x, b, w in writes:
        lincomb(lay, z, a, x, b, w)
    return [dot(lay, vectors[u], vectors[v]) for u, v in pairs]


def combine(lay, d, coef, vectors, gidx, p=None, x0=None, t=0.0, threads=0):
    """As :func:`fastopt._kernels.vecops.combine`: ``d = Σ coef[j] vectors[j]`` added in
    float64 in order, rounded once; then ``x0 = p``, ``p = t d + x0``; returns
    ``(vectors[gidx]ᵀd, stats of d)``."""
    flat = [np.asarray(v).reshape(-1) for v in vectors]
    acc = float(coef[0]) * flat[0].astype(np.float64)
    for c, v in zip(coef[1:], flat[1:]):
        acc = acc + float(c) * v.astype(np.float64)
    d[...] = acc.astype(d.dtype)
    if p is not None:
        lincomb(lay, x0, 1.0, p)
        lincomb(lay, p, t, d, 1.0, x0)
    return dot(lay, vectors[gidx], d), stats(lay, d)


def lbfgs_direction(lay, g, S, Y, rho, gamma, d):
    """The compact two-loop (:mod:`fastopt.second_order.compact`) for the pairs
    ``S[i], Y[i]`` (oldest first), every dot product taken afresh: writes ``d``,
    returns ``(‖d‖∞, gᵀd)``."""
    k = len(rho)
    SY = np.array([[dot(lay, S[i], Y[j]) for j in range(k)] for i in range(k)]).reshape(k, k)
    YY = np.array([[dot(lay, Y[i], Y[j]) for j in range(k)] for i in range(k)]).reshape(k, k)
    Sg = np.array([dot(lay, S[i], g) for i in range(k)])
    Yg = np.array([dot(lay, Y[i], g) for i in range(k)])
    cg, cs, cy = coefficients(np.asarray(rho, dtype=np.float64), Sg, Yg, SY, YY, gamma)
    gtd, st = combine(lay, d, np.concatenate([[cg], cs, cy]), [g] + list(S) + list(Y), 0)
    return st[1], gtd


class LBFGS:
    """Reference L-BFGS: the arguments, closure and ``last_step`` of :class:`fastopt.LBFGS`."""

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search="strong_wolfe", first_step="torch", two_loop="classic"):
        self.first_step = first_step
        self.two_loop = two_loop
        self.params = [params] if isinstance(params, np.ndarray) else list(params)
        self.group = {"lr": lr, "max_iter": max_iter, "max_eval": max_iter * 5 // 4 if max_eval is None else max_eval,
                      "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                      "history_size": history_size, "line_search": line_search}
        check_hyper(self.group)
        self.lay = Layout([p.size for p in self.params])
        self.dtype = self.params[0].dtype
        self.state = {"n_iter": 0, "func_evals": 0, "old_dirs": [], "old_stps": [], "ro": [], "H_diag": 1.0,
                      "d": None, "t": None, "prev_flat_grad": None, "prev_loss": None}
        self.last_step = None

    def _flat_grad(self, closure):
        loss, grads = unpack_loss_grads(closure(), [p.shape for p in self.params], self.dtype)
        return loss, np.concatenate([g.reshape(-1) for g in grads])

    def _set(self, x0, t, d):
        for p, x, dd in zip(self.params, self.lay.segments(x0), self.lay.segments(d)):
            p.reshape(-1)[...] = self.dtype.type(t) * dd + x

    def step(self, closure):
        lr, max_iter, max_eval, tol_grad, tol_change, m, line_search = check_hyper(self.group)
        st, lay = self.state, self.lay
        loss, g = self._flat_grad(closure)
        l1, linf, sq, finite = stats(lay, g)
        if not (math.isfinite(loss) and finite):
            raise NonFiniteValueError("non-finite loss or gradient")
        orig_loss, evals, n_iter = loss, 1, 0
        st["func_evals"] += 1
        status = Status.CONVERGED if linf <= tol_grad else None
        while status is None and n_iter < max_iter:
            n_iter += 1
            st["n_iter"] += 1
            if st["n_iter"] == 1:
                d = -g
                st["old_dirs"], st["old_stps"], st["ro"], st["H_diag"] = [], [], [], 1.0
                dnorm, gtd = stats(lay, d)[1], dot(lay, g, d)
            else:
                y = g - st["prev_flat_grad"]
                s = self.dtype.type(st["t"]) * st["d"]
                ys, yy = dot(lay, y, s), dot(lay, y, y)
                if ys > CURVATURE_EPS:
                    if len(st["old_dirs"]) == m:
                        for key in ("old_dirs", "old_stps", "ro"):
                            st[key].pop(0)
                    st["old_dirs"].append(y)
                    st["old_stps"].append(s)
                    st["ro"].append(1.0 / ys)
                    st["H_diag"] = ys / yy
                d = np.empty_like(g)
                if self.two_loop == "compact":
                    dnorm, gtd = lbfgs_direction(lay, g, st["old_stps"], st["old_dirs"], st["ro"], st["H_diag"], d)
                else:
                    k = len(st["ro"])
                    S, Y = np.array(st["old_stps"]).reshape(k, -1), np.array(st["old_dirs"]).reshape(k, -1)
                    dnorm, gtd = two_loop(lay, g, np.empty_like(g), d, S, Y, st["ro"], list(range(k)), st["H_diag"],
                                          [0.0] * k)
            st["d"], st["prev_flat_grad"], st["prev_loss"] = d, g.copy(), loss
            if st["n_iter"] == 1:
                t = min(1.0 / math.sqrt(sq), 1e10) * lr if self.first_step == "scipy" else min(1.0, 1.0 / l1) * lr
            else:
                t = lr
            st["t"] = t
            if gtd > -tol_change:
                status = Status.NOT_DESCENT if gtd >= 0 else Status.SMALL_SLOPE
                n_iter -= 1           # counted (as PyTorch counts it) but no step was taken
                break
            x0 = np.concatenate([p.reshape(-1) for p in self.params])
            if line_search is not None:
                trial = {}

                def evaluate(tt, slot):
                    self._set(x0, tt, d)
                    f_new, g_new = self._flat_grad(closure)
                    trial[slot] = g_new
                    gd = dot(lay, g_new, d)
                    if not (math.isfinite(f_new) and stats(lay, g_new)[3] and math.isfinite(gd)):
                        return math.inf, math.nan
                    return f_new, gd

                search = strong_wolfe if line_search == "strong_wolfe" else armijo
                kw = {"tolerance_change": tol_change} if line_search == "strong_wolfe" else {}
                args = (dnorm,) if line_search == "strong_wolfe" else ()
                cap = min(max_eval - evals, MAX_SEARCH_EVALS)
                loss, _, t, slot, nev = search(evaluate, t, loss, gtd, *args, max_evals=cap, **kw)
                self._set(x0, t, d)
                g = g if slot == 0 else trial[slot]
                st["t"] = t
            else:
                self._set(x0, t, d)
                nev = 0
                if n_iter != max_iter:
                    f_new, g_new = self._flat_grad(closure)
                    nev = 1
                    if not (math.isfinite(f_new) and stats(lay, g_new)[3]):
                        self._set(x0, 0.0, d)
                        evals += 1
                        status = Status.NON_FINITE
                        break
                    loss, g = f_new, g_new
            evals += nev
            st["func_evals"] += nev
            l1, linf, sq, _ = stats(lay, g)
            if line_search is not None and t == 0:
                status = Status.LINE_SEARCH_FAILED
            elif linf <= tol_grad and (line_search is not None or nev):
                status = Status.CONVERGED
            elif abs(t) * dnorm <= tol_change:
                status = Status.SMALL_STEP
            elif abs(loss - st["prev_loss"]) < tol_change:
                status = Status.SMALL_CHANGE
            elif n_iter == max_iter:
                status = Status.MAX_ITER
            elif evals >= max_eval:
                status = Status.MAX_EVAL
        status = Status.MAX_ITER if status is None else status
        self.last_step = StepInfo(status, MESSAGES[status], n_iter, evals, loss)
        return orig_loss


# --- Newton -------------------------------------------------------------------------------------
def _triangular(L, b, trans):
    try:
        from scipy.linalg import solve_triangular
    except ImportError:
        return np.linalg.solve(L.T if trans else L, b)
    return solve_triangular(L, b, lower=True, trans=1 if trans else 0, check_finite=False)


def cholesky_direction(H, g, delta_prev=0.0, beta=1e-3, max_tries=64):
    """``(H + δI) d = -g`` by Cholesky with N&W Alg. 3.3's damping (as
    :func:`fastopt.second_order.newton.cholesky_direction`): δ = 0 if H factorises,
    else ``max(β s - min Hᵢᵢ, β s, δ_prev / 2)``, ``s = max(1, max |Hᵢᵢ|)``, doubled until
    it does. Returns ``(d or None, δ)``."""
    diag = H.diagonal().copy()
    delta = 0.0
    for _ in range(max_tries):
        try:
            L = np.linalg.cholesky(H + delta * np.identity(g.size) if delta else H)
        except np.linalg.LinAlgError:
            s = max(1.0, float(np.abs(diag).max()))
            delta = max(2.0 * delta, beta * s - float(diag.min()), beta * s, 0.5 * delta_prev)
            continue
        if not np.isfinite(L).all():
            return None, delta
        return _triangular(L, _triangular(L, -g, False), True), delta
    return None, delta


def cg_direction(hessp, g):
    """Truncated CG on ``H d = -g`` (N&W Alg. 7.1), one NumPy operation at a time: stop
    at ``‖r‖ ≤ min(0.5, √‖g‖) ‖g‖`` or at ``pᵀHp ≤ 0`` (then z, or -g at once).
    Raises FloatingPointError on a non-finite ``pᵀHp``."""
    lay = Layout([g.size])
    dt = g.dtype.type
    gg = dot(lay, g, g)
    gnorm = math.sqrt(gg)
    tol = min(0.5, math.sqrt(gnorm)) * gnorm
    z, r, p, rr = np.zeros_like(g), g.copy(), -g, gg
    for j in range(20 * g.size):
        Hp = np.ascontiguousarray(hessp(p), dtype=g.dtype).reshape(-1)
        pHp = dot(lay, p, Hp)
        if not math.isfinite(pHp):
            raise FloatingPointError("hessp returned a non-finite product")
        if pHp <= 0:
            return (-g, 0) if j == 0 else (z, j)
        alpha = rr / pHp
        z = dt(alpha) * p + z
        r = dt(alpha) * Hp + r
        rr_new = dot(lay, r, r)
        if math.sqrt(rr_new) <= tol:
            return z, j + 1
        p = -r + dt(rr_new / rr) * p
        rr = rr_new
    return z, 20 * g.size


def newton(fun_and_grad, x0, method="newton", *, hess=None, hessp=None, line_search="strong_wolfe", max_iter=100,
           max_eval=None, tolerance_grad=1e-10, tolerance_change=0.0):
    """Reference of ``fastopt.minimize(method="newton" | "newton-cg")``: each iteration
    ``d`` from the Hessian (Cholesky, damped) or from CG on ``hessp``, then the same
    scalar line search from ``t = 1`` (fixed ``t = 1`` with None). Returns the same
    :class:`~fastopt.second_order.minimize.OptimizeResult` fields."""
    from fastopt.second_order.minimize import OptimizeResult
    x = np.array(x0, copy=True)
    shape, dtype, n = x.shape, x.dtype, x.size
    dt = dtype.type
    lay = Layout([n])
    max_eval = max_iter * 5 // 4 + 10 if max_eval is None else max_eval

    def call(xc):
        f, (g,) = unpack_loss_grads(fun_and_grad(xc.reshape(shape)), [shape], dtype, "fun_and_grad(x)")
        return f, g.reshape(-1).copy()

    xf = x.reshape(-1).copy()
    f, g = call(xf)
    nfev = 1
    if not (math.isfinite(f) and stats(lay, g)[3]):
        raise NonFiniteValueError("fun_and_grad(x0) returned a non-finite value or gradient")
    delta, nit, status = 0.0, 0, None
    while status is None:
        if stats(lay, g)[1] <= tolerance_grad:
            status = Status.CONVERGED
            break
        if nit >= max_iter:
            status = Status.MAX_ITER
            break
        if nfev >= max_eval:
            status = Status.MAX_EVAL
            break
        xc = xf.reshape(shape)
        if method == "newton":
            H = np.asarray(hess(xc), dtype=np.float64)
            d = None
            if np.isfinite(H).all():
                d, delta = cholesky_direction(H, g.astype(np.float64), delta)
        else:
            def prod(v):
                if hessp is not None:
                    return np.asarray(hessp(xc, v.reshape(shape))).reshape(-1)
                return np.asarray(hess(xc)) @ v
            try:
                d = cg_direction(prod, g)[0]
            except FloatingPointError:
                d = None
        if d is None:
            status = Status.HESSIAN_FAILED
            break
        d = np.ascontiguousarray(d, dtype=dtype)
        gtd = dot(lay, g, d)
        _, dnorm, _, d_finite = stats(lay, d)
        if not (math.isfinite(gtd) and d_finite):
            status = Status.HESSIAN_FAILED
            break
        if gtd >= 0:
            status = Status.NOT_DESCENT
            break
        nit += 1
        x_start = xf.copy()
        trial = {0: g}

        def evaluate(t, slot):
            f_t, g_t = call(dt(t) * d + x_start)
            trial[slot] = g_t
            gd = dot(lay, g_t, d)
            if not (math.isfinite(f_t) and stats(lay, g_t)[3] and math.isfinite(gd)):
                return math.inf, math.nan
            return f_t, gd

        f_prev = f
        if line_search is None:
            f_new, _ = evaluate(1.0, 1)
            t, slot, nev = 1.0, 1, 1
            if not math.isfinite(f_new):
                t, slot, f_new, status = 0.0, 0, f, Status.NON_FINITE
        elif line_search == "strong_wolfe":
            f_new, _, t, slot, nev = strong_wolfe(evaluate, 1.0, f, gtd, dnorm, tolerance_change=tolerance_change,
                                                  max_evals=min(max_eval - nfev, NEWTON_SEARCH_EVALS))
        else:
            f_new, _, t, slot, nev = armijo(evaluate, 1.0, f, gtd, max_evals=min(max_eval - nfev, NEWTON_SEARCH_EVALS))
        nfev += nev
        xf = dt(t) * d + x_start
        f, g = f_new, trial[slot]
        if status is not None:
            break
        if t == 0:
            status = Status.LINE_SEARCH_FAILED
        elif stats(lay, g)[1] <= tolerance_grad:
            status = Status.CONVERGED
        elif abs(t) * dnorm <= tolerance_change:
            status = Status.SMALL_STEP
        elif abs(f - f_prev) < tolerance_change:
            status = Status.SMALL_CHANGE
    return OptimizeResult(x=xf.reshape(shape), fun=f, jac=g.reshape(shape), nit=nit, nfev=nfev, status=status,
                          message=MESSAGES[status], success=status in Status.SUCCESS)
