"""Hogwild! linear models on CSR data: logistic, hinge (linear SVM) and squared loss."""
import sys
import time

import numpy as np

from fastopt._kernels import hogwild as _k
from fastopt.hogwild import _check
from fastopt.hogwild._lr import KINDS, Rates
from fastopt.hogwild._run import EarlyStopping, epoch_order, split_validation
from fastopt.schedules import Schedule

LOSSES = ("log", "hinge", "squared")
PENALTIES = ("l2", "l1", "elasticnet", "none")
RULES = ("sgd", "adagrad")


def csr_dot(indptr, indices, data, w):
    """``X @ w`` of a CSR matrix given by its arrays, in float64."""
    prods = np.empty(data.size + 1)
    np.multiply(data, w[indices], out=prods[:-1], dtype=np.float64, casting="unsafe")
    prods[-1] = 0.0
    n = indptr.size - 1
    out = np.zeros(n)
    full = indptr[1:] > indptr[:-1]
    if np.any(full):
        out[full] = np.add.reduceat(prods, indptr[:-1][full])
    return out


class LinearSGD:
    """A linear model trained by Hogwild! SGD: many threads, one shared weight vector, no locks.

    Minimises ``(1/n) sum_i loss(y_i, <w, x_i> + b) + alpha R(w)`` with
    ``R = (1 - l1_ratio) |w|^2 / 2 + l1_ratio |w|_1`` (``penalty``: ``"l2"`` is
    ``l1_ratio = 0``, ``"l1"`` is ``l1_ratio = 1``, ``"none"`` is ``alpha R = 0``), one example
    at a time, with scikit-learn ``SGDClassifier``'s arithmetic (``_plain_sgd``):

    * ``loss``: ``"log"`` ``log(1 + exp(-y p))``, ``"hinge"`` ``max(0, 1 - y p)`` (labels -1/+1),
      ``"squared"`` ``(p - y)^2 / 2`` (any finite target);
    * per example, ``d = loss'(y, p)``: ``w <- (1 - eta alpha (1 - l1_ratio)) w - eta d x``,
      ``b <- b - eta d intercept_decay`` (0.01: scikit-learn's decay for sparse data);
      the L2 shrink is a scale ``w = s v`` so an example costs O(nnz), and the L1 part is
      the truncated gradient with cumulative penalty (Tsuruoka et al. 2009), which
      leaves truly zero weights;
    * ``rule="adagrad"``: sparse Adagrad on the example's support, ``g_j = d x_j +
      alpha (1 - l1_ratio) w_j``, ``G_j += g_j^2``, ``w_j -= eta g_j / (sqrt(G_j) + eps)``
      (L2 on the support only; L1/elastic-net are refused with it); the intercept takes
      the same step with its own sum, times ``intercept_decay``. Give it a number ``lr``.

    ``lr`` is ``"optimal"`` (scikit-learn's default), ``"invscaling"``, ``"constant"``, a
    number (constant), or a :class:`fastopt.schedules.Schedule` giving the rate of each
    epoch (see :mod:`fastopt.hogwild._lr`). Each epoch visits the training rows in a
    permutation drawn from a counter-based Philox generator keyed by ``(seed, epoch)``
    (or in order, ``shuffle=False``); ``threads`` threads take chunks of 256 of them in
    turn and update the shared weights without locks. With ``threads=1`` a run is
    bitwise reproducible and equals :mod:`fastopt.reference.hogwild` bit for bit; with
    more it is lock-free by design, judged by the loss it reaches.

    ``early_stopping=True`` holds out ``validation_fraction`` of the rows (a seeded
    split) and stops after ``n_iter_no_change`` epochs whose validation score (accuracy;
    R^2 for squared loss) did not beat the best by ``tol``; the weights of the best epoch
    are kept. ``progress=True`` prints one line per epoch to stderr.

    ``reorder=True`` numbers the features by decreasing frequency for the run (a copy of
    ``X.indices``, O(nnz) once), so the frequent features' weights share cache lines;
    the arithmetic is elementwise in the same order, so ``coef_`` is the same bits.

    After :meth:`fit`: ``coef_`` (float32/float64 like ``X.data``), ``intercept_``,
    ``n_iter_`` and ``history_`` (one dict per epoch: ``lr``, ``loss`` (mean training
    loss), ``score`` (validation, or None), ``seconds``, ``examples_per_second``).
    """

    def __init__(self, loss="log", *, penalty="l2", alpha=1e-4, l1_ratio=0.15, lr="optimal", eta0=0.0,
                 power_t=0.5, epochs=5, shuffle=True, seed=0, threads=None, fit_intercept=True,
                 intercept_decay=0.01, rule="sgd", eps=1e-10, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, tol=1e-3, progress=False, reorder=False):
        self.loss = _check.choice(loss, "loss", LOSSES)
        self.penalty = _check.choice(penalty, "penalty", PENALTIES)
        self.alpha = _check.real(alpha, "alpha", lo=0.0)
        self.l1_ratio = _check.real(l1_ratio, "l1_ratio", lo=0.0, hi=1.0)
        if isinstance(lr, Schedule):
            self.lr = lr
        elif isinstance(lr, str):
            self.lr = _check.choice(lr, "lr", KINDS)
        else:
            eta0 = _check.real(lr, "lr", lo=0.0, lo_open=True)
            self.lr = "constant"
        self.eta0 = _check.real(eta0, "eta0", lo=0.0)
        self.power_t = _check.real(power_t, "power_t")
        self.epochs = _check.integer(epochs, "epochs", lo=1)
        self.shuffle = bool(shuffle)
        self.seed = _check.seed(seed)
        self.threads = _check.threads(threads)
        self.fit_intercept = bool(fit_intercept)
        self.intercept_decay = _check.real(intercept_decay, "intercept_decay", lo=0.0)
        self.rule = _check.choice(rule, "rule", RULES)
        self.eps = _check.real(eps, "eps", lo=0.0, lo_open=True)
        if self.rule == "adagrad" and self.penalty in ("l1", "elasticnet"):
            raise ValueError(f"rule='adagrad' supports penalty 'l2' or 'none', not {self.penalty!r} (the "
                             f"truncated-gradient L1 needs plain SGD's single step size)")
        self.early_stopping = bool(early_stopping)
        self.validation_fraction = _check.real(validation_fraction, "validation_fraction", lo=0.0, hi=1.0,
                                               lo_open=True, hi_open=True)
        self.n_iter_no_change = _check.integer(n_iter_no_change, "n_iter_no_change", lo=1)
        self.tol = _check.real(tol, "tol")
        self.progress = bool(progress)
        self.reorder = bool(reorder)
        self.coef_ = None
        self.intercept_ = 0.0

    # -- the penalty as l1_ratio and alpha
    def _mix(self):
        if self.penalty == "none":
            return 0.0, 0.0
        return self.alpha, {"l2": 0.0, "l1": 1.0}.get(self.penalty, self.l1_ratio)

    def _rates(self):
        alpha, l1_ratio = self._mix()
        sgd = self.rule == "sgd"
        return Rates(self.lr, eta0=self.eta0, power_t=self.power_t, alpha=alpha, l1_ratio=l1_ratio,
                     loss=self.loss, l2=sgd and alpha > 0.0 and l1_ratio < 1.0,
                     l1=sgd and alpha > 0.0 and l1_ratio > 0.0, rate_alpha=self.alpha)

    def fit(self, X, y):
        """Train on CSR ``X`` (n x d, float32/float64) and labels ``y`` (n,); returns ``self``.

        Every argument is checked before anything is allocated or written (a CSR with
        unsorted/duplicate column indices, labels outside the loss's domain, non-finite
        values: ValueError/TypeError naming the argument)."""
        # X is read in place by kernels without the GIL for the whole fit: its arrays
        # stay pinned (see fastopt._lifetime) until fit returns
        pins = []
        indptr, indices, data, (n, d) = _check.csr(X, "X", pins)
        yv = _check.labels(y, n, self.loss, "y")
        rates = self._rates()
        rates.check(self.epochs)
        alpha, l1_ratio = self._mix()
        train, valid = split_validation(n, self.validation_fraction, self.seed) if self.early_stopping else \
            (np.arange(n, dtype=np.int64), None)
        if train.size == 0 or (valid is not None and valid.size == 0):
            raise ValueError(f"X has {n} rows: too few to hold out validation_fraction={self.validation_fraction}")
        dtype = data.dtype
        newid = None
        if self.reorder:
            newid = np.empty(d, np.int64)
            newid[np.argsort(-np.bincount(indices, minlength=d), kind="stable")] = np.arange(d)
            indices = _k.remap(indices, newid)
        w = np.zeros(d, dtype)
        q = np.zeros(d, dtype) if rates.l1 else None
        acc = np.zeros(d, dtype) if self.rule == "adagrad" else None
        shared = np.array([1.0, 0.0, 0.0])
        stop = EarlyStopping(self.n_iter_no_change, self.tol) if valid is not None else None
        self.history_ = []
        t_seen = 0
        for e in range(self.epochs):
            perm = epoch_order(train, self.seed, e, self.shuffle)
            eta, shrink, ucum = rates.epoch(e, perm.size, t_seen)
            t0 = time.perf_counter()
            total = _k.linear_epoch(w, q, acc, shared, indptr, indices, data, yv, perm, eta, shrink, ucum,
                                    loss=_k.LOSSES[self.loss], rule=_k.RULES[self.rule],
                                    fit_intercept=self.fit_intercept, intercept_decay=self.intercept_decay,
                                    alpha_l2=alpha * (1.0 - l1_ratio), eps=self.eps, threads=self.threads)
            seconds = time.perf_counter() - t0
            t_seen += perm.size
            if not (np.isfinite(shared[1]) and np.all(np.isfinite(w))):
                raise FloatingPointError(f"the weights became non-finite in epoch {e}: lower lr (or eta0), or "
                                         f"scale X's rows")
            entry = {"epoch": e, "lr": float(eta[0]) if eta.size else 0.0, "loss": total / perm.size,
                     "score": None, "seconds": seconds, "examples_per_second": perm.size / max(seconds, 1e-12)}
            if stop is not None:
                entry["score"] = self._score_rows(indptr, indices, data, yv, valid, w, float(shared[1]))
                if stop.update(entry["score"], (w.copy(), float(shared[1]))):
                    self.history_.append(entry)
                    self._progress(entry)
                    break
            self.history_.append(entry)
            self._progress(entry)
        if stop is not None and stop.best_state is not None:
            w, b = stop.best_state
        else:
            b = float(shared[1])
        self.coef_ = w if newid is None else w[newid]
        self.intercept_, self.n_iter_ = b, len(self.history_)
        del pins
        return self

    def _progress(self, entry):
        if self.progress:
            score = "" if entry["score"] is None else f"  validation {entry['score']:.4f}"
            print(f"hogwild epoch {entry['epoch'] + 1}/{self.epochs}: lr {entry['lr']:.3g}  loss "
                  f"{entry['loss']:.5f}{score}  {entry['seconds']:.2f} s  "
                  f"{entry['examples_per_second']:,.0f} examples/s", file=sys.stderr, flush=True)

    def _score_rows(self, indptr, indices, data, y, rows, w, b):
        sub = _check.CSR(data, indices, indptr, (indptr.size - 1, w.size)).rows(rows)
        p = csr_dot(sub.indptr, sub.indices, sub.data, w) + b
        return _score(self.loss, y[rows], p)

    def decision_function(self, X):
        """``X @ coef_ + intercept_`` (float64) for a CSR ``X`` with the model's column count."""
        if self.coef_ is None:
            raise RuntimeError("call fit first")
        pins = []         # noqa: F841 (kept alive while scan_csr reads X without the GIL)
        indptr, indices, data, (n, d) = _check.csr(X, "X", pins)
        if d != self.coef_.size:
            raise ValueError(f"X has {d} columns, the model was fitted with {self.coef_.size}")
        return csr_dot(indptr, indices, data, self.coef_) + self.intercept_

    def predict(self, X):
        """-1/+1 labels (log, hinge) or the predicted targets (squared)."""
        p = self.decision_function(X)
        return p if self.loss == "squared" else np.where(p > 0.0, 1.0, -1.0)

    def score(self, X, y):
        """Accuracy (log, hinge) or R^2 (squared) on ``X``, ``y``."""
        p = self.decision_function(X)
        return _score(self.loss, _check.labels(y, p.size, self.loss, "y"), p)


def _score(loss, y, p):
    if loss == "squared":
        ss = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - float(np.sum((y - p) ** 2)) / ss if ss > 0.0 else 0.0
    return float(np.mean(np.where(p > 0.0, 1.0, -1.0) == y))
