"""Adam (Kingma & Ba 2015), its AMSGrad variant (Reddi et al. 2018), and the
variants that share its two moments: NAdam (both forms), Adamax, RAdam."""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

BETA1 = Hyper("beta1", 0.9, lo=0.0, hi=1.0, hi_open=True)
BETA2 = Hyper("beta2", 0.999, lo=0.0, hi=1.0, hi_open=True)
EPS = Hyper("eps", 1e-8, lo=0.0)

_MOMENTS = """
exp_avg = b1 * exp_avg + omb1 * g
exp_avg_sq = b2 * exp_avg_sq + omb2 * (g * g)
"""
_BETAS = """
b1 = beta1
b2 = beta2
omb1 = 1.0 - beta1
omb2 = 1.0 - beta2
eps_ = eps
"""
_BETA_OUT = ("b1", "b2", "omb1", "omb2", "eps_")



ADAM = Rule(
    name="adam",
    doc="m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²; p -= (lr/bc1) m / (√v/√bc2 + ε)",
    state=("exp_avg", "exp_avg_sq"),
    domains={"exp_avg_sq": NONNEG},
    hyper=(BETA1, BETA2, EPS),
    scalars=_BETAS + """
bc1 = 1.0 - beta1 ** t
bc2 = 1.0 - beta2 ** t
step_size = lr / bc1
sqrt_bc2 = sqrt(bc2)
""",
    outputs=_BETA_OUT + ("step_size", "sqrt_bc2"),
    body=_MOMENTS + """
p = p - step_size * (exp_avg / (sqrt(exp_avg_sq) / sqrt_bc2 + eps_))
""",
)

AMSGRAD = Rule(
    name="adam_amsgrad",
    doc="as Adam, with v̂max = max(v̂max, v) in place of v in the denominator",
    state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    domains={"exp_avg_sq": NONNEG, "max_exp_avg_sq": NONNEG},
    hyper=ADAM.hyper,
    scalars=ADAM.scalars,
    outputs=ADAM.outputs,
    # max that propagates NaN like numpy.maximum
    body=_MOMENTS + """
max_exp_avg_sq = max_exp_avg_sq if max_exp_avg_sq >= exp_avg_sq or max_exp_avg_sq != max_exp_avg_sq else exp_avg_sq
p = p - step_size * (exp_avg / (sqrt(max_exp_avg_sq) / sqrt_bc2 + eps_))
""",
    reference="adam",
)

NADAM = Rule(
    name="nadam",
    doc=("μ_t = β1(1 - ½·0.96^(tψ)); μ_prod *= μ_t; m, v as Adam; den = √(v/bc2) + ε; "
         "p -= lr(1-μ_t)/(1-μ_prod) · g/den; p -= lr μ_{t+1}/(1-μ_prod μ_{t+1}) · m/den"),
    state=("exp_avg", "exp_avg_sq"),
    hyper=(BETA1, BETA2, EPS, Hyper("momentum_decay", 4e-3, lo=0.0)),
    scalar_state=(("mu_product", 1.0),),
    # a product of momentum coefficients, each in [0, 1)
    domains={"exp_avg_sq": NONNEG, "mu_product": Hyper("mu_product", 1.0, lo=0.0, hi=1.0)},
    scalars=_BETAS + """
bc2 = 1.0 - beta2 ** t
mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * momentum_decay))
mu_product = mu_product * mu
c_grad = lr * (1.0 - mu) / (1.0 - mu_product)
c_avg = lr * mu_next / (1.0 - mu_product * mu_next)
bc2_ = bc2
""",
    outputs=_BETA_OUT + ("c_grad", "c_avg", "bc2_"),
    body=_MOMENTS + """
den = sqrt(exp_avg_sq / bc2_) + eps_
p = p - c_grad * (g / den)
p = p - c_avg * (exp_avg / den)
""",
    lr=2e-3,
)

