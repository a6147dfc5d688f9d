"""The seeds' claims, each reproduced by a function that returns its numbers.

Every ``claim_*`` function returns a :class:`Claim`: a one-line statement, the numbers
that support it (a dict) and, when ``picture`` is given a file name and matplotlib is
installed, a picture. ``python -m fastopt tour`` prints them all and writes the
pictures; the tests assert each statement on the numbers.
"""
import math

import numpy as np

import fastopt
from fastopt.problems import IllConditionedQuadratic, LogisticRegression, Rosenbrock, Saddle, synthetic_classification
from fastopt.schedules import scale_lr_for_batch
from fastopt.training import EarlyStopping, make_optimizer, optimizer_path, train

__all__ = ["Claim", "CLAIMS", "claim_momentum", "claim_adagrad", "claim_adam_bias", "claim_newton",
           "claim_noise_saddle", "claim_early_stopping", "claim_batch_sizes", "claim_linear_scaling",
           "claim_l1_sparsity"]


class Claim:
    """A reproduced claim: ``title``, ``text`` (with the numbers), ``numbers`` (dict),
    ``picture`` (file written, or None)."""

    def __init__(self, title, text, numbers, picture=None):
        self.title, self.text, self.numbers, self.picture = title, text, numbers, picture

    def __str__(self):
        return f"{self.title}\n  {self.text}" + (f"\n  picture: {self.picture}" if self.picture else "")


def _draw(picture, make):
    if picture is None:
        return None
    from fastopt import viz
    try:
        viz.require_matplotlib()
    except ImportError:
        return None
    viz.save(make(viz), picture)
    return picture


def _sign_flips(values):
    s = np.sign(values)
    s = s[s != 0]
    return int(np.sum(s[1:] != s[:-1]))


def claim_momentum(steps=100, condition=100.0, picture=None):
    """Momentum damps the zig-zag across an ill-conditioned valley and moves faster along it.

    ``f = ½ (x² + κ y²)``: SGD at ``lr = 1.8 / κ`` flips the sign of ``y`` every step;
    SGD with momentum β = 0.9 at the same effective step (``lr (1 − β)``⁻¹ equal, so
    ``lr = 0.18 / κ``) flips it a few times, and ends far lower."""
    prob = IllConditionedQuadratic(2, condition)
    lr = 1.8 / condition
    sgd = optimizer_path(prob, "sgd", steps=steps, lr=lr)
    mom = optimizer_path(prob, "momentum", steps=steps, lr=lr * 0.1)
    numbers = {"sgd_flips": _sign_flips(sgd.xs[:, 1]), "momentum_flips": _sign_flips(mom.xs[:, 1]),
               "sgd_sideways": float(np.abs(np.diff(sgd.xs[:, 1])).sum()),
               "momentum_sideways": float(np.abs(np.diff(mom.xs[:, 1])).sum()),
               "sgd_final": float(sgd.losses[-1]), "momentum_final": float(mom.losses[-1]), "steps": steps}
    text = (f"on f = (x² + {condition:g} y²)/2, {steps} steps: y changes sign {numbers['sgd_flips']}× with SGD "
            f"(lr {lr:g}) but {numbers['momentum_flips']}× with momentum 0.9 (lr {lr * 0.1:g}, same effective step); "
            f"sideways travel Σ|Δy| {numbers['sgd_sideways']:.2f} vs {numbers['momentum_sideways']:.2f}; "
            f"final f {numbers['sgd_final']:.3g} vs {numbers['momentum_final']:.3g}")
    pic = _draw(picture, lambda viz: viz.trajectory_figure(prob, [sgd, mom], title="momentum damps the zig-zag"))
    return Claim("Momentum damps oscillation", text, numbers, pic)


