"""What the second-order methods share: stop reasons, errors, argument checks, and the
evaluation of a user's ``(loss, grads)`` callback."""
import math
import numbers

import numpy as np

from fastopt._lifetime import pin_memory

__all__ = ["Status", "NonFiniteValueError", "MESSAGES", "check_count", "check_tolerance", "check_line_search",
           "unpack_loss_grads"]


class Status:
    """``status`` codes of a result (and of ``LBFGS.last_step``)."""
    CONVERGED = 0          # gradient small enough (‖g‖∞ ≤ tolerance_grad)
    MAX_ITER = 1
    MAX_EVAL = 2
    SMALL_STEP = 3         # ‖t d‖∞ ≤ tolerance_change
    SMALL_CHANGE = 4       # |f_k - f_{k-1}| < tolerance_change
    NOT_DESCENT = 5        # gᵀd > -tolerance_change: no descent left along d
    LINE_SEARCH_FAILED = 6
    NON_FINITE = 7
    HESSIAN_FAILED = 8
    CALLBACK = 9
    SMALL_SLOPE = 10       # -tolerance_change < gᵀd < 0: too little decrease left along d
    #: statuses of a run that stopped at a (numerically) stationary point
    SUCCESS = (CONVERGED, SMALL_STEP, SMALL_CHANGE, SMALL_SLOPE)


MESSAGES = {
    Status.CONVERGED: "converged: gradient max-norm <= tolerance_grad",
    Status.MAX_ITER: "stopped: max_iter iterations done",
    Status.MAX_EVAL: "stopped: max_eval function evaluations done",
    Status.SMALL_STEP: "stopped: step max-norm |t d| <= tolerance_change",
    Status.SMALL_CHANGE: "stopped: function change |f_k - f_(k-1)| < tolerance_change",
    Status.NOT_DESCENT: "stopped: d is not a descent direction (g.d >= 0)",
    Status.SMALL_SLOPE: "stopped: directional derivative -tolerance_change < g.d < 0",
    Status.LINE_SEARCH_FAILED: "stopped: the line search found no acceptable point (parameters left at the "
                               "last accepted point)",
    Status.NON_FINITE: "stopped: the function returned a non-finite value or gradient (parameters left at the "
                       "last accepted point)",
    Status.HESSIAN_FAILED: "stopped: the Hessian could not be factorised even with damping (parameters left at "
                           "the last accepted point)",
    Status.CALLBACK: "stopped: the callback returned True",
}


class NonFiniteValueError(FloatingPointError, ValueError):
    """The function returned inf/NaN at the current point: there is nothing to step from."""


def check_count(value, name, lo=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"invalid {name} {value!r}: must be >= {lo}")
    return int(value)


def check_tolerance(value, name, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"invalid {name} {value!r}: must be finite and {'>' if positive else '>='} 0")
    return v


LINE_SEARCHES = ("strong_wolfe", "armijo", None)


def check_line_search(value):
    if value not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES} (None: fixed step lr), got {value!r}")
    return value


def unpack_loss_grads(out, shapes, dtype, who="closure()", pins=None):
    """``(loss float, list of C-contiguous ``dtype`` arrays)`` from a callback's return
    value, or TypeError/ValueError naming what is wrong (count, shape, type).

    The arrays may be the callback's own (no copy). A list passed as ``pins`` receives a
    weak reference to each one's memory owner as soon as it is converted, so a later
    gradient's ``__array__`` (or another thread) cannot free it before the kernels,
    which read it without the GIL, are done (see :mod:`fastopt._lifetime`)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{who} must return (loss, grads), got {type(out).__name__}")
    loss, grads = out
    if isinstance(loss, np.ndarray) and loss.size == 1:
        loss = loss.reshape(())[()]
    if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
        raise TypeError(f"{who} returned a loss of type {type(loss).__name__}, not a real number")
    if isinstance(grads, np.ndarray) and len(shapes) == 1:
        grads = [grads]
    if not isinstance(grads, (list, tuple)) or len(grads) != len(shapes):
        raise ValueError(f"{who} must return one gradient per parameter ({len(shapes)}), got "
                         f"{len(grads) if isinstance(grads, (list, tuple)) else type(grads).__name__}")
    out = []
    for k, (g, shape) in enumerate(zip(grads, shapes)):
        a = np.asarray(g)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{who} returned grads[{k}] of dtype {a.dtype}, not a real array")
        if a.shape != shape:
            raise ValueError(f"{who} returned grads[{k}] of shape {a.shape}; the parameter's shape is {shape}")
        out.append(np.ascontiguousarray(a, dtype=dtype))
        if pins is not None:
            pins.extend(pin_memory(out[-1:]))
    return float(loss), out
