"""The data model of an optimizer class: how a torch-like class drives its rules.

A rule's file declares its classes next to its rules (as optax's ``alias.py`` states
each optimizer once); :mod:`fastopt.optim.optimizers` builds the classes from these
specs, :mod:`fastopt.reference.optim` mirrors them, and the bench takes its rows
from them. Defaults are not restated: a hyper-parameter's default is its
:class:`~fastopt.rules.Hyper`'s, ``lr``'s is the selected rule's ``lr``, and a spec
lists only what differs (e.g. ``Momentum``'s ``momentum=0.9``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ._spec import WEIGHT_DECAY

#: group keys every class takes after its own (keyword-only, in this order)
COMMON_KWONLY = ("maximize", "clip_value")
#: the L1 / elastic-net keys every class takes last (added to any ``kwonly``)
L1_KWONLY = ("l1", "l1_coupled")
#: defaults of the group keys that are no rule's hyper-parameter
COMMON_DEFAULTS = {"weight_decay": WEIGHT_DECAY.default, "maximize": False, "clip_value": None,
                   "decoupled_weight_decay": False, "l1": 0.0, "l1_coupled": False}


@dataclass(frozen=True)
class Bench:
    """A row of the benchmark table: its key, the class's arguments, and the
    ``torch.optim`` class it is compared with (None: PyTorch has no equivalent)."""
    key: str
    kwargs: dict = field(default_factory=dict)
    torch: str | None = None
    torch_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClassSpec:
    """One optimizer class.

    * ``rules``: ``((rule name, {group key: value}), ...)``: the first entry whose
      conditions all hold is the group's kernel. A bool condition tests the value's
      truth (``{"momentum": True}``: momentum ≠ 0), any other value equality
      (``{"variant": "optax"}``); when none holds, the key with a string condition is
      reported as invalid.
    * ``args``: the positional-or-keyword arguments after ``params``, in order;
      ``kwonly``: the keyword-only ones. Both are group keys; their defaults are
      derived (see the module docstring) unless given in ``defaults``.
    * ``packed``: a group key holding several hyper-parameters as a tuple, PyTorch
      style: ``{"betas": ("beta1", "beta2")}``.
    * ``flags``: boolean keys that choose the kernel (they cannot change later).
    * ``fixed``: keys the class always sets and refuses to change (AdamW's
      decoupled decay); ``preset``: keys it sets at construction (AMSGrad's
      ``amsgrad=True``). Neither appears in the signature.
    * ``check``: a function ``check(group)`` raising ValueError for a combination
      the rules cannot run (Nesterov without momentum).
    * ``base``: the name of the class this one subclasses (see :meth:`subclass`).
    * ``bench``: the class's row in the benchmark table, or None.
    """
    name: str
    doc: str
    rules: tuple
    args: tuple
    kwonly: tuple = COMMON_KWONLY
    defaults: dict = field(default_factory=dict)
    packed: dict = field(default_factory=dict)
    flags: tuple = ()
    fixed: dict = field(default_factory=dict)
    preset: dict = field(default_factory=dict)
    check: object = None
    base: str | None = None
    bench: Bench | None = None

    def subclass(self, name, doc, *, defaults=None, fixed=None, preset=None, bench=None):
        """A class derived from this one: the same rules and keys, some of them set
        (``fixed``/``preset``, which leave the signature) or defaulted otherwise."""
        fixed, preset = dict(self.fixed, **(fixed or {})), dict(self.preset, **(preset or {}))
        gone = set(fixed) | set(preset)
        return replace(self, name=name, doc=doc, base=self.name, defaults=dict(self.defaults, **(defaults or {})),
                       fixed=fixed, preset=preset, bench=bench,
                       args=tuple(a for a in self.args if a not in gone),
                       kwonly=tuple(a for a in self.kwonly if a not in gone),
                       _keys=self.keys)

    _keys: tuple = None

    def __post_init__(self):
        if not set(L1_KWONLY) <= set(self.kwonly):
            object.__setattr__(self, "kwonly", tuple(self.kwonly) + tuple(k for k in L1_KWONLY
                                                                       if k not in self.kwonly))

    @property
    def keys(self):
        """Every group key the class sets, in the order of the root class's signature."""
        return self._keys or self.args + self.kwonly

    def select(self, group, by_name):
        """The rule a group (a dict of the class's keys) runs."""
        for rule, when in self.rules:
            if all(bool(group[k]) is v if isinstance(v, bool) else group[k] == v for k, v in when.items()):
                return by_name[rule]
        for key in {k for _, when in self.rules for k, v in when.items() if isinstance(v, str)}:
            choices = [when[key] for _, when in self.rules if key in when]
            if group[key] not in choices:
                raise ValueError(f"{key} must be {' or '.join(map(repr, choices))}, got {group[key]!r}")
        raise ValueError(f"{self.name}: no rule for {({k: group[k] for _, w in self.rules for k in w})}")

    def signature_defaults(self, by_name):
        """``{group key: default}`` for every key, in :attr:`keys` order (fixed and
        preset values included)."""
        family = [by_name[r] for r, _ in self.rules]
        hyper = {}
        for rule in family:
            for h in rule.hyper:
                hyper.setdefault(h.name, h.default)
        out = {}
        for key in self.keys:
            if key in self.fixed or key in self.preset or key in self.defaults:
                out[key] = {**self.defaults, **self.preset, **self.fixed}[key]
            elif key in self.packed:
                out[key] = tuple(hyper[h] for h in self.packed[key])
            elif key in hyper:
                out[key] = hyper[key]
            elif key in self.flags:
                out[key] = False
            elif key in COMMON_DEFAULTS:
                out[key] = COMMON_DEFAULTS[key]
            elif key == "lr":
                out[key] = None         # the selected rule's, below
            else:
                raise ValueError(f"class {self.name}: no default for {key!r}")
        if out.get("lr", 0.0) is None:
            out["lr"] = self.select({**out, "lr": 0.0}, by_name).lr
        return out

    def hyper_keys(self):
        """rule hyper-parameter -> (group key, index in a packed tuple), for packed keys."""
        return {h: (key, i) for key, names in self.packed.items() for i, h in enumerate(names)}

    def bench_row(self, by_name):
        """The benchmark row as a dict of ``Algo``'s fields (None: no row)."""
        if self.bench is None:
            return None
        defaults = dict(self.signature_defaults(by_name), **self.bench.kwargs)
        return dict(key=self.bench.key, cls=self.name, rule=self.select(defaults, by_name).name,
                    kwargs=dict(self.bench.kwargs), torch_cls=self.bench.torch,
                    torch_kwargs=dict(self.bench.torch_kwargs))
