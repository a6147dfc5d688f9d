"""fastopt: fused, OpenMP-parallel optimizer update kernels for NumPy arrays.

>>> import numpy as np, fastopt
>>> w = np.zeros(1_000_000, np.float32)
>>> opt = fastopt.Adam([w], lr=1e-3)
>>> opt.step([np.ones_like(w)])           # one fused pass, all threads
True
"""
from fastopt._kernels.driver import get_num_threads, openmp_enabled, set_num_threads
from fastopt import optim
from fastopt.optim import NonFiniteGradientError, Optimizer, ReentryError, flatten_state_dict, unflatten_state_dict
from fastopt import kernels, schedules
from fastopt.lowprec.storage import Precision
from fastopt.lowprec.convert import convert_precision
from fastopt.second_order import LBFGS, OptimizeResult, minimize
from fastopt.gradcheck import check_grad
from fastopt.sparse import SparseGrad
from fastopt.optim import RowwiseAdagrad

# the optimizer classes, one per fastopt.rules.ClassSpec
globals().update({cls.__name__: cls for cls in optim.ALL})

__version__ = "0.1.0"

__all__ = ([cls.__name__ for cls in optim.ALL]
           + ["Optimizer", "NonFiniteGradientError", "ReentryError", "flatten_state_dict", "unflatten_state_dict",
              "get_num_threads", "set_num_threads", "openmp_enabled", "kernels", "schedules", "LBFGS", "minimize",
              "OptimizeResult", "check_grad", "SparseGrad", "RowwiseAdagrad", "Precision", "convert_precision"])
