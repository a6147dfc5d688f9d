"""The update rules, one source of truth each.

Every rule is a :class:`Rule`: its state, hyper-parameters, the once-per-step scalar
code, the per-element body, its default learning rate and its NumPy reference. Next
to its rules, a module declares the optimizer classes that run them
(:class:`ClassSpec`: class name, signature, PyTorch-style argument mapping, variants
chosen by flags, bench row). Everything else is derived from ``RULES`` and
``CLASSES``: the float32/float64 kernels (``fastopt/_kernels/_codegen.py``), the
classes of :mod:`fastopt.optim` and :mod:`fastopt.reference`, :mod:`fastopt.kernels`,
the bench's algorithm list (:func:`bench_rows`) and the test registries.

Sparse (row-wise) steps run the same body on the touched rows of a 2-D parameter
(``fastopt/_kernels/_rowcodegen.py``); a rule's ``sparse_decay`` says whether it has an
``"exact"`` sparse mode (a zero gradient only multiplies state by constants: SGD,
AdaGrad, RMSprop without momentum, AdaDelta) — see :mod:`fastopt.sparse`.

A new rule is one new module here defining ``RULES`` (and ``CLASSES``, if it has a
class of its own): every module of this package whose name does not start with an
underscore is loaded, those of ``_ORDER`` first (the order of the tables and of
``fastopt.optim.ALL``), the others after them by name. This package imports nothing
outside the standard library so that the build can load it before anything is
compiled.
"""
import importlib
import os

from ._check import FUNCTIONS, RuleError
from ._classes import Bench, ClassSpec
from ._layout import ACCESSES_FIXED, ACCESSES_PER_STATE, COMMON_SCALARS, accesses
from ._spec import CLIP_VALUE, FLAG, L1, LR, NONNEG, WEIGHT_DECAY, Hyper, Rule

_ORDER = ("sgd", "adagrad", "rmsprop", "adadelta", "adam")


def _module_names():
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_"))
    return [m for m in _ORDER if m in found] + [m for m in found if m not in _ORDER]


_MODULES = [importlib.import_module(f"{__name__}.{m}") for m in _module_names()]

RULES = tuple(r for m in _MODULES for r in m.RULES)
BY_NAME = {r.name: r for r in RULES}
CLASSES = tuple(c for m in _MODULES for c in getattr(m, "CLASSES", ()))
CLASS_BY_NAME = {c.name: c for c in CLASSES}

MAX_STEP = 2 ** 53                         # steps reach the kernels as doubles


def _consistent():
    for names in ([r.name for r in RULES], [c.name for c in CLASSES]):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RuleError(f"defined twice: {dup}")
    for c in CLASSES:
        for rule, _ in c.rules:
            if rule not in BY_NAME:
                raise RuleError(f"class {c.name} runs rule {rule!r}, which no module defines")
        if c.base is not None and c.base not in CLASS_BY_NAME:
            raise RuleError(f"class {c.name} subclasses {c.base!r}, which no module defines")
        c.signature_defaults(BY_NAME)          # every key has a default


_consistent()


def bench_rows():
    """The benchmark's algorithms, one dict of ``fastopt.bench.Algo``'s fields (key,
    cls, rule, kwargs, torch_cls, torch_kwargs) per class that declares a bench row,
    in class order: ``ALGOS = tuple(Algo(**row) for row in bench_rows())``."""
    return [row for row in (c.bench_row(BY_NAME) for c in CLASSES) if row is not None]


__all__ = ["Hyper", "Rule", "RuleError", "ClassSpec", "Bench", "NONNEG", "RULES", "BY_NAME", "CLASSES",
           "CLASS_BY_NAME", "COMMON_SCALARS", "ACCESSES_FIXED", "ACCESSES_PER_STATE", "accesses", "LR",
           "WEIGHT_DECAY", "CLIP_VALUE", "L1", "FLAG", "MAX_STEP", "bench_rows"]
