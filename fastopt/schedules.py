"""Learning-rate schedules for fastopt optimizers.

A schedule is a plain-Python function of ``s``, the number of optimizer steps
already completed (``s = 0`` for the very first step).  ``sched(s)`` returns the
learning rate used by step ``s + 1``.  Evaluation is plain float arithmetic (no
NumPy), so it is cheap enough to call on every optimizer step.

Notation in the docstrings: ``α0`` is the base learning rate (``lr``), ``s`` the
0-based count of completed steps, ``T`` a horizon in steps, ``W`` a warmup length.

All schedules share the :class:`Schedule` interface:

* ``sched(s) -> float`` -- the learning rate for step ``s + 1`` (``s`` an int
  ``>= 0``; a negative ``s`` raises ``ValueError``).
* ``initial_lr`` -- ``sched(0)``.
* ``state_dict()`` / ``load_state_dict(d)`` -- a dict of plain Python values
  (floats, ints, strings, lists and, for composite schedules, nested dicts) that
  names the schedule kind, its hyper-parameters and any mutable state.
  ``load_state_dict`` restores it exactly and raises ``ValueError`` if the dict
  belongs to another schedule class or has missing/extra keys.
  ``Schedule.from_state_dict(d)`` rebuilds a schedule of any kind from such a dict.

Schedules follow the closed forms of ``torch.optim.lr_scheduler`` where a
PyTorch counterpart exists (StepLR, MultiStepLR, ExponentialLR,
CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR, ReduceLROnPlateau);
``Join`` follows ``optax.join_schedules``.  Deliberate differences are
documented on each class (clamping after the horizon instead of raising, exact
integer cycle arithmetic for warm restarts).

Only :mod:`math` is imported at module import time; :mod:`argparse` and
matplotlib are imported lazily by the CLI / plotting helpers.
"""

import math

__all__ = [
    "Schedule",
    "Constant",
    "StepDecay",
    "MultiStep",
    "Exponential",
    "InverseTime",
    "InverseSqrt",
    "CosineAnnealing",
    "CosineWarmRestarts",
    "Linear",
    "Polynomial",
    "OneCycle",
    "Warmup",
    "Join",
    "ReduceOnPlateau",
    "scale_lr_for_batch",
    "table",
    "plot",
    "add_cli",
]


# ---------------------------------------------------------------------------
# argument validation helpers
# ---------------------------------------------------------------------------

def _real(name, value):
    """Return ``value`` as a finite float; TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or isinstance(value, (str, bytes, complex)) or not hasattr(
        type(value), "__float__"
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v


def _nonneg(name, value):
    v = _real(name, value)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return v


def _positive(name, value):
    v = _real(name, value)
    if not v > 0.0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return v


def _int(name, value, minimum):
    """Return ``value`` as an int ``>= minimum``; floats and bools are TypeErrors."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value.__index__())
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _choice(name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _neg_step(s):
    return ValueError(f"step s must be >= 0, got {s!r}")


def _as_schedule(name, value):
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__float__") or isinstance(
        value, (str, bytes, complex)
    ):
        raise TypeError(f"{name} must be a Schedule or a real number, got {type(value).__name__}")
    return Constant(value)


