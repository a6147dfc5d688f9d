"""L-BFGS over one or many float32/float64 arrays treated as one vector.

The iteration is PyTorch's ``torch.optim.LBFGS`` (minFunc's), step for step:

* direction ``d = -H g`` by the two-loop recursion over the last ``m`` accepted pairs
  ``sₖ = tₖ dₖ``, ``yₖ = gₖ₊₁ - gₖ`` with ``H₀ = γI``, ``γ = sᵀy / yᵀy`` of the newest
  pair; a pair is kept only if ``sᵀy > 1e-10`` (so H stays positive definite);
* first step ``t = min(1, 1/‖g‖₁) lr``, later ``t = lr``, then a strong-Wolfe line
  search (``c1 = 1e-4``, ``c2 = 0.9``), backtracking Armijo, or none (fixed step);
* stop when ``‖g‖∞ ≤ tolerance_grad``, ``‖t d‖∞ ≤ tolerance_change``,
  ``|f - f_prev| < tolerance_change``, ``gᵀd > -tolerance_change``, or after
  ``max_iter`` iterations / ``max_eval`` evaluations.

Every vector operation is a fused pass of :mod:`fastopt._kernels.vecops` with float64
block reductions: the iterates are the same bits for any thread count, and the same
as :class:`fastopt.reference.second_order.LBFGS` (NumPy).

Differences from PyTorch, on purpose: ``max_eval`` is honoured exactly, also inside
the line search (PyTorch lets the search make one evaluation beyond it); trial points
with a non-finite value shrink the step instead of poisoning it; the pairs live in
preallocated ring buffers (``(history_size + 1) × n`` each for s and y: pages are only
touched as pairs arrive).

Parity with PyTorch is to rounding: every dot product here is a blocked float64 sum
(see :mod:`fastopt._kernels.vecops`), PyTorch's a BLAS ``ddot`` of another
association, so the last bits differ from the first iteration on. On well-conditioned
runs (50-, 100-dim Rosenbrock, logistic regression) the float64 iterates agree to
1e-8 relative over 50 iterations; where the problem amplifies rounding (the 60-dim
Rosenbrock from ``uniform(-1.5, 1.5)``, seeds 0 and 1) PyTorch's own iterates move by
1.9e-7 and 7e-5 when its gradients change by one ulp, and fastopt's distance to PyTorch
is of that size (tests/test_second_order.py measures both).
"""
import math
from collections import namedtuple

import numpy as np

from fastopt._kernels import vecops
from fastopt._kernels.engine import StepGuard
from fastopt._lifetime import pin_memory
from fastopt._validate import as_array, check_disjoint
from fastopt.optim.base import _guarded
from fastopt.second_order._common import (MESSAGES, NonFiniteValueError, Status, check_count, check_line_search,
                                          check_tolerance, unpack_loss_grads)
from fastopt.second_order.compact import coefficients
from fastopt.second_order.linesearch import MAX_SEARCH_EVALS, armijo, strong_wolfe

__all__ = ["LBFGS", "StepInfo", "NonFiniteValueError"]

STATE_DICT_VERSION = 1
CURVATURE_EPS = 1e-10       # PyTorch's ``ys > 1e-10``

#: What the last ``step`` did: why it stopped, iterations and evaluations, final loss.
StepInfo = namedtuple("StepInfo", "status message nit nfev fun")

_UNSET = object()


def check_hyper(group):
    """The validated hyper-parameters of an L-BFGS group (a dict), raising naming the key."""
    lr = check_tolerance(group["lr"], "lr")
    max_iter = check_count(group["max_iter"], "max_iter")
    max_eval = check_count(group["max_eval"], "max_eval")
    tolerance_grad = check_tolerance(group["tolerance_grad"], "tolerance_grad")
    tolerance_change = check_tolerance(group["tolerance_change"], "tolerance_change")
    history_size = check_count(group["history_size"], "history_size")
    line_search = check_line_search(group["line_search"])
    return lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search


FIRST_STEPS = ("torch", "scipy")
TWO_LOOPS = ("classic", "compact")


