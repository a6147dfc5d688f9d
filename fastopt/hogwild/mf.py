"""Hogwild! matrix factorisation (the paper's Netflix-style experiment)."""
import sys
import time

import numpy as np

from fastopt._kernels import hogwild as _k
from fastopt._lifetime import pin_memory
from fastopt.hogwild import _check
from fastopt.hogwild._run import EarlyStopping, _rng, epoch_order, split_validation
from fastopt.schedules import Schedule

# the key's second word of the factors' initialisation (the epochs use 0, 1, ...)
_INIT_STREAM = 2 ** 64 - 2


def _ratings(users, items, ratings, n_users, n_items, prefix=""):
    """The three coordinate arrays checked (int64, int64, float64 of one length, in range, finite).

    They may be the caller's own arrays (no copy): a caller that hands them to kernels
    running without the GIL pins them first (see :mod:`fastopt._lifetime`)."""
    out = []
    for name, arr, size in (("users", users, n_users), ("items", items, n_items)):
        a = np.asarray(arr)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise TypeError(f"{prefix}{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
        where = f"[0, {size})" if size is not None else ">= 0"
        if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
            # would wrap to a negative int64 (and a negative row count) in the conversion below
            raise ValueError(f"{prefix}{name} must lie in {where}, found {a.max()}")
        a = np.ascontiguousarray(a, dtype=np.int64)
        if a.size and (a.min() < 0 or (size is not None and a.max() >= size)):
            bad = a.min() if a.min() < 0 else a.max()
            raise ValueError(f"{prefix}{name} must lie in {where}, found {bad}")
        out.append(a)
    r = np.asarray(ratings)
    if r.ndim != 1 or r.dtype.kind not in "iuf":
        raise TypeError(f"{prefix}ratings must be a 1-D array of numbers, got {r.dtype} {r.shape}")
    if not (out[0].size == out[1].size == r.size) or r.size == 0:
        raise ValueError(f"{prefix}users, {prefix}items and {prefix}ratings must have one equal length >= 1, got "
                         f"{out[0].size}, {out[1].size}, {r.size}")
    r = np.ascontiguousarray(r, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{prefix}ratings must be finite (it holds NaN or infinity)")
    return out[0], out[1], r


class MatrixFactorization:
    """``r_ui ~ mu + <P_u, Q_i>`` trained by Hogwild! SGD over the observed ratings.

    ``mu`` is the mean training rating; ``P`` (users x ``n_factors``) and ``Q`` (items x
    ``n_factors``) start as N(0, ``init_scale``) from a Philox generator keyed by ``seed``.
    Per rating, with ``e = r - mu - <P_u, Q_i>`` and the old rows ``p = P_u``, ``q = Q_i``:

    * ``rule="sgd"``: ``P_u <- p + eta (e q - reg p)``, ``Q_i <- q + eta (e p - reg q)``;
    * ``rule="adagrad"``: per-element sums ``G += g^2`` of ``g = reg p - e q`` (and
      ``reg q - e p``), ``P_u <- p - eta g / (sqrt(G) + eps)``: only the two touched rows
      of the factors and of their sums are read or written.

    ``lr`` is a number or a :class:`fastopt.schedules.Schedule` (the rate of epoch ``e``
    is ``lr(e)``). Each epoch visits the ratings in a Philox permutation keyed by
    ``(seed, epoch)``; ``threads`` threads take chunks of 256 and update ``P`` and ``Q``
    without locks. ``threads=1`` is bitwise reproducible (:mod:`fastopt.reference.hogwild`).
    ``eval_set=(users, items, ratings)`` records the held-out RMSE of every epoch in
    ``history_``; ``early_stopping`` holds out ``validation_fraction`` of the training
    ratings and keeps the factors of the epoch with the best validation RMSE.
    """

    def __init__(self, n_factors=32, *, lr=0.01, reg=0.02, epochs=10, init_scale=0.1, shuffle=True, seed=0,
                 threads=None, rule="sgd", eps=1e-10, dtype=np.float32, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=3, tol=1e-4, progress=False):
        self.n_factors = _check.integer(n_factors, "n_factors", lo=1)
        self.lr = lr if isinstance(lr, Schedule) else _check.real(lr, "lr", lo=0.0, lo_open=True)
        self.reg = _check.real(reg, "reg", lo=0.0)
        self.epochs = _check.integer(epochs, "epochs", lo=1)
        self.init_scale = _check.real(init_scale, "init_scale", lo=0.0)
        self.shuffle = bool(shuffle)
        self.seed = _check.seed(seed)
        self.threads = _check.threads(threads)
        self.rule = _check.choice(rule, "rule", ("sgd", "adagrad"))
        self.eps = _check.real(eps, "eps", lo=0.0, lo_open=True)
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.early_stopping = bool(early_stopping)
        self.validation_fraction = _check.real(validation_fraction, "validation_fraction", lo=0.0, hi=1.0,
                                               lo_open=True, hi_open=True)
        self.n_iter_no_change = _check.integer(n_iter_no_change, "n_iter_no_change", lo=1)
        self.tol = _check.real(tol, "tol")
        self.progress = bool(progress)
        self.P = self.Q = None

    def fit(self, users, items, ratings, *, n_users=None, n_items=None, eval_set=None):
        """Train on the observed ``ratings[k]`` of user ``users[k]`` for item ``items[k]``;
        returns ``self``. ``n_users``/``n_items`` default to the largest index + 1."""
        if n_users is not None:
            n_users = _check.integer(n_users, "n_users", lo=1)
        if n_items is not None:
            n_items = _check.integer(n_items, "n_items", lo=1)
        # the schedule runs first: no user code may run between the index checks and the
        # kernels (a schedule could rewrite users/items, used in place, after their check)
        rates = [float(self.lr(e)) if isinstance(self.lr, Schedule) else self.lr for e in range(self.epochs)]
        u, i, r = _ratings(users, items, ratings, n_users, n_items)
        pins = pin_memory([u, i, r])     # read in place by every epoch's kernels
        n_users = int(u.max()) + 1 if n_users is None else n_users
        n_items = int(i.max()) + 1 if n_items is None else n_items
        ev = None
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 3:
                raise TypeError("eval_set must be a tuple (users, items, ratings)")
            ev = _ratings(*eval_set, n_users, n_items, prefix="eval_set ")
        bad = [x for x in rates if not (np.isfinite(x) and x >= 0.0)]
        if bad:
            raise ValueError(f"lr must give finite rates >= 0, got {bad[0]!r}")
        train, valid = split_validation(r.size, self.validation_fraction, self.seed) if self.early_stopping else \
            (np.arange(r.size, dtype=np.int64), None)
        if train.size == 0 or (valid is not None and valid.size == 0):
            raise ValueError("too few ratings to hold out a validation split")
        mu = float(np.mean(r[train]))
        init = _rng(self.seed, _INIT_STREAM)
        P = (init.standard_normal((n_users, self.n_factors)) * self.init_scale).astype(self.dtype)
        Q = (init.standard_normal((n_items, self.n_factors)) * self.init_scale).astype(self.dtype)
        GP = np.zeros_like(P) if self.rule == "adagrad" else None
        GQ = np.zeros_like(Q) if self.rule == "adagrad" else None
        self.mu, self.P, self.Q = mu, P, Q
        stop = EarlyStopping(self.n_iter_no_change, self.tol) if valid is not None else None
        self.history_ = []
        for e in range(self.epochs):
            perm = epoch_order(train, self.seed, e, self.shuffle)
            t0 = time.perf_counter()
            sse = _k.mf_epoch(P, Q, GP, GQ, u, i, r, perm, mu=mu, eta=rates[e], reg=self.reg, eps=self.eps,
                              rule=_k.RULES[self.rule], threads=self.threads)
            seconds = time.perf_counter() - t0
            if not (np.all(np.isfinite(P)) and np.all(np.isfinite(Q))):
                raise FloatingPointError(f"the factors became non-finite in epoch {e}: lower lr")
            entry = {"epoch": e, "lr": rates[e], "train_rmse": float(np.sqrt(sse / perm.size)), "seconds": seconds,
                     "ratings_per_second": perm.size / max(seconds, 1e-12), "eval_rmse": None, "score": None}
            if ev is not None:
                entry["eval_rmse"] = self.rmse(*ev)
            if stop is not None:
                entry["score"] = -self.rmse(u[valid], i[valid], r[valid])
                halt = stop.update(entry["score"], (P.copy(), Q.copy()))
            self.history_.append(entry)
            if self.progress:
                extra = "" if entry["eval_rmse"] is None else f"  held-out RMSE {entry['eval_rmse']:.4f}"
                print(f"hogwild MF epoch {e + 1}/{self.epochs}: lr {rates[e]:.3g}  train RMSE "
                      f"{entry['train_rmse']:.4f}{extra}  {seconds:.2f} s  "
                      f"{entry['ratings_per_second']:,.0f} ratings/s", file=sys.stderr, flush=True)
            if stop is not None and halt:
                break
        if stop is not None and stop.best_state is not None:
            self.P, self.Q = stop.best_state
        self.n_iter_ = len(self.history_)
        del pins
        return self

    def predict(self, users, items):
        """``mu + <P_u, Q_i>`` for each pair (float64)."""
        if self.P is None:
            raise RuntimeError("call fit first")
        u, i, _ = _ratings(users, items, np.zeros(np.asarray(users).size), self.P.shape[0], self.Q.shape[0])
        return self.mu + np.einsum("ij,ij->i", self.P[u].astype(np.float64), self.Q[i].astype(np.float64))

    def rmse(self, users, items, ratings):
        """Root mean squared error of :meth:`predict` against ``ratings``."""
        r = np.asarray(ratings, dtype=np.float64)
        return float(np.sqrt(np.mean((self.predict(users, items) - r) ** 2)))
