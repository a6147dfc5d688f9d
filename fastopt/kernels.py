"""Low-level entry points: one fused update of one parameter array, state passed in.

Each function updates ``param`` and its state arrays in place for step ``step``
(1-based, counted by the caller) and validates everything before writing anything.
The common options, fused into the same pass, are available on every rule:
``maximize`` (g = -g), ``weight_decay`` λ (coupled: g = g + λ p, or with
``decoupled_weight_decay``: p = p (1 - lr λ)), ``clip_value`` (g = clip(g, -c, c)) and
``l1`` λ1 (proximal: p = sign(p) max(|p| - lr λ1, 0) after the update; with
``l1_coupled``: g = g + λ1 sign(p) before it).
The optimizer classes (:mod:`fastopt.optim`) keep state and steps for you and run
many arrays in one parallel region; these functions are for embedding.
"""
import math
import numbers

from fastopt._kernels.driver import arrays_ok, check_threads, max_threads
from fastopt._kernels.engine import apply_rule
from fastopt._validate import as_array, check_disjoint, check_like
from fastopt.rules import BY_NAME, CLIP_VALUE, FLAG, L1, LR, MAX_STEP, WEIGHT_DECAY

_MAX_THREADS = max_threads()


def _checked_arrays(rule, param, grad, state):
    """The arrays as ndarrays after every check, each raising with the argument's name."""
    p = as_array(param, "param", writeable=True)
    g = as_array(grad, "grad", writeable=False)
    check_like(g, "grad", p, "param")
    states = []
    for name, s in zip(rule.state, state):
        s = as_array(s, name, writeable=True)
        check_like(s, name, p, "param")
        states.append(s)
    check_disjoint([("param", p), ("grad", g)] + list(zip(rule.state, states)))
    return p, g, tuple(states)


def _make(rule):
    allowed = frozenset(rule.hyper_names) | {n for n, _ in rule.scalar_state}
    defaults = tuple(float(h.default) for h in rule.hyper)
    nstate = len(rule.state)

    def update(param, grad, *state, step, lr=rule.lr, weight_decay=0.0,
               decoupled_weight_decay=rule.decoupled_decay, maximize=False, clip_value=None, threads=0, l1=0.0,
               l1_coupled=False, **hyper):
        if hyper and not allowed.issuperset(hyper):
            raise TypeError(f"{rule.name}() got unexpected keyword arguments {sorted(set(hyper) - allowed)}")
        if len(state) != nstate:
            raise TypeError(f"{rule.name}() takes param, grad and {len(rule.state)} state arrays "
                            f"({', '.join(rule.state) or 'none'}), got {len(state)}")
        # every scalar becomes a plain float/int first: a number's __float__ is user code,
        # and none may run between the array checks and the kernel (it could resize them)
        if type(step) is not int and (isinstance(step, bool) or not isinstance(step, numbers.Integral)) \
                or not 1 <= step <= MAX_STEP:
            raise ValueError(f"step must be an int in [1, 2**53] (the 1-based step count), got {step!r}")
        step = float(int(step))
        if type(threads) is not int or not 0 <= threads <= _MAX_THREADS:
            threads = check_threads(threads)
        values = (LR.check(lr),) + (defaults if not hyper else tuple(
            h.check(hyper[h.name]) if h.name in hyper else d for h, d in zip(rule.hyper, defaults)))
        wd = WEIGHT_DECAY.check(weight_decay)
        clip = math.inf if clip_value is None else CLIP_VALUE.check(clip_value)
        sstate = [rule.domains[n].check(hyper.get(n, init), n) for n, init in rule.scalar_state]
        flags = (bool(FLAG.check(maximize, "maximize")),
                 bool(FLAG.check(decoupled_weight_decay, "decoupled_weight_decay")))
        l1 = L1.check(l1)
        l1_coupled = bool(FLAG.check(l1_coupled, "l1_coupled"))
        if arrays_ok(param, grad, state):
            p, g, states = param, grad, state
        else:
            p, g, states = _checked_arrays(rule, param, grad, state)
        out = apply_rule(rule.name, p, g, tuple(states), values, step, sstate, wd, flags[0], flags[1], clip, threads,
                         l1=l1, l1_coupled=l1_coupled)
        return out[0] if len(out) == 1 else None

    args = ", ".join(("param", "grad") + rule.state)
    hyp = ", ".join(f"{h.name}={h.default!r}" for h in rule.hyper)
    ss = "".join(f", {n}={v!r}" for n, v in rule.scalar_state)
    update.__name__ = update.__qualname__ = rule.name
    update.__doc__ = (
        f"{rule.name}({args}, *, step, lr={rule.lr!r}{', ' + hyp if hyp else ''}{ss}, "
        f"weight_decay=0.0, decoupled_weight_decay={rule.decoupled_decay}, maximize=False, clip_value=None, "
        "threads=0, l1=0.0, l1_coupled=False)\n\n"
        f"    {rule.doc}\n\n"
        f"Updates param and {', '.join(rule.state) or 'no state'} in place, for float32 or float64 "
        "C-contiguous arrays of one shape.\n"
        + (f"Returns the new {rule.scalar_state[0][0]} to pass to the next step.\n" if rule.scalar_state else
           "Returns None.\n")
        + "".join(f"\n    {h.name}: in {h.range_text()}" for h in rule.hyper))
    return update


for _rule in BY_NAME.values():
    globals()[_rule.name] = _make(_rule)

__all__ = sorted(BY_NAME)