def claim_adagrad(steps=1000, picture=None):
    """Adagrad's effective step ``lr / (√Σg² + ε)`` only shrinks; RMSProp's does not.

    On the ill-conditioned quadratic, the first coordinate's effective step
    ``lr / (√s + ε)`` read from each kernel's own state after every step (``sum`` for
    Adagrad, ``square_avg`` for RMSProp; reported at steps 1, 10, 100 and ``steps``)."""
    prob = IllConditionedQuadratic(2, 10.0)
    marks = [1, 10, 100, steps]
    out, every = {}, {}
    for algo, lr, key in (("adagrad", 0.5, "sum"), ("rmsprop", 1e-2, "square_avg")):
        x = prob.x0.copy()
        opt = make_optimizer(algo, [x], lr=lr)
        group = opt.param_groups[0]
        eff = []
        for t in range(1, steps + 1):
            opt.step([prob.grad(x)])
            eff.append(float(lr / (math.sqrt(opt.state[0][key][0]) + group["eps"])))
        every[algo] = eff
        out[algo] = [eff[t - 1] for t in marks]
    numbers = {"marks": marks, "adagrad": out["adagrad"], "rmsprop": out["rmsprop"],
               "adagrad_every": every["adagrad"], "rmsprop_every": every["rmsprop"]}
    text = ("effective step lr/(√s + ε) at steps " + ", ".join(map(str, marks)) + ": Adagrad "
            + ", ".join(f"{v:.3g}" for v in out["adagrad"]) + "; RMSProp "
            + ", ".join(f"{v:.3g}" for v in out["rmsprop"]) + " (grows as g shrinks)")
    pic = _draw(picture, lambda viz: viz.loss_curves_figure(
        {a: (np.arange(1, steps + 1), every[a]) for a in every}, xlabel="step", ylabel="lr / (√s + ε)",
        title="Adagrad's step only shrinks"))
    return Claim("Adagrad's step shrinks", text, numbers, pic)


def claim_adam_bias(steps=10, lr=1e-2, betas=(0.9, 0.999), picture=None):
    """Adam's bias correction matters in the first steps.

    With a constant gradient ``g``, fastopt's Adam moves exactly ``lr`` per step from
    step 1 (``m̂ = g``, ``v̂ = g²``); the textbook update without the correction,
    ``lr · m / (√v + ε)``, moves ``lr (1 − β1^t) / √(1 − β2^t)``: 3.2 lr at t = 1 and
    6.5 lr at t = 10 for the default betas (v starts biased towards 0 far more than m)."""
    b1, b2 = betas
    x = np.zeros(1)
    opt = fastopt.Adam([x], lr=lr, betas=betas)
    corrected, uncorrected = [], []
    m = v = 0.0
    for t in range(1, steps + 1):
        before = x[0]
        opt.step([np.ones(1)])
        corrected.append(abs(x[0] - before) / lr)
        m = b1 * m + (1 - b1) * 1.0
        v = b2 * v + (1 - b2) * 1.0
        uncorrected.append(m / (math.sqrt(v) + 1e-8))
    numbers = {"corrected": corrected, "uncorrected": uncorrected}
    text = (f"step / lr with a constant gradient, t = 1..{steps}: with correction "
            + ", ".join(f"{v:.3f}" for v in corrected[:3]) + ", ...; without "
            + ", ".join(f"{v:.2f}" for v in uncorrected[:3]) + f", ..., {uncorrected[-1]:.2f}")
    pic = _draw(picture, lambda viz: viz.loss_curves_figure(
        {"Adam (bias-corrected)": (range(1, steps + 1), corrected),
         "no correction": (range(1, steps + 1), uncorrected)}, xlabel="step", ylabel="|step| / lr",
        title="Adam's bias correction in the first steps", logy=False))
    return Claim("Adam's bias correction matters early", text, numbers, pic)


