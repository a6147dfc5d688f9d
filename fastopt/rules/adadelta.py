"""AdaDelta (Zeiler 2012) in PyTorch's form."""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

ADADELTA = Rule(
    name="adadelta",
    doc="v = ρ v + (1-ρ) g²; Δ = √(u + ε)/√(v + ε) · g; u = ρ u + (1-ρ) Δ²; p -= lr Δ",
    state=("square_avg", "acc_delta"),
    domains={"square_avg": NONNEG, "acc_delta": NONNEG},
    hyper=(Hyper("rho", 0.9, lo=0.0, hi=1.0), Hyper("eps", 1e-6, lo=0.0)),
    scalars="""
r = rho
omr = 1.0 - rho
eps_ = eps
""",
    outputs=("r", "omr", "eps_"),
    body="""
square_avg = r * square_avg + omr * (g * g)
delta = sqrt(acc_delta + eps_) / sqrt(square_avg + eps_) * g
acc_delta = r * acc_delta + omr * (delta * delta)
p = p - lr * delta
""",
    lr=1.0,
    sparse_decay={"square_avg": "r", "acc_delta": "r"},
)

RULES = (ADADELTA,)

CLASSES = (ClassSpec(
    name="Adadelta",
    doc="""AdaDelta: ``v = ρ v + (1-ρ) g²``; ``Δ = √(u + ε)/√(v + ε) · g``;
    ``u = ρ u + (1-ρ) Δ²``; ``p -= lr Δ``.""",
    rules=(("adadelta", {}),),
    args=("lr", "rho", "eps", "weight_decay"),
    bench=Bench("adadelta", torch="Adadelta"),
),)
