"""Practising gradient descent: the data loop (batch, mini-batch and stochastic GD),
early stopping, and optimizer paths on the 2-D test surfaces.

* :func:`minibatches`: the example indices of one epoch, in batches of 1 / b / all,
  shuffled every epoch (or in a curriculum order).
* :func:`train`: epochs of mini-batch steps of any fastopt optimizer on a data problem
  of :mod:`fastopt.problems`, with :class:`EarlyStopping` and a ``ReduceOnPlateau``
  schedule fed once per epoch.
* :class:`EarlyStopping`: patience, min-delta, and the best parameters kept in a
  buffer by a fused parallel copy kernel (restored at the end).
* :data:`ALGOS` and :func:`optimizer_path`: each optimizer's path on a surface from
  the same start (what :mod:`fastopt.viz` draws).
"""
import math
import numbers

import numpy as np

from fastopt._kernels.stream import copy as _fused_copy
from fastopt.optim.base import state_buffer
from fastopt.problems import PROBLEMS, SURFACES, Problem, as_point, get_problem

__all__ = ["minibatches", "train", "History", "EarlyStopping", "ALGOS", "make_optimizer", "optimizer_path", "Path"]


def _count(value, name, lo=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def minibatches(n, batch_size=None, *, rng=None, shuffle=True, order=None):
    """The index batches of one epoch over ``n`` examples.

    ``batch_size``: None or ``n`` is batch gradient descent (one batch of all), 1 is
    stochastic gradient descent, ``b`` mini-batch (the last batch may be smaller).
    ``order``: a permutation of ``range(n)`` to present the examples in (curriculum
    learning: e.g. easy examples first); otherwise, with ``shuffle``, a fresh permutation
    from ``rng`` (a ``numpy.random.Generator``) every epoch — the seeds' "shuffle before
    every epoch" — and the data order without it."""
    n = _count(n, "n")
    b = n if batch_size is None else _count(batch_size, "batch_size")
    if order is not None:
        perm = np.asarray(order)
        if perm.shape != (n,) or perm.dtype.kind not in "iu" or not np.array_equal(np.sort(perm), np.arange(n)):
            raise ValueError(f"order must be a permutation of range({n})")
    elif shuffle and b < n:
        perm = (np.random.default_rng() if rng is None else rng).permutation(n)
    else:
        perm = np.arange(n)
    return [perm[i:i + b] for i in range(0, n, b)]


class EarlyStopping:
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    ``update(metric)`` once per epoch: an improvement is ``metric < best − min_delta``
    (``mode="min"``) or ``metric > best + min_delta`` (``"max"``); it resets the wait,
    records ``best_epoch`` and, with ``restore_best_weights``, copies ``params`` into a
    buffer with one fused, parallel copy per array. ``update`` returns True when
    ``patience`` epochs in a row brought no improvement; :meth:`restore` copies the
    best parameters back. Independent of the optimizer (it only reads the parameters),
    so it works with any of them and beside a ``ReduceOnPlateau`` schedule (give that
    one a smaller patience, so the rate falls before the run stops)."""

    def __init__(self, params, *, patience=10, min_delta=0.0, mode="min", restore_best_weights=True):
        params = [params] if isinstance(params, np.ndarray) else list(params)
        if not params or not all(isinstance(p, np.ndarray) and p.dtype in (np.float32, np.float64)
                                 and p.flags.c_contiguous for p in params):
            raise TypeError("params must be C-contiguous float32/float64 arrays")
        self.patience = _count(patience, "patience", 0)
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or \
                not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.params, self.min_delta, self.mode = params, float(min_delta), mode
        self.restore_best_weights = bool(restore_best_weights)
        self.best_params = [state_buffer(p) for p in params] if self.restore_best_weights else None
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.epoch = -1
        self.wait = 0
        self.stopped = False

    def improved(self, metric):
        """Whether ``metric`` beats the best so far by more than ``min_delta``."""
        if self.mode == "min":
            return metric < self.best - self.min_delta
        return metric > self.best + self.min_delta

    def update(self, metric):
        """Record this epoch's ``metric``; True when training should stop."""
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real) or math.isnan(metric):
            raise ValueError(f"metric must be a real number (not NaN), got {metric!r}")
        self.epoch += 1
        if self.improved(float(metric)):
            self.best, self.best_epoch, self.wait = float(metric), self.epoch, 0
            if self.restore_best_weights:
                for dst, src in zip(self.best_params, self.params):
                    _fused_copy(dst, src)
        else:
            self.wait += 1
        self.stopped = self.wait >= self.patience and self.best_epoch >= 0 and self.wait > 0
        return self.stopped

    def restore(self):
        """Copy the best parameters back into ``params`` (fused copy); False when there are none."""
        if not self.restore_best_weights or self.best_epoch < 0:
            return False
        for dst, src in zip(self.params, self.best_params):
            _fused_copy(dst, src)
        return True