def claim_newton(picture=None):
    """Newton's method needs no learning rate: on a quadratic it lands on the minimum in
    one step whatever the condition number; gradient descent must choose ``lr < 2 / L``
    (just above it diverges) and then crawls at rate ``1 − 2/(κ + 1)``."""
    cond = 1000.0
    prob = IllConditionedQuadratic(2, cond)
    newton = fastopt.minimize(prob.fun_and_grad, prob.x0, method="newton", hess=prob.hess)
    rosen = Rosenbrock()
    rn = fastopt.minimize(rosen.fun_and_grad, rosen.x0, method="newton", hess=rosen.hess)
    above = optimizer_path(prob, "sgd", steps=200, lr=2.05 / cond)
    best = optimizer_path(prob, "sgd", steps=2000, lr=2.0 / (cond + 1.0))
    numbers = {"quadratic_newton_nit": int(newton.nit), "quadratic_newton_f": float(newton.fun),
               "rosenbrock_newton_nit": int(rn.nit), "rosenbrock_newton_f": float(rn.fun),
               "gd_above_diverged": bool(above.diverged or above.losses[-1] > above.losses[0]),
               "gd_best_f_2000": float(best.losses[-1])}
    text = (f"κ = {cond:g} quadratic: Newton {numbers['quadratic_newton_nit']} iteration(s) to f = "
            f"{numbers['quadratic_newton_f']:.2g}; Rosenbrock: {numbers['rosenbrock_newton_nit']} iterations to "
            f"f = {numbers['rosenbrock_newton_f']:.2g}. GD at lr = 2.05/L diverges "
            f"({numbers['gd_above_diverged']}); at the best lr 2/(L+μ) f = {numbers['gd_best_f_2000']:.3g} "
            "after 2000 steps")
    pic = None
    if picture is not None:
        newton_path = optimizer_path(rosen, "newton", steps=50)
        gd = optimizer_path(rosen, "sgd", steps=2000)
        adam = optimizer_path(rosen, "adam", steps=2000)
        pic = _draw(picture, lambda viz: viz.trajectory_figure(rosen, [newton_path, gd, adam],
                                                               title="Newton: no learning rate"))
    return Claim("Newton needs no learning rate", text, numbers, pic)


def claim_noise_saddle(steps=300, eta=0.01, picture=None):
    """Gradient noise helps escape the saddle: from a start exactly on the ridge of
    ``x² − y²`` the ``y`` gradient is 0, so SGD slides into the saddle point and stays;
    with the optimizers' ``grad_noise`` it leaves (``|y|`` grows, ``f`` falls below 0)."""
    prob = Saddle()
    start = np.array([-1.0, 0.0])
    plain = optimizer_path(prob, "sgd", steps=steps, x0=start, lr=0.05)
    noisy = optimizer_path(prob, "sgd", steps=steps, x0=start, lr=0.05, noise=eta, seed=1)
    noisy.algo = f"sgd + noise η={eta:g}"
    numbers = {"plain_final": plain.xs[-1].tolist(), "plain_f": float(plain.losses[-1]),
               "noisy_final": noisy.xs[-1].tolist(), "noisy_f": float(noisy.losses[-1])}
    text = (f"from (−1, 0), {steps} SGD steps: without noise end at ({plain.xs[-1][0]:.2g}, {plain.xs[-1][1]:.2g}), "
            f"f = {plain.losses[-1]:.3g} (stuck at the saddle); with grad_noise η = {eta:g}: end at "
            f"({noisy.xs[-1][0]:.2g}, {noisy.xs[-1][1]:.2g}), f = {noisy.losses[-1]:.3g}")
    pic = None
    if picture is not None:
        adam = optimizer_path(prob, "adam", steps=steps)
        sgd = optimizer_path(prob, "sgd", steps=steps)
        rms = optimizer_path(prob, "rmsprop", steps=steps)
        pic = _draw(picture, lambda viz: viz.trajectory_figure(prob, [plain, noisy, sgd, rms, adam],
                                                               title="saddle x² − y²: who escapes", logy=False))
    return Claim("Gradient noise helps escape the saddle", text, numbers, pic)


def _overfitting_problem(seed=0):
    X, y = synthetic_classification(n=300, dim=60, noise=2.0, seed=seed)
    train_p = LogisticRegression(X[:40], y[:40], lam=0.0)
    val_p = LogisticRegression(X[40:], y[40:], lam=0.0)
    return train_p, val_p


