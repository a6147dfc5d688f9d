"""Second-order methods: L-BFGS (:class:`LBFGS`), Newton's method (dense, Newton-CG)
and the SciPy-style :func:`minimize` over them and over every first-order rule."""
from fastopt.second_order._common import NonFiniteValueError, Status
from fastopt.second_order.lbfgs import LBFGS, StepInfo
from fastopt.second_order.linesearch import armijo, strong_wolfe
from fastopt.second_order.minimize import OptimizeResult, minimize