class History:
    """What :func:`train` recorded: ``step_loss`` (the batch loss before each step),
    ``epoch_loss`` (full-data loss after each epoch), ``val_loss`` (after each epoch,
    when a validation function was given), ``lrs`` (the rate of each epoch's first
    step), ``examples`` (examples seen at the end of each epoch), ``best_epoch`` and
    ``stopped_epoch`` (early stopping; None without it)."""

    def __init__(self):
        self.step_loss, self.epoch_loss, self.val_loss, self.lrs, self.examples = [], [], [], [], []
        self.best_epoch = None
        self.stopped_epoch = None

    def __repr__(self):
        return (f"History(epochs={len(self.epoch_loss)}, final loss={self.epoch_loss[-1] if self.epoch_loss else None}"
                f", best_epoch={self.best_epoch}, stopped_epoch={self.stopped_epoch})")


def _checked_grad(g, w, where):
    g = np.asarray(g)
    if g.shape != w.shape:
        raise ValueError(f"fun_and_grad returned a gradient of shape {g.shape} {where}, expected the "
                         f"parameter's shape {w.shape}")
    if not np.isfinite(g).all():
        raise ValueError(f"fun_and_grad returned a non-finite gradient {where}")
    return g.astype(w.dtype, copy=False)


def train(problem, optimizer, *, epochs, batch_size=None, seed=0, shuffle=True, curriculum=None,
          curriculum_epochs=1, val=None, early_stopping=None, plateau=None):
    """Run ``epochs`` epochs of mini-batch steps of ``optimizer`` (any fastopt optimizer
    over one parameter vector ``w``) on ``problem`` (``problem.n`` examples and
    ``problem.fun_and_grad(w, idx)``, as the data problems of :mod:`fastopt.problems`).

    Each epoch: the batches of :func:`minibatches` (size ``batch_size``: None = all,
    1 = stochastic), shuffled with ``numpy.random.default_rng(seed)``; the first
    ``curriculum_epochs`` epochs present the examples in the ``curriculum`` order
    instead. After each epoch: the full loss, ``val(w)`` if given, then
    ``plateau.report(...)`` (a :class:`fastopt.schedules.ReduceOnPlateau`, usually the
    optimizer's ``lr``) and ``early_stopping.update(...)`` on the validation loss (the
    training loss without ``val``); when early stopping fires, the best weights are
    restored and the loop ends. Returns a :class:`History`.

    A gradient of the wrong shape or a non-finite loss or gradient raises ValueError."""
    if not hasattr(problem, "fun_and_grad") or not hasattr(problem, "n"):
        raise TypeError("problem must have n (the number of examples) and fun_and_grad(w, idx)")
    params = optimizer.params
    if len(params) != 1:
        raise ValueError(f"optimizer must hold one parameter vector, got {len(params)} arrays")
    w = params[0]
    epochs = _count(epochs, "epochs")
    rng = np.random.default_rng(seed)
    hist = History()
    seen = 0
    for epoch in range(epochs):
        order = curriculum if (curriculum is not None and epoch < curriculum_epochs) else None
        hist.lrs.append(optimizer.current_lr)
        for idx in minibatches(problem.n, batch_size, rng=rng, shuffle=shuffle, order=order):
            loss, g = problem.fun_and_grad(w, idx)
            where = f"at epoch {epoch}, step {len(hist.step_loss)}"
            if not math.isfinite(loss):
                raise ValueError(f"fun_and_grad returned a non-finite loss {where} (learning rate too large?)")
            hist.step_loss.append(float(loss))
            optimizer.step([_checked_grad(g, w, where)])
            seen += len(idx)
        full = float(problem.value(w))
        if not math.isfinite(full):
            raise ValueError(f"the loss after epoch {epoch} is not finite (learning rate too large?)")
        hist.epoch_loss.append(full)
        hist.examples.append(seen)
        metric = full
        if val is not None:
            metric = float(val(w))
            hist.val_loss.append(metric)
        if plateau is not None:
            plateau.report(metric)
        if early_stopping is not None and early_stopping.update(metric):
            hist.stopped_epoch = epoch
            break
    if early_stopping is not None:
        hist.best_epoch = early_stopping.best_epoch
        early_stopping.restore()
    return hist


