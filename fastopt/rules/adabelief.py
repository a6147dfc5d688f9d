"""AdaBelief (Zhuang et al. 2020): Adam with the second moment of the gradient's
deviation from its EMA ("belief") in place of the raw second moment.

The default is adabelief-pytorch's and torch-optimizer's form: the deviation uses
the *updated* m, and ε is added to s in place (it stays in the state):

    m = β1 m + (1-β1) g;  s = β2 s + (1-β2)(g - m)² + ε;
    p -= lr/bc1 · m / (√s/√bc2 + ε)

``variant="optax"`` is optax's ``adabelief``: the deviation uses the *previous* m, and
the denominator is √(s/bc2) + ε (optax's ``eps_root``, added to s in place, is ``eps``
here; optax's defaults make the two equal).

Everything about the rule is in this file: kernels, class, reference and bench row.
"""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

_HYPER = (
    Hyper("beta1", 0.9, lo=0.0, hi=1.0, hi_open=True),
    Hyper("beta2", 0.999, lo=0.0, hi=1.0, hi_open=True),
    Hyper("eps", 1e-16, lo=0.0),
)
_SCALARS = """
b1 = beta1
b2 = beta2
omb1 = 1.0 - beta1
omb2 = 1.0 - beta2
bc1 = 1.0 - beta1 ** t
bc2 = 1.0 - beta2 ** t
"""


def reference(p, g, exp_avg, exp_avg_var, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-16):
    """m = β1 m + (1-β1) g; s = β2 s + (1-β2)(g - m)² + ε (the new m);
    p = p - (lr / (1-β1^t)) · m / (√s / √(1-β2^t) + ε)"""
    import math
    import numpy as np
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    d = g - exp_avg
    exp_avg_var[...] = beta2 * exp_avg_var + (1.0 - beta2) * (d * d) + eps
    step_size = lr / (1.0 - beta1 ** t)
    p -= step_size * (exp_avg / (np.sqrt(exp_avg_var) / math.sqrt(1.0 - beta2 ** t) + eps))


def reference_optax(p, g, exp_avg, exp_avg_var, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-16):
    """d = g - m (the previous m); m = β1 m + (1-β1) g; s = β2 s + (1-β2) d² + ε;
    p = p - lr · (m / (1-β1^t)) / (√(s / (1-β2^t)) + ε)"""
    import numpy as np
    d = g - exp_avg
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_var[...] = beta2 * exp_avg_var + (1.0 - beta2) * (d * d) + eps
    p -= lr * (exp_avg / (1.0 - beta1 ** t) / (np.sqrt(exp_avg_var / (1.0 - beta2 ** t)) + eps))


ADABELIEF = Rule(
    name="adabelief",
    doc="m = β1 m + (1-β1) g; s = β2 s + (1-β2)(g-m)² + ε; p -= lr/bc1 · m / (√s/√bc2 + ε)",
    state=("exp_avg", "exp_avg_var"),
    domains={"exp_avg_var": NONNEG},
    hyper=_HYPER,
    scalars=_SCALARS + """
step_size = lr / bc1
sqrt_bc2 = sqrt(bc2)
""",
    outputs=("b1", "b2", "omb1", "omb2", "eps", "step_size", "sqrt_bc2"),
    body="""
exp_avg = b1 * exp_avg + omb1 * g
dev = g - exp_avg
exp_avg_var = b2 * exp_avg_var + omb2 * (dev * dev) + eps
p = p - step_size * (exp_avg / (sqrt(exp_avg_var) / sqrt_bc2 + eps))
""",
    reference=reference,
)

ADABELIEF_OPTAX = Rule(
    name="adabelief_optax",
    doc="d = g - m; m = β1 m + (1-β1) g; s = β2 s + (1-β2) d² + ε; p -= lr (m/bc1) / (√(s/bc2) + ε)",
    state=("exp_avg", "exp_avg_var"),
    domains={"exp_avg_var": NONNEG},
    hyper=_HYPER,
    scalars=_SCALARS,
    outputs=("b1", "b2", "omb1", "omb2", "eps", "bc1", "bc2"),
    body="""
dev = g - exp_avg
exp_avg = b1 * exp_avg + omb1 * g
exp_avg_var = b2 * exp_avg_var + omb2 * (dev * dev) + eps
p = p - lr * (exp_avg / bc1 / (sqrt(exp_avg_var / bc2) + eps))
""",
    reference=reference_optax,
)

RULES = (ADABELIEF, ADABELIEF_OPTAX)

CLASSES = (ClassSpec(
    name="AdaBelief",
    doc="""AdaBelief: ``m = β1 m + (1-β1) g``; ``s = β2 s + (1-β2)(g - m)² + ε``;
    ``p -= (lr / (1-β1^t)) m / (√s / √(1-β2^t) + ε)`` (``variant="pytorch"``, the default:
    adabelief-pytorch's form, the new m in ``g - m``). ``variant="optax"``: ``g - m`` with
    the previous m, ``p -= lr (m/(1-β1^t)) / (√(s/(1-β2^t)) + ε)``.
    ``decoupled_weight_decay=True`` is torch-optimizer's ``weight_decouple``.""",
    rules=(("adabelief", {"variant": "pytorch"}), ("adabelief_optax", {"variant": "optax"})),
    args=("lr", "betas", "eps", "weight_decay"),
    kwonly=("variant", "maximize", "decoupled_weight_decay", "clip_value"),
    defaults={"variant": "pytorch"},
    packed={"betas": ("beta1", "beta2")},
    bench=Bench("adabelief"),
),)