def _cos_interp(start, end, frac):
    """``end + (start - end) / 2 * (1 + cos(pi * frac))`` (PyTorch ``_annealing_cos``)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1.0)


_REGISTRY = {}


# ---------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------

class Schedule:
    """Base class of all learning-rate schedules.

    ``sched(s)`` is the learning rate of optimizer step ``s + 1``, where ``s >= 0``
    is the number of steps already completed.  Subclasses implement ``__call__``
    and ``_config()`` (their constructor arguments as plain values); stateful
    schedules also implement ``_get_state()`` / ``_set_state()``.
    """

    #: names of the constructor hyper-parameters as stored in ``state_dict``
    _config_names = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __call__(self, s):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def initial_lr(self):
        """The learning rate at ``s = 0`` (i.e. ``self(0)``)."""
        return self(0)

    # -- configuration / state ------------------------------------------------
    def _config(self):
        """Constructor arguments as a dict of plain Python values."""
        raise NotImplementedError

    @classmethod
    def _from_config(cls, cfg):
        return cls(**cfg)

    def _get_state(self):
        return {}

    def _set_state(self, state):
        pass

    def state_dict(self):
        """Return ``{"kind": class name, **hyper-parameters, **state}`` (plain values)."""
        d = {"kind": type(self).__name__}
        d.update(self._config())
        d.update(self._get_state())
        return d

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state from :meth:`state_dict` output.

        Raises ``ValueError`` if ``state_dict`` is for another schedule class or
        has missing or unexpected keys, and the constructor's errors if a value
        is invalid.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = type(self).__name__
        kind = state_dict.get("kind")
        if kind != mine:
            raise ValueError(
                f"state_dict is for schedule kind {kind!r}, cannot load it into {mine}"
            )
        cfg_keys = set(self._config())
        st_keys = set(self._get_state())
        expected = {"kind"} | cfg_keys | st_keys
        got = set(state_dict)
        missing = sorted(expected - got)
        extra = sorted(got - expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if extra:
                parts.append(f"unexpected keys {extra}")
            raise ValueError(f"invalid state_dict for {mine}: " + "; ".join(parts))
        new = type(self)._from_config({k: state_dict[k] for k in self._config()})
        if st_keys:
            new._set_state({k: state_dict[k] for k in st_keys})
        self.__dict__.clear()
        self.__dict__.update(new.__dict__)

    @staticmethod
    def from_state_dict(state_dict):
        """Build a new schedule of the kind named in ``state_dict["kind"]``."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        kind = state_dict.get("kind")
        cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"state_dict has unknown schedule kind {kind!r}")
        names = cls._config_names
        missing = sorted(k for k in names if k not in state_dict)
        if missing:
            raise ValueError(f"invalid state_dict for {kind}: missing keys {missing}")
        obj = cls._from_config({k: state_dict[k] for k in names})
        obj.load_state_dict(state_dict)  # checks the full key set, restores state
        return obj

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------
# stateless schedules
# ---------------------------------------------------------------------------

class Constant(Schedule):
    """Constant learning rate: ``lr(s) = α0``."""

    _config_names = ("lr",)

    def __init__(self, lr):
        self.lr = _nonneg("lr", lr)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        return self.lr

    def _config(self):
        return {"lr": self.lr}


