"""Closed-form schedules: ``lr(s)`` is a formula of the step alone, no state."""
import math

from ._base import Schedule, arg, negative_step, schedule_kind
from ._check import NONNEG, POSITIVE, UNIT_CLOSED, boolean, choice, count, increasing


def _cos_interp(start, end, frac):
    """``end + (start - end) / 2 * (1 + cos(pi * frac))`` (PyTorch ``_annealing_cos``)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1.0)


def _min_lr_at_most_lr(min_lr, lr):
    if min_lr > lr:
        raise ValueError(f"min_lr ({min_lr!r}) must not exceed lr ({lr!r})")


@schedule_kind
class Constant(Schedule):
    """Constant learning rate: ``lr(s) = α0``."""

    lr: float = arg(NONNEG)

    def _value(self, s):
        return self.lr


@schedule_kind
class StepDecay(Schedule):
    """Step decay (PyTorch ``StepLR``): ``lr(s) = α0 · γ^⌊s / step_size⌋``.

    ``step_size`` is an int >= 1, ``gamma`` > 0 (usually < 1).
    """

    lr: float = arg(NONNEG)
    step_size: int = arg(count(1))
    gamma: float = arg(POSITIVE, default=0.1)

    def _value(self, s):
        try:
            return self.lr * self.gamma ** (s // self.step_size)
        except OverflowError:
            return math.inf


@schedule_kind
class MultiStep(Schedule):
    """Multi-step decay (PyTorch ``MultiStepLR``): ``lr(s) = α0 · γ^n(s)``.

    ``n(s)`` is the number of milestones ``m <= s``; e.g. milestones ``[30, 60, 90]``
    and ``gamma=0.1`` multiply the rate by 0.1 at steps 30, 60 and 90 (ResNet).
    Milestones must be a non-empty, strictly increasing list of ints >= 1
    (PyTorch's repeated milestones, which compound ``gamma``, are rejected).
    """

    lr: float = arg(NONNEG)
    milestones: tuple = arg(increasing(1, allow_empty=False))
    gamma: float = arg(POSITIVE, default=0.1)

    def _prepare(self):
        # lr * gamma**n for n = 0..len(milestones): one power per milestone, not per step
        self._values = tuple(self.lr * self.gamma ** n for n in range(len(self.milestones) + 1))

    def _value(self, s):
        n = 0
        for m in self.milestones:
            if m > s:
                break
            n += 1
        return self._values[n]


@schedule_kind
class Exponential(Schedule):
    """Exponential decay (PyTorch ``ExponentialLR``): ``lr(s) = α0 · γ^s``.

    ``gamma`` > 0; ``gamma`` > 1 gives exponential growth (as in an LR range
    test); a value that overflows a float is returned as ``inf``.
    """

    lr: float = arg(NONNEG)
    gamma: float = arg(POSITIVE)

    def _value(self, s):
        try:
            return self.lr * self.gamma ** s
        except OverflowError:
            return math.inf


@schedule_kind
class InverseTime(Schedule):
    """Inverse-time decay: ``lr(s) = α0 / (1 + k·s)^power``.

    ``power = 1`` is classic 1/t decay, ``power = 2`` the form of seed 003.
    ``k >= 0``, ``power > 0``.
    """

    lr: float = arg(NONNEG)
    k: float = arg(NONNEG)
    power: float = arg(POSITIVE, default=1.0)

    def _value(self, s):
        if self.power == 1.0:
            return self.lr / (1.0 + self.k * s)
        return self.lr / (1.0 + self.k * s) ** self.power


@schedule_kind
class InverseSqrt(Schedule):
    """Inverse square-root decay, optionally with the Transformer-style warmup.

    * ``warmup_steps = 0``: ``lr(s) = α0 / √(s + 1)`` (first value ``α0``).
    * ``warmup_steps = W > 0``: ``lr(s) = α0 · (s + 1) / W`` for ``s < W``
      (linear warmup reaching ``α0`` at ``s = W - 1``), then
      ``lr(s) = α0 · √(W / (s + 1))`` for ``s >= W`` -- the "rsqrt" schedule of
      "Attention is all you need" (``d^-0.5 · min(t^-0.5, t · W^-1.5)`` with
      ``t = s + 1``), normalised so that its peak is ``α0``.
    """

    lr: float = arg(NONNEG)
    warmup_steps: int = arg(count(0), default=0)

    def _value(self, s):
        w = self.warmup_steps
        if w == 0:
            return self.lr / math.sqrt(s + 1)
        if s < w:
            return self.lr * (s + 1) / w
        return self.lr * math.sqrt(w / (s + 1))


@schedule_kind
class CosineAnnealing(Schedule):
    """Cosine annealing (PyTorch ``CosineAnnealingLR`` closed form), clamped after T.

    ``lr(s) = α_min + ½(α0 − α_min)(1 + cos(π s / T))`` for ``s <= T`` and
    ``lr(s) = α_min`` for ``s > T`` (PyTorch would continue the cosine upwards).
    ``total_steps = T >= 1``, ``0 <= min_lr <= lr``.
    """

    lr: float = arg(NONNEG)
    total_steps: int = arg(count(1))
    min_lr: float = arg(NONNEG, default=0.0)

    def _prepare(self):
        _min_lr_at_most_lr(self.min_lr, self.lr)

    def _value(self, s):
        if s >= self.total_steps:
            return self.min_lr
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (
            1.0 + math.cos(math.pi * s / self.total_steps)
        )


@schedule_kind
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

    lr: float = arg(NONNEG)
    period: int = arg(count(1))
    period_mult: int = arg(count(1), default=1)
    min_lr: float = arg(NONNEG, default=0.0)

    def _prepare(self):
        _min_lr_at_most_lr(self.min_lr, self.lr)

    def cycle(self, s):
        """Return ``(i, s_cur, T_i)``: cycle index, position in it, its length."""
        if s < 0:
            raise negative_step(s)
        return self._cycle(s)

    def _cycle(self, s):
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

    def _value(self, s):
        _, s_cur, t = self._cycle(s)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * s_cur / t))


@schedule_kind
class Linear(Schedule):
    """Linear interpolation: ``lr(s) = α0 + (end_lr − α0) · min(s, T) / T``.

    With ``end_lr = 0`` this is ``α0 (1 − s/T)``; the value is held at
    ``end_lr`` for ``s >= T``.  ``end_lr`` may exceed ``lr`` (a linear ramp up).
    """

    lr: float = arg(NONNEG)
    total_steps: int = arg(count(1))
    end_lr: float = arg(NONNEG, default=0.0)

    def _value(self, s):
        if s >= self.total_steps:
            return self.end_lr
        return self.lr + (self.end_lr - self.lr) * s / self.total_steps


@schedule_kind
class Polynomial(Schedule):
    """Polynomial decay: ``lr(s) = (α0 − end_lr)(1 − min(s, T)/T)^power + end_lr``.

    ``power > 0``; ``power = 1`` equals :class:`Linear`.  Held at ``end_lr`` for
    ``s >= T`` (optax ``polynomial_schedule``).
    """

    lr: float = arg(NONNEG)
    total_steps: int = arg(count(1))
    end_lr: float = arg(NONNEG, default=0.0)
    power: float = arg(POSITIVE, default=1.0)

    def _value(self, s):
        if s >= self.total_steps:
            return self.end_lr
        return (self.lr - self.end_lr) * (1.0 - s / self.total_steps) ** self.power + self.end_lr


@schedule_kind
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

    max_lr: float = arg(NONNEG)
    total_steps: int = arg(count(1))
    pct_start: float = arg(UNIT_CLOSED, default=0.3)
    div_factor: float = arg(POSITIVE, default=25.0)
    final_div_factor: float = arg(POSITIVE, default=1e4)
    anneal: str = arg(choice("cos", "linear"), default="cos")
    three_phase: bool = arg(boolean, default=False)

    def _prepare(self):
        if self.three_phase and self.pct_start > 0.5:
            raise ValueError(
                f"pct_start must be <= 0.5 when three_phase=True, got {self.pct_start!r}"
            )
        T = self.total_steps
        self.initial_value = self.max_lr / self.div_factor
        self.min_value = self.initial_value / self.final_div_factor
        end1 = float(self.pct_start * T) - 1
        # (last step, start value, end value) of each phase, as PyTorch's _schedule_phases
        if self.three_phase:
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

    def _value(self, s):
        if s >= self.total_steps - 1:
            return self._final
        return self._eval(s)


def scale_lr_for_batch(lr, batch_size, base_batch_size):
    """Linear scaling rule: ``lr × batch_size / base_batch_size``.

    ``lr >= 0`` finite; ``batch_size`` and ``base_batch_size`` ints >= 1.
    """
    lr = NONNEG("lr", lr)
    batch_size = count(1)("batch_size", batch_size)
    base_batch_size = count(1)("base_batch_size", base_batch_size)
    return lr * batch_size / base_batch_size

