"""Every update rule in plain NumPy, written to be read beside the formula.

Each function updates ``p`` and the state arrays in place for step ``t`` (1-based), with
``g`` already pre-processed (see :func:`preprocess`). A rule may instead keep its
reference in its own file (``Rule.reference``); those are listed here too, under the
rule's name. Scalars that depend only on ``t``
are computed once in Python floats; array arithmetic stays in the arrays' precision
and follows the same order of operations as the compiled kernels, so the two agree
bit for bit.
"""
import math

import numpy as np


def preprocess(p, g, *, lr, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
               clip_value=None, clip_coef=1.0, noise=None):
    """The common pre-processing, in order: maximize (g = -g), coupled weight decay
    (g = g + λ p), global-norm clip (g = g · coef), clip by value (g = clip(g, -c, c)),
    decoupled weight decay (p = p (1 - lr λ)), gradient noise (g = g + noise).
    Returns the new gradient; ``p`` is decayed in place."""
    if maximize:
        g = -g
    if weight_decay != 0 and not decoupled_weight_decay:
        g = g + weight_decay * p
    if clip_coef != 1.0:
        g = g * clip_coef
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)
    if decoupled_weight_decay and weight_decay != 0:
        p *= 1.0 - lr * weight_decay
    if noise is not None:
        g = g + noise
    return g


def l1_subgradient(p, g, l1):
    """The coupled L1 term: ``g + λ1 sign(p)`` (0 at p = 0), in p's precision; the
    select form of the kernels (same bits)."""
    c = p.dtype.type(l1)
    return np.where(p > 0, g + c, np.where(p < 0, g - c, g))


def l1_proximal(p, thr):
    """The proximal L1 step (soft-threshold), in place: ``p = sign(p) · max(|p| − thr, 0)``
    with ``thr = lr λ1`` rounded to p's precision; elements with ``|p| <= thr`` become +0."""
    t = p.dtype.type(thr)
    p[...] = np.where(p > t, p - t, np.where(p < -t, p + t, p.dtype.type(0.0)))


# --- noise: counter-based normals keyed by (seed, step, parameter index, element) ---------
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z):
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def noise_key(seed, step, param_index):
    with np.errstate(over="ignore"):
        k = _mix64(np.array(seed % 2**64, dtype=np.uint64))
        k = _mix64(k ^ np.uint64(step))
        return _mix64(k ^ np.uint64(param_index))


