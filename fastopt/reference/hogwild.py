"""NumPy reference of the Hogwild! epoch kernels with one thread (:mod:`fastopt._kernels.hogwild`).

The same arithmetic in the same order, so a one-thread kernel epoch and these functions
give the same bits: every product and sum in float64 (a dot product summed left to
right from 0.0), each stored weight rounded once to its dtype, the L2 scale folded into
the weights between blocks exactly where the kernel folds it, and the losses summed per
chunk of ``CHUNK`` examples and then chunk by chunk. It loops over the examples in
Python, so it is meant for small data sets (the tests).
"""
import math

import numpy as np

CHUNK = 256
MIN_SCALE = 1e-9
MAX_DLOSS = 1e12


def _loss(kind, y, p):
    if kind == 0:
        z = p * y
        if z > 18.0:
            return math.exp(-z)
        if z < -18.0:
            return -z
        return math.log(1.0 + math.exp(-z))
    if kind == 1:
        z = p * y
        return 1.0 - z if z <= 1.0 else 0.0
    return 0.5 * (p - y) * (p - y)


def _dloss(kind, y, p):
    if kind == 0:
        z = p * y
        if z > 18.0:
            return math.exp(-z) * -y
        if z < -18.0:
            return -y
        return -y / (math.exp(z) + 1.0)
    if kind == 1:
        z = p * y
        return -y if z <= 1.0 else 0.0
    return p - y


def _dot(a, b):
    """Left-to-right float64 sum of ``a * b`` from 0.0 (``np.add.accumulate`` is sequential)."""
    prods = np.empty(a.shape[0] + 1)
    prods[0] = 0.0
    np.multiply(a, b, out=prods[1:], dtype=np.float64, casting="unsafe")
    return float(np.add.accumulate(prods)[-1])


def _dot8(a, b):
    """The kernel's eight-lane float64 dot product: element ``8m + k`` goes to lane ``k``
    (summed left to right from 0.0), lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))."""
    m = -(-a.shape[0] // 8) * 8
    prods = np.zeros(m + 8)
    np.multiply(a, b, out=prods[8:a.shape[0] + 8], dtype=np.float64, casting="unsafe")
    lanes = np.add.accumulate(prods.reshape(-1, 8), axis=0)[-1]
    return float(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))


def _fold(w, shared):
    s = float(shared[0])
    if s != 1.0:
        w[:] = (w.astype(np.float64) * s).astype(w.dtype)
        shared[0] = 1.0


def _linear_example(w, q, acc, shared, indptr, indices, data, y, k, r, eta, shrink, ucum, loss, rule, fit_intercept,
                    intercept_decay, alpha_l2, eps):
    idx = indices[indptr[r]:indptr[r + 1]]
    x = data[indptr[r]:indptr[r + 1]].astype(np.float64)
    yr = float(y[r])
    s = float(shared[0])
    p = _dot8(w[idx].astype(np.float64), x) * s + float(shared[1])
    lk = _loss(loss, yr, p)
    d = min(max(_dloss(loss, yr, p), -MAX_DLOSS), MAX_DLOSS)
    if rule == 0:
        update = -float(eta[k]) * d
        if shrink is not None:
            s = float(shared[0]) * float(shrink[k])
            shared[0] = s
        if update != 0.0:
            c = update / s
            w[idx] = (w[idx].astype(np.float64) + x * c).astype(w.dtype)
        if fit_intercept and update != 0.0:
            shared[1] = float(shared[1]) + update * intercept_decay
        if ucum is not None:
            u = float(ucum[k])
            z = w[idx].astype(np.float64)
            qi = q[idx].astype(np.float64)
            up = z - (u + qi) / s
            down = z + (u - qi) / s
            new = np.where(s * z > 0.0, np.where(up > 0.0, up, 0.0),
                           np.where(s * z < 0.0, np.where(down < 0.0, down, 0.0), z)).astype(w.dtype)
            w[idx] = new
            q[idx] = (qi + s * (new.astype(np.float64) - z)).astype(q.dtype)
    else:
        z = w[idx].astype(np.float64)
        g = d * x + alpha_l2 * z
        acc[idx] = (acc[idx].astype(np.float64) + g * g).astype(acc.dtype)
        w[idx] = (z - float(eta[k]) * g / (np.sqrt(acc[idx].astype(np.float64)) + eps)).astype(w.dtype)
        if fit_intercept and d != 0.0:
            shared[2] = float(shared[2]) + d * d
            shared[1] = float(shared[1]) - float(eta[k]) * d / (math.sqrt(float(shared[2])) + eps) * intercept_decay
    return lk


def linear_epoch(w, q, acc, shared, indptr, indices, data, y, perm, eta, shrink, ucum, *, loss, rule, fit_intercept,
                 intercept_decay, alpha_l2, eps):
    """:func:`fastopt._kernels.hogwild.linear_epoch` with one thread, in NumPy (same
    arguments but ``threads``; updates ``w``, ``q``, ``acc`` and ``shared`` in place and
    returns the sum of the losses)."""
    n = perm.shape[0]
    total = 0.0
    pos = 0
    while pos < n:
        end = n
        if shrink is not None:
            s = float(shared[0])
            end = pos
            while end < n:
                s2 = s * float(shrink[end])
                if s2 < MIN_SCALE:
                    break
                s = s2
                end += 1
            if end == pos:
                _fold(w, shared)
                continue
        for lo in range(pos, end, CHUNK):
            part = 0.0
            for k in range(lo, min(lo + CHUNK, end)):
                part += _linear_example(w, q, acc, shared, indptr, indices, data, y, k, int(perm[k]), eta, shrink,
                                        ucum, loss, rule, fit_intercept, intercept_decay, alpha_l2, eps)
            total += part
        pos = end
    if shrink is not None:
        _fold(w, shared)
    return total


def mf_epoch(P, Q, GP, GQ, users, items, ratings, perm, *, mu, eta, reg, eps, rule):
    """:func:`fastopt._kernels.hogwild.mf_epoch` with one thread, in NumPy (updates
    ``P``, ``Q`` and, for Adagrad, ``GP``/``GQ`` in place; returns the sum of squared errors)."""
    n = perm.shape[0]
    total = 0.0
    for lo in range(0, n, CHUNK):
        part = 0.0
        for t in range(lo, min(lo + CHUNK, n)):
            r = int(perm[t])
            u, i = int(users[r]), int(items[r])
            pf = P[u].astype(np.float64)
            qf = Q[i].astype(np.float64)
            e = float(ratings[r]) - (mu + _dot(pf, qf))
            part += e * e
            if rule == 0:
                P[u] = (pf + eta * (e * qf - reg * pf)).astype(P.dtype)
                Q[i] = (qf + eta * (e * pf - reg * qf)).astype(Q.dtype)
            else:
                gp = reg * pf - e * qf
                gq = reg * qf - e * pf
                GP[u] = (GP[u].astype(np.float64) + gp * gp).astype(GP.dtype)
                GQ[i] = (GQ[i].astype(np.float64) + gq * gq).astype(GQ.dtype)
                P[u] = (pf - eta * gp / (np.sqrt(GP[u].astype(np.float64)) + eps)).astype(P.dtype)
                Q[i] = (qf - eta * gq / (np.sqrt(GQ[i].astype(np.float64)) + eps)).astype(Q.dtype)
        total += part
    return total