class StepDecay(Schedule):
    """Step decay (PyTorch ``StepLR``): ``lr(s) = α0 · γ^⌊s / step_size⌋``.

    ``step_size`` is an int >= 1, ``gamma`` > 0 (usually < 1).
    """

    _config_names = ("lr", "step_size", "gamma")

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _nonneg("lr", lr)
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        try:
            return self.lr * self.gamma ** (s // self.step_size)
        except OverflowError:
            return math.inf

    def _config(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class MultiStep(Schedule):
    """Multi-step decay (PyTorch ``MultiStepLR``): ``lr(s) = α0 · γ^n(s)``.

    ``n(s)`` is the number of milestones ``m <= s``; e.g. milestones ``[30, 60, 90]``
    and ``gamma=0.1`` multiply the rate by 0.1 at steps 30, 60 and 90 (ResNet).
    Milestones must be a non-empty, strictly increasing list of ints >= 1
    (PyTorch's repeated milestones, which compound ``gamma``, are rejected).
    """

    _config_names = ("lr", "milestones", "gamma")

    def __init__(self, lr, milestones, gamma=0.1):
        self.lr = _nonneg("lr", lr)
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(
                f"milestones must be a sequence of ints, got {type(milestones).__name__}"
            )
        ms = tuple(_int("milestones", m, 1) for m in milestones)
        if not ms:
            raise ValueError("milestones must not be empty")
        for a, b in zip(ms, ms[1:]):
            if not a < b:
                raise ValueError(f"milestones must be strictly increasing, got {list(ms)}")
        self.milestones = ms
        self.gamma = _positive("gamma", gamma)
        # lr * gamma**n for n = 0..len(ms), precomputed.
        self._values = tuple(self.lr * self.gamma ** n for n in range(len(ms) + 1))

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        n = 0
        for m in self.milestones:
            if m > s:
                break
            n += 1
        return self._values[n]

    def _config(self):
        return {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma}


class Exponential(Schedule):
    """Exponential decay (PyTorch ``ExponentialLR``): ``lr(s) = α0 · γ^s``.

    ``gamma`` > 0; ``gamma`` > 1 gives exponential growth (as in an LR range
    test); a value that overflows a float is returned as ``inf``.
    """

    _config_names = ("lr", "gamma")

    def __init__(self, lr, gamma):
        self.lr = _nonneg("lr", lr)
        self.gamma = _positive("gamma", gamma)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        try:
            return self.lr * self.gamma ** s
        except OverflowError:
            return math.inf

    def _config(self):
        return {"lr": self.lr, "gamma": self.gamma}


class InverseTime(Schedule):
    """Inverse-time decay: ``lr(s) = α0 / (1 + k·s)^power``.

    ``power = 1`` is classic 1/t decay, ``power = 2`` the form of seed 003.
    ``k >= 0``, ``power > 0``.
    """

    _config_names = ("lr", "k", "power")

    def __init__(self, lr, k, power=1.0):
        self.lr = _nonneg("lr", lr)
        self.k = _nonneg("k", k)
        self.power = _positive("power", power)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        if self.power == 1.0:
            return self.lr / (1.0 + self.k * s)
        return self.lr / (1.0 + self.k * s) ** self.power

    def _config(self):
        return {"lr": self.lr, "k": self.k, "power": self.power}


class InverseSqrt(Schedule):
    """Inverse square-root decay, optionally with the Transformer-style warmup.

    * ``warmup_steps = 0``: ``lr(s) = α0 / √(s + 1)`` (first value ``α0``).
    * ``warmup_steps = W > 0``: ``lr(s) = α0 · (s + 1) / W`` for ``s < W``
      (linear warmup reaching ``α0`` at ``s = W - 1``), then
      ``lr(s) = α0 · √(W / (s + 1))`` for ``s >= W`` -- the "rsqrt" schedule of
      "Attention is all you need" (``d^-0.5 · min(t^-0.5, t · W^-1.5)`` with
      ``t = s + 1``), normalised so that its peak is ``α0``.
    """

    _config_names = ("lr", "warmup_steps")

    def __init__(self, lr, warmup_steps=0):
        self.lr = _nonneg("lr", lr)
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        w = self.warmup_steps
        if w == 0:
            return self.lr / math.sqrt(s + 1)
        if s < w:
            return self.lr * (s + 1) / w
        return self.lr * math.sqrt(w / (s + 1))

    def _config(self):
        return {"lr": self.lr, "warmup_steps": self.warmup_steps}


class CosineAnnealing(Schedule):
    """Cosine annealing (PyTorch ``CosineAnnealingLR`` closed form), clamped after T.

    ``lr(s) = α_min + ½(α0 − α_min)(1 + cos(π s / T))`` for ``s <= T`` and
    ``lr(s) = α_min`` for ``s > T`` (PyTorch would continue the cosine upwards).
    ``total_steps = T >= 1``, ``0 <= min_lr <= lr``.
    """

    _config_names = ("lr", "total_steps", "min_lr")

    def __init__(self, lr, total_steps, min_lr=0.0):
        self.lr = _nonneg("lr", lr)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.min_lr = _nonneg("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr!r}) must not exceed lr ({self.lr!r})")

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        if s >= self.total_steps:
            return self.min_lr
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (
            1.0 + math.cos(math.pi * s / self.total_steps)
        )

    def _config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "min_lr": self.min_lr}


class CosineWarmRestarts(Schedule):
    """SGDR cosine annealing with warm restarts (PyTorch ``CosineAnnealingWarmRestarts``).

    Cycle ``i`` (``i = 0, 1, ...``) lasts ``T_i = period · period_mult^i`` steps;
    with ``s_cur`` the position of ``s`` inside its cycle,
    ``lr(s) = α_min + ½(α0 − α_min)(1 + cos(π s_cur / T_i))``, so the rate is
    ``α0`` at the start of every cycle.  The cycle is found with exact integer
    arithmetic (PyTorch's ``step(epoch)`` uses a floating-point logarithm that can
    land in the wrong cycle exactly at a restart).  ``period >= 1`` and
    ``period_mult >= 1`` are ints, ``0 <= min_lr <= lr``.
    """

    _config_names = ("lr", "period", "period_mult", "min_lr")

    def __init__(self, lr, period, period_mult=1, min_lr=0.0):
        self.lr = _nonneg("lr", lr)
        self.period = _int("period", period, 1)
        self.period_mult = _int("period_mult", period_mult, 1)
        self.min_lr = _nonneg("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr!r}) must not exceed lr ({self.lr!r})")

    def cycle(self, s):
        """Return ``(i, s_cur, T_i)``: cycle index, position in it, its length."""
        if s < 0:
            raise _neg_step(s)
        t = self.period
        if self.period_mult == 1:
            i, s_cur = divmod(s, t)
            return i, s_cur, t
        i = 0
        start = 0
        while s >= start + t:
            start += t
            t *= self.period_mult
            i += 1
        return i, s - start, t

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        t = self.period
        if self.period_mult == 1:
            s_cur = s % t
        else:
            start = 0
            while s >= start + t:
                start += t
                t *= self.period_mult
            s_cur = s - start
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * s_cur / t))

    def _config(self):
        return {
            "lr": self.lr,
            "period": self.period,
            "period_mult": self.period_mult,
            "min_lr": self.min_lr,
        }


