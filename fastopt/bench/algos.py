"""The benchmarked optimizers: each fastopt class, the rule it runs and its torch twin."""
from __future__ import annotations

from dataclasses import dataclass, field

from fastopt.rules import BY_NAME

__all__ = ["Algo", "ALGOS", "ALGO_BY_KEY"]


@dataclass(frozen=True)
class Algo:
    """One benchmarked optimizer: the fastopt/reference class and its arguments, the
    kernel (rule) it runs, and the matching ``torch.optim`` class (None: no equivalent)."""
    key: str
    cls: str
    rule: str
    kwargs: dict = field(default_factory=dict)
    torch_cls: str | None = None
    torch_kwargs: dict = field(default_factory=dict)

    @property
    def accesses(self):
        """Array accesses per element of one step (param r+w, grad r, each state r+w)."""
        return BY_NAME[self.rule].accesses_per_element

    @property
    def nstate(self):
        """Number of per-element state buffers."""
        return len(BY_NAME[self.rule].state)


ALGOS = (
    Algo("sgd", "SGD", "sgd", {"lr": 1e-3}, "SGD", {"lr": 1e-3}),
    Algo("momentum", "Momentum", "momentum", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9}),
    Algo("nesterov", "Nesterov", "nesterov", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    Algo("adagrad", "Adagrad", "adagrad", {}, "Adagrad"),
    Algo("rmsprop", "RMSprop", "rmsprop", {}, "RMSprop"),
    Algo("adadelta", "Adadelta", "adadelta", {}, "Adadelta"),
    Algo("adam", "Adam", "adam", {}, "Adam"),
    Algo("adamw", "AdamW", "adam", {}, "AdamW"),
    Algo("amsgrad", "AMSGrad", "adam_amsgrad", {}, "Adam", {"amsgrad": True}),
    Algo("nadam", "NAdam", "nadam", {}, "NAdam"),
    Algo("adamax", "Adamax", "adamax", {}, "Adamax"),
    Algo("radam", "RAdam", "radam", {}, "RAdam"),
    Algo("lion", "Lion", "lion", {}, None),
)
ALGO_BY_KEY = {a.key: a for a in ALGOS}
