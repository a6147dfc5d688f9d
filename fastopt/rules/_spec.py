"""The data model of an update rule: everything the code generator, the compiled
engine and the Python API need to know about one rule, in one place."""
from __future__ import annotations

import ast
import math
import numbers
from dataclasses import dataclass, field

from ._check import check_rule, definition_site, line_origins, show_path
from ._layout import accesses


@dataclass(frozen=True)
class Hyper:
    """A hyper-parameter of a rule, with its default and its valid range.

    ``lo``/``hi`` bound the value; ``lo_open``/``hi_open`` make the bound strict.
    ``kind`` is "float" or "bool" (bools travel to the kernels as 0.0/1.0).
    """
    name: str
    default: float
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    kind: str = "float"
    doc: str = ""

    def check(self, value, label=None):
        """Return ``value`` as a float, or raise TypeError/ValueError naming the hyper-parameter."""
        # the common cases first, without the (slow) ABC checks below
        if type(value) is float and self.kind == "float" and math.isfinite(value):
            if ((self.lo < value or (value == self.lo and not self.lo_open))
                    and (value < self.hi or (value == self.hi and not self.hi_open))):
                return value
        elif (value is True or value is False) and self.kind == "bool":
            return 1.0 if value else 0.0
        label = label or self.name
        if self.kind == "bool":
            # numpy.bool_ is no numbers.Integral, but is a bool all the same
            if (isinstance(value, numbers.Integral) or type(value).__name__ in ("bool", "bool_")) and value in (0, 1):
                return 1.0 if value else 0.0
            raise TypeError(f"{label} must be a bool, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{label} must be a real number, got {type(value).__name__}")
        try:
            v = float(value)
        except OverflowError:               # an int beyond float range, e.g. 10**400
            raise ValueError(f"invalid {label} {value!r}: must be finite") from None
        if not math.isfinite(v):
            raise ValueError(f"invalid {label} {v!r}: must be finite")
        if v < self.lo or (self.lo_open and v == self.lo) or v > self.hi or (self.hi_open and v == self.hi):
            raise ValueError(f"invalid {label} {v!r}: must be in {self.range_text()}")
        return v

    def range_text(self):
        left = "(" if self.lo_open or self.lo == -math.inf else "["
        right = ")" if self.hi_open or self.hi == math.inf else "]"
        return f"{left}{self.lo:g}, {self.hi:g}{right}"


#: the domain of state that only accumulates squares or maxima of absolute values
NONNEG = Hyper("state", 0.0, lo=0.0, doc="non-negative")

# The hyper-parameters every rule takes besides its own (checked by every entry point).
LR = Hyper("lr", 1e-3, lo=0.0)
WEIGHT_DECAY = Hyper("weight_decay", 0.0, lo=0.0)
CLIP_VALUE = Hyper("clip_value", float("inf"), lo=0.0, lo_open=True)
L1 = Hyper("l1", 0.0, lo=0.0)
FLAG = Hyper("flag", 0.0, kind="bool")     # pass the flag's name as the label


