"""The optimizer classes, built from the :class:`~fastopt.rules.ClassSpec` that each
rule module declares (``fastopt.rules.CLASSES``). Each class chooses its kernel
variant from its flags and maps its PyTorch-style arguments onto the rule's
hyper-parameters; the arithmetic lives in :mod:`fastopt.rules` and is documented
there and in each class docstring.

A class's ``__init__`` is real code with a real signature (``inspect.signature`` and
``help`` show every argument and default), generated as ``collections.namedtuple``
generates its ``__new__``: the defaults are the spec's, which come from the rules.
"""
import inspect

from fastopt.optim.base import Optimizer
from fastopt.rules import BY_NAME, CLASSES

__all__ = ["ALL"] + [spec.name for spec in CLASSES]


#: the optimizer-wide options (keyword-only arguments of :class:`Optimizer`) and their defaults
OPTIONS = {name: p.default for name, p in inspect.signature(Optimizer.__init__).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _init_function(spec):
    """``__init__(self, params, <args>, *, <kwonly>, <options>)`` passing every group key
    of the class (its fixed and preset values included) and the optimizer-wide options
    to :class:`Optimizer`: every argument is in the signature, and an unknown keyword is
    reported against the class (``Adam.__init__() got an unexpected keyword ...``)."""
    defaults = spec.signature_defaults(BY_NAME)
    shown = [a for a in spec.args] + ["*"] + list(spec.kwonly)
    params = ", ".join(a if a == "*" else f"{a}=_defaults[{a!r}]" for a in shown)
    params += "".join(f", {o}=_options[{o!r}]" for o in OPTIONS)
    keys = ", ".join(f"{k!r}: {k}" if k in spec.args or k in spec.kwonly else f"{k!r}: _defaults[{k!r}]"
                     for k in spec.keys)
    passed = ", ".join(f"{o}={o}" for o in OPTIONS)
    source = (f"def __init__(self, params, {params}):\n"
              f"    _Optimizer.__init__(self, params, {{{keys}}}, {passed})\n")
    namespace = {"_defaults": defaults, "_Optimizer": Optimizer, "_options": OPTIONS}
    exec(compile(source, f"<fastopt.optim: {spec.name}.__init__>", "exec"), namespace)
    return namespace["__init__"]


def _sparse_note(spec):
    """The class docstring's paragraph on sparse gradients, from its rules' ``sparse_decay``."""
    rules = [BY_NAME[name] for name, _ in spec.rules]
    exact = [r.name for r in rules if r.sparse_decay is not None]
    lazy_only = [r.name for r in rules if r.sparse_decay is None]
    text = ("\n\n    Sparse gradients (:mod:`fastopt.sparse`, 2-D parameters): ``sparse=\"lazy\"`` (default)"
            " steps only the touched rows and their state. ")
    if not lazy_only:
        text += "``sparse=\"exact\"`` (the dense step with zero rows) is available."
    elif not exact:
        text += ("``sparse=\"exact\"`` is refused: with a zero gradient this rule still moves the parameter, "
                 "and the skipped steps have no closed form.")
    else:
        text += (f"``sparse=\"exact\"`` is available for the {', '.join(exact)} kernel(s), refused for "
                 f"{', '.join(lazy_only)} (a zero gradient still moves the parameter there).")
    return text + "\n"


def _class(spec, bases):
    def _rule_for(self, group):
        return spec.select(group, BY_NAME)

    attrs = {"__doc__": spec.doc.rstrip() + _sparse_note(spec), "__module__": __name__, "__qualname__": spec.name,
             "__init__": _init_function(spec), "_rule_for": _rule_for, "_spec": spec,
             "_hyper_keys": spec.hyper_keys(), "_flags": tuple(spec.flags),
             # a preset key chooses the class's kernel: a group may not undo it (AMSGrad without amsgrad)
             "_fixed": dict(spec.preset, **spec.fixed)}
    if spec.check is not None:
        attrs["_check_extra"] = lambda self, group: spec.check(group)
    cls = type(spec.name, bases, attrs)
    cls.__init__.__qualname__ = f"{spec.name}.__init__"
    return cls


ALL = []
for _spec in CLASSES:
    globals()[_spec.name] = _class(_spec, (globals()[_spec.base] if _spec.base else Optimizer,))
    ALL.append(globals()[_spec.name])
del _spec