# --- optimizer paths on the surfaces ---------------------------------------------------------

#: name -> (fastopt class name, fixed keyword arguments). "newton" is fastopt.minimize's.
ALGOS = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adadelta": ("Adadelta", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "amsgrad": ("Adam", {"amsgrad": True}),
    "nadam": ("NAdam", {}),
    "adamax": ("Adamax", {}),
    "radam": ("RAdam", {}),
    "lion": ("Lion", {}),
    "adabelief": ("AdaBelief", {}),
    "newton": (None, {}),
}

# Learning rates that show each rule's character on each surface (stable, same order
# of step length); "sgd" covers the momentum family, "adaptive" the rest.
_LR = {
    "rosenbrock": {"sgd": 1e-3, "adagrad": 0.5, "rmsprop": 1e-2, "adadelta": 1.0, "adaptive": 5e-2, "lion": 5e-3,
                   "radam": 5e-3, "adamax": 0.3},
    "beale": {"sgd": 1e-3, "adagrad": 0.5, "rmsprop": 1e-2, "adadelta": 1.0, "adaptive": 5e-2, "lion": 5e-3,
              "radam": 1e-2, "adamax": 0.3},
    "booth": {"sgd": 1e-2, "adagrad": 2.0, "rmsprop": 5e-2, "adadelta": 1.0, "adaptive": 2e-1, "lion": 2e-2},
    "saddle": {"sgd": 1e-2, "adagrad": 0.1, "rmsprop": 1e-2, "adadelta": 1.0, "adaptive": 1e-2, "lion": 1e-2},
    "monkey_saddle": {"sgd": 1e-2, "adagrad": 0.1, "rmsprop": 1e-2, "adadelta": 1.0, "adaptive": 1e-2,
                      "lion": 1e-2},
    "quadratic": {"sgd": 5e-2, "adagrad": 1.0, "rmsprop": 5e-2, "adadelta": 1.0, "adaptive": 1e-1, "lion": 2e-2},
}


def default_lr(problem_name, algo):
    """The learning rate :func:`optimizer_path` uses for ``algo`` on a surface."""
    table = _LR.get(problem_name, _LR["quadratic"])
    if algo in ("sgd", "momentum", "nesterov"):
        return table["sgd"]
    return table.get(algo, table["adaptive"])


def make_optimizer(algo, params, lr=None, **hyper):
    """The fastopt optimizer ``algo`` (a name of :data:`ALGOS` other than ``"newton"``) over ``params``."""
    import fastopt
    if not isinstance(algo, str) or algo not in ALGOS or algo == "newton":
        raise ValueError(f"algorithm must be one of {sorted(a for a in ALGOS if a != 'newton')}, got {algo!r}")
    cls_name, fixed = ALGOS[algo]
    kwargs = dict(fixed, **hyper)
    if lr is not None:
        kwargs["lr"] = lr
    return getattr(fastopt, cls_name)(params, **kwargs)


