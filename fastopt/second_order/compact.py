"""The L-BFGS two-loop recursion on coefficients (vector-free L-BFGS, Chen, Wang & Zhou,
NIPS 2014), so that one iteration reads the history twice instead of 4m times.

The direction of the two-loop recursion is a linear combination of the current
gradient and the stored pairs: ``d = c_g g + Σᵢ c_sᵢ sᵢ + Σᵢ c_yᵢ yᵢ``. Every dot product
the recursion takes is a dot product of two of those vectors, so with the Gram
entries ``sᵢᵀyⱼ``, ``yᵢᵀyⱼ`` (kept from iteration to iteration) and ``sᵢᵀg``, ``yᵢᵀg``
(one fused pass per iteration) the recursion runs on m-vectors of coefficients:

* ``q = -g + Σ qyⱼ yⱼ``; for i newest → oldest: ``αᵢ = ρᵢ sᵢᵀq = ρᵢ (-sᵢᵀg + Σⱼ>ᵢ qyⱼ sᵢᵀyⱼ)``,
  ``qyᵢ = -αᵢ``;
* ``d = γ q``: ``c_g = -γ``, ``c_y = γ qy``, ``c_s = 0``; for i oldest → newest:
  ``βᵢ = ρᵢ yᵢᵀd = ρᵢ (c_g yᵢᵀg + Σⱼ c_yⱼ yᵢᵀyⱼ + Σⱼ<ᵢ c_sⱼ sⱼᵀyᵢ)``, ``c_sᵢ = αᵢ - βᵢ``;

and one more pass forms ``d`` (:func:`fastopt._kernels.vecops.combine`, float64
accumulation, one rounding). The arithmetic is the classic recursion's in another
order: the iterates agree with the classic two-loop to rounding (the classic loop
rounds ``q`` and ``d`` to the vector's dtype after each of its 2m updates; this one
rounds ``d`` once — in float32 it is the more accurate of the two).
"""
import numpy as np

__all__ = ["coefficients"]


def coefficients(rho, Sg, Yg, SY, YY, gamma):
    """``(c_g, c_s, c_y)`` of the direction ``d = -H g`` for ``m`` pairs, oldest first:
    ``rho[i] = 1/sᵢᵀyᵢ``, ``Sg[i] = sᵢᵀg``, ``Yg[i] = yᵢᵀg``, ``SY[i, j] = sᵢᵀyⱼ``,
    ``YY[i, j] = yᵢᵀyⱼ`` (float64 arrays), ``γ`` the initial scaling."""
    m = len(rho)
    qy = np.zeros(m)
    al = np.zeros(m)
    for i in range(m - 1, -1, -1):
        sq = -Sg[i] + float(np.dot(SY[i, i + 1:], qy[i + 1:]))
        al[i] = sq * rho[i]
        qy[i] = -al[i]
    cg = -gamma
    cy = gamma * qy
    cs = np.zeros(m)
    for i in range(m):
        yd = cg * Yg[i] + float(np.dot(YY[i], cy)) + float(np.dot(SY[:i, i], cs[:i]))
        cs[i] = al[i] - yd * rho[i]
    return cg, cs, cy
