"""AdaGrad (Duchi et al. 2011) in PyTorch's form, with ``lr_decay``."""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

ADAGRAD = Rule(
    name="adagrad",
    doc="clr = lr / (1 + (t-1) lr_decay); s += g²; p -= clr g / (√s + ε)",
    state=("sum",),
    state_init={"sum": "initial_accumulator_value"},
    domains={"sum": NONNEG},
    hyper=(
        Hyper("lr_decay", 0.0, lo=0.0),
        Hyper("initial_accumulator_value", 0.0, lo=0.0),
        Hyper("eps", 1e-10, lo=0.0),
    ),
    scalars="""
clr = lr / (1.0 + (t - 1.0) * lr_decay)
eps_ = eps
""",
    outputs=("clr", "eps_"),
    body="""
sum = sum + g * g
p = p - clr * (g / (sqrt(sum) + eps_))
""",
    lr=1e-2,
    sparse_decay={},
)

RULES = (ADAGRAD,)

CLASSES = (ClassSpec(
    name="Adagrad",
    doc="""AdaGrad: ``clr = lr / (1 + (t-1) lr_decay)``; ``s += g²``; ``p -= clr g / (√s + ε)``,
    with ``s`` starting at ``initial_accumulator_value``.""",
    rules=(("adagrad", {}),),
    args=("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
    bench=Bench("adagrad", torch="Adagrad"),
),)