def claim_early_stopping(epochs=300, patience=20, picture=None):
    """Early stopping picks the best epoch: on 40 training examples in 60 dimensions
    (unregularised logistic regression, noisy labels) the validation loss falls, then
    rises as the model fits the noise; early stopping ends ``patience`` epochs after the
    best one and restores its weights."""
    tr, va = _overfitting_problem()
    w_full = tr.x0.copy()
    full = train(tr, fastopt.SGD([w_full], lr=0.5), epochs=epochs, val=va.value)
    w = tr.x0.copy()
    es = EarlyStopping([w], patience=patience)
    hist = train(tr, fastopt.SGD([w], lr=0.5), epochs=epochs, val=va.value, early_stopping=es)
    vbest = int(np.argmin(full.val_loss))
    numbers = {"best_epoch": hist.best_epoch, "stopped_epoch": hist.stopped_epoch,
               "argmin_val_full_run": vbest, "val_at_best": float(min(full.val_loss)),
               "val_restored": float(va.value(w)), "val_end_full_run": float(full.val_loss[-1])}
    text = (f"validation loss is lowest at epoch {vbest} ({numbers['val_at_best']:.4f}) and "
            f"{numbers['val_end_full_run']:.4f} after {epochs}; early stopping (patience {patience}) stopped at "
            f"epoch {hist.stopped_epoch}, restored epoch {hist.best_epoch}: validation loss "
            f"{numbers['val_restored']:.4f}")
    pic = _draw(picture, lambda viz: viz.loss_curves_figure(
        {"training": (range(len(full.epoch_loss)), full.epoch_loss),
         "validation": (range(len(full.val_loss)), full.val_loss)},
        marks={"best": (hist.best_epoch, full.val_loss[hist.best_epoch], f"best epoch {hist.best_epoch}"),
               "stop": (hist.stopped_epoch, full.val_loss[hist.stopped_epoch], "stopped")},
        title="early stopping picks the best epoch"))
    return Claim("Early stopping picks the best epoch", text, numbers, pic)


def claim_batch_sizes(epochs=20, picture=None):
    """Batch, mini-batch and stochastic gradient descent on the same logistic regression
    (400 examples): per epoch, smaller batches make many more (noisier) steps and get
    lower sooner; batch GD makes one exact step per epoch."""
    prob = LogisticRegression(lam=1e-2)
    curves = {}
    for label, b, lr in (("batch (400)", None, 0.5), ("mini-batch (32)", 32, 0.5), ("stochastic (1)", 1, 0.05)):
        w = prob.x0.copy()
        h = train(prob, fastopt.SGD([w], lr=lr), epochs=epochs, batch_size=b, seed=0)
        curves[label] = (np.arange(1, epochs + 1), h.epoch_loss, len(h.step_loss))
    numbers = {k: {"final": float(v[1][-1]), "first": float(v[1][0]), "steps": v[2]} for k, v in curves.items()}
    text = "; ".join(f"{k}: {v['steps']} steps, loss after epoch 1 {v['first']:.4f}, after {epochs} {v['final']:.4f}"
                     for k, v in numbers.items())
    pic = _draw(picture, lambda viz: viz.loss_curves_figure(
        {k: (v[0], v[1]) for k, v in curves.items()}, title="batch vs mini-batch vs stochastic GD"))
    return Claim("Batch, mini-batch and stochastic GD", text, numbers, pic)


