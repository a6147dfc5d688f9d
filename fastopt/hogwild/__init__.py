"""Hogwild! (Niu, Recht, Ré, Wright 2011): lock-free multi-threaded SGD over sparse data.

* :class:`LinearSGD` -- logistic, hinge and squared loss on CSR data with L2, L1 and
  elastic-net penalties (scikit-learn ``SGDClassifier``'s arithmetic; plain SGD or sparse Adagrad).
* :class:`MatrixFactorization` -- Netflix-style ``r_ui ~ mu + <P_u, Q_i>``; each rating
  touches one row of each factor table.
* :func:`make_rcv1_like`, :func:`make_netflix_like` -- seeded synthetic data sets of
  those shapes (no downloads).

Every epoch runs in :mod:`fastopt._kernels.hogwild`: the threads take chunks of a seeded
per-epoch permutation and write their sparse updates into the shared weights without
locks. ``threads=1`` is bitwise reproducible and matches :mod:`fastopt.reference.hogwild`.
"""
from fastopt.hogwild._check import CSR
from fastopt.hogwild.data import make_netflix_like, make_rcv1_like
from fastopt.hogwild.linear import LinearSGD
from fastopt.hogwild.mf import MatrixFactorization

__all__ = ["CSR", "LinearSGD", "MatrixFactorization", "make_rcv1_like", "make_netflix_like"]
