"""fastopt: fused, OpenMP-parallel optimizer update kernels for NumPy arrays.

>>> import numpy as np, fastopt
>>> w = np.zeros(1_000_000, np.float32)
>>> opt = fastopt.Adam([w], lr=1e-3)
>>> opt.step([np.ones_like(w)])           # one fused pass, all threads
True
"""
from fastopt._kernels.driver import get_num_threads, openmp_enabled, set_num_threads
from fastopt.optim import (SGD, AMSGrad, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, Momentum, NAdam, Nesterov,
                           NonFiniteGradientError, Optimizer, RAdam, RMSprop, flatten_state_dict,
                           unflatten_state_dict)
from fastopt import kernels, schedules

__version__ = "0.1.0"

__all__ = ["SGD", "Momentum", "Nesterov", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "AMSGrad", "NAdam",
           "Adamax", "RAdam", "Lion", "Optimizer", "NonFiniteGradientError", "flatten_state_dict",
           "unflatten_state_dict", "get_num_threads", "set_num_threads", "openmp_enabled", "kernels", "schedules"]