def claim_linear_scaling(epochs=15, base_batch=8, big_batch=64, base_lr=0.02, picture=None):
    """The linear-scaling rule (:func:`fastopt.schedules.scale_lr_for_batch`): with a
    batch ``k`` times larger and the same rate, SGD falls behind per epoch (``k`` times
    fewer steps); scaling the rate by ``k`` brings the curve back onto the small batch's."""
    prob = LogisticRegression(lam=1e-2)
    runs = {}
    for label, b, lr in ((f"b={base_batch}, lr={base_lr:g}", base_batch, base_lr),
                         (f"b={big_batch}, lr={base_lr:g}", big_batch, base_lr),
                         (f"b={big_batch}, scaled lr", big_batch, scale_lr_for_batch(base_lr, big_batch, base_batch))):
        w = prob.x0.copy()
        runs[label] = (train(prob, fastopt.SGD([w], lr=lr), epochs=epochs, batch_size=b, seed=0).epoch_loss, lr)
    (base, _), (unscaled, _), (scaled, slr) = runs.values()
    gap = lambda a: float(np.max(np.abs(np.log(a) - np.log(base))))  # noqa: E731
    numbers = {"scaled_lr": slr, "gap_unscaled": gap(unscaled), "gap_scaled": gap(scaled),
               "final": {k: float(v[0][-1]) for k, v in runs.items()}}
    text = (f"max |log loss − log loss(b={base_batch})| over {epochs} epochs: same lr {numbers['gap_unscaled']:.3f}, "
            f"lr scaled to {slr:g}: {numbers['gap_scaled']:.3f}")
    pic = _draw(picture, lambda viz: viz.loss_curves_figure(
        {k: (np.arange(1, epochs + 1), v[0]) for k, v in runs.items()}, title="linear scaling rule for batch size"))
    return Claim("Linear scaling rule", text, numbers, pic)


def claim_l1_sparsity(steps=2000, alpha=0.1, picture=None):
    """L1 regularisation makes weights exactly zero — with the proximal step. On a sparse
    least-squares problem (200 × 30, 24 true zeros), SGD with ``l1=α`` (the proximal
    soft-threshold: ISTA) ends with exact zeros; the coupled subgradient form
    ``g + α sign(p)`` at the same rate keeps jumping across 0 and makes none."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 30))
    w_true = np.where(rng.random(30) < 0.3, rng.standard_normal(30) * 3, 0.0)
    y = X @ w_true + 0.1 * rng.standard_normal(200)
    lr = 1.0 / float(np.linalg.eigvalsh(X.T @ X / 200).max())
    out = {}
    for label, coupled in (("proximal", False), ("coupled", True)):
        w = np.zeros(30)
        opt = fastopt.SGD([w], lr=lr, l1=alpha, l1_coupled=coupled)
        for _ in range(steps):
            opt.step([X.T @ (X @ w - y) / 200])
        out[label] = w
    numbers = {"true_zeros": int(np.sum(w_true == 0)), "proximal_zeros": int(np.sum(out["proximal"] == 0)),
               "coupled_zeros": int(np.sum(out["coupled"] == 0)),
               "coupled_small": int(np.sum(np.abs(out["coupled"]) < 1e-2)),
               "proximal_recovers_support": bool(np.array_equal(out["proximal"] == 0, w_true == 0))}
    text = (f"λ1 = {alpha:g}, {steps} steps: {numbers['proximal_zeros']} exact zeros with the proximal step "
            f"(true zeros {numbers['true_zeros']}, same support: {numbers['proximal_recovers_support']}); "
            f"{numbers['coupled_zeros']} with the coupled subgradient ({numbers['coupled_small']} below 1e-2)")

    def draw(viz):
        fig = viz.loss_curves_figure({"true": (np.arange(30), np.abs(w_true) + 1e-12),
                                      "proximal (l1)": (np.arange(30), np.abs(out["proximal"]) + 1e-12),
                                      "coupled (l1_coupled)": (np.arange(30), np.abs(out["coupled"]) + 1e-12)},
                                     xlabel="weight index", ylabel="|w| (+1e-12)", title="L1: exact zeros")
        return fig
    return Claim("L1 makes exact zeros (proximal)", text, numbers, _draw(picture, draw))


#: (file stem, function) of every claim, in the tour's order
CLAIMS = (("momentum", claim_momentum), ("adagrad", claim_adagrad), ("adam_bias", claim_adam_bias),
          ("newton", claim_newton), ("saddle_noise", claim_noise_saddle), ("early_stopping", claim_early_stopping),
          ("batch_sizes", claim_batch_sizes), ("linear_scaling", claim_linear_scaling), ("l1", claim_l1_sparsity))
