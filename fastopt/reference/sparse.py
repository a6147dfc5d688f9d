"""The sparse (row-wise) step in plain NumPy: what ``fastopt/_kernels/sparse.pyx`` and
the row kernels (``rows.pyx``) do, written to be read. See :mod:`fastopt.sparse` for
the semantics."""
import math

import numpy as np

from fastopt.reference.rules import noise_key, normals_at


def _ascending(group):
    """Each column of ``group`` in ascending order of value (-0 before +0), the values
    themselves moved, never rewritten: ``np.sort``'s SIMD path may hand back -0 for +0,
    so the order comes from an argsort of the order-preserving integer keys the kernels
    sort (negative: all bits flipped; otherwise the sign bit set)."""
    bits = np.dtype(f"u{group.dtype.itemsize}")
    u = group.view(bits)
    sign = bits.type(1) << bits.type(8 * group.dtype.itemsize - 1)
    keys = np.where(u & sign, ~u, u | sign)
    return np.take_along_axis(group, np.argsort(keys, axis=0, kind="stable"), axis=0)


def coalesce(indices, values):
    """``(rows, summed)``: the sorted unique indices, and per row the sum of its value
    rows — one row as it is; several: each column's values sorted ascending and added
    one after another in the values' precision (so any order of the duplicates gives
    the same bits)."""
    indices = np.asarray(indices, dtype=np.int64)
    rows, inverse = np.unique(indices, return_inverse=True)
    out = np.empty((rows.size,) + values.shape[1:], values.dtype)
    for u in range(rows.size):
        group = values[inverse == u]
        if group.shape[0] == 1:
            out[u] = group[0]
            continue
        ordered = _ascending(group)
        acc = ordered[0].copy()
        for row in ordered[1:]:
            acc = acc + row
        out[u] = acc
    return rows, out


def row_noise(seed, t, param_index, rows, dim, eta, gamma, dtype):
    """The gradient noise of a dense step at the elements of ``rows``, shaped (len(rows), dim)."""
    sigma = math.sqrt(eta / (1.0 + t) ** gamma)
    elements = (np.asarray(rows, np.int64)[:, None] * dim + np.arange(dim)[None, :]).reshape(-1)
    z = normals_at(noise_key(seed, t, param_index), elements)
    return (sigma * z).astype(dtype).reshape(len(rows), dim)


def decay_factors(d, missed, dtype):
    """Per row, ``d^k`` for its ``k`` missed steps (1 where none): ``d`` rounded to
    ``dtype``, the power in double, rounded once — the row kernels' catch-up factor."""
    f = np.ones(missed.shape, dtype)
    for k in np.unique(missed):
        if k > 0:
            f[missed == k] = dtype.type(math.pow(float(dtype.type(d)), float(k)))
    return f


def rowwise_adagrad(param, state_sum, rows, grad_rows, clr, eps, maximize, weight_decay, threads=0):
    """Row-wise AdaGrad on ``rows`` (see ``fastopt/_kernels/rowwise.pyx``):
    ``g = ±g + λ p``; ``s_r += mean(g²)`` (float64 over eight lanes by column, rounded
    once); ``p_r -= clr · g / (√s_r + ε)``. In place; ``threads`` is ignored."""
    dt = param.dtype.type
    p = param[rows]
    x = grad_rows * dt(-1.0 if maximize else 1.0)
    if weight_decay != 0.0:
        x = x + dt(weight_decay) * p
    sq = x.astype(np.float64) * x.astype(np.float64)
    lanes = np.zeros((len(rows), 8))
    for j in range(param.shape[1]):
        lanes[:, j & 7] += sq[:, j]
    total = ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])) + \
        ((lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7]))
    s = state_sum[rows] + (total / float(param.shape[1])).astype(param.dtype)
    state_sum[rows] = s
    den = np.sqrt(s) + dt(eps)
    param[rows] = p - dt(clr) * (x / den[:, None])
