"""Per-position learning rates of an epoch, and the penalty terms that follow from them.

``t`` counts the examples seen so far, 1 for the very first (scikit-learn's ``t``). The
learning-rate kinds are scikit-learn's ``SGDClassifier`` ones, plus any
:mod:`fastopt.schedules` schedule evaluated once per epoch (``s`` = epoch index):

* ``"optimal"``: ``eta = 1 / (alpha (t0 + t - 1))`` with ``t0 = 1 / (eta_init alpha)``,
  ``eta_init = sqrt(1 / sqrt(alpha)) / max(1, loss'(1, -sqrt(1 / sqrt(alpha))))`` (Bottou's heuristic);
* ``"invscaling"``: ``eta = eta0 / t ** power_t``;
* ``"constant"`` (or a number): ``eta = eta0``;
* a :class:`~fastopt.schedules.Schedule`: ``eta = sched(epoch)`` for every example of the epoch.

Every position also gets the L2 shrink ``f = max(0, 1 - (1 - l1_ratio) eta alpha)`` and
the cumulative L1 penalty ``u`` (``u += l1_ratio eta alpha``, summed left to right across
epochs), so the kernel's threads read them instead of sharing a counter.
"""
import math

import numpy as np

from fastopt.schedules import Schedule

KINDS = ("optimal", "invscaling", "constant")
# the smallest L2 shrink factor a single example may apply (the scale is folded into the
# weights before it would fall below 1e-9, so one step must keep it above that)
MIN_SHRINK = 1e-6


def _dloss(loss, y, p):
    if loss == "log":
        z = p * y
        return -y / (math.exp(z) + 1.0) if -18.0 <= z <= 18.0 else (math.exp(-z) * -y if z > 18.0 else -y)
    if loss == "hinge":
        return -y if p * y <= 1.0 else 0.0
    return p - y


class Rates:
    """The learning-rate plan of a run: ``epoch(e, n)`` gives the float64 arrays
    ``eta``, ``shrink`` (None without an L2 part) and ``ucum`` (None without an L1 part)
    for the ``n`` examples of epoch ``e``; ``ucum`` carries over from epoch to epoch."""

    def __init__(self, lr, *, eta0, power_t, alpha, l1_ratio, loss, l2, l1, rate_alpha=None):
        # rate_alpha: the alpha of the "optimal" rate (the model's alpha even without a penalty)
        self.lr, self.eta0, self.power_t, self.alpha, self.l1_ratio = lr, eta0, power_t, alpha, l1_ratio
        self.l2, self.l1 = l2, l1
        self.u = 0.0
        self._sched = {}
        self.rate_alpha = alpha if rate_alpha is None else rate_alpha
        if lr == "optimal":
            if self.rate_alpha <= 0.0:
                raise ValueError("lr='optimal' needs alpha > 0 (its rate is 1 / (alpha t))")
            typw = math.sqrt(1.0 / math.sqrt(self.rate_alpha))
            self.t0 = 1.0 / (typw / max(1.0, _dloss(loss, 1.0, -typw)) * self.rate_alpha)
        elif lr in ("invscaling", "constant") and eta0 <= 0.0:
            raise ValueError(f"lr={lr!r} needs eta0 > 0, got {eta0!r}")

    def first_rate(self, epoch):
        """The largest learning rate epoch ``epoch`` can use (its first example's, or the schedule's)."""
        if isinstance(self.lr, Schedule):
            return self._sched[epoch] if epoch in self._sched else float(self.lr(epoch))
        return self.eta0 if self.lr in ("constant", "invscaling") else 1.0 / (self.rate_alpha * self.t0)

    def check(self, epochs):
        """Refuse, before training, a plan whose L2 shrink would zero or flip the weights.
        A schedule's rates are read here, once, and :meth:`epoch` uses these checked
        values: no user code runs between the checks and the kernels (a schedule could
        otherwise rewrite ``X``'s indices, or give another rate, after they were checked)."""
        self._sched = {}
        for e in range(epochs if isinstance(self.lr, Schedule) else 1):
            eta = self.first_rate(e)
            if not (math.isfinite(eta) and eta >= 0.0):
                raise ValueError(f"lr must give finite rates >= 0, epoch {e} got {eta!r}")
            if self.l2 and 1.0 - (1.0 - self.l1_ratio) * eta * self.alpha < MIN_SHRINK:
                raise ValueError(f"lr * alpha * (1 - l1_ratio) = {(1.0 - self.l1_ratio) * eta * self.alpha!r} "
                                 f"(epoch {e}) is too large: the L2 shrink 1 - lr alpha (1 - l1_ratio) must stay "
                                 f">= {MIN_SHRINK}; lower lr or alpha")
            if isinstance(self.lr, Schedule):
                self._sched[e] = eta

    def epoch(self, e, n, t_start):
        """Arrays for the ``n`` examples of epoch ``e``; ``t_start`` examples were seen before it."""
        t = t_start + 1.0 + np.arange(n, dtype=np.float64)
        if isinstance(self.lr, Schedule):
            eta = np.full(n, self.first_rate(e))
        elif self.lr == "optimal":
            eta = 1.0 / (self.rate_alpha * (self.t0 + t - 1.0))
        elif self.lr == "invscaling":
            eta = self.eta0 / np.power(t, self.power_t)
        else:
            eta = np.full(n, self.eta0)
        shrink = np.maximum(0.0, 1.0 - (1.0 - self.l1_ratio) * eta * self.alpha) if self.l2 else None
        ucum = None
        if self.l1:
            steps = np.empty(n + 1)
            steps[0] = self.u
            steps[1:] = self.l1_ratio * eta * self.alpha
            ucum = np.add.accumulate(steps)[1:]
            if n:
                self.u = float(ucum[-1])
        return eta, shrink, ucum
