"""AdEMAMix (Pagliardini, Ablin & Grangier 2024, "The AdEMAMix Optimizer: Better,
Faster, Older"): Adam whose numerator mixes the usual fast EMA of the gradient with a
slow one (β3 = 0.9999 remembers ~10⁴ steps), as bitsandbytes' ``AdEMAMix`` states it:

    m1 = β1 m1 + (1-β1) g;  m2 = β3 m2 + (1-β3) g;  ν = β2 ν + (1-β2) g²
    p -= lr ((m1 / (1-β1^t) + α m2) / (√ν / √(1-β2^t) + ε) + λ p)

with the paper's optional warm-ups: ``t_alpha`` > 0 raises α linearly,
``α_t = min(t α / t_alpha, α)``, and ``t_beta3`` > 0 raises β3 from β1 so that the slow
EMA's half-life grows linearly, ``β3_t = min(exp(ln β1 ln β3 / ((1-s) ln β3 + s ln β1)), β3)``
with ``s = t / t_beta3`` (0 turns either off: bitsandbytes' None).

Weight decay is decoupled (``p (1 - lr λ)`` first, as AdamW), so the update equals
bitsandbytes' up to the rounding of ``p - lr λ p``. Everything about the rule is in
this file: kernels, class, reference and bench row.
"""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

_HYPER = (
    Hyper("beta1", 0.9, lo=0.0, hi=1.0, hi_open=True),
    Hyper("beta2", 0.999, lo=0.0, hi=1.0, hi_open=True),
    Hyper("beta3", 0.9999, lo=0.0, hi=1.0, hi_open=True, doc="decay of the slow EMA"),
    Hyper("alpha", 5.0, lo=0.0, doc="weight of the slow EMA"),
    Hyper("eps", 1e-8, lo=0.0),
    Hyper("t_alpha", 0.0, lo=0.0, doc="steps of α's linear warm-up (0: none)"),
    Hyper("t_beta3", 0.0, lo=0.0, doc="steps of β3's warm-up from β1 (0: none)"),
)


def alpha_at(t, alpha, t_alpha):
    """α at step ``t``: ``min(t α / t_alpha, α)``, or α when ``t_alpha`` is 0."""
    if t_alpha > 0.0:
        a = t * alpha / t_alpha
        return a if a < alpha else alpha
    return alpha


def beta3_at(t, beta1, beta3, t_beta3):
    """β3 at step ``t``: ``min(exp(ln β1 ln β3 / ((1-s) ln β3 + s ln β1)), β3)`` with
    ``s = t / t_beta3``, or β3 when ``t_beta3`` is 0."""
    import math
    if t_beta3 > 0.0:
        s = t / t_beta3
        lb1, lb3 = math.log(beta1), math.log(beta3)
        b = math.exp(lb1 * lb3 / ((1.0 - s) * lb3 + s * lb1))
        return b if b < beta3 else beta3
    return beta3


def reference(p, g, exp_avg, exp_avg_slow, exp_avg_sq, *, t, lr, beta1=0.9, beta2=0.999, beta3=0.9999, alpha=5.0,
              eps=1e-8, t_alpha=0.0, t_beta3=0.0):
    """m1 = β1 m1 + (1-β1) g; m2 = β3_t m2 + (1-β3_t) g; ν = β2 ν + (1-β2) g²;
    p = p - lr (m1 / (1-β1^t) + α_t m2) / (√ν / √(1-β2^t) + ε)"""
    import math
    import numpy as np
    b3 = beta3_at(t, beta1, beta3, t_beta3)
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_slow[...] = b3 * exp_avg_slow + (1.0 - b3) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * (g * g)
    num = exp_avg / (1.0 - beta1 ** t) + alpha_at(t, alpha, t_alpha) * exp_avg_slow
    p -= lr * (num / (np.sqrt(exp_avg_sq) / math.sqrt(1.0 - beta2 ** t) + eps))


ADEMAMIX = Rule(
    name="ademamix",
    doc="m1, ν as Adam; m2 = β3 m2 + (1-β3) g; p -= lr (m1/bc1 + α m2) / (√ν/√bc2 + ε)",
    decoupled_decay=True,
    state=("exp_avg", "exp_avg_slow", "exp_avg_sq"),
    domains={"exp_avg_sq": NONNEG},
    hyper=_HYPER,
    scalars="""
b1 = beta1
b2 = beta2
omb1 = 1.0 - beta1
omb2 = 1.0 - beta2
eps_ = eps
bc1 = 1.0 - beta1 ** t
sqrt_bc2 = sqrt(1.0 - beta2 ** t)
a_lin = t * alpha / t_alpha if t_alpha > 0.0 else alpha
alpha_t = a_lin if a_lin < alpha else alpha
s3 = t / t_beta3 if t_beta3 > 0.0 else 0.0
b3_warm = exp(log(beta1) * log(beta3) / ((1.0 - s3) * log(beta3) + s3 * log(beta1))) if t_beta3 > 0.0 else beta3
b3 = b3_warm if b3_warm < beta3 else beta3
omb3 = 1.0 - b3
""",
    outputs=("b1", "b2", "b3", "omb1", "omb2", "omb3", "eps_", "bc1", "sqrt_bc2", "alpha_t"),
    body="""
exp_avg = b1 * exp_avg + omb1 * g
exp_avg_slow = b3 * exp_avg_slow + omb3 * g
exp_avg_sq = b2 * exp_avg_sq + omb2 * (g * g)
p = p - lr * ((exp_avg / bc1 + alpha_t * exp_avg_slow) / (sqrt(exp_avg_sq) / sqrt_bc2 + eps_))
""",
    reference=reference,
)

RULES = (ADEMAMIX,)


def _warmup_needs_logs(group):
    if group["t_beta3"] > 0 and (group["betas"][0] <= 0 or group["betas"][2] <= 0):
        raise ValueError("t_beta3 > 0 warms β3 up from β1 on a log scale: it needs betas[0] > 0 and betas[2] > 0")


CLASSES = (ClassSpec(
    name="AdEMAMix",
    doc="""AdEMAMix (Pagliardini et al. 2024; bitsandbytes' ``AdEMAMix``): ``m1 = β1 m1 + (1-β1) g``;
    ``m2 = β3 m2 + (1-β3) g``; ``ν = β2 ν + (1-β2) g²``;
    ``p = p (1 - lr λ) - lr (m1 / (1-β1^t) + α m2) / (√ν / √(1-β2^t) + ε)``.
    ``t_alpha`` / ``t_beta3`` > 0: the paper's warm-ups of α (linear) and β3 (from β1);
    0 (the default) turns them off, as bitsandbytes' None. Weight decay is decoupled.""",
    rules=(("ademamix", {}),),
    args=("lr", "betas", "alpha", "t_alpha", "t_beta3", "eps", "weight_decay"),
    defaults={"weight_decay": 1e-2},
    packed={"betas": ("beta1", "beta2", "beta3")},
    fixed={"decoupled_weight_decay": True},
    check=_warmup_needs_logs,
    bench=Bench("ademamix"),
),)