class Linear(Schedule):
    """Linear interpolation: ``lr(s) = α0 + (end_lr − α0) · min(s, T) / T``.

    With ``end_lr = 0`` this is ``α0 (1 − s/T)``; the value is held at
    ``end_lr`` for ``s >= T``.  ``end_lr`` may exceed ``lr`` (a linear ramp up).
    """

    _config_names = ("lr", "total_steps", "end_lr")

    def __init__(self, lr, total_steps, end_lr=0.0):
        self.lr = _nonneg("lr", lr)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.end_lr = _nonneg("end_lr", end_lr)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        if s >= self.total_steps:
            return self.end_lr
        return self.lr + (self.end_lr - self.lr) * s / self.total_steps

    def _config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "end_lr": self.end_lr}


class Polynomial(Schedule):
    """Polynomial decay: ``lr(s) = (α0 − end_lr)(1 − min(s, T)/T)^power + end_lr``.

    ``power > 0``; ``power = 1`` equals :class:`Linear`.  Held at ``end_lr`` for
    ``s >= T`` (optax ``polynomial_schedule``).
    """

    _config_names = ("lr", "total_steps", "end_lr", "power")

    def __init__(self, lr, total_steps, end_lr=0.0, power=1.0):
        self.lr = _nonneg("lr", lr)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.end_lr = _nonneg("end_lr", end_lr)
        self.power = _positive("power", power)

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        if s >= self.total_steps:
            return self.end_lr
        return (self.lr - self.end_lr) * (1.0 - s / self.total_steps) ** self.power + self.end_lr

    def _config(self):
        return {
            "lr": self.lr,
            "total_steps": self.total_steps,
            "end_lr": self.end_lr,
            "power": self.power,
        }


class OneCycle(Schedule):
    """One-cycle learning rate (the lr curve of PyTorch ``OneCycleLR``).

    ``initial = max_lr / div_factor`` and ``min = initial / final_div_factor``.
    Two phases (default): ``initial → max_lr`` over steps ``0 .. pct_start·T − 1``,
    then ``max_lr → min`` until ``T − 1``.  ``three_phase=True``:
    ``initial → max_lr`` until ``pct_start·T − 1``, ``max_lr → initial`` until
    ``2·pct_start·T − 2``, ``initial → min`` until ``T − 1``.  Within a phase
    running from ``a`` to ``b`` the fraction is ``pct = (s − a) / (b − a)`` and
    the value ``end + (start − end)/2 · (1 + cos(π pct))`` (``anneal="cos"``) or
    ``start + (end − start) · pct`` (``anneal="linear"``), exactly as PyTorch.

    Differences from PyTorch: momentum is not cycled; for ``s > T − 1`` the
    final value (the value at ``T − 1``, i.e. ``min``) is held instead of
    extrapolating (``s = T``) or raising (``s > T``); a phase of zero length
    (``pct_start · T == 1``) yields its end value instead of dividing by zero;
    ``three_phase`` requires ``pct_start <= 0.5`` (otherwise the third phase
    would never be reached).
    """

    _config_names = (
        "max_lr",
        "total_steps",
        "pct_start",
        "div_factor",
        "final_div_factor",
        "anneal",
        "three_phase",
    )

    def __init__(
        self,
        max_lr,
        total_steps,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        anneal="cos",
        three_phase=False,
    ):
        self.max_lr = _nonneg("max_lr", max_lr)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.pct_start = _real("pct_start", pct_start)
        if not 0.0 <= self.pct_start <= 1.0:
            raise ValueError(f"pct_start must be in [0, 1], got {self.pct_start!r}")
        self.div_factor = _positive("div_factor", div_factor)
        self.final_div_factor = _positive("final_div_factor", final_div_factor)
        self.anneal = _choice("anneal", anneal, ("cos", "linear"))
        if not isinstance(three_phase, bool):
            raise TypeError(f"three_phase must be a bool, got {type(three_phase).__name__}")
        self.three_phase = three_phase
        if three_phase and self.pct_start > 0.5:
            raise ValueError(
                f"pct_start must be <= 0.5 when three_phase=True, got {self.pct_start!r}"
            )
        T = self.total_steps
        self.initial_value = self.max_lr / self.div_factor
        self.min_value = self.initial_value / self.final_div_factor
        end1 = float(self.pct_start * T) - 1
        if three_phase:
            self._phases = (
                (end1, self.initial_value, self.max_lr),
                (float(2 * self.pct_start * T) - 2, self.max_lr, self.initial_value),
                (float(T - 1), self.initial_value, self.min_value),
            )
        else:
            self._phases = (
                (end1, self.initial_value, self.max_lr),
                (float(T - 1), self.max_lr, self.min_value),
            )
        self._cos = self.anneal == "cos"
        self._final = self._eval(T - 1)

    def _eval(self, s):
        start_step = 0.0
        last = len(self._phases) - 1
        for i, (end_step, a, b) in enumerate(self._phases):
            if s <= end_step or i == last:
                span = end_step - start_step
                if span <= 0.0:
                    return b
                pct = (s - start_step) / span
                if self._cos:
                    return _cos_interp(a, b, pct)
                return (b - a) * pct + a
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        if s >= self.total_steps - 1:
            return self._final
        return self._eval(s)

    def _config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "three_phase": self.three_phase,
        }


