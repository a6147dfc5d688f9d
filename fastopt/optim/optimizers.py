"""The optimizer classes. Each chooses its kernel variant from its flags and maps its
PyTorch-style arguments onto the rule's hyper-parameters; the arithmetic lives in
:mod:`fastopt.rules` and is documented there and in each class docstring."""
from fastopt.optim.base import Optimizer
from fastopt.rules import BY_NAME

_BETAS = {"beta1": ("betas", 0), "beta2": ("betas", 1)}


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    * plain: ``p -= lr g``
    * momentum μ > 0: ``b = g`` on the first step, then ``b = μ b + (1 - dampening) g``;
      ``p -= lr b`` (``dampening = μ`` gives the EMA form)
    * ``nesterov=True``: ``b`` as above with dampening 0; ``p -= lr (g + μ b)``
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, clip_value=clip_value), **options)

    _flags = ("nesterov",)

    def _rule_for(self, group):
        if group["nesterov"]:
            return BY_NAME["nesterov"]
        return BY_NAME["momentum"] if group["momentum"] != 0 else BY_NAME["sgd"]

    def _check_extra(self, group):
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")


class Momentum(SGD):
    """SGD with heavy-ball momentum (μ = 0.9 by default); see :class:`SGD`."""

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, **kw):
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov, **kw)


class Nesterov(SGD):
    """SGD with Nesterov momentum (μ = 0.9 by default): ``p -= lr (g + μ b)``; see :class:`SGD`."""

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0, **kw):
        super().__init__(params, lr, momentum, 0.0, weight_decay, True, **kw)


class Adagrad(Optimizer):
    """AdaGrad: ``clr = lr / (1 + (t-1) lr_decay)``; ``s += g²``; ``p -= clr g / (√s + ε)``,
    with ``s`` starting at ``initial_accumulator_value``."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize, clip_value=clip_value), **options)

    def _rule_for(self, group):
        return BY_NAME["adagrad"]


class RMSprop(Optimizer):
    """RMSProp: ``v = α v + (1-α) g²``; centered: ``ḡ = α ḡ + (1-α) g``,
    ``den = √(v - ḡ²) + ε``, else ``den = √v + ε``; with momentum μ > 0:
    ``b = μ b + g/den``, ``p -= lr b``; else ``p -= lr g/den``."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, clip_value=clip_value), **options)

    _flags = ("centered",)

    def _rule_for(self, group):
        name = "rmsprop" + ("_centered" if group["centered"] else "") + ("_momentum" if group["momentum"] else "")
        return BY_NAME[name]


class Adadelta(Optimizer):
    """AdaDelta: ``v = ρ v + (1-ρ) g²``; ``Δ = √(u + ε)/√(v + ε) · g``;
    ``u = ρ u + (1-ρ) Δ²``; ``p -= lr Δ``."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False, clip_value=None,
                 **options):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      clip_value=clip_value), **options)

    def _rule_for(self, group):
        return BY_NAME["adadelta"]


class Adam(Optimizer):
    """Adam: ``m = β1 m + (1-β1) g``; ``v = β2 v + (1-β2) g²``;
    ``p -= (lr / (1-β1^t)) m / (√v / √(1-β2^t) + ε)``. ``amsgrad=True`` uses
    ``v̂ = max(v̂, v)`` in the denominator; ``decoupled_weight_decay=True`` gives AdamW."""
    _hyper_keys = _BETAS
    _flags = ("amsgrad",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                                      clip_value=clip_value), **options)

    def _rule_for(self, group):
        return BY_NAME["adam_amsgrad" if group["amsgrad"] else "adam"]


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p = p (1 - lr λ)`` before the Adam update
    (λ = 1e-2 by default)."""
    _fixed = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, clip_value=None, **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, clip_value=clip_value, **options)


class AMSGrad(Adam):
    """Adam with ``amsgrad=True``: the denominator uses ``v̂ = max(v̂, v)``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw):
        super().__init__(params, lr, betas, eps, weight_decay, True, **kw)


class NAdam(Optimizer):
    """NAdam. ``variant="pytorch"`` (default, PyTorch's form with momentum decay ψ):
    ``μ_t = β1 (1 - ½ 0.96^(t ψ))``, ``μ_prod *= μ_t``, ``den = √(v/bc2) + ε``,
    ``p -= lr (1-μ_t)/(1-μ_prod) g/den + lr μ_{t+1}/(1-μ_prod μ_{t+1}) m/den``.
    ``variant="optax"`` (the seeds' form): ``m̄ = β1 m/(1-β1^(t+1)) + (1-β1) g/(1-β1^t)``,
    ``p -= lr m̄ / (√(v/bc2) + ε)``."""
    _hyper_keys = _BETAS

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, *,
                 variant="pytorch", maximize=False, decoupled_weight_decay=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, variant=variant, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay, clip_value=clip_value),
                         **options)

    def _rule_for(self, group):
        if group["variant"] not in ("pytorch", "optax"):
            raise ValueError(f"variant must be 'pytorch' or 'optax', got {group['variant']!r}")
        return BY_NAME["nadam" if group["variant"] == "pytorch" else "nadam_optax"]


class Adamax(Optimizer):
    """Adamax: ``m = β1 m + (1-β1) g``; ``u = max(β2 u, |g| + ε)``; ``p -= lr/(1-β1^t) · m/u``."""
    _hyper_keys = _BETAS

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False,
                 clip_value=None, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      clip_value=clip_value), **options)

    def _rule_for(self, group):
        return BY_NAME["adamax"]


class RAdam(Optimizer):
    """RAdam: ``m``, ``v`` as Adam; ``ρ∞ = 2/(1-β2) - 1``; ``ρ_t = ρ∞ - 2tβ2^t/(1-β2^t)``;
    if ``ρ_t > 5``: ``p -= (m/bc1) lr (√bc2/(√v + ε)) r`` with the rectification ``r``,
    else ``p -= (m/bc1) lr``."""
    _hyper_keys = _BETAS

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False,
                 decoupled_weight_decay=False, clip_value=None, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay, clip_value=clip_value),
                         **options)

    def _rule_for(self, group):
        return BY_NAME["radam"]


class Lion(Optimizer):
    """Lion: ``c = β1 m + (1-β1) g``; ``p = p (1 - lr λ) - lr sign(c)``;
    ``m = β2 m + (1-β2) g`` (weight decay always decoupled)."""
    _hyper_keys = _BETAS
    _fixed = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False, clip_value=None,
                 **options):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                                      clip_value=clip_value), **options)

    def _rule_for(self, group):
        return BY_NAME["lion"]


ALL = [SGD, Momentum, Nesterov, Adagrad, RMSprop, Adadelta, Adam, AdamW, AMSGrad, NAdam, Adamax, RAdam, Lion]