def first_step(kind, gstats, lr):
    """The first iteration's trial step along ``d = -g``: PyTorch's ``min(1, 1/‖g‖₁) lr``
    (``"torch"``) or SciPy L-BFGS-B's ``min(1/‖g‖₂, 1e10) lr`` (``"scipy"``; longer by
    up to √n, which saves the first search its extrapolations on large problems).
    ``gstats`` is ``(‖g‖₁, ‖g‖∞, ‖g‖₂², finite)``."""
    if kind == "scipy":
        return min(1.0 / math.sqrt(gstats[2]), 1e10) * lr
    return min(1.0, 1.0 / gstats[0]) * lr


class LBFGS:
    """L-BFGS, PyTorch's interface: ``loss = opt.step(closure)`` runs up to ``max_iter``
    iterations, ``closure()`` evaluating at the current parameters and returning
    ``(loss, grads)`` (grads: one array per parameter, in order; any real dtype, cast to
    the parameters').

    Arguments as in ``torch.optim.LBFGS``: ``lr`` (1), ``max_iter`` (20), ``max_eval``
    (``max_iter · 5 // 4``), ``tolerance_grad`` (1e-7), ``tolerance_change`` (1e-9),
    ``history_size`` (100); ``line_search``: ``"strong_wolfe"`` (default),
    ``"armijo"`` or ``None`` (a fixed step ``lr``); ``line_search_fn`` is accepted as
    PyTorch's name for it. ``first_step``: ``"torch"`` (default, PyTorch's first trial
    step) or ``"scipy"`` (L-BFGS-B's, see :func:`first_step`; not part of the
    state_dict). ``two_loop``: ``"classic"`` (default: 2m + 2 fused passes per
    direction) or ``"compact"`` (:mod:`fastopt.second_order.compact`: two passes over the
    history, more arithmetic per element; level with the classic loop on large vectors
    with several threads, slower on one thread: see the README). The parameters must share one dtype.

    A step whose first evaluation is not finite raises :class:`NonFiniteValueError`
    with nothing changed; a closure that raises or returns wrong shapes leaves the
    parameters at the last accepted point. ``last_step`` tells why a step stopped."""

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search="strong_wolfe", *, line_search_fn=_UNSET, first_step="torch",
                 two_loop="classic"):
        self._guard = StepGuard()
        if first_step not in FIRST_STEPS:
            raise ValueError(f"first_step must be one of {FIRST_STEPS}, got {first_step!r}")
        self._first_step = first_step
        if two_loop not in TWO_LOOPS:
            raise ValueError(f"two_loop must be one of {TWO_LOOPS}, got {two_loop!r}")
        self._two_loop = two_loop
        if line_search_fn is not _UNSET:
            line_search = line_search_fn
        if max_eval is None:
            max_eval = check_count(max_iter, "max_iter") * 5 // 4
        group = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval, "tolerance_grad": tolerance_grad,
                 "tolerance_change": tolerance_change, "history_size": history_size, "line_search": line_search}
        check_hyper(group)
        raw = [params] if isinstance(params, np.ndarray) else list(params)
        if not raw:
            raise ValueError("optimizer got an empty parameter list")
        if any(isinstance(p, dict) for p in raw):
            raise ValueError("LBFGS takes one list of arrays (PyTorch's LBFGS has no parameter groups either)")
        arrays = [as_array(p, f"params[{k}]", writeable=True) for k, p in enumerate(raw)]
        if len({a.dtype for a in arrays}) != 1:
            raise TypeError(f"LBFGS treats its parameters as one vector: they must share one dtype, got "
                            f"{sorted({str(a.dtype) for a in arrays})}")
        check_disjoint([(f"params[{k}]", p) for k, p in enumerate(arrays)])
        self._params = arrays
        # the kernels write the parameters without the GIL, and the closure (user code)
        # runs in the middle of a step: NumPy refuses to reallocate them while we live
        self._pins = pin_memory(arrays)
        self.dtype = arrays[0].dtype
        self._shapes = [a.shape for a in arrays]
        self._layout = vecops.Layout([a.size for a in arrays])
        n, m = self._layout.n, int(history_size)
        self._m = m
        self.defaults = dict(group)
        group["params"] = arrays
        self._param_groups = [group]
        # one row more than the history: a new pair is written into the spare row and
        # joins the ring only if its curvature is positive
        self._S = np.empty((m + 1, n), self.dtype)
        self._Y = np.empty((m + 1, n), self.dtype)
        self._rho = np.zeros(m + 1)
        # Gram entries of the ring rows: SY[i, j] = sᵢᵀyⱼ, YY[i, j] = yᵢᵀyⱼ
        self._SY = np.zeros((m + 1, m + 1))
        self._YY = np.zeros((m + 1, m + 1))
        self._d = np.zeros(n, self.dtype)
        if two_loop == "classic":
            self._q = np.empty(n, self.dtype)
            self._al = np.zeros(m + 1)
        self._at = None                  # p = x0 + _at d holds (None: unknown)
        self._x0 = np.empty(n, self.dtype)
        # gradients: the current one, the previous iterate's, and the line search's trials
        self._G = [np.empty(n, self.dtype) for _ in range(4)]
        self._stats = [None] * 4
        self._cur, self._prev = 0, 1
        self._reset_state()
        self.last_step = None

    def _reset_state(self):
        self._order = []                 # ring rows of the accepted pairs, oldest first
        self._n_iter = 0
        self._func_evals = 0
        self._t = 0.0
        self._H_diag = 1.0
        self._prev_loss = None
        self._has_prev = False

    # --- properties ---------------------------------------------------------------------------
    @property
    def param_groups(self):
        """One group (a dict) as in PyTorch; its values may change between steps
        (checked at the next step), except ``history_size``, which sized the buffers."""
        return self._param_groups

    @property
    def params(self):
        return list(self._params)

    @property
    def state(self):
        """``n_iter``, ``func_evals`` and the number of stored pairs (``history``)."""
        return {"n_iter": self._n_iter, "func_evals": self._func_evals, "history": len(self._order),
                "t": self._t, "H_diag": self._H_diag}

    # --- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, closure, slot, d=None):
        """Call the closure at the current parameters; the gradient goes into buffer
        ``slot`` in the same pass as its stats and, with ``d``, ``gᵀd``."""
        pins = []
        loss, grads = unpack_loss_grads(closure(), self._shapes, self.dtype, pins=pins)
        buf = self._G[slot]
        dots, st = vecops.lincomb(self._layout, buf, 1.0, grads, dots=() if d is None else ((buf, d),), stats=True)
        self._stats[slot] = st
        return loss, (dots[0] if dots else None), st

    def _set_params(self, t, d):
        """``p = x0 + t d``, the point of a trial step (PyTorch: ``p.add_(d, alpha=t)`` on x0);
        no pass when the parameters are there already."""
        if self._at != t:
            vecops.lincomb(self._layout, self._params, t, d, 1.0, self._x0)
            self._at = t

    def _restore(self):
        vecops.lincomb(self._layout, self._params, 1.0, self._x0)
        self._at = None              # p = x0, which 0·d + x0 need not be bit for bit (-0.0)

    def _new_pair(self, g, g_prev, m):
        """``y = g - g_prev`` and ``s = t d`` into the spare ring row, and in the same pass
        every dot product the recursion needs with the new gradient and the new pair;
        the pair joins the ring when ``sᵀy > 1e-10``. Returns ``(Sg, Yg)`` of the ring,
        oldest first."""
        S, Y, order = self._S, self._Y, self._order
        row = next(r for r in range(m + 1) if r not in order)
        k = len(order)
        # vectors: 0 g, 1 s_new, 2 y_new, 3.. s_r, 3+k.. y_r (r in order)
        vectors = [g, S[row], Y[row]] + [S[r] for r in order] + [Y[r] for r in order]
        pairs = [(2, 2), (2, 1), (1, 0), (2, 0)]
        for j in range(k):
            pairs += [(3 + j, 0), (3 + k + j, 0), (1, 3 + k + j), (3 + j, 2), (2, 3 + k + j)]
        dots = vecops.multidot(self._layout, vectors, pairs,
                               writes=((Y[row], 1.0, g, -1.0, g_prev), (S[row], self._t, self._d, 0.0, None)))
        yy, ys, sg_new, yg_new = dots[:4]
        rest = np.array(dots[4:]).reshape(k, 5)
        Sg, Yg = list(rest[:, 0]), list(rest[:, 1])
        if ys > CURVATURE_EPS:
            SY, YY = self._SY, self._YY
            for j, r in enumerate(order):
                SY[row, r], SY[r, row] = rest[j, 2], rest[j, 3]
                YY[row, r] = YY[r, row] = rest[j, 4]
            SY[row, row], YY[row, row] = ys, yy
            if k == m:
                order.pop(0)
                Sg.pop(0)
                Yg.pop(0)
            order.append(row)
            Sg.append(sg_new)
            Yg.append(yg_new)
            self._rho[row] = 1.0 / ys
            self._H_diag = ys / yy
        return np.array(Sg, dtype=np.float64), np.array(Yg, dtype=np.float64)

    def _classic_pair(self, g, g_prev, m):
        """``y = g - g_prev`` and ``s = t d`` with ``yᵀy`` and ``sᵀy``, one pass (each dot
        the bits of :func:`~fastopt._kernels.vecops.dot`); the pair joins the ring when
        ``sᵀy > 1e-10``."""
        S, Y = self._S, self._Y
        row = next(r for r in range(m + 1) if r not in self._order)
        yy, ys = vecops.multidot(self._layout, [Y[row], S[row]], [(0, 0), (0, 1)],
                                 writes=((Y[row], 1.0, g, -1.0, g_prev), (S[row], self._t, self._d, 0.0, None)))
        if ys > CURVATURE_EPS:
            if len(self._order) == m:
                self._order.pop(0)
            self._order.append(row)
            self._rho[row] = 1.0 / ys
            self._H_diag = ys / yy

    def _classic_direction(self, g, t):
        """The classic two-loop (:func:`fastopt._kernels.vecops.two_loop`, 2m + 2 passes),
        then ``x0 = p`` and ``p = x0 + t d``. Returns ``(gᵀd, (None, ‖d‖∞))``."""
        lay = self._layout
        dnorm, gtd = vecops.two_loop(lay, g, self._q, self._d, self._S, self._Y, self._rho, self._order,
                                     self._H_diag, self._al)
        # x0 = p, then p = t d + x0, block by block in one pass (x0 is still in cache)
        vecops.multidot(lay, [], [], writes=((self._x0, 1.0, self._params, 0.0, None),
                                             (self._params, t, self._d, 1.0, self._x0)))
        self._at = t
        return gtd, (None, dnorm)

    def _direction(self, g, Sg, Yg, t):
        """``d = -H g`` (:func:`fastopt.second_order.compact.coefficients`), in the pass that
        also saves ``x0 = p`` and writes the first trial point ``p = x0 + t d``.
        Returns ``(gᵀd, stats of d)``."""
        order = self._order
        ix = np.ix_(order, order)
        cg, cs, cy = coefficients(self._rho[order], Sg, Yg, self._SY[ix], self._YY[ix], self._H_diag)
        vectors = [g] + [self._S[r] for r in order] + [self._Y[r] for r in order]
        gtd, dst = vecops.combine(self._layout, self._d, np.concatenate([[cg], cs, cy]), vectors, 0,
                                  p=self._params, x0=self._x0, t=t)
        self._at = t
        return gtd, dst

    # --- the step -----------------------------------------------------------------------------
    @_guarded
    def step(self, closure):
        """Run up to ``max_iter`` iterations; returns the loss at the starting point (as
        PyTorch does). ``last_step`` holds the status, message, iterations, evaluations
        and the final loss."""
        return self._step(closure, None)

    def _step(self, closure, callback):
        lr, max_iter, max_eval, tol_grad, tol_change, m, line_search = check_hyper(self._param_groups[0])
        if m != self._m:
            raise ValueError(f"history_size changed from {self._m} to {m}: the ring buffers were sized for "
                             f"{self._m}; create a new optimizer")
        d = self._d
        cur = next(i for i in range(4) if i != self._prev)
        loss, _, st = self._evaluate(closure, cur)
        if not (math.isfinite(loss) and st[3]):
            what = "loss" if not math.isfinite(loss) else "gradient"
            raise NonFiniteValueError(f"closure() returned a non-finite {what} at the current parameters; "
                                      "nothing was changed")
        orig_loss = loss
        current_evals = 1
        self._func_evals += 1
        n_iter = 0
        status = Status.CONVERGED if st[1] <= tol_grad else None
        while status is None and n_iter < max_iter:
            n_iter += 1
            self._n_iter += 1
            g = self._G[cur]
            if self._n_iter == 1:
                self._order = []
                self._H_diag = 1.0
                Sg = Yg = np.zeros(0)
            elif self._two_loop == "compact":
                Sg, Yg = self._new_pair(g, self._G[self._prev], m)
            else:
                self._classic_pair(g, self._G[self._prev], m)
            self._prev, self._has_prev = cur, True
            self._prev_loss = loss
            t = first_step(self._first_step, self._stats[cur], lr) if self._n_iter == 1 else lr
            self._t = t
            # d = -H g, x0 = p and p = x0 + t d (the first trial point)
            if self._two_loop == "compact":
                gtd, dst = self._direction(g, Sg, Yg, t)
            else:
                gtd, dst = self._classic_direction(g, t)
            dnorm = dst[1]
            if gtd > -tol_change:
                self._restore()
                status = Status.NOT_DESCENT if gtd >= 0 else Status.SMALL_SLOPE
                n_iter -= 1           # counted (as PyTorch counts it) but no step was taken
                break
            if line_search is not None:
                budget = max_eval - current_evals
                if budget < 1:
                    self._restore()
                    status = Status.MAX_EVAL
                    break
                slots = [cur] + [i for i in range(4) if i != cur]

                def evaluate(tt, slot):
                    self._set_params(tt, d)
                    try:
                        f_new, gtd_new, gs = self._evaluate(closure, slots[slot], d)
                    except BaseException:
                        self._restore()
                        raise
                    if not (math.isfinite(f_new) and gs[3] and math.isfinite(gtd_new)):
                        return math.inf, math.nan
                    return f_new, gtd_new

                cap = min(budget, MAX_SEARCH_EVALS)
                if line_search == "strong_wolfe":
                    loss, _, t, slot, ls_evals = strong_wolfe(evaluate, t, loss, gtd, dnorm,
                                                              tolerance_change=tol_change, max_evals=cap)
                else:
                    loss, _, t, slot, ls_evals = armijo(evaluate, t, loss, gtd, max_evals=cap)
                self._set_params(t, d)
                cur = slots[slot]
                self._t = t
            else:
                self._set_params(t, d)
                ls_evals = 0
                if n_iter != max_iter:
                    nxt = next(i for i in range(4) if i != self._prev)
                    try:
                        f_new, _, gs = self._evaluate(closure, nxt)
                    except BaseException:
                        self._restore()
                        raise
                    ls_evals = 1
                    if not (math.isfinite(f_new) and gs[3]):
                        self._restore()
                        current_evals += 1
                        self._func_evals += 1
                        status = Status.NON_FINITE
                        break
                    loss, cur = f_new, nxt
            current_evals += ls_evals
            self._func_evals += ls_evals
            # PyTorch's tests, reported in the order that names the real reason
            if line_search is not None and t == 0:
                status = Status.LINE_SEARCH_FAILED
            elif self._stats[cur][1] <= tol_grad and (line_search is not None or ls_evals):
                status = Status.CONVERGED
            elif abs(t) * dnorm <= tol_change:
                status = Status.SMALL_STEP
            elif abs(loss - self._prev_loss) < tol_change:
                status = Status.SMALL_CHANGE
            elif n_iter == max_iter:
                status = Status.MAX_ITER
            elif current_evals >= max_eval:
                status = Status.MAX_EVAL
            if callback is not None and callback(loss) and status is None:
                status = Status.CALLBACK
        if status is None:
            status = Status.MAX_ITER
        self._cur = cur
        self.last_step = StepInfo(status, MESSAGES[status], n_iter, current_evals, loss)
        return orig_loss

    # --- state_dict ---------------------------------------------------------------------------
    @_guarded
    def state_dict(self):
        """Everything a resumed run needs (copies): the hyper-parameters, the counters, the
        last direction and step, the stored pairs (oldest first) with their ``ρ = 1/sᵀy``,
        ``γ`` and the previous gradient."""
        group = {k: v for k, v in self._param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._params)))
        rows = list(self._order)
        state = {"n_iter": self._n_iter, "func_evals": self._func_evals, "t": float(self._t),
                 "H_diag": float(self._H_diag), "prev_loss": self._prev_loss, "d": self._d.copy(),
                 "S": self._S[rows].copy(), "Y": self._Y[rows].copy(), "rho": self._rho[rows].copy(),
                 "prev_flat_grad": self._G[self._prev].copy() if self._has_prev else None}
        return {"algorithm": "LBFGS", "version": STATE_DICT_VERSION, "param_groups": [group], "state": state}

    @_guarded
    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`. Everything is checked first (algorithm, version,
        hyper-parameters, every array's shape, dtype and finiteness, ``ρ > 0``, counts);
        on a mismatch ValueError/TypeError is raised and nothing changes."""
        sd = state_dict
        if not isinstance(sd, dict) or sd.get("algorithm") != "LBFGS":
            raise ValueError(f"state_dict is for {sd.get('algorithm') if isinstance(sd, dict) else sd!r}, not LBFGS")
        if sd.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"state_dict version {sd.get('version')!r} is not {STATE_DICT_VERSION}")
        groups, st = sd.get("param_groups"), sd.get("state")
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise ValueError("state_dict['param_groups'] must be a list of one dict")
        group = {k: v for k, v in groups[0].items() if k != "params"}
        if set(group) != set(self.defaults):
            raise ValueError(f"state_dict['param_groups'][0] has keys {sorted(group)}, "
                             f"expected {sorted(self.defaults)}")
        if groups[0].get("params") != list(range(len(self._params))):
            raise ValueError(f"state_dict is for {len(groups[0].get('params') or [])} parameters, the optimizer has "
                             f"{len(self._params)}")
        try:
            check_hyper(group)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state_dict['param_groups'][0]: {exc}") from None
        if group["history_size"] != self._m:
            raise ValueError(f"state_dict has history_size {group['history_size']}, the optimizer {self._m}")
        keys = {"n_iter", "func_evals", "t", "H_diag", "prev_loss", "d", "S", "Y", "rho", "prev_flat_grad"}
        if not isinstance(st, dict) or set(st) != keys:
            raise ValueError(f"state_dict['state'] must have the keys {sorted(keys)}")
        n_iter = check_count(st["n_iter"], "state['n_iter']", lo=0)
        func_evals = check_count(st["func_evals"], "state['func_evals']", lo=0)
        t = check_tolerance(st["t"], "state['t']")
        H_diag = check_tolerance(st["H_diag"], "state['H_diag']", positive=True)
        prev_loss = st["prev_loss"]
        if prev_loss is not None:
            prev_loss = float(prev_loss)
            if not math.isfinite(prev_loss):
                raise ValueError("state['prev_loss'] must be finite or None")
        n = self._layout.n
        d = self._state_array(st["d"], "d", (n,))
        rho = st["rho"]
        if not isinstance(rho, np.ndarray) or rho.ndim != 1 or rho.dtype != np.float64 or rho.shape[0] > self._m:
            raise ValueError(f"state['rho'] must be a float64 vector of at most history_size={self._m} values")
        if not (np.isfinite(rho).all() and (rho > 0).all()):
            raise ValueError("state['rho'] must hold finite values > 0 (1/sᵀy of accepted pairs)")
        k = rho.shape[0]
        S = self._state_array(st["S"], "S", (k, n))
        Y = self._state_array(st["Y"], "Y", (k, n))
        prev = st["prev_flat_grad"]
        if prev is not None:
            prev = self._state_array(prev, "prev_flat_grad", (n,))
        if n_iter > 0 and (prev is None or prev_loss is None):
            raise ValueError("state has n_iter > 0 but no prev_flat_grad/prev_loss")
        # everything checked: write
        self._param_groups[0].update(group)
        self._S[:k], self._Y[:k], self._rho[:k] = S, Y, rho
        if k:
            # the Gram entries, the same dot products (bits) the run computed
            vectors = [self._S[i] for i in range(k)] + [self._Y[i] for i in range(k)]
            pairs = [(i, k + j) for i in range(k) for j in range(k)] + [(k + i, k + j) for i in range(k)
                                                                       for j in range(k)]
            dots = np.array(vecops.multidot(self._layout, vectors, pairs)).reshape(2, k, k)
            self._SY[:k, :k], self._YY[:k, :k] = dots[0], dots[1]
        self._order = list(range(k))
        self._d[...] = d
        self._n_iter, self._func_evals, self._t = n_iter, func_evals, t
        self._H_diag, self._prev_loss = H_diag, prev_loss
        self._has_prev = prev is not None
        if prev is not None:
            self._G[self._prev][...] = prev

    def _state_array(self, a, name, shape):
        if not isinstance(a, np.ndarray) or a.dtype != self.dtype or a.shape != shape:
            raise ValueError(f"state['{name}'] must be a {self.dtype} array of shape {shape}, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        if not np.isfinite(a).all():
            raise ValueError(f"state['{name}'] holds inf or NaN")
        return a
