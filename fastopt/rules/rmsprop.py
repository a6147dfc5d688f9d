"""RMSProp (Hinton's lecture 6e) in PyTorch's form: plain, centered, with momentum."""
from ._classes import Bench, ClassSpec
from ._spec import NONNEG, Hyper, Rule

_HYPER = (
    Hyper("alpha", 0.99, lo=0.0, hi=1.0, doc="smoothing constant"),
    Hyper("eps", 1e-8, lo=0.0),
    Hyper("momentum", 0.0, lo=0.0, hi=1.0),
)
_SCALARS = """
a = alpha
oma = 1.0 - alpha
mu = momentum
eps_ = eps
"""
_OUT = ("a", "oma", "mu", "eps_")


def _rule(centered, momentum):
    state = ["square_avg"]
    lines = ["square_avg = a * square_avg + oma * (g * g)"]
    if centered:
        state.append("grad_avg")
        lines += ["grad_avg = a * grad_avg + oma * g",
                  "den = sqrt(square_avg - grad_avg * grad_avg) + eps_"]
    else:
        lines.append("den = sqrt(square_avg) + eps_")
    if momentum:
        state.append("momentum_buffer")
        lines += ["momentum_buffer = mu * momentum_buffer + g / den",
                  "p = p - lr * momentum_buffer"]
    else:
        lines.append("p = p - lr * (g / den)")
    name = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if momentum else "")
    den = "√(v - ḡ²) + ε" if centered else "√v + ε"
    upd = "b = μ b + g/den; p -= lr b" if momentum else "p -= lr g/den"
    doc = "v = α v + (1-α) g²; " + ("ḡ = α ḡ + (1-α) g; " if centered else "") + f"den = {den}; {upd}"
    # with momentum a zero gradient still moves p (b = μ b; p -= lr b): no exact sparse mode
    decay = None if momentum else {s: "a" for s in state}
    return Rule(name=name, doc=doc, state=tuple(state), hyper=_HYPER, scalars=_SCALARS,
                outputs=_OUT, body="\n".join(lines), domains={"square_avg": NONNEG}, lr=1e-2,
                reference="rmsprop", sparse_decay=decay)


RULES = tuple(_rule(c, m) for c in (False, True) for m in (False, True))

CLASSES = (ClassSpec(
    name="RMSprop",
    doc="""RMSProp: ``v = α v + (1-α) g²``; centered: ``ḡ = α ḡ + (1-α) g``,
    ``den = √(v - ḡ²) + ε``, else ``den = √v + ε``; with momentum μ > 0:
    ``b = μ b + g/den``, ``p -= lr b``; else ``p -= lr g/den``.""",
    rules=tuple(("rmsprop" + ("_centered" if c else "") + ("_momentum" if m else ""), {"centered": c, "momentum": m})
                for c in (True, False) for m in (True, False)),
    args=("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    flags=("centered",),
    bench=Bench("rmsprop", torch="RMSprop"),
),)
