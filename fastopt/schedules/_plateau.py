"""The metric-driven schedule: the rate falls when a reported metric stops improving."""
import math

from ._base import Schedule, arg, schedule_kind
from ._check import NONNEG, UNIT_OPEN, choice, count, metric as check_metric


@schedule_kind
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

    lr: float = arg(NONNEG)
    mode: str = arg(choice("min", "max"), default="min")
    factor: float = arg(UNIT_OPEN, default=0.1)
    patience: int = arg(count(0), default=10)
    threshold: float = arg(NONNEG, default=1e-4)
    threshold_mode: str = arg(choice("rel", "abs"), default="rel")
    cooldown: int = arg(count(0), default=0)
    min_lr: float = arg(NONNEG, default=0.0)
    eps: float = arg(NONNEG, default=1e-8)

    _state_checks = {
        "best": check_metric,
        "num_bad_epochs": count(0),
        "cooldown_counter": count(0),
        "current_lr": NONNEG,
        "last_epoch": count(0),
    }

    def _prepare(self):
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr!r}) must not exceed lr ({self.lr!r})")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.current_lr = self.lr
        self.last_epoch = 0

    def _value(self, s):
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
        current = check_metric("metric", metric)
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
