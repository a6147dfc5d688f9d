"""``check_grad``: compare an analytic gradient with centred differences (the CS231n
recipe: float64, centred differences, relative error per element, random subset for
large inputs, the worst elements reported)."""
import numbers

import numpy as np

__all__ = ["check_grad", "GradCheckResult"]


class GradCheckResult:
    """What :func:`check_grad` found.

    * ``indices``: the flat indices checked; ``analytic``, ``numeric``: the two gradients there;
    * ``rel_error``: ``|a − n| / max(|a|, |n|, floor)`` per element (the floor keeps
      gradients that are both ~0 from dividing rounding noise by ~0);
    * ``max_rel_error``; ``ok``: ``max_rel_error <= rtol``;
    * ``worst``: up to ``report`` tuples ``(index, analytic, numeric, rel_error)``,
      largest error first (``index`` a tuple into x's shape).
    """

    def __init__(self, shape, indices, analytic, numeric, rtol, report, floor=0.0):
        self.indices, self.analytic, self.numeric, self.rtol = indices, analytic, numeric, rtol
        denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(denom > 0, np.abs(analytic - numeric) / np.where(denom > 0, denom, 1.0), 0.0)
        self.rel_error = rel
        self.max_rel_error = float(rel.max()) if rel.size else 0.0
        self.ok = self.max_rel_error <= rtol
        order = np.argsort(-rel, kind="stable")[:report]
        self.worst = [(tuple(int(i) for i in np.unravel_index(indices[k], shape)), float(analytic[k]),
                       float(numeric[k]), float(rel[k])) for k in order]

    def __bool__(self):
        return bool(self.ok)

    def __str__(self):
        head = (f"gradient check: {len(self.indices)} elements, max relative error {self.max_rel_error:.3e} "
                f"({'ok' if self.ok else 'FAILED'}, rtol {self.rtol:g})")
        rows = [f"  {str(idx):>14}  analytic {a: .8e}  numeric {n: .8e}  rel {r:.2e}" for idx, a, n, r in self.worst]
        return "\n".join([head, "  worst elements:"] + rows)

    __repr__ = __str__


def _float64_copy(x):
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError(f"x must be a float array (check_grad perturbs it by h), got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError("x is empty")
    if not np.isfinite(a).all():
        raise ValueError("x holds inf or NaN")
    return np.array(a, dtype=np.float64, copy=True, order="C")


def _scalar(value, name):
    v = np.asarray(value)
    if v.size != 1 or v.dtype.kind not in "fiu":
        raise ValueError(f"{name} must return a real scalar, got {type(value).__name__} of shape {v.shape}")
    v = float(v.reshape(()))
    if not np.isfinite(v):
        raise ValueError(f"{name} returned a non-finite value ({v})")
    return v


def check_grad(f, grad, x, *, h=1e-5, rtol=1e-6, max_elements=200, seed=0, report=5, floor=1e-8):
    """Check ``grad(x)`` against the centred differences of ``f`` at ``x``.

    For each checked element ``i``: ``n_i = (f(x + h e_i) − f(x − h e_i)) / 2h`` and
    ``rel_i = |a_i − n_i| / max(|a_i|, |n_i|, floor)`` (0 where both vanish; the ``floor``,
    1e-8 by default, 0 for the bare formula, keeps elements whose gradient is ~0 from
    dividing the differences' rounding noise, ~1e-11, by ~0). ``x`` is copied
    to float64 first (the differences of float32 values are noise), and never changed;
    ``f`` and ``grad`` are called on float64 copies. When ``x`` has more than
    ``max_elements`` elements, a random subset of that many (from ``seed``) is checked.

    Rules of thumb (CS231n): ``rel > 1e-2`` is probably wrong, ``1e-4``–``1e-2`` suspicious,
    ``< 1e-7`` good for smooth float64 objectives; kinks (ReLU, max, |x|) spoil it locally.

    Returns a :class:`GradCheckResult` (true when ``max_rel_error <= rtol``; print it for
    the worst elements). Raises TypeError for integer ``x``, ValueError for a gradient
    of the wrong shape or non-finite values, naming the argument.
    """
    if not callable(f):
        raise TypeError("f must be callable: x -> scalar")
    if not callable(grad):
        raise TypeError("grad must be callable: x -> array of x's shape")
    x64 = _float64_copy(x)
    if isinstance(floor, bool) or not isinstance(floor, numbers.Real) or not (np.isfinite(floor) and floor >= 0):
        raise ValueError(f"floor must be a finite number >= 0, got {floor!r}")
    for name, value in (("h", h), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    for name, value in (("max_elements", max_elements), ("report", report)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    a = np.asarray(grad(x64.copy()))
    if a.shape != x64.shape:
        raise ValueError(f"grad returned shape {a.shape}, expected x's shape {x64.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"grad returned dtype {a.dtype}, expected a real array")
    a = a.astype(np.float64).ravel()
    if not np.isfinite(a).all():
        raise ValueError("grad returned inf or NaN")
    n = x64.size
    if n > max_elements:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(max_elements), replace=False))
    else:
        idx = np.arange(n)
    flat = x64.reshape(-1)
    numeric = np.empty(len(idx))
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp = _scalar(f(x64.copy()), "f")
        flat[i] = old - h
        fm = _scalar(f(x64.copy()), "f")
        flat[i] = old
        numeric[k] = (fp - fm) / (2.0 * h)
    return GradCheckResult(x64.shape, idx, a[idx], numeric, float(rtol), int(report), float(floor))