# ---------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------

class Warmup(Schedule):
    """Warmup from ``start_lr`` to a wrapped schedule's initial value over ``W`` steps.

    With ``after`` the wrapped schedule (a float is wrapped as :class:`Constant`)
    and ``target = after(0)``, for ``s < W``:

    * ``kind="linear"``:      ``start + (target − start) · s / W``
    * ``kind="exponential"``: ``start · (target / start)^(s / W)`` (``start_lr > 0``)
    * ``kind="cosine"``:      ``target + (start − target) · ½(1 + cos(π s / W))``

    and for ``s >= W``: ``after(s − W)`` (the wrapped schedule starts after the
    warmup, so the total length is ``W`` plus its own horizon).  ``warmup_steps = 0``
    means no warmup.  ``0 <= start_lr <= target`` is required.
    """

    _config_names = ("schedule", "warmup_steps", "start_lr", "warmup_kind")

    def __init__(self, schedule_or_lr, warmup_steps, start_lr=0.0, kind="linear"):
        self.after = _as_schedule("schedule_or_lr", schedule_or_lr)
        self.warmup_steps = _int("warmup_steps", warmup_steps, 0)
        self.start_lr = _nonneg("start_lr", start_lr)
        self.kind = _choice("kind", kind, ("linear", "exponential", "cosine"))
        target = self.after(0)
        if self.start_lr > target:
            raise ValueError(
                f"start_lr ({self.start_lr!r}) must not exceed the wrapped schedule's "
                f"initial lr ({target!r})"
            )
        if self.kind == "exponential":
            if not self.start_lr > 0.0:
                raise ValueError("start_lr must be > 0 for kind='exponential'")

    def __call__(self, s):
        w = self.warmup_steps
        if s >= w:
            return self.after(s - w)
        if s < 0:
            raise _neg_step(s)
        start = self.start_lr
        target = self.after(0)
        kind = self.kind
        if kind == "linear":
            return start + (target - start) * s / w
        if kind == "cosine":
            return target + (start - target) * 0.5 * (1.0 + math.cos(math.pi * s / w))
        return start * (target / start) ** (s / w)

    def _config(self):
        return {
            "schedule": self.after.state_dict(),
            "warmup_steps": self.warmup_steps,
            "start_lr": self.start_lr,
            "warmup_kind": self.kind,
        }

    def __repr__(self):
        return (f"Warmup({self.after!r}, warmup_steps={self.warmup_steps!r}, "
                f"start_lr={self.start_lr!r}, kind={self.kind!r})")

    @classmethod
    def _from_config(cls, cfg):
        return cls(
            Schedule.from_state_dict(cfg["schedule"]),
            cfg["warmup_steps"],
            start_lr=cfg["start_lr"],
            kind=cfg["warmup_kind"],
        )


class Join(Schedule):
    """Piecewise concatenation of schedules (like ``optax.join_schedules``).

    With boundaries ``b_1 < b_2 < ... < b_{n-1}`` (and ``b_0 = 0``), schedule
    ``i`` is used for ``b_i <= s < b_{i+1}`` and is evaluated at ``s − b_i``
    (each piece restarts its own step count).  ``len(boundaries) ==
    len(schedules) − 1``; boundaries are strictly increasing ints >= 1.  Floats
    in ``schedules`` are wrapped as :class:`Constant`.
    """

    _config_names = ("schedules", "boundaries")

    def __init__(self, schedules, boundaries):
        if isinstance(schedules, (str, bytes, Schedule)) or not hasattr(schedules, "__iter__"):
            raise TypeError(
                f"schedules must be a sequence of schedules, got {type(schedules).__name__}"
            )
        scheds = tuple(_as_schedule("schedules", x) for x in schedules)
        if not scheds:
            raise ValueError("schedules must not be empty")
        if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
            raise TypeError(
                f"boundaries must be a sequence of ints, got {type(boundaries).__name__}"
            )
        bs = tuple(_int("boundaries", b, 1) for b in boundaries)
        if len(bs) != len(scheds) - 1:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {len(scheds) - 1} entries, "
                f"got {len(bs)}"
            )
        for a, b in zip(bs, bs[1:]):
            if not a < b:
                raise ValueError(f"boundaries must be strictly increasing, got {list(bs)}")
        self.schedules = scheds
        self.boundaries = bs
        # (start, schedule) pairs, last piece first, for a fast reverse scan.
        self._pieces = tuple(reversed(tuple(zip((0,) + bs, scheds))))

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        for start, sched in self._pieces:
            if s >= start:
                return sched(s - start)
        raise AssertionError("unreachable")  # pragma: no cover

    def _config(self):
        return {
            "schedules": [x.state_dict() for x in self.schedules],
            "boundaries": list(self.boundaries),
        }

    def __repr__(self):
        return f"Join({list(self.schedules)!r}, boundaries={list(self.boundaries)!r})"

    @classmethod
    def _from_config(cls, cfg):
        scheds = cfg["schedules"]
        if not isinstance(scheds, list):
            raise ValueError("state_dict['schedules'] must be a list of schedule state dicts")
        return cls([Schedule.from_state_dict(d) for d in scheds], cfg["boundaries"])


