"""Seeded synthetic data of the shapes of the Hogwild! paper's experiments (no downloads).

* :func:`make_rcv1_like`: sparse text-like classification: power-law (Zipf) feature
  frequencies, unit-norm rows of positive tf-idf-like values, and labels from a planted
  sparse linear model plus noise, so the task is learnable and its best accuracy known.
* :func:`make_netflix_like`: a rating matrix with power-law user activity and item
  popularity, planted low rank plus noise, clipped to the 1..5 star range.
"""
from collections import namedtuple

import numpy as np

from fastopt.hogwild import _check

RatingData = namedtuple("RatingData", "users items ratings n_users n_items")
RatingData.__doc__ = "Observed ratings as coordinate arrays: ``ratings[k]`` is user ``users[k]``'s rating of item " \
                     "``items[k]`` (int64, int64, float64), in an ``n_users x n_items`` matrix."


def _zipf_probs(n, exponent, rng):
    """Probabilities ``~ 1 / rank^exponent`` over ``n`` ids, the ranks randomly assigned."""
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    p /= p.sum()
    return p[np.argsort(rng.permutation(n))]


def _draws_for_unique(p, target):
    """Draws (with replacement) from ``p`` whose expected number of distinct ids is ``target``."""
    lo, hi = float(target), float(target) * 64.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.sum(-np.expm1(mid * np.log1p(-np.minimum(p, 1.0 - 1e-16)))) < target:
            lo = mid
        else:
            hi = mid
    return hi


def _unique_pairs(rows, cols, ncols):
    keys = rows.astype(np.int64) * ncols + cols.astype(np.int64)
    keys.sort()
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return keys // ncols, keys % ncols


def make_rcv1_like(n_samples=20_000, n_features=800_000, density=0.0015, *, zipf=1.0, informative=0.05,
                   noise=0.25, seed=0, dtype=np.float64):
    """An RCV1-shaped binary classification set: ``(X, y, w_true)``.

    ``X`` (:class:`~fastopt.hogwild.CSR`, ``n_samples x n_features``, ``dtype``): each
    row has about ``density * n_features`` distinct columns (Poisson-distributed count),
    drawn from Zipf frequencies ``p_j ~ 1/rank_j^zipf``; values ``(1 + Exp(1)) log(1/p_j)``
    (tf-idf-like), rows scaled to unit L2 norm; column indices sorted. ``w_true`` has
    ``informative * n_features`` non-zero N(0, 1) weights, on features drawn by frequency;
    ``y = sign(m + noise std(m) N(0,1))``
    with the margin ``m = X w_true`` centred at its median, so the classes are balanced and
    ``noise`` sets how far the best accuracy is below 100%. Deterministic in ``seed``.
    """
    n = _check.integer(n_samples, "n_samples", lo=1)
    d = _check.integer(n_features, "n_features", lo=1)
    density = _check.real(density, "density", lo=0.0, hi=1.0, lo_open=True)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    rng = np.random.Generator(np.random.Philox(key=np.array([_check.seed(seed), 1], np.uint64)))
    p = _zipf_probs(d, zipf, rng)
    per_row = max(1.0, density * d)
    draws = _draws_for_unique(p, per_row)
    counts = np.maximum(1, rng.poisson(draws, n))
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    cols = np.searchsorted(np.cumsum(p), rng.random(rows.size) * (1.0 - 1e-12))
    np.minimum(cols, d - 1, out=cols)
    rows, cols = _unique_pairs(rows, cols, d)
    idf = np.log(1.0 / p)
    vals = (1.0 + rng.exponential(1.0, rows.size)) * idf[cols]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    norms = np.sqrt(np.add.reduceat(vals * vals, indptr[:-1]))
    vals /= np.repeat(norms, np.diff(indptr))
    X = _check.CSR(vals.astype(dtype), cols.astype(np.int32 if d < 2 ** 31 else np.int64), indptr, (n, d))
    w_true = np.zeros(d)
    k = max(1, int(round(informative * d)))
    # informative features drawn by frequency: the signal lives where the data does
    w_true[rng.choice(d, k, replace=False, p=p)] = rng.standard_normal(k)
    margin = np.add.reduceat(vals * w_true[cols], indptr[:-1])
    margin -= np.median(margin)
    y = np.where(margin + noise * margin.std() * rng.standard_normal(n) > 0.0, 1.0, -1.0)
    return X, y, w_true


def make_netflix_like(n_users=20_000, n_items=2_000, density=0.01, *, rank=10, noise=0.5, user_zipf=0.8,
                      item_zipf=1.0, seed=0):
    """A Netflix-shaped rating matrix: :class:`RatingData` of about ``density * n_users * n_items``
    distinct (user, item) pairs.

    Users are drawn with activity ``~ 1/rank^user_zipf``, items with popularity
    ``~ 1/rank^item_zipf``; ``r_ui = clip(3.6 + <U_u, V_i> + noise N(0,1), 1, 5)`` with
    planted factors ``U``, ``V`` of ``rank`` columns of N(0, 1/sqrt(rank)) entries (the
    low-rank part has unit variance). Deterministic in ``seed``; the pairs are in random order.
    """
    nu = _check.integer(n_users, "n_users", lo=1)
    ni = _check.integer(n_items, "n_items", lo=1)
    density = _check.real(density, "density", lo=0.0, hi=1.0, lo_open=True)
    rank = _check.integer(rank, "rank", lo=1)
    rng = np.random.Generator(np.random.Philox(key=np.array([_check.seed(seed), 2], np.uint64)))
    target = max(1, int(round(density * nu * ni)))
    pu, pi = _zipf_probs(nu, user_zipf, rng), _zipf_probs(ni, item_zipf, rng)
    users = np.empty(0, np.int64)
    items = np.empty(0, np.int64)
    draw = target
    # popular pairs repeat: draw more until enough distinct pairs are found
    for _ in range(40):
        u = np.searchsorted(np.cumsum(pu), rng.random(draw) * (1.0 - 1e-12))
        i = np.searchsorted(np.cumsum(pi), rng.random(draw) * (1.0 - 1e-12))
        users, items = _unique_pairs(np.concatenate([users, np.minimum(u, nu - 1)]),
                                     np.concatenate([items, np.minimum(i, ni - 1)]), ni)
        if users.size >= target:
            break
        draw = 2 * draw
    keep = rng.permutation(users.size)[:target]
    users, items = users[keep], items[keep]
    scale = 1.0 / np.sqrt(np.sqrt(rank))
    U = rng.standard_normal((nu, rank)) * scale
    V = rng.standard_normal((ni, rank)) * scale
    r = 3.6 + np.einsum("ij,ij->i", U[users], V[items]) + noise * rng.standard_normal(users.size)
    return RatingData(users, items, np.clip(r, 1.0, 5.0), nu, ni)