NADAM_OPTAX = Rule(
    name="nadam_optax",
    doc="m, v as Adam; m̄ = β1 m/(1-β1^(t+1)) + (1-β1) g/(1-β1^t); p -= lr m̄ / (√(v/bc2) + ε)",
    state=("exp_avg", "exp_avg_sq"),
    domains={"exp_avg_sq": NONNEG},
    hyper=(BETA1, BETA2, EPS),
    scalars=_BETAS + """
c_avg = beta1 / (1.0 - beta1 ** (t + 1.0))
c_grad = (1.0 - beta1) / (1.0 - beta1 ** t)
bc2_ = 1.0 - beta2 ** t
""",
    outputs=_BETA_OUT + ("c_avg", "c_grad", "bc2_"),
    body=_MOMENTS + """
mbar = c_avg * exp_avg + c_grad * g
p = p - lr * (mbar / (sqrt(exp_avg_sq / bc2_) + eps_))
""",
    lr=2e-3,
)

ADAMAX = Rule(
    name="adamax",
    doc="m as Adam; u = max(β2 u, |g| + ε); p -= lr/(1-β1^t) · m/u",
    state=("exp_avg", "exp_inf"),
    domains={"exp_inf": NONNEG},
    hyper=(BETA1, BETA2, EPS),
    scalars=_BETAS + """
clr = lr / (1.0 - beta1 ** t)
""",
    outputs=_BETA_OUT + ("clr",),
    body="""
exp_avg = b1 * exp_avg + omb1 * g
decayed = b2 * exp_inf
fresh = fabs(g) + eps_
exp_inf = decayed if decayed >= fresh or decayed != decayed else fresh
p = p - clr * (exp_avg / exp_inf)
""",
    lr=2e-3,
)

RADAM = Rule(
    name="radam",
    doc=("m, v as Adam; ρ∞ = 2/(1-β2) - 1; ρ_t = ρ∞ - 2tβ2^t/bc2; if ρ_t > 5: "
         "p -= (m/bc1) lr (√bc2/(√v + ε)) r, else p -= (m/bc1) lr"),
    state=("exp_avg", "exp_avg_sq"),
    domains={"exp_avg_sq": NONNEG},
    hyper=(BETA1, BETA2, EPS),
    scalars=_BETAS + """
bc1 = 1.0 - beta1 ** t
bc2 = 1.0 - beta2 ** t
rho_inf = 2.0 / (1.0 - beta2) - 1.0
rho_t = rho_inf - 2.0 * t * beta2 ** t / bc2
rectify = 1 if rho_t > 5.0 else 0
rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) if rectify else 0.0
bc1_ = bc1
sqrt_bc2 = sqrt(bc2)
""",
    outputs=_BETA_OUT + ("rectify", "rect", "bc1_", "sqrt_bc2"),
    flags=("rectify",),
    body=_MOMENTS + """
mhat = exp_avg / bc1_
upd = mhat * lr * (sqrt_bc2 / (sqrt(exp_avg_sq) + eps_)) * rect if rectify else mhat * lr
p = p - upd
""",
)

LION = Rule(
    name="lion",
    doc="c = β1 m + (1-β1) g; p -= lr sign(c); m = β2 m + (1-β2) g (decay is decoupled)",
    decoupled_decay=True,
    state=("exp_avg",),
    hyper=(Hyper("beta1", 0.9, lo=0.0, hi=1.0), Hyper("beta2", 0.99, lo=0.0, hi=1.0)),
    scalars="""
b1 = beta1
b2 = beta2
omb1 = 1.0 - beta1
omb2 = 1.0 - beta2
""",
    outputs=("b1", "b2", "omb1", "omb2"),
    # sign(c) that keeps NaN, like numpy.sign
    body="""
c = b1 * exp_avg + omb1 * g
sgn = 0.0
sgn = 1.0 if c > 0.0 else sgn
sgn = -1.0 if c < 0.0 else sgn
sgn = c if c != c else sgn
p = p - lr * sgn
exp_avg = b2 * exp_avg + omb2 * g
""",
    lr=1e-4,
)

RULES = (ADAM, AMSGRAD, NADAM, NADAM_OPTAX, ADAMAX, RADAM, LION)

BETAS = {"betas": ("beta1", "beta2")}

