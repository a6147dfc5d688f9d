"""Stateful optimizers over lists of NumPy arrays (see :class:`fastopt.optim.Optimizer`).

The classes (``SGD``, ``Adam``, ... : ``ALL``) are built from ``fastopt.rules.CLASSES``."""
from fastopt.optim.base import NonFiniteGradientError, Optimizer, ReentryError
from fastopt.optim.optimizers import ALL
from fastopt.optim.rowwise import RowwiseAdagrad
from fastopt.optim.state import flatten_state_dict, unflatten_state_dict

globals().update({cls.__name__: cls for cls in ALL})

__all__ = (["Optimizer", "NonFiniteGradientError", "ReentryError"] + [cls.__name__ for cls in ALL]
           + ["flatten_state_dict", "unflatten_state_dict", "ALL", "RowwiseAdagrad"])