# ---------------------------------------------------------------------------
# metric-driven schedule
# ---------------------------------------------------------------------------

class ReduceOnPlateau(Schedule):
    """Reduce the learning rate when a metric stops improving (PyTorch ``ReduceLROnPlateau``).

    Call :meth:`report` with the metric (e.g. once per epoch); ``sched(s)``
    returns the current learning rate whatever ``s`` is (so ``initial_lr`` is the
    *current* rate).  On each report:

    * improvement test (``best`` starts at ``+inf`` for ``mode="min"``, ``-inf``
      for ``"max"``): ``min/rel``: ``m < best·(1 − threshold)``; ``min/abs``:
      ``m < best − threshold``; ``max/rel``: ``m > best·(1 + threshold)``;
      ``max/abs``: ``m > best + threshold``.  If better, ``best = m`` and
      ``num_bad_epochs = 0``, else ``num_bad_epochs += 1`` (a NaN metric is
      never better).
    * in cooldown (``cooldown_counter > 0``): ``cooldown_counter −= 1`` and
      ``num_bad_epochs = 0``.
    * if ``num_bad_epochs > patience``: ``new = max(lr · factor, min_lr)``,
      applied only if ``lr − new > eps``; then ``cooldown_counter = cooldown``
      and ``num_bad_epochs = 0``.

    ``state_dict`` holds the hyper-parameters plus ``best``, ``num_bad_epochs``,
    ``cooldown_counter``, ``current_lr`` and ``last_epoch`` (number of reports),
    so a resumed schedule continues exactly.
    """

    _config_names = (
        "lr",
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
    )

    def __init__(
        self,
        lr,
        mode="min",
        factor=0.1,
        patience=10,
        threshold=1e-4,
        threshold_mode="rel",
        cooldown=0,
        min_lr=0.0,
        eps=1e-8,
    ):
        self.lr = _nonneg("lr", lr)
        self.mode = _choice("mode", mode, ("min", "max"))
        self.factor = _real("factor", factor)
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {self.factor!r}")
        self.patience = _int("patience", patience, 0)
        self.threshold = _nonneg("threshold", threshold)
        self.threshold_mode = _choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _int("cooldown", cooldown, 0)
        self.min_lr = _nonneg("min_lr", min_lr)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr!r}) must not exceed lr ({self.lr!r})")
        self.eps = _nonneg("eps", eps)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.current_lr = self.lr
        self.last_epoch = 0

    def __call__(self, s):
        if s < 0:
            raise _neg_step(s)
        return self.current_lr

    @property
    def in_cooldown(self):
        """True while reductions are suspended after the last one."""
        return self.cooldown_counter > 0

    def is_better(self, metric, best):
        """The PyTorch improvement test of ``metric`` against ``best`` (see class doc)."""
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return metric < best * (1.0 - self.threshold)
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def report(self, metric):
        """Record one metric value (one "epoch"); returns the (possibly reduced) lr."""
        if isinstance(metric, bool) or isinstance(metric, (str, bytes, complex)) or not hasattr(
            type(metric), "__float__"
        ):
            raise TypeError(f"metric must be a real number, got {type(metric).__name__}")
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.current_lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.current_lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.current_lr

    def _config(self):
        return {k: getattr(self, k) for k in self._config_names}

    def _get_state(self):
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "current_lr": self.current_lr,
            "last_epoch": self.last_epoch,
        }

    def _set_state(self, state):
        best = state["best"]
        if isinstance(best, bool) or not hasattr(type(best), "__float__"):
            raise TypeError(f"best must be a real number, got {type(best).__name__}")
        self.best = float(best)
        self.num_bad_epochs = _int("num_bad_epochs", state["num_bad_epochs"], 0)
        self.cooldown_counter = _int("cooldown_counter", state["cooldown_counter"], 0)
        self.current_lr = _nonneg("current_lr", state["current_lr"])
        self.last_epoch = _int("last_epoch", state["last_epoch"], 0)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def scale_lr_for_batch(lr, batch_size, base_batch_size):
    """Linear scaling rule: ``lr × batch_size / base_batch_size``.

    ``lr >= 0`` finite; ``batch_size`` and ``base_batch_size`` ints >= 1.
    """
    lr = _nonneg("lr", lr)
    batch_size = _int("batch_size", batch_size, 1)
    base_batch_size = _int("base_batch_size", base_batch_size, 1)
    return lr * batch_size / base_batch_size