ADAM_CLASS = ClassSpec(
    name="Adam",
    doc="""Adam: ``m = β1 m + (1-β1) g``; ``v = β2 v + (1-β2) g²``;
    ``p -= (lr / (1-β1^t)) m / (√v / √(1-β2^t) + ε)``. ``amsgrad=True`` uses
    ``v̂ = max(v̂, v)`` in the denominator; ``decoupled_weight_decay=True`` gives AdamW.""",
    rules=(("adam_amsgrad", {"amsgrad": True}), ("adam", {})),
    args=("lr", "betas", "eps", "weight_decay", "amsgrad"),
    kwonly=("maximize", "decoupled_weight_decay", "clip_value"),
    packed=BETAS,
    flags=("amsgrad",),
    bench=Bench("adam", torch="Adam"),
)

CLASSES = (
    ADAM_CLASS,
    ADAM_CLASS.subclass("AdamW", """Adam with decoupled weight decay: ``p = p (1 - lr λ)`` before the Adam update
    (λ = 1e-2 by default).""", defaults={"weight_decay": 1e-2}, fixed={"decoupled_weight_decay": True},
                        bench=Bench("adamw", torch="AdamW")),
    ADAM_CLASS.subclass("AMSGrad", "Adam with ``amsgrad=True``: the denominator uses ``v̂ = max(v̂, v)``.",
                        preset={"amsgrad": True}, bench=Bench("amsgrad", torch="Adam", torch_kwargs={"amsgrad": True})),
    ClassSpec(
        name="NAdam",
        doc="""NAdam. ``variant="pytorch"`` (default, PyTorch's form with momentum decay ψ):
    ``μ_t = β1 (1 - ½ 0.96^(t ψ))``, ``μ_prod *= μ_t``, ``den = √(v/bc2) + ε``,
    ``p -= lr (1-μ_t)/(1-μ_prod) g/den + lr μ_{t+1}/(1-μ_prod μ_{t+1}) m/den``.
    ``variant="optax"`` (the seeds' form): ``m̄ = β1 m/(1-β1^(t+1)) + (1-β1) g/(1-β1^t)``,
    ``p -= lr m̄ / (√(v/bc2) + ε)``.""",
        rules=(("nadam", {"variant": "pytorch"}), ("nadam_optax", {"variant": "optax"})),
        # decoupled_weight_decay is positional, as in torch.optim.NAdam
        args=("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay"),
        kwonly=("variant", "maximize", "clip_value"),
        defaults={"variant": "pytorch"},
        packed=BETAS,
        bench=Bench("nadam", torch="NAdam"),
    ),
    ClassSpec(
        name="Adamax",
        doc="""Adamax: ``m = β1 m + (1-β1) g``; ``u = max(β2 u, |g| + ε)``; ``p -= lr/(1-β1^t) · m/u``.""",
        rules=(("adamax", {}),),
        args=("lr", "betas", "eps", "weight_decay"),
        packed=BETAS,
        bench=Bench("adamax", torch="Adamax"),
    ),
    ClassSpec(
        name="RAdam",
        doc="""RAdam: ``m``, ``v`` as Adam; ``ρ∞ = 2/(1-β2) - 1``; ``ρ_t = ρ∞ - 2tβ2^t/(1-β2^t)``;
    if ``ρ_t > 5``: ``p -= (m/bc1) lr (√bc2/(√v + ε)) r`` with the rectification ``r``,
    else ``p -= (m/bc1) lr``.""",
        rules=(("radam", {}),),
        args=("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay"),    # positional, as in torch
        kwonly=("maximize", "clip_value"),
        packed=BETAS,
        bench=Bench("radam", torch="RAdam"),
    ),
    ClassSpec(
        name="Lion",
        doc="""Lion: ``c = β1 m + (1-β1) g``; ``p = p (1 - lr λ) - lr sign(c)``;
    ``m = β2 m + (1-β2) g`` (weight decay always decoupled).""",
        rules=(("lion", {}),),
        args=("lr", "betas", "weight_decay"),
        packed=BETAS,
        fixed={"decoupled_weight_decay": True},
        bench=Bench("lion"),
    ),
)
