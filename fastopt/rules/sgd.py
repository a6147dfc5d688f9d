"""SGD, heavy-ball momentum and Nesterov momentum (PyTorch ``torch.optim.SGD`` forms)."""
from dataclasses import replace

from ._spec import Hyper, Rule

MOMENTUM = Hyper("momentum", 0.0, lo=0.0, hi=1.0, doc="momentum factor μ")
DAMPENING = Hyper("dampening", 0.0, lo=0.0, hi=1.0, doc="dampening of the gradient term")

SGD = Rule(
    name="sgd",
    doc="p -= lr g",
    body="p = p - lr * g",
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