def normals_at(key, elements):
    """Standard normals by Box-Muller on two hashed uniforms per element, for the given
    element indices of a parameter."""
    i = np.asarray(elements, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h1 = _mix64(key + i * _GOLDEN)
        h2 = _mix64(h1)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * 2.0**-53
    # glibc's log and cos, as the kernels call them: NumPy's own SIMD float64 log/cos
    # (AVX-512 machines) differ from them in the last bit for some arguments
    log_u1 = np.fromiter(map(math.log, u1.tolist()), np.float64, i.size)
    cos_u2 = np.fromiter(map(math.cos, (2.0 * math.pi * u2).tolist()), np.float64, i.size)
    return np.sqrt(-2.0 * log_u1) * cos_u2


def standard_normals(key, n):
    """n standard normals (elements 0 .. n-1 of :func:`normals_at`)."""
    return normals_at(key, np.arange(n, dtype=np.uint64))


def gradient_noise(seed, t, param_index, n, eta, gamma, dtype):
    """Annealed Gaussian gradient noise: N(0, σ_t²), σ_t² = η / (1 + t)^γ."""
    sigma = math.sqrt(eta / (1.0 + t) ** gamma)
    return (sigma * standard_normals(noise_key(seed, t, param_index), n)).astype(dtype)


# --- first-order rules ---------------------------------------------------------------------
def sgd(p, g, *, t, lr):
    """p = p - lr g"""
    p -= lr * g


def _update_buffer(b, g, t, momentum, dampening):
    if t == 1:
        b[...] = g
    else:
        b[...] = momentum * b + (1.0 - dampening) * g


def momentum(p, g, momentum_buffer, *, t, lr, momentum, dampening=0.0):
    """b = g (first step), else b = μ b + (1 - dampening) g; p = p - lr b"""
    _update_buffer(momentum_buffer, g, t, momentum, dampening)
    p -= lr * momentum_buffer


def nesterov(p, g, momentum_buffer, *, t, lr, momentum, dampening=0.0):
    """b as momentum; p = p - lr (g + μ b)"""
    _update_buffer(momentum_buffer, g, t, momentum, dampening)
    p -= lr * (g + momentum * momentum_buffer)


def adagrad(p, g, sum, *, t, lr, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    """clr = lr / (1 + (t-1) lr_decay); s = s + g²; p = p - clr g / (√s + ε)"""
    clr = lr / (1.0 + (t - 1) * lr_decay)
    sum += g * g
    p -= clr * (g / (np.sqrt(sum) + eps))


def rmsprop(p, g, square_avg, grad_avg=None, momentum_buffer=None, *, t, lr, alpha=0.99, eps=1e-8,
            momentum=0.0):
    """v = α v + (1-α) g²; centered (grad_avg given): ḡ = α ḡ + (1-α) g, den = √(v - ḡ²) + ε,
    else den = √v + ε; with a momentum buffer: b = μ b + g/den, p = p - lr b; else p = p - lr g/den"""
    v = square_avg
    v[...] = alpha * v + (1.0 - alpha) * (g * g)
    if grad_avg is not None:
        grad_avg[...] = alpha * grad_avg + (1.0 - alpha) * g
        den = np.sqrt(v - grad_avg * grad_avg) + eps
    else:
        den = np.sqrt(v) + eps
    if momentum_buffer is not None:
        momentum_buffer[...] = momentum * momentum_buffer + g / den
        p -= lr * momentum_buffer
    else:
        p -= lr * (g / den)


def adadelta(p, g, square_avg, acc_delta, *, t, lr=1.0, rho=0.9, eps=1e-6):
    """v = ρ v + (1-ρ) g²; Δ = √(u + ε)/√(v + ε) · g; u = ρ u + (1-ρ) Δ²; p = p - lr Δ"""
    square_avg[...] = rho * square_avg + (1.0 - rho) * (g * g)
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta[...] = rho * acc_delta + (1.0 - rho) * (delta * delta)
    p -= lr * delta


def _moments(g, m, v, beta1, beta2):
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * (g * g)


def adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²; AMSGrad (max_exp_avg_sq given): v̂ = max(v̂, v);
    p = p - (lr / (1-β1^t)) · m / (√v / √(1-β2^t) + ε)"""
    _moments(g, exp_avg, exp_avg_sq, beta1, beta2)
    step_size = lr / (1.0 - beta1 ** t)
    sqrt_bc2 = math.sqrt(1.0 - beta2 ** t)
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    p -= step_size * (exp_avg / (np.sqrt(v) / sqrt_bc2 + eps))


def nadam(p, g, exp_avg, exp_avg_sq, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3,
          mu_product=1.0):
    """PyTorch's NAdam: μ_t = β1 (1 - ½ 0.96^(t ψ)); μ_prod = μ_prod μ_t; m, v as Adam;
    den = √(v / (1-β2^t)) + ε; p = p - lr(1-μ_t)/(1-μ_prod) · g/den;
    p = p - lr μ_{t+1}/(1 - μ_prod μ_{t+1}) · m/den. Returns the new μ_prod."""
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = mu_product * mu
    _moments(g, exp_avg, exp_avg_sq, beta1, beta2)
    den = np.sqrt(exp_avg_sq / (1.0 - beta2 ** t)) + eps
    p -= lr * (1.0 - mu) / (1.0 - mu_product) * (g / den)
    p -= lr * mu_next / (1.0 - mu_product * mu_next) * (exp_avg / den)
    return mu_product


def nadam_optax(p, g, exp_avg, exp_avg_sq, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """The seeds'/optax NAdam: m̄ = β1 m / (1-β1^(t+1)) + (1-β1) g / (1-β1^t);
    p = p - lr m̄ / (√(v / (1-β2^t)) + ε)"""
    _moments(g, exp_avg, exp_avg_sq, beta1, beta2)
    mbar = beta1 / (1.0 - beta1 ** (t + 1)) * exp_avg + (1.0 - beta1) / (1.0 - beta1 ** t) * g
    p -= lr * (mbar / (np.sqrt(exp_avg_sq / (1.0 - beta2 ** t)) + eps))


def adamax(p, g, exp_avg, exp_inf, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """m = β1 m + (1-β1) g; u = max(β2 u, |g| + ε); p = p - lr/(1-β1^t) · m/u"""
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    np.maximum(beta2 * exp_inf, np.abs(g) + eps, out=exp_inf)
    p -= lr / (1.0 - beta1 ** t) * (exp_avg / exp_inf)


def radam(p, g, exp_avg, exp_avg_sq, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """m, v as Adam; ρ∞ = 2/(1-β2) - 1; ρ_t = ρ∞ - 2 t β2^t / (1-β2^t);
    if ρ_t > 5: r = √((ρ_t-4)(ρ_t-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρ_t)), p = p - (m/bc1) lr (√bc2 / (√v + ε)) r;
    else p = p - (m/bc1) lr"""
    _moments(g, exp_avg, exp_avg_sq, beta1, beta2)
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2 ** t / bc2
    mhat = exp_avg / bc1
    if rho_t > 5.0:
        r = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        p -= mhat * lr * (math.sqrt(bc2) / (np.sqrt(exp_avg_sq) + eps)) * r
    else:
        p -= mhat * lr


def lion(p, g, exp_avg, *, t, lr, beta1=0.9, beta2=0.99):
    """c = β1 m + (1-β1) g; p = p - lr sign(c); m = β2 m + (1-β2) g"""
    c = beta1 * exp_avg + (1.0 - beta1) * g
    p -= lr * np.sign(c)
    exp_avg[...] = beta2 * exp_avg + (1.0 - beta2) * g


def _rule_file_references():
    from fastopt.rules import RULES
    return {r.name: r.reference for r in RULES if callable(r.reference)}


globals().update({k: v for k, v in _rule_file_references().items() if k not in globals()})
