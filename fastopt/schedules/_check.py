"""Argument checks of the schedules.

A check is a callable ``check(name, value)`` that returns the normalised value (a
float, an int, a tuple, a str) or raises TypeError/ValueError naming the argument.
Real-valued ranges are :class:`fastopt.rules.Hyper`, the optimizers' own checks, so a
schedule and an optimizer reject the same bad learning rate with the same message.
"""
import math

from fastopt.rules import Hyper


def real(lo=-math.inf, hi=math.inf, *, lo_open=False, hi_open=False):
    """A check of a finite real in ``lo .. hi`` (bounds strict where ``*_open``)."""
    spec = Hyper("value", 0.0, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)

    def check(name, value):
        return spec.check(value, name)
    return check


NONNEG = real(0.0)
POSITIVE = real(0.0, lo_open=True)
UNIT_CLOSED = real(0.0, 1.0)
UNIT_OPEN = real(0.0, 1.0, lo_open=True, hi_open=True)


def count(minimum):
    """A check of an int ``>= minimum``.

    Hyper has no integer kind; step counts must not be floats (``2.5`` steps is a bug
    in the caller, not something to round), so floats and bools are TypeErrors.
    """
    def check(name, value):
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        v = int(value.__index__())
        if v < minimum:
            raise ValueError(f"invalid {name} {v}: must be >= {minimum}")
        return v
    return check


def increasing(minimum, *, allow_empty):
    """A check of a strictly increasing sequence of ints ``>= minimum``, as a tuple."""
    each = count(minimum)

    def check(name, value):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
        out = tuple(each(name, v) for v in value)
        if not out and not allow_empty:
            raise ValueError(f"{name} must not be empty")
        for a, b in zip(out, out[1:]):
            if not a < b:
                raise ValueError(f"{name} must be strictly increasing, got {list(out)}")
        return out
    return check


def choice(*options):
    """A check of a str among ``options``."""
    def check(name, value):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if value not in options:
            raise ValueError(f"invalid {name} {value!r}: must be one of {', '.join(map(repr, options))}")
        return value
    return check


def boolean(name, value):
    """A strict bool: Hyper's bool kind also takes 0/1, but ``three_phase=1`` is more
    likely a misplaced positional argument than a flag."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def metric(name, value):
    """Any real, NaN and infinities included (a diverged loss, a ``best`` of ``inf``).

    Duck-typed on ``__float__`` rather than ``numbers.Real``: a loss is often a 0-d
    array or a framework tensor, which are not registered as reals.
    """
    if isinstance(value, (bool, str, bytes, complex)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)
