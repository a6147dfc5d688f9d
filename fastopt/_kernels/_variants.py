"""The variant axis of the code generator: how a kernel stores its buffers.

A kernel variant is (parameter/gradient storage, state storage, layout). The
arithmetic always runs in the parameter storage's compute precision; a storage only
says how an element is loaded into, and stored from, that precision. The float32
and float64 kernels are the two shipped instances (same storage for everything,
dense), named ``<rule>_f32``/``<rule>_f64`` as before. Further instances (bf16 or
8-bit state, sparse row-wise steps) need a storage or a layout added here and a
slot for them in ``RuleEntry``; nothing else of the generator changes.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Storage:
    """How one kind of buffer holds its elements.

    ``ctype`` is the element type in memory, ``compute`` the arithmetic's C type and
    ``libm`` the suffix of its libm functions (``sqrtf``). ``load``/``store`` turn an
    element into the compute type and back (format strings of the element
    expression; plain copies when the types agree)."""
    name: str
    ctype: str
    compute: str
    libm: str
    ptr: str
    cptr: str
    load: str = "{0}"
    store: str = "{0}"


F32 = Storage("f32", "float", "float", "f", "fo_f32p", "fo_cf32p")
F64 = Storage("f64", "double", "double", "", "fo_f64p", "fo_cf64p")

DENSE = "dense"
ROWS = "rows"          # sparse row-wise: (row indices, values); not generated yet


@dataclass(frozen=True)
class Variant:
    """One kernel of a rule: ``param`` stores the parameter and gradient (and sets
    the precision of the arithmetic), ``state`` the state buffers."""
    param: Storage
    state: Storage
    layout: str = DENSE

    @property
    def suffix(self):
        """The kernel name's suffix: ``f32`` for all-float32 dense, else every axis."""
        if self.param == self.state and self.layout == DENSE:
            return self.param.name
        return f"{self.param.name}_{self.state.name}_{self.layout}"

    @property
    def ctype(self):
        """The C type of the arithmetic."""
        return self.param.compute

    def load(self, storage, expr):
        """``expr`` (an element of a ``storage`` buffer) in the arithmetic's type."""
        value = storage.load.format(expr)
        return value if storage.compute == self.ctype else f"<{self.ctype}>({value})"

    def store(self, storage, value):
        """``value`` (of the arithmetic's type) as an element of a ``storage`` buffer."""
        value = value if storage.compute == self.ctype else f"<{storage.compute}>({value})"
        return storage.store.format(value)


#: The variants every rule is generated in, in ``RuleEntry``'s field order (f32, f64).
SHIPPED = (Variant(F32, F32), Variant(F64, F64))