@dataclass(frozen=True)
class Rule:
    """One fused kernel variant.

    * ``state``: per-element state buffers, in kernel argument order after ``param``
      and ``grad``; ``state_init`` maps a state name to the hyper-parameter holding its
      initial value (default 0).
    * ``scalar_state``: per-parameter scalars carried between steps (e.g. NAdam's
      running product of momentum coefficients), with initial values.
    * ``hyper``: the rule's own hyper-parameters (``lr`` and the common
      pre-processing options are added by the engine).
    * ``scalars``: Python-syntax code run once per step in double precision. It sees
      ``t`` (the 1-based step as a double), ``lr``, every hyper-parameter and every
      scalar state by name, must assign every scalar state and every name in
      ``outputs`` that is not a hyper-parameter, and may call ``sqrt``, ``fabs``, ``exp`` and ``log``.
    * ``outputs``: the scalars the body sees, each rounded once to the buffer's
      precision. An output may name a hyper-parameter itself (passed through). The
      older rules copy one under another name (``eps_ = eps``); both forms give the
      same kernel.
    * ``body``: code run per element in the buffer's precision: one assignment a
      line, Python syntax (``a if c else b`` for branches). It sees ``p`` and ``g``
      (already pre-processed), each state name, each output and the common scalars
      (``lr``, ...: see ``_layout.COMMON_SCALARS``), must assign ``p`` and every
      state, may assign temporaries, and may call ``sqrt``, ``fabs``, ``exp`` and ``log``. A float
      literal such as ``1.0`` is the buffer's precision (the generator casts it), so
      it never promotes float32 arithmetic to double.
    * ``flags``: outputs that are integers (branch selectors) rather than reals.
    * ``domains``: state buffer or scalar state name -> :class:`Hyper` giving the values
      the rule can produce there (e.g. second moments are >= 0). A loaded state_dict
      and the low-level entry points are checked against it, so a value the rule could
      never reach (which would turn the next step into NaN or a wrong-way step) is
      refused instead of corrupting training.
    * ``lr``: the default learning rate: of the low-level ``fastopt.kernels`` function
      and of every optimizer class whose default settings select this rule.
    * ``reference``: the plain-NumPy step of the rule, the oracle of the bit-exact
      tests: the name of a function in :mod:`fastopt.reference.rules` (None: the
      rule's own name; variants share one, e.g. every ``rmsprop*`` uses ``rmsprop``),
      or a function in the rule's own file (which imports numpy inside the function,
      since this package imports only the standard library), so that a new rule is one
      new file. It is called as ``f(p, g, *state, t=, lr=, **hyper, **scalar_state)``,
      updates in place and returns the new scalar state, if any.
    * ``sparse_decay``: whether the rule's sparse step has an ``"exact"`` mode (see
      :mod:`fastopt.sparse`). ``None`` (the default): no — a zero gradient still moves
      ``p`` (momentum, Adam-style rules), so skipped steps have no closed-form
      catch-up. A dict: with a zero gradient the step leaves ``p`` alone and only
      multiplies the named state buffers by a constant, ``{state: output}``, where
      the output is a plain copy of a hyper-parameter (``a = alpha``); ``{}`` for rules
      a zero gradient leaves entirely unchanged (SGD, AdaGrad).

    Everything is checked when the rule is defined (see :mod:`fastopt.rules._check`):
    a mistake raises :class:`~fastopt.rules.RuleError` naming the rule's file and line.
    """
    name: str
    doc: str
    state: tuple = ()
    hyper: tuple = ()
    scalars: str = ""
    outputs: tuple = ()
    body: str = ""
    flags: tuple = ()
    scalar_state: tuple = ()          # ((name, initial value), ...)
    decoupled_decay: bool = False     # weight decay is decoupled unless asked otherwise (Lion)
    state_init: dict = field(default_factory=dict)
    domains: dict = field(default_factory=dict)
    lr: float = 1e-3
    reference: object = None
    sparse_decay: dict = None
    # where the rule was defined, and the file line of each line of its code (for
    # errors and for the generated kernels' annotations); set by __post_init__
    origin: tuple = field(init=False, repr=False, compare=False, default=None)
    body_origins: dict = field(init=False, repr=False, compare=False, default=None)

    @property
    def accesses_per_element(self):
        """Array elements read or written per parameter element: param r+w, grad r, state r+w."""
        return accesses(len(self.state))

    def __post_init__(self):
        site = definition_site()
        object.__setattr__(self, "origin", site)
        bad = set(self.outputs) & (set(self.state) | {"p", "g"})
        unknown = set(self.domains) - set(self.state) - {n for n, _ in self.scalar_state}
        if bad or unknown or not set(self.flags) <= set(self.outputs):
            raise ValueError(f"{self.where}: rule {self.name}: outputs named like state {sorted(bad)}, "
                             f"domains naming no state {sorted(unknown)}, or flags {self.flags} not among the outputs")
        check_rule(self, site)
        if self.sparse_decay is not None:
            object.__setattr__(self, "sparse_decay", dict(self.sparse_decay))
            self.sparse_decay_hyper      # a decay that is no copy of a hyper-parameter raises here
        object.__setattr__(self, "body_origins", line_origins(self, site, self.body))

    @property
    def where(self):
        """``path:line`` of the statement that defined the rule."""
        return f"{show_path(self.origin[0])}:{self.origin[1]}"

    @property
    def hyper_names(self):
        return tuple(h.name for h in self.hyper)

    @property
    def scalar_temporaries(self):
        """Names assigned in ``scalars`` that are neither outputs nor scalar state."""
        keep = set(self.outputs) | {n for n, _ in self.scalar_state}
        seen = []
        for n in ast.walk(ast.parse(self.scalars)):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in keep and n.id not in seen:
                seen.append(n.id)
        return tuple(seen)

    @property
    def sparse_decay_hyper(self):
        """``{state: hyper-parameter}``: the decays of :attr:`sparse_decay` by the
        hyper-parameter each output copies (what the NumPy reference multiplies by)."""
        copies = {}
        for node in ast.parse(self.scalars).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Name) and node.value.id in self.hyper_names):
                copies[node.targets[0].id] = node.value.id
        out = {}
        for state, output in self.sparse_decay.items():
            if state not in self.state or output not in self.outputs or output not in copies:
                raise ValueError(f"{self.where}: rule {self.name}: sparse_decay {state!r}: {output!r} must be an "
                                 "output that copies a hyper-parameter, for one of the rule's state buffers")
            out[state] = copies[output]
        return out
