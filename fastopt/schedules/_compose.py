"""Schedules built from other schedules: a warmup in front of one, several in a row."""
import math

from ._base import Schedule, arg, schedule_kind
from ._check import NONNEG, choice, count, increasing
from ._closed import Constant


def as_schedule(name, value):
    """``value`` if it is a schedule, else a real wrapped as :class:`Constant`."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not hasattr(type(value), "__float__") or isinstance(
        value, (str, bytes, complex)
    ):
        raise TypeError(f"{name} must be a Schedule or a real number, got {type(value).__name__}")
    return Constant(value)


def _schedule_list(name, value):
    if isinstance(value, (str, bytes, Schedule)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"{name} must be a sequence of schedules, got {type(value).__name__}"
        )
    out = tuple(as_schedule(name, x) for x in value)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def _load_schedule_list(saved):
    if not isinstance(saved, list):
        raise ValueError("state_dict['schedules'] must be a list of schedule state dicts")
    return [Schedule.from_state_dict(d) for d in saved]


@schedule_kind
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

    # state_dict keys "schedule" and "warmup_kind" predate the parameter names
    schedule_or_lr: Schedule = arg(as_schedule, key="schedule", load=Schedule.from_state_dict)
    warmup_steps: int = arg(count(0))
    start_lr: float = arg(NONNEG, default=0.0)
    kind: str = arg(choice("linear", "exponential", "cosine"), default="linear",
                    key="warmup_kind")

    @property
    def after(self):
        """The wrapped schedule, followed from step ``W`` on."""
        return self.schedule_or_lr

    def _prepare(self):
        target = self.after(0)
        if self.start_lr > target:
            raise ValueError(
                f"start_lr ({self.start_lr!r}) must not exceed the wrapped schedule's "
                f"initial lr ({target!r})"
            )
        if self.kind == "exponential":
            if not self.start_lr > 0.0:
                raise ValueError("start_lr must be > 0 for kind='exponential'")

    def _value(self, s):
        w = self.warmup_steps
        if s >= w:
            return self.after(s - w)
        start = self.start_lr
        # after(0) is read on every warmup step, not cached: a wrapped ReduceOnPlateau
        # may lower it while the warmup runs
        target = self.after(0)
        kind = self.kind
        if kind == "linear":
            return start + (target - start) * s / w
        if kind == "cosine":
            return target + (start - target) * 0.5 * (1.0 + math.cos(math.pi * s / w))
        return start * (target / start) ** (s / w)


@schedule_kind
class Join(Schedule):
    """Piecewise concatenation of schedules (like ``optax.join_schedules``).

    With boundaries ``b_1 < b_2 < ... < b_{n-1}`` (and ``b_0 = 0``), schedule
    ``i`` is used for ``b_i <= s < b_{i+1}`` and is evaluated at ``s − b_i``
    (each piece restarts its own step count).  ``len(boundaries) ==
    len(schedules) − 1``; boundaries are strictly increasing ints >= 1.  Floats
    in ``schedules`` are wrapped as :class:`Constant`.
    """

    schedules: tuple = arg(_schedule_list, load=_load_schedule_list)
    boundaries: tuple = arg(increasing(1, allow_empty=True))

    def _prepare(self):
        n = len(self.schedules) - 1
        if len(self.boundaries) != n:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {n} entries, got {len(self.boundaries)}"
            )
        # (start, schedule) pairs, last piece first: the first start <= s is s's piece
        self._pieces = tuple(reversed(tuple(zip((0,) + self.boundaries, self.schedules))))

    def _value(self, s):
        for start, sched in self._pieces:
            if s >= start:
                return sched(s - start)
        raise AssertionError("unreachable")  # pragma: no cover
