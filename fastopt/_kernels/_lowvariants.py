"""The low-precision values of the variant axis (issue 12): bfloat16/float16 storage
of parameters and gradients, bfloat16 or 8-bit block-wise state, and mixed precision
(float32 master weights updated from half gradients, the half working copy written in
the same pass). Arithmetic is float32 in every one of them.

Only the combinations below are generated, and only for :data:`LOW_RULES` (8-bit
state only for :data:`Q8_RULES`): every further variant is one more kernel per rule
to compile. The order of :data:`LOW_VARIANTS` is the kernel table's column order.
"""
from dataclasses import dataclass

from _variants import F32, Storage

BF16 = Storage("bf16", "uint16_t", "float", "f", "fo_u16p", "fo_cu16p", "fo_bf16_load({0})", "fo_bf16_store({0})")
F16 = Storage("f16", "uint16_t", "float", "f", "fo_u16p", "fo_cu16p", "fo_f16_load({0})", "fo_f16_store({0})")
Q8 = "q8"        # 8-bit block-wise state: uint8 codes and a float32 absmax per 256 elements

#: bfloat16 stores that stochastic rounding may replace (parameters and working copies)
SR_STORE = {"bf16": "fo_bf16_store_sr({0}, _k0, _k1, <uint32_t>(_start + _i))"}
#: ... the same chosen by a run-time flag (loops where parameter and state rounding differ)
SR_PARAM_BY_FLAG = {"bf16": "fo_bf16_store_by({0}, _psr, _k0, _k1, <uint32_t>(_start + _i))"}
#: bfloat16 state stores under ``state_rounding="stochastic"``: state ``{s}`` draws from a
#: stream of its own (fastopt.lowprec.halfs.state_sr_key)
SR_STATE_STORE = {"bf16": "fo_bf16_store_by({0}, _ssr, _sk0_{s}, _sk1_{s}, <uint32_t>(_start + _i))"}


@dataclass(frozen=True)
class LowVariant:
    """``param`` stores the parameter (the float32 master under mixed precision),
    ``grad`` the gradient, ``state`` the state (a Storage or :data:`Q8`) and ``copy``
    the half working copy written beside the master (None: no copy)."""
    name: str
    param: Storage
    grad: Storage
    state: object
    copy: object = None

    @property
    def q8(self):
        return self.state == Q8


LOW_VARIANTS = (
    LowVariant("f32_sbf16", F32, F32, BF16),
    LowVariant("f32_q8", F32, F32, Q8),
    LowVariant("bf16", BF16, BF16, BF16),
    LowVariant("bf16_q8", BF16, BF16, Q8),
    LowVariant("f16", F16, F16, F32),
    LowVariant("mx_bf16", F32, BF16, F32, BF16),
    LowVariant("mx_bf16_sbf16", F32, BF16, BF16, BF16),
    LowVariant("mx_bf16_q8", F32, BF16, Q8, BF16),
    LowVariant("mx_f16", F32, F16, F32, F16),
    LowVariant("mx_f16_sbf16", F32, F16, BF16, F16),
    LowVariant("mx_f16_q8", F32, F16, Q8, F16),
)
LOW_INDEX = {v.name: k for k, v in enumerate(LOW_VARIANTS)}

#: Rules generated in the low-precision variants (Adam also runs AdamW).
LOW_RULES = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "lion", "ademamix")
#: ... and those with 8-bit state (SGD has none).
Q8_RULES = ("momentum", "adagrad", "rmsprop", "adam", "lion", "ademamix")

#: Buffer slot of the working copy in Slot.buf (states take 2.., two buffers each when 8-bit):
#: MAX_BUFFERS - 1 of _types.pxd, where the engine puts it.
COPY_SLOT = 8
