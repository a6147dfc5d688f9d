"""Stateful optimizers over lists of NumPy arrays (see :class:`fastopt.optim.Optimizer`)."""
from fastopt.optim.base import NonFiniteGradientError, Optimizer
from fastopt.optim.optimizers import (ALL, SGD, AMSGrad, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, Momentum,
                                      NAdam, Nesterov, RAdam, RMSprop)
from fastopt.optim.state import flatten_state_dict, unflatten_state_dict

__all__ = ["Optimizer", "NonFiniteGradientError", "SGD", "Momentum", "Nesterov", "Adagrad", "RMSprop", "Adadelta",
           "Adam", "AdamW", "AMSGrad", "NAdam", "Adamax", "RAdam", "Lion", "flatten_state_dict",
           "unflatten_state_dict", "ALL"]
