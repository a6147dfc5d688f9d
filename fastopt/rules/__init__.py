"""The update rules, one source of truth each.

Every rule is a :class:`Rule`: its state, hyper-parameters, the once-per-step scalar
code and the per-element body. The build turns these into the float32 and float64
kernels (``fastopt/_kernels/_codegen.py``); the optimizer classes read them for
validation and state layout. This package imports nothing outside the standard
library so that the build can load it before anything is compiled.
"""
from ._spec import NONNEG, Hyper, Rule
from . import adadelta, adagrad, adam, rmsprop, sgd

RULES = sgd.RULES + adagrad.RULES + rmsprop.RULES + adadelta.RULES + adam.RULES
BY_NAME = {r.name: r for r in RULES}

# Slots of the per-step scalar vector that every kernel reads before its own outputs.
COMMON_SCALARS = ("sign", "has_wd", "wd", "coef", "clip", "decay", "sigma", "lr")

# The hyper-parameters every rule takes besides its own (checked by every entry point).
LR = Hyper("lr", 1e-3, lo=0.0)
WEIGHT_DECAY = Hyper("weight_decay", 0.0, lo=0.0)
CLIP_VALUE = Hyper("clip_value", float("inf"), lo=0.0, lo_open=True)
FLAG = Hyper("flag", 0.0, kind="bool")     # pass the flag's name as the label
MAX_STEP = 2 ** 53                         # steps reach the kernels as doubles

__all__ = ["Hyper", "Rule", "NONNEG", "RULES", "BY_NAME", "COMMON_SCALARS", "LR", "WEIGHT_DECAY", "CLIP_VALUE", "FLAG",
           "MAX_STEP"]