def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")


def _table_steps(steps, every):
    out = list(range(0, steps, every))
    if out[-1] != steps - 1:
        out.append(steps - 1)
    return out


def table(schedule, steps, every=1):
    """Return a text table of ``s`` and ``schedule(s)``.

    Rows are ``s = 0, every, 2·every, ... < steps`` plus ``s = steps − 1`` (so the
    last value is always shown).  ``steps`` and ``every`` are ints >= 1.
    """
    _check_schedule(schedule)
    steps = _int("steps", steps, 1)
    every = _int("every", every, 1)
    rows = [(str(s), f"{schedule(s):.10g}") for s in _table_steps(steps, every)]
    w0 = max(len("step"), max(len(r[0]) for r in rows))
    w1 = max(len("lr"), max(len(r[1]) for r in rows))
    lines = [f"{'step':>{w0}}  {'lr':<{w1}}".rstrip()]
    lines += [f"{a:>{w0}}  {b}" for a, b in rows]
    return "\n".join(lines) + "\n"


def plot(schedule, steps, path=None):
    """Draw ``schedule(s)`` for ``s = 0 .. steps − 1``.

    If matplotlib is importable, build a :class:`matplotlib.figure.Figure` (no
    pyplot, so no GUI backend is touched), save it to ``path`` when given, and
    return the Figure.  Without matplotlib, print :func:`table` (about 20 rows)
    to stdout and return that text instead; ``path`` is then not written.
    """
    _check_schedule(schedule)
    steps = _int("steps", steps, 1)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        text = table(schedule, steps, max(1, steps // 20))
        print(text, end="")
        return text
    xs = list(range(steps))
    ys = [schedule(s) for s in xs]
    fig = Figure(figsize=(6.0, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys)
    ax.set_xlabel("step s")
    ax.set_ylabel("learning rate")
    ax.set_title(type(schedule).__name__)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


# ---------------------------------------------------------------------------
# command line: ``python -m fastopt schedule NAME ...``
# ---------------------------------------------------------------------------

_CLI_NAMES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "inverse-time",
    "inverse-sqrt",
    "cosine",
    "restarts",
    "linear",
    "polynomial",
    "onecycle",
)

# Schedules whose decay has a horizon: with --warmup W they decay over steps - W.
_HORIZON = ("cosine", "linear", "polynomial")


def add_cli(subparsers):
    """Register the ``schedule`` subcommand on an argparse ``subparsers`` object.

    ``python -m fastopt schedule NAME --lr LR --steps N [options]`` prints a table
    of the schedule (``--every K`` rows apart, default ``max(1, N // 20)``), or
    saves a plot with ``--plot PATH`` (falls back to the table, exit code 1, if
    matplotlib is missing).  ``--warmup W`` prepends a warmup (``--warmup-kind``,
    ``--warmup-start``); for cosine/linear/polynomial the decay then spans
    ``N − W`` steps so the whole schedule is ``N`` steps long; for inverse-sqrt
    it is the schedule's own Transformer warmup.  The handler is set with
    ``set_defaults(func=...)`` and returns an exit code (2 for invalid options).
    Returns the created sub-parser.
    """
    p = subparsers.add_parser(
        "schedule",
        help="print (or plot) a learning-rate schedule",
        description="Print a table of a learning-rate schedule, or plot it.",
    )
    p.add_argument("name", choices=_CLI_NAMES, help="schedule kind")
    p.add_argument("--lr", type=float, required=True, help="base lr (max lr for onecycle)")
    p.add_argument("--steps", type=int, required=True,
                   help="steps to show; the horizon T for cosine/linear/polynomial/onecycle")
    p.add_argument("--every", type=int, default=None, help="table row spacing")
    p.add_argument("--plot", metavar="PATH", default=None, help="save a plot to PATH")
    p.add_argument("--min-lr", type=float, default=0.0, help="cosine, restarts")
    p.add_argument("--end-lr", type=float, default=0.0, help="linear, polynomial")
    p.add_argument("--gamma", type=float, default=None,
                   help="step/multistep (default 0.1), exponential (required)")
    p.add_argument("--step-size", type=int, default=None, help="step (required)")
    p.add_argument("--milestones", default=None,
                   help="multistep: comma-separated steps, e.g. 30,60,90 (required)")
    p.add_argument("--k", type=float, default=None, help="inverse-time (required)")
    p.add_argument("--power", type=float, default=1.0, help="inverse-time, polynomial")
    p.add_argument("--period", type=int, default=None, help="restarts (required)")
    p.add_argument("--period-mult", type=int, default=1, help="restarts")
    p.add_argument("--pct-start", type=float, default=0.3, help="onecycle")
    p.add_argument("--div-factor", type=float, default=25.0, help="onecycle")
    p.add_argument("--final-div-factor", type=float, default=1e4, help="onecycle")
    p.add_argument("--anneal", choices=("cos", "linear"), default="cos", help="onecycle")
    p.add_argument("--three-phase", action="store_true", help="onecycle")
    p.add_argument("--warmup", type=int, default=0, help="warmup steps")
    p.add_argument("--warmup-kind", choices=("linear", "exponential", "cosine"),
                   default="linear")
    p.add_argument("--warmup-start", type=float, default=0.0, help="warmup start lr")
    p.set_defaults(func=_cli_schedule)
    return p


def _cli_build(args):
    """Build the Schedule described by parsed CLI ``args`` (ValueError if invalid)."""
    name = args.name
    lr = args.lr
    steps = args.steps
    warmup = args.warmup
    if steps is None or steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")

    def need(value, opt):
        if value is None:
            raise ValueError(f"{name} requires {opt}")
        return value

    horizon = steps
    if warmup and name in _HORIZON:
        if warmup >= steps:
            raise ValueError(f"--warmup ({warmup}) must be < --steps ({steps}) for {name}")
        horizon = steps - warmup
    if warmup and name == "onecycle":
        raise ValueError("--warmup is not supported with onecycle (use --pct-start)")

    if name == "constant":
        sched = Constant(lr)
    elif name == "step":
        sched = StepDecay(lr, need(args.step_size, "--step-size"),
                          0.1 if args.gamma is None else args.gamma)
    elif name == "multistep":
        raw = need(args.milestones, "--milestones")
        try:
            ms = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--milestones must be comma-separated ints, got {raw!r}") from None
        sched = MultiStep(lr, ms, 0.1 if args.gamma is None else args.gamma)
    elif name == "exponential":
        sched = Exponential(lr, need(args.gamma, "--gamma"))
    elif name == "inverse-time":
        sched = InverseTime(lr, need(args.k, "--k"), args.power)
    elif name == "inverse-sqrt":
        return InverseSqrt(lr, warmup)
    elif name == "cosine":
        sched = CosineAnnealing(lr, horizon, args.min_lr)
    elif name == "restarts":
        sched = CosineWarmRestarts(lr, need(args.period, "--period"), args.period_mult,
                                   args.min_lr)
    elif name == "linear":
        sched = Linear(lr, horizon, args.end_lr)
    elif name == "polynomial":
        sched = Polynomial(lr, horizon, args.end_lr, args.power)
    elif name == "onecycle":
        sched = OneCycle(lr, steps, args.pct_start, args.div_factor, args.final_div_factor,
                         args.anneal, args.three_phase)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown schedule {name!r}")
    if warmup:
        sched = Warmup(sched, warmup, start_lr=args.warmup_start, kind=args.warmup_kind)
    return sched


def _cli_schedule(args):
    """Handler of ``fastopt schedule``: print the table or save the plot; exit code."""
    import sys

    try:
        sched = _cli_build(args)
        every = args.every if args.every is not None else max(1, args.steps // 20)
        if every < 1:
            raise ValueError(f"--every must be >= 1, got {every}")
    except (TypeError, ValueError) as exc:
        print(f"fastopt schedule: error: {exc}", file=sys.stderr)
        return 2
    if args.plot is None:
        sys.stdout.write(table(sched, args.steps, every))
        return 0
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        sys.stdout.write(table(sched, args.steps, every))
        print("fastopt schedule: matplotlib is not installed; printed the table instead "
              f"of writing {args.plot}", file=sys.stderr)
        return 1
    try:
        plot(sched, args.steps, path=args.plot)
    except OSError as exc:
        print(f"fastopt schedule: error: cannot write {args.plot}: {exc}", file=sys.stderr)
        return 1
    print(f"saved {args.plot}")
    return 0
