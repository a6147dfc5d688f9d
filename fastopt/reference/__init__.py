"""The reference path: every update rule in plain NumPy (:mod:`fastopt.reference.rules`)
and the optimizer classes stepping with it (``fastopt.reference.Adam``, ...). Written
for clarity; used by the differential tests and as the NumPy baseline of benchmarks."""
from fastopt.reference import rules, second_order
from fastopt.reference.optim import *  # noqa: F401,F403
from fastopt.reference.optim import __all__ as _classes

__all__ = ["rules", "second_order"] + list(_classes)
