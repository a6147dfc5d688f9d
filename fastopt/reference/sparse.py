"""The sparse (row-wise) step in plain NumPy: what ``fastopt/_kernels/sparse.pyx`` and
the row kernels (``rows.pyx``) do, written to be read. See :mod:`fastopt.sparse` for
the semantics."""
import math

import numpy as np

from fastopt.reference.rules import noise_key, normals_at


def binned_sum(group):
    """The order-independent sum of the rows of ``group`` (m >= 3 rows, float32 or float64),
    per column: with ``|x| < 2^e`` for every value of the column (``e`` from the largest
    magnitude's exponent field, subnormals as the smallest normal's) and ``L =
    m.bit_length()``, in float64,

        q1 = (x + C1) - C1, C1 = 1.5 * 2^(e + L);  q2 = (r + C2) - C2, C2 = 1.5 * 2^(e + 2L - 53),

    with ``r = x - q1``; the sum is ``(Σq1 + Σq2)`` rounded to the group's type. Both sums
    are exact (every term is a multiple of its grid and the totals stay within 2^53
    steps), so NumPy's summation order cannot matter. A float64 column with ``e + L >
    1023`` is scaled by 2^-64 first and by 2^64 after. Special columns: all zeros give
    -0 exactly when all are -0; a NaN, or +inf with -inf, gives NaN; infinities of one
    sign give that infinity."""
    dt = group.dtype
    m = group.shape[0]
    nbits = 8 * dt.itemsize
    bits = np.dtype(f"u{dt.itemsize}")
    mant, bias = (23, 127) if dt == np.float32 else (52, 1023)
    u = group.view(bits)
    inf = bits.type(0x7F800000) if dt == np.float32 else bits.type(0x7FF0000000000000)
    mx = (u & ~(bits.type(1) << bits.type(nbits - 1))).max(axis=0)
    allneg = (np.bitwise_and.reduce(u, axis=0) >> bits.type(nbits - 1)).astype(bool)
    e = np.maximum((mx >> bits.type(mant)).astype(np.int64), 1) - bias + 1
    L = int(m).bit_length()
    x = group.astype(np.float64)
    scaled = np.zeros(e.shape, bool)
    if dt == np.float64:
        scaled = e + L > 1023
        x = np.where(scaled, x * 2.0 ** -64, x)
        e = np.where(scaled, e - 64, e)
    c1 = np.ldexp(1.5, e + L)
    c2 = np.ldexp(1.5, e + 2 * L - 53)
    with np.errstate(invalid="ignore", over="ignore"):    # inf/NaN columns: replaced below
        q1 = (x + c1) - c1
        q2 = ((x - q1) + c2) - c2
        total = (q1.sum(axis=0) + q2.sum(axis=0)) * np.where(scaled, 2.0 ** 64, 1.0)
        out = total.astype(dt)
    out[mx == 0] = np.where(allneg[mx == 0], dt.type(-0.0), dt.type(0.0))
    for c in np.flatnonzero(mx >= inf):
        col = group[:, c]
        nan = np.isnan(col).any() or (np.isposinf(col).any() and np.isneginf(col).any())
        out[c] = np.nan if nan else (np.inf if np.isposinf(col).any() else -np.inf)
    return out


def coalesce(indices, values):
    """``(rows, summed)``: the sorted unique indices, and per row the sum of its value
    rows — one row as it is; two: ``a + b`` in the values' precision; more:
    :func:`binned_sum` (so any order of the duplicates gives the same bits)."""
    indices = np.asarray(indices, dtype=np.int64)
    rows, inverse = np.unique(indices, return_inverse=True)
    out = np.empty((rows.size,) + values.shape[1:], values.dtype)
    for u in range(rows.size):
        group = values[inverse == u]
        if group.shape[0] == 1:
            out[u] = group[0]
        elif group.shape[0] == 2:
            out[u] = group[0] + group[1]
        else:
            out[u] = binned_sum(group)
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
