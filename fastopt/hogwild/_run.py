"""What the Hogwild! trainers share around the epoch kernels: the seeded orders, the
held-out split and the early-stopping rule."""
import numpy as np

# the key's second word: epoch e uses e, the validation split this one
_SPLIT_STREAM = 2 ** 64 - 1


def _rng(seed, stream):
    """A counter-based Philox generator keyed by ``(seed, stream)``: any epoch's order is
    drawn without drawing the ones before it."""
    return np.random.Generator(np.random.Philox(key=np.array([seed, stream], dtype=np.uint64)))


def epoch_order(rows, seed, epoch, shuffle):
    """The int64 order in which epoch ``epoch`` visits ``rows``: a permutation from
    Philox keyed by ``(seed, epoch)``, or ``rows`` as given when ``shuffle`` is False."""
    if not shuffle:
        return np.ascontiguousarray(rows, dtype=np.int64)
    return np.ascontiguousarray(rows[_rng(seed, epoch).permutation(rows.size)], dtype=np.int64)


def split_validation(n, fraction, seed):
    """``(train, valid)`` sorted int64 row indices: a seeded ``fraction`` of ``n`` rows held out
    (at least one row on each side when ``n >= 2``)."""
    k = int(round(n * fraction))
    k = min(max(k, 1), n - 1) if n >= 2 else 0
    perm = _rng(seed, _SPLIT_STREAM).permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


class EarlyStopping:
    """scikit-learn's rule: an epoch whose score is not above ``best + tol`` counts as no
    improvement; ``n_iter_no_change`` of them in a row stop the run. The state of the
    best-scoring epoch is kept (``best_state``)."""

    def __init__(self, n_iter_no_change, tol):
        self.n_iter_no_change, self.tol = n_iter_no_change, tol
        self.best = -np.inf
        self.best_state = None
        self.count = 0

    def update(self, score, state):
        """Record an epoch's ``score`` (higher is better) and ``state``; True: stop now."""
        self.count = self.count + 1 if score < self.best + self.tol else 0
        if score > self.best:
            self.best, self.best_state = score, state
        return self.count >= self.n_iter_no_change