class Path:
    """One optimizer's path: ``xs`` (steps + 1 points), ``losses`` (f at each point),
    ``algo``, ``lr``; ``diverged``: the path left the finite numbers or 1e6 × the plot
    window; ``escaped``: on a surface unbounded below (the saddles), the path left the
    plot window by half its size again. The path ends at either."""

    def __init__(self, algo, lr, xs, losses, diverged, escaped=False):
        self.algo, self.lr, self.xs, self.losses, self.diverged = algo, lr, xs, losses, diverged
        self.escaped = escaped

    def __repr__(self):
        return f"Path({self.algo}, lr={self.lr}, {len(self.xs) - 1} steps, final loss {self.losses[-1]:.4g})"


def _resolve(problem):
    if isinstance(problem, Problem):
        return problem
    return get_problem(problem)


def optimizer_path(problem, algo, *, steps=200, x0=None, lr=None, noise=None, seed=0, **hyper):
    """Run ``steps`` steps of ``algo`` on ``problem`` (a :class:`~fastopt.problems.Problem`
    or a name of :data:`~fastopt.problems.PROBLEMS`) from ``x0`` (default
    ``problem.x0``) in float64; returns a :class:`Path`. ``lr`` defaults to
    :func:`default_lr`; ``noise`` is the optimizers' ``grad_noise`` (η or (η, γ));
    ``"newton"`` runs :func:`fastopt.minimize` with ``method="newton"`` (no ``lr``)."""
    if isinstance(problem, str) and problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {problem!r}")
    if not isinstance(algo, str) or algo not in ALGOS:
        raise ValueError(f"algorithm must be one of {sorted(ALGOS)}, got {algo!r}")
    prob = _resolve(problem)
    steps = _count(steps, "steps")
    x = np.array(as_point(prob.x0 if x0 is None else x0, "x0", prob.dim), dtype=np.float64)
    span = max(hi - lo for lo, hi in prob.bounds) if prob.bounds else 1.0
    limit = 1e6 * span
    window = None
    if prob.fmin is None and prob.bounds is not None:
        window = np.array([[lo - (hi - lo) / 2, hi + (hi - lo) / 2] for lo, hi in prob.bounds])

    def outside(p):
        return window is not None and bool(np.any((p[:2] < window[:, 0]) | (p[:2] > window[:, 1])))
    xs, losses = [x.copy()], [float(prob.value(x))]
    if algo == "newton":
        import fastopt

        def record(res):
            xs.append(res.x.copy())
            return outside(res.x) or not np.isfinite(res.x).all()
        with np.errstate(over="ignore", invalid="ignore"):
            fastopt.minimize(prob.fun_and_grad, x, method="newton", hess=prob.hess, max_iter=steps,
                             line_search=None, callback=record)
        escaped = outside(xs[-1])
        if escaped or not np.isfinite(xs[-1]).all():
            xs.pop()
        losses = [float(prob.value(p)) for p in xs]
        return Path(algo, None, np.array(xs), np.array(losses), False, escaped)
    lr = default_lr(prob.name if prob.name in SURFACES else "", algo) if lr is None else lr
    opt = make_optimizer(algo, [x], lr=lr, grad_noise=noise, seed=seed, **hyper)
    diverged = escaped = False
    for _ in range(steps):
        g = np.asarray(prob.grad(x), np.float64)
        if g.shape != x.shape:
            raise ValueError(f"{prob.name}.grad returned shape {g.shape}, expected {x.shape}")
        opt.step([g])
        with np.errstate(over="ignore", invalid="ignore"):
            fx = float(prob.value(x))
        if not (np.isfinite(x).all() and math.isfinite(fx)) or np.abs(x).max() > limit:
            diverged = True
            break
        if outside(x):
            escaped = True
            break
        xs.append(x.copy())
        losses.append(fx)
    return Path(algo, lr, np.array(xs), np.array(losses), diverged, escaped)
