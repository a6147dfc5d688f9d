"""The reference step: what :class:`fastopt._kernels.engine.Engine` does, in plain
Python and NumPy, one array after another. The reference optimizer classes use it,
so tests and benchmarks compare class with class."""
import math
import numbers

import numpy as np

from fastopt._kernels.engine import StepGuard
from fastopt._validate import as_array, byte_range, check_like, grads_sequence
from fastopt.optim.base import NonFiniteGradientError
from fastopt.reference import rules as R
from fastopt.reference import sparse as RS
from fastopt.lowprec import reference as LP
from fastopt.rules import BY_NAME
from fastopt.sparse import catch_up, checked_rows, is_sparse_input


REDUCE_BLOCK = 8192     # the driver's norm blocks


def blocked_sumsq(g, total=0.0):
    """``total`` plus the float64 sum of squares of ``g`` in the driver's exact order, so
    a clipped float64 step is the kernels' to the last bit: blocks of 8192 elements, each summed in eight
    lanes (element ``i`` of a block into lane ``i % 8``, left to right), the lanes
    combined as ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``, the blocks' sums
    added to ``total`` left to right (one running sum over all the arrays' blocks)."""
    sq = np.square(np.ravel(g).astype(np.float64))
    for a in range(0, sq.size, REDUCE_BLOCK):
        block = sq[a:a + REDUCE_BLOCK]
        lanes = np.zeros(-(-block.size // 8) * 8)      # padding adds +0.0: no change
        lanes[:block.size] = block
        a8 = np.cumsum(lanes.reshape(-1, 8), axis=0)[-1]     # cumsum is sequential per lane
        total += float(((a8[0] + a8[1]) + (a8[2] + a8[3])) + ((a8[4] + a8[5]) + (a8[6] + a8[7])))
    return total


def reference_function(rule):
    """The plain-NumPy function of a rule (``Rule.reference``: a function of
    :mod:`fastopt.reference.rules` by name, the rule's own name by default, or a
    function declared in the rule's file)."""
    ref = rule.name if rule.reference is None else rule.reference
    return getattr(R, ref) if isinstance(ref, str) else ref


class ReferenceEngine:
    @staticmethod
    def first_touch(states, values):
        """Fill new state buffers: ``states[k][j][...] = values[k][j]``."""
        for bufs, vals in zip(states, values):
            for a, v in zip(bufs, vals):
                a[...] = v

    def __init__(self, params, states, rules, group_of, groups, keys, validate, *, clip_norm=None, noise=None,
                 seed=0, nonfinite="ignore", guard=None, low=None, grad_scale=1.0):
        self.guard = StepGuard() if guard is None else guard
        self.successor = None
        self.params, self.states, self.group_of, self.groups = params, states, group_of, groups
        self.rules = [BY_NAME[r] for r in rules]
        self.validate = validate
        self.clip_norm, self.noise, self.seed, self.policy = clip_norm, noise, seed, nonfinite
        self.steps = [0] * len(params)
        self.sstate = [[v for _, v in r.scalar_state] for r in self.rules]
        self.gsteps = [0] * len(groups)
        self.last_grad_norm = math.nan
        self.last_skipped = False
        self.low = [None] * len(params) if low is None else list(low)
        self.grad_scale = float(grad_scale)
        self._written = [byte_range(a) for k, p in enumerate(params) for a in (p,) + tuple(states[k]) + (
            () if self.low[k] is None or self.low[k].copy is None else (self.low[k].copy,)) if a.size]
        self.exact = False
        self.last_rows = [None] * len(params)

    def set_grad_scale(self, scale):
        self.grad_scale = float(scale)

    def step(self, grads):
        self.guard.acquire("step")
        try:
            engine = self
            while engine.successor is not None:
                engine = engine.successor
            return engine._step(grads)
        finally:
            self.guard.release()

    def retire(self, successor):
        """Hand over to ``successor``: later steps through this engine go there."""
        self.successor = successor

    def _step(self, grads):
        grads = grads_sequence(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"expected {len(self.params)} gradients (one per parameter), got {len(grads)}")
        checked = []
        for k, g in enumerate(grads):
            if g is None:
                checked.append(None)
                continue
            if self.low[k] is not None:
                ls = self.low[k]
                if is_sparse_input(g):
                    raise TypeError(f"grads[{k}] is a sparse gradient: a parameter with low-precision storage "
                                    "(precision=...) takes dense gradients only; nothing was updated")
                if not isinstance(g, np.ndarray) or g.dtype not in ls.grad_dtypes:
                    raise TypeError(f"grads[{k}] has dtype {getattr(g, 'dtype', type(g).__name__)}; this parameter "
                                    f"takes {ls.grad_names} gradients ({ls.why})")
                if g.shape != ls.shape:
                    raise ValueError(f"grads[{k}] has shape {g.shape}, its parameter {ls.shape}")
                lo, hi = byte_range(g)
                if g.size and any(lo < b and a < hi for a, b in self._written):
                    raise ValueError(f"grads[{k}] shares memory with a parameter or optimizer state")
            elif is_sparse_input(g) or (self.exact and self.last_rows[k] is not None):
                if is_sparse_input(g):
                    idx, vals, _ = checked_rows(g, f"grads[{k}]", self.params[k])
                    rows, vals = RS.coalesce(idx, vals)
                else:
                    vals = as_array(g, f"grads[{k}]", writeable=False)
                    check_like(vals, f"grads[{k}]", self.params[k], "its parameter")
                    rows = np.arange(self.params[k].shape[0])
                g = (rows, vals)
                lo, hi = byte_range(vals)
                if vals.size and any(lo < b and a < hi for a, b in self._written):
                    raise ValueError(f"grads[{k}].values shares memory with a parameter or optimizer state")
            else:
                g = as_array(g, f"grads[{k}]", writeable=False)
                check_like(g, f"grads[{k}]", self.params[k], "its parameter")
                lo, hi = byte_range(g)
                if g.size and any(lo < b and a < hi for a, b in self._written):
                    raise ValueError(f"grads[{k}] shares memory with a parameter or optimizer state")
            for name, a in [(f"params[{k}]", self.params[k])] + [
                    (f"the state buffer {j} of params[{k}]", s) for j, s in enumerate(self.states[k])]:
                if not a.flags.writeable:
                    raise ValueError(f"{name} is read-only (made so after the optimizer was created); "
                                     "nothing was updated")
            checked.append(g)
        settings = []
        for gi, group in enumerate(self.groups):
            validated = self.validate(gi)
            hyper, wd, maximize, decoupled, clip = validated[:5]
            l1, l1_coupled = validated[5:7] if len(validated) > 5 else (0.0, False)
            lr = group["lr"]
            lr = lr(self.gsteps[gi]) if callable(lr) else lr
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
                raise TypeError(f"param_groups[{gi}]: the learning-rate schedule gave {lr!r}, not a real number")
            lr = float(lr)
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"param_groups[{gi}]: the learning-rate schedule gave {lr!r}")
            settings.append(dict(lr=lr, hyper=hyper, weight_decay=wd, maximize=bool(maximize),
                                 decoupled_weight_decay=bool(decoupled), clip_value=clip, l1=float(l1),
                                 l1_coupled=bool(l1_coupled)))
        if self.exact:
            for k, g in enumerate(checked):
                if isinstance(g, tuple) and settings[self.group_of[k]]["weight_decay"] != 0:
                    raise ValueError(f"grads[{k}]: sparse='exact' needs weight_decay=0; nothing was updated")
                if isinstance(g, tuple) and settings[self.group_of[k]]["l1"] != 0:
                    raise ValueError(f"grads[{k}]: sparse='exact' needs l1=0; nothing was updated")
                if isinstance(g, tuple) and self.last_rows[k] is None:
                    self.last_rows[k] = np.full(self.params[k].shape[0], self.steps[k], np.int64)
        loaded = {}
        for k, g in enumerate(checked):
            if g is not None and self.low[k] is not None:
                p32, g32, s32 = LP.load(self.low[k].variant, self.rules[k], self.params[k], g, self.states[k])
                if self.grad_scale != 1.0:
                    g32 = g32 * np.float32(self.grad_scale)
                loaded[k] = (p32, g32, s32)
                checked[k] = g32
        coef = 1.0
        if self.clip_norm is not None or self.policy != "ignore":
            # the driver's order: one running blocked sum over the dense arrays, then on
            # over the sparse ones' coalesced rows
            total, finite, sparse_terms = 0.0, True, []
            for k, g in enumerate(checked):
                if g is None:
                    continue
                s = settings[self.group_of[k]]
                p = self.params[k]
                if isinstance(g, tuple):
                    p, g = p[g[0]], g[1]
                finite = finite and bool(np.isfinite(g).all())
                if s["weight_decay"] != 0 and not s["decoupled_weight_decay"]:
                    g = g + s["weight_decay"] * (p if k not in loaded else loaded[k][0])
                if isinstance(checked[k], tuple):
                    sparse_terms.append(g)
                else:
                    total = blocked_sumsq(g, total)
            for g in sparse_terms:
                total = blocked_sumsq(g, total)
            self.last_grad_norm = math.sqrt(total)
            if not finite and self.policy == "raise":
                raise NonFiniteGradientError("a gradient holds inf or NaN; nothing was updated (nonfinite='raise')")
            if not finite and self.policy == "skip":
                self.last_skipped = True
                return False
            if self.clip_norm is not None:
                c = self.clip_norm / (self.last_grad_norm + 1e-6)
                if c < 1.0 or c != c:
                    coef = c
        self.last_skipped = False
        for k, g in enumerate(checked):
            if g is None:
                continue
            s, rule, p = settings[self.group_of[k]], self.rules[k], self.params[k]
            states = self.states[k]
            if k in loaded:
                p, _, states = loaded[k]
            t = self.steps[k] + 1
            if isinstance(g, tuple):
                self._row_step(k, g[0], g[1], s, rule, t, coef)
                self.steps[k] = t
                continue
            noise = None
            if self.noise is not None:
                noise = R.gradient_noise(self.seed, t, k, p.size, self.noise[0], self.noise[1], p.dtype)
                noise = noise.reshape(p.shape)
            g = R.preprocess(p, g, lr=s["lr"], weight_decay=s["weight_decay"],
                             decoupled_weight_decay=s["decoupled_weight_decay"], maximize=s["maximize"],
                             clip_value=s["clip_value"], clip_coef=coef, noise=noise)
            if s["l1"] != 0 and s["l1_coupled"]:
                g = R.l1_subgradient(p, g, s["l1"])
            kwargs = dict(zip(rule.hyper_names, s["hyper"]))
            kwargs.update(zip((n for n, _ in rule.scalar_state), self.sstate[k]))
            out = reference_function(rule)(p, g, **dict(zip(rule.state, states)), t=t, lr=s["lr"], **kwargs)
            if s["l1"] != 0 and not s["l1_coupled"]:
                R.l1_proximal(p, s["lr"] * s["l1"])
            if k in loaded:
                ls = self.low[k]
                key = int(R.noise_key(self.seed, t, k)) if ls.sround else None
                LP.store(ls.variant, rule, self.params[k], self.states[k], ls.copy, p, states, key, ls.sround)
            if rule.scalar_state:
                self.sstate[k] = [out]
            self.steps[k] = t
        self.gsteps = [s + 1 for s in self.gsteps]
        return True

    def _row_step(self, k, rows, vals, s, rule, t, coef):
        # the rule's reference on the gathered rows, written back: what the row kernels do
        p = self.params[k]
        pr = p[rows]
        states = {name: a[rows] for name, a in zip(rule.state, self.states[k])}
        if self.exact:
            missed = t - 1 - self.last_rows[k][rows]
            h = dict(zip(rule.hyper_names, s["hyper"]))
            for name, hp in rule.sparse_decay_hyper.items():
                states[name] = states[name] * RS.decay_factors(h[hp], missed, p.dtype)[:, None]
        noise = None
        if self.noise is not None:
            noise = RS.row_noise(self.seed, t, k, rows, p.shape[1], self.noise[0], self.noise[1], p.dtype)
        g = R.preprocess(pr, vals, lr=s["lr"], weight_decay=s["weight_decay"],
                         decoupled_weight_decay=s["decoupled_weight_decay"], maximize=s["maximize"],
                         clip_value=s["clip_value"], clip_coef=coef, noise=noise)
        if s["l1"] != 0 and s["l1_coupled"]:
            g = R.l1_subgradient(pr, g, s["l1"])
        kwargs = dict(zip(rule.hyper_names, s["hyper"]))
        kwargs.update(zip((n for n, _ in rule.scalar_state), self.sstate[k]))
        out = reference_function(rule)(pr, g, **states, t=t, lr=s["lr"], **kwargs)
        if s["l1"] != 0 and not s["l1_coupled"]:
            R.l1_proximal(pr, s["lr"] * s["l1"])
        if rule.scalar_state:
            self.sstate[k] = [out]
        p[rows] = pr
        for name, a in zip(rule.state, self.states[k]):
            a[rows] = states[name]
        if self.exact:
            self.last_rows[k][rows] = t

    def set_sparse_mode(self, mode):
        """As :meth:`fastopt._kernels.engine.Engine.set_sparse_mode`."""
        if mode == "exact":
            bad = sorted({r.name for r in self.rules if r.sparse_decay is None})
            if bad:
                raise ValueError(f"sparse='exact' is not available for the {', '.join(bad)} kernel")
            if self.noise is not None:
                raise ValueError("sparse='exact' cannot be combined with grad_noise")
        self.exact = mode == "exact"

    def sparse_flush(self):
        """Exact mode: bring every row's state up to the current step."""
        for k, last in enumerate(self.last_rows):
            if last is None:
                continue
            rule = self.rules[k]
            hyper = dict(zip(rule.hyper_names, self.validate(self.group_of[k])[0]))
            catch_up(dict(zip(rule.state, self.states[k])),
                     {s: hyper[hp] for s, hp in rule.sparse_decay_hyper.items()}, last, self.steps[k],
                     self.params[k].dtype)

    def sparse_reset(self):
        """Forget the per-row counters (a loaded state is current in every row)."""
        self.last_rows = [None] * len(self.params)

    def get_row_steps(self):
        """Exact mode: copies of the per-row counters (None where every row is current)."""
        return [None if r is None else r.copy() for r in self.last_rows]

    def set_row_steps(self, values):
        self.last_rows = [None if v is None else np.array(v, dtype=np.int64) for v in values]

    def get_steps(self):
        return list(self.steps)

    def set_steps(self, values):
        self.steps = [int(v) for v in values]

    def get_scalar_state(self, k):
        return list(self.sstate[k])

    def set_scalar_state(self, k, values):
        self.sstate[k] = [float(v) for v in values]

    def get_group_steps(self):
        return list(self.gsteps)

    def set_group_steps(self, values):
        self.gsteps = [int(v) for v in values]
