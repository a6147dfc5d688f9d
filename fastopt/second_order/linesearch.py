"""Line searches along a direction ``d`` from ``x``: strong Wolfe and backtracking Armijo.

Both work on the scalar function ``φ(t) = f(x + t d)`` through a callback
``evaluate(t, slot) -> (φ(t), φ'(t))`` that also stores the gradient at ``x + t d`` in
the caller's buffer ``slot`` (1, 2 or 3; slot 0 holds the gradient at ``t = 0``). The
search returns the slot of the point it accepts, so no gradient is ever copied or
evaluated twice.

A trial point whose value or gradient is not finite must be reported as
``φ(t) = +inf`` (with any ``φ'``): it then fails the sufficient-decrease test and the
search shrinks the step towards the last good point. The point returned always has a
finite value (at worst ``t = 0``, the start).
"""
import math

__all__ = ["strong_wolfe", "armijo", "cubic_interpolate", "MAX_SEARCH_EVALS"]

#: evaluations one search may make: PyTorch's ``max_ls = 25`` iterations after the
#: first trial. Without the cap a search with ``tolerance_change = 0`` near the
#: minimum (where rounding stops every decrease) would spend the whole budget.
MAX_SEARCH_EVALS = 26


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clamped to
    ``bounds`` (default: the interval between the points); the bounds' midpoint when the
    cubic has no minimiser. PyTorch's ``_cubic_interpolate``, term for term:

        d1 = g1 + g2 - 3 (f1 - f2) / (x1 - x2),   d2 = √(d1² - g1 g2)
        t = x2 - (x2 - x1) (g2 + d2 - d1) / (g2 - g1 + 2 d2)

    A non-finite input (a trial point that failed) or coinciding points (PyTorch: a
    ZeroDivisionError) also give the midpoint: bisection."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    if x1 == x2 or not all(math.isfinite(v) for v in (x1, f1, g1, x2, f2, g2)):
        return (xmin_bound + xmax_bound) / 2.0
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        if min_pos != min_pos:          # 0/0 when the points coincide: PyTorch would return nan
            return (xmin_bound + xmax_bound) / 2.0
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


class _Slots:
    """Which of the caller's trial buffers (1..3) are still referenced."""

    def __init__(self):
        self.live = set()

    def take(self, keep):
        for s in (1, 2, 3):
            if s not in keep:
                return s
        raise AssertionError("more than three live trial points")  # the search keeps at most two


def strong_wolfe(evaluate, t, f, gtd, d_norm, *, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_evals=25):
    """Find ``t`` with ``φ(t) ≤ φ(0) + c1 t φ'(0)`` and ``|φ'(t)| ≤ c2 |φ'(0)|`` (Nocedal &
    Wright Alg. 3.5 bracketing, 3.6 zoom with cubic interpolation), exactly as PyTorch's
    ``_strong_wolfe`` does, except that at most ``max_evals`` evaluations are made
    (PyTorch may make one more than its ``max_ls``) and non-finite trial values shrink
    the step.

    ``f`` and ``gtd`` are ``φ(0)`` and ``φ'(0) < 0``; ``d_norm = ‖d‖∞`` scales the
    bracket-width test ``|t_hi - t_lo| ‖d‖∞ < tolerance_change``. Returns
    ``(φ(t), φ'(t), t, slot, evaluations)``."""
    if max_evals < 1:
        raise ValueError(f"max_evals must be >= 1, got {max_evals}")
    max_ls = max_evals - 1
    f_new, gtd_new = evaluate(t, 1)
    s_new = 1
    ls_func_evals = 1
    t_prev, f_prev, gtd_prev, s_prev = 0, f, gtd, 0
    done = False
    ls_iter = 0
    bracket = None
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_gtd, bracket_s = [t_prev, t], [f_prev, f_new], [gtd_prev, gtd_new], \
                [s_prev, s_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_gtd, bracket_s = [t], [f_new], [gtd_new], [s_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_gtd, bracket_s = [t_prev, t], [f_prev, f_new], [gtd_prev, gtd_new], \
                [s_prev, s_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, gtd_prev, s_prev = tmp, f_new, gtd_new, s_new
        s_new = _Slots().take({s_prev})
        f_new, gtd_new = evaluate(t, s_new)
        ls_func_evals += 1
        ls_iter += 1

    if ls_iter == max_ls and bracket is None:
        bracket, bracket_f, bracket_gtd, bracket_s = [0, t], [f, f_new], [gtd, gtd_new], [0, s_new]

    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # too close to an end of the bracket twice in a row (or outside it): 10% inside
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        s_new = _Slots().take(set(bracket_s))
        f_new, gtd_new = evaluate(t, s_new)
        ls_func_evals += 1
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos], bracket_gtd[high_pos], bracket_s[high_pos] = \
                t, f_new, gtd_new, s_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos], bracket_gtd[high_pos], bracket_s[high_pos] = \
                    bracket[low_pos], bracket_f[low_pos], bracket_gtd[low_pos], bracket_s[low_pos]
            bracket[low_pos], bracket_f[low_pos], bracket_gtd[low_pos], bracket_s[low_pos] = \
                t, f_new, gtd_new, s_new
    return bracket_f[low_pos], bracket_gtd[low_pos], bracket[low_pos], bracket_s[low_pos], ls_func_evals


def armijo(evaluate, t, f, gtd, *, c1=1e-4, shrink=(0.1, 0.5), max_evals=25):
    """Backtracking until ``φ(t) ≤ φ(0) + c1 t φ'(0)`` (Armijo); each new trial minimises
    the quadratic through ``φ(0), φ'(0), φ(t)``,
    ``t' = -φ'(0) t² / (2 (φ(t) - φ(0) - φ'(0) t))``, kept within ``shrink`` × t
    (halving when that quadratic is useless). At most ``max_evals`` evaluations; when
    none is accepted the start (``t = 0``, slot 0) is returned.
    Returns ``(φ(t), φ'(t), t, slot, evaluations)``."""
    if max_evals < 1:
        raise ValueError(f"max_evals must be >= 1, got {max_evals}")
    lo, hi = shrink
    slot = 1
    for k in range(max_evals):
        f_new, gtd_new = evaluate(t, slot)
        if f_new <= f + c1 * t * gtd:
            return f_new, gtd_new, t, slot, k + 1
        denom = 2.0 * (f_new - f - gtd * t)
        t_q = -gtd * t * t / denom if math.isfinite(f_new) and denom > 0 else 0.5 * t
        t = min(max(t_q, lo * t), hi * t)
        slot = 2 if slot == 1 else 1
    return f, gtd, 0.0, 0, max_evals
