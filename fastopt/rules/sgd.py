"""SGD, heavy-ball momentum and Nesterov momentum (PyTorch ``torch.optim.SGD`` forms)."""
from dataclasses import replace

from ._classes import Bench, ClassSpec
from ._spec import Hyper, Rule

MOMENTUM = Hyper("momentum", 0.0, lo=0.0, hi=1.0, doc="momentum factor μ")
DAMPENING = Hyper("dampening", 0.0, lo=0.0, hi=1.0, doc="dampening of the gradient term")

SGD = Rule(
    name="sgd",
    doc="p -= lr g",
    body="p = p - lr * g",
    sparse_decay={},
)

# The first step copies the gradient into the buffer (b = g), as PyTorch does.
_MOMENTUM_SCALARS = """
first = 1 if t == 1.0 else 0
mu = momentum
omd = 1.0 - dampening
"""

MOMENTUM_RULE = Rule(
    name="momentum",
    doc="b = g on the first step, else b = μ b + (1 - dampening) g; p -= lr b",
    state=("momentum_buffer",),
    hyper=(MOMENTUM, DAMPENING),
    scalars=_MOMENTUM_SCALARS,
    outputs=("first", "mu", "omd"),
    flags=("first",),
    body="""
momentum_buffer = g if first else mu * momentum_buffer + omd * g
p = p - lr * momentum_buffer
""",
)

NESTEROV = replace(
    MOMENTUM_RULE,
    name="nesterov",
    doc="b as momentum (dampening 0); d = g + μ b; p -= lr d",
    body="""
momentum_buffer = g if first else mu * momentum_buffer + omd * g
d = g + mu * momentum_buffer
p = p - lr * d
""",
)

RULES = (SGD, MOMENTUM_RULE, NESTEROV)


def _nesterov_needs_momentum(group):
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")


SGD_CLASS = ClassSpec(
    name="SGD",
    doc="""Stochastic gradient descent, optionally with (Nesterov) momentum.

    * plain: ``p -= lr g``
    * momentum μ > 0: ``b = g`` on the first step, then ``b = μ b + (1 - dampening) g``;
      ``p -= lr b`` (``dampening = μ`` gives the EMA form)
    * ``nesterov=True``: ``b`` as above with dampening 0; ``p -= lr (g + μ b)``
    """,
    rules=(("nesterov", {"nesterov": True}), ("momentum", {"momentum": True}), ("sgd", {})),
    args=("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    flags=("nesterov",),
    check=_nesterov_needs_momentum,
    bench=Bench("sgd", {"lr": 1e-3}, "SGD", {"lr": 1e-3}),
)

CLASSES = (
    SGD_CLASS,
    SGD_CLASS.subclass("Momentum", "SGD with heavy-ball momentum (μ = 0.9 by default); see :class:`SGD`.",
                       defaults={"momentum": 0.9},
                       bench=Bench("momentum", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9})),
    SGD_CLASS.subclass("Nesterov", "SGD with Nesterov momentum (μ = 0.9 by default): ``p -= lr (g + μ b)``; "
                                   "see :class:`SGD`.",
                       defaults={"momentum": 0.9}, preset={"dampening": 0.0, "nesterov": True},
                       bench=Bench("nesterov", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True})),
)
