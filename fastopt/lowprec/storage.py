"""How an optimizer stores one parameter in low precision: the choice of kernel variant
from the parameter's dtype and the :class:`Precision` options, the engine's buffers
(float32 master weights, bfloat16 or 8-bit state) and their ``state_dict`` form.
"""
import math
import numbers

import numpy as np

from fastopt.lowprec import q8
from fastopt.lowprec.halfs import BFLOAT16, FLOAT16, bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16

STATES = (None, "float32", "bfloat16", "8bit")
ROUNDINGS = ("nearest", "stochastic")
#: Default size below which ``state="8bit"`` keeps an array's state in full precision
#: (bitsandbytes' ``min_8bit_size``): tiny arrays (biases, norms) save nothing and lose most.
MIN_8BIT_SIZE = 4096


class Precision:
    """Low-precision options of an optimizer (``precision=`` of every optimizer).

    * ``state``: ``None`` (the parameter's own precision; bfloat16 for bfloat16
      parameters), ``"float32"``, ``"bfloat16"`` or ``"8bit"`` (block-wise, 256 elements
      per float32 absmax, bitsandbytes' dynamic maps: signed for signed state such as
      the first moment, unsigned for second moments and sums of squares). Arrays with
      fewer than ``min_8bit_size`` elements keep float32 state unless ``force_8bit``.
    * ``master_weights``: for bfloat16/float16 parameters: keep float32 master weights
      in the optimizer, read half gradients, update the master and write the half
      parameter (the working copy) in the same pass (ZeRO-Offload's pattern).
    * ``loss_scale``: gradients are divided by it first (fp16 training); with
      ``nonfinite="skip"`` a step with an inf/NaN gradient is skipped and reported
      (``step`` returns False). Change it with :meth:`Optimizer.set_loss_scale`.
    * ``rounding``: ``"nearest"`` (to nearest even) or ``"stochastic"`` for bfloat16
      parameter stores (all-bf16 parameters, or the working copy): ``(bits + r) >> 16``
      with 16 random bits per element from a counter-based hash of (seed, step,
      parameter, element), reproducible from the seed like the gradient noise.
    * ``state_rounding``: the same choice for bfloat16 state stores (``state=
      "bfloat16"``, or bfloat16 parameters' own state). Nearest rounding loses small
      updates of slowly decaying state (``v * 0.999`` rounds back to ``v`` in
      bfloat16's 8 bits); stochastic rounding keeps them on average, at the cost of a
      hash per element. Each state draws from a stream of its own. Refused where the
      state is not bfloat16 (a rule without state, plain SGD, has nothing to round).
    * ``uint16_is_bf16``: accept ``uint16`` parameter and gradient arrays as bfloat16
      bit patterns (e.g. ``torch_tensor.view(torch.int16).numpy().view(np.uint16)``,
      zero-copy); ``ml_dtypes.bfloat16`` arrays are always accepted.
    """

    def __init__(self, state=None, *, master_weights=False, loss_scale=None, rounding="nearest",
                 uint16_is_bf16=False, min_8bit_size=MIN_8BIT_SIZE, force_8bit=False, state_rounding="nearest"):
        if state not in STATES:
            raise ValueError(f"precision state must be one of {STATES}, got {state!r}")
        for name, flag in (("master_weights", master_weights), ("uint16_is_bf16", uint16_is_bf16),
                           ("force_8bit", force_8bit)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        if state_rounding not in ROUNDINGS:
            raise ValueError(f"state_rounding must be one of {ROUNDINGS}, got {state_rounding!r}")
        if state_rounding == "stochastic" and state in ("float32", "8bit"):
            raise ValueError(f"state_rounding='stochastic' needs bfloat16 state, not state={state!r}")
        if loss_scale is not None:
            loss_scale = check_loss_scale(loss_scale)
        if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, numbers.Integral) or min_8bit_size < 0:
            raise ValueError(f"min_8bit_size must be an int >= 0, got {min_8bit_size!r}")
        if force_8bit and state != "8bit":
            raise ValueError("force_8bit=True needs state='8bit'")
        self.state, self.master_weights, self.loss_scale = state, bool(master_weights), loss_scale
        self.rounding, self.state_rounding, self.uint16_is_bf16 = rounding, state_rounding, bool(uint16_is_bf16)
        self.min_8bit_size, self.force_8bit = int(min_8bit_size), bool(force_8bit)

    def __repr__(self):
        return (f"Precision(state={self.state!r}, master_weights={self.master_weights}, loss_scale={self.loss_scale}, "
                f"rounding={self.rounding!r}, state_rounding={self.state_rounding!r}, "
                f"uint16_is_bf16={self.uint16_is_bf16}, "
                f"min_8bit_size={self.min_8bit_size}, force_8bit={self.force_8bit})")

    @staticmethod
    def check(value):
        """``value`` as a Precision (a dict of its arguments is accepted)."""
        if isinstance(value, Precision):
            return value
        if isinstance(value, dict):
            return Precision(**value)
        raise TypeError(f"precision must be a fastopt.Precision (or a dict of its arguments), got {value!r}")


def check_loss_scale(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"loss_scale must be a finite number > 0, got {value!r}")
    return float(value)


def storage_of(a, name, precision):
    """``"f32"``, ``"f64"``, ``"bf16"`` or ``"f16"``: how the array ``a`` stores its
    elements; TypeError naming ``name`` for anything else."""
    if a.dtype == np.float32:
        return "f32"
    if a.dtype == np.float64:
        return "f64"
    if BFLOAT16 is not None and a.dtype == BFLOAT16:
        return "bf16"
    if a.dtype == FLOAT16:
        return "f16"
    if a.dtype == np.uint16:
        if precision.uint16_is_bf16:
            return "bf16"
        raise TypeError(f"{name} is uint16: pass precision=fastopt.Precision(uint16_is_bf16=True) if it holds "
                        "bfloat16 bit patterns")
    raise TypeError(f"{name} has dtype {a.dtype}; fastopt takes float32, float64, bfloat16 (ml_dtypes) and "
                    "float16 arrays")


def as_param(obj, name, precision):
    """A parameter array for a low-precision optimizer (checked, never copied)."""
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(obj).__name__}")
    storage_of(obj, name, precision)
    if not (obj.flags.c_contiguous and obj.flags.aligned and obj.flags.writeable and obj.dtype.isnative):
        raise ValueError(f"{name} must be a writeable, aligned, C-contiguous array in native byte order")
    return obj


def variant_for(storage, n, name, rule, precision, generated):
    """The kernel variant name for a parameter of ``n`` elements stored as ``storage``
    (None: the float32/float64 kernels), or ValueError naming ``name``."""
    state, mixed = precision.state, precision.master_weights
    if not rule.state:
        state = None                              # nothing to store (plain SGD)
    eight = state == "8bit"
    if eight and precision.force_8bit and n < q8_min():
        raise ValueError(f"{name} has {n} elements, fewer than one 8-bit block ({q8_min()}); it cannot hold "
                         "8-bit state (force_8bit=True)")
    if eight and n < precision.min_8bit_size and not precision.force_8bit:
        eight, state = False, None                # small arrays keep full-precision state
    if mixed:
        if storage not in ("bf16", "f16"):
            raise ValueError(f"{name} is {storage}: master_weights=True is for bfloat16/float16 parameters")
        variant = f"mx_{storage}" + {None: "", "float32": "", "bfloat16": "_sbf16", "8bit": "_q8"}[state]
    elif storage == "f32":
        variant = {None: None, "float32": None, "bfloat16": "f32_sbf16", "8bit": "f32_q8"}[state]
    elif storage == "f64":
        if state not in (None, "float32"):
            raise ValueError(f"{name} is float64: its state stays float64 (precision state {precision.state!r} "
                             "is for float32 and half parameters)")
        variant = None
    elif storage == "bf16":
        if eight:
            variant = "bf16_q8"
        elif state in (None, "bfloat16"):
            variant = "bf16"
        else:
            raise ValueError(f"{name} is bfloat16 without master weights: its state is bfloat16 or 8-bit "
                             f"(not {state!r}); use master_weights=True for float32 state")
    else:
        if state not in (None, "float32"):
            raise ValueError(f"{name} is float16 without master weights: its state is float32 (not "
                             f"{precision.state!r}); use master_weights=True")
        variant = "f16"
    if precision.state_rounding == "stochastic" and rule.state and not (
            variant is not None and (variant == "bf16" or variant.endswith("_sbf16"))):
        if storage == "f64":
            advice = "a float64 parameter keeps float64 state"
        else:
            advice = "this parameter's state would be float32; use state='bfloat16'"
        raise ValueError(f"{name}: state_rounding='stochastic' is for bfloat16 state ({advice})")
    if variant is not None and (rule.name, variant) not in generated:
        raise ValueError(f"{name}: the '{rule.name}' rule has no {variant} kernel (low precision is generated "
                         "for SGD, momentum, Adagrad, plain RMSprop, Adam/AdamW, Lion and AdEMAMix; 8-bit state "
                         "not for plain SGD)")
    return variant


def q8_min():
    return q8.BLOCK


_BYTES = {"f32": 4, "bf16": 2, "f16": 2}


class LowParam:
    """One parameter's low-precision storage: the engine's parameter buffer (the
    master weights, or a uint16 view of a half parameter), the state buffers in the
    engine's order (8-bit: codes then absmax per state), the working copy, and the
    :class:`~fastopt._kernels.engine.LowSlot` describing them."""

    def __init__(self, param, name, variant, rule, init_values, precision):
        from fastopt._kernels.engine import LowSlot
        self.variant, self.rule = variant, rule
        self.q8 = variant.endswith("_q8")
        mixed = variant.startswith("mx_")
        if variant.startswith("f32"):
            pstore = "f32"
        else:
            pstore = variant.split("_")[1] if mixed else variant.split("_")[0]
        self.half = pstore if pstore in ("bf16", "f16") else None
        n = param.size
        if mixed:
            values = bf16_to_f32(param.view(np.uint16)) if self.half == "bf16" else f16_to_f32(param.view(np.uint16))
            self.engine_param = np.ascontiguousarray(values.reshape(param.shape), dtype=np.float32)
            self.copy = param.view(np.uint16)
        elif self.half is not None:
            self.engine_param, self.copy = param.view(np.uint16), None
        else:
            self.engine_param, self.copy = param, None
        self.mixed = mixed
        sstore = ("q8" if self.q8 else "bf16" if (variant.endswith("sbf16") or variant == "bf16") else "f32")
        self.sstore = sstore
        self.unsigned = tuple(is_unsigned(rule, s) for s in rule.state)
        states, dtypes, sizes = [], [], []
        for s, v, uns in zip(rule.state, init_values, self.unsigned):
            full = np.full(param.shape, v, np.float32)
            if sstore == "q8":
                codes, absmax = q8.quantize_blockwise(full, signed=not uns)
                states += [codes, absmax]
                dtypes += [np.dtype(np.uint8), np.dtype(np.float32)]
                sizes += [n, absmax.size]
            elif sstore == "bf16":
                states.append(f32_to_bf16(full))
                dtypes.append(np.dtype(np.uint16))
                sizes.append(n)
            else:
                states.append(full)
                dtypes.append(np.dtype(np.float32))
                sizes.append(n)
        self.states = tuple(states)
        gstore = self.half or "f32"
        if gstore == "bf16":
            grad_dtypes = tuple(d for d in (BFLOAT16, np.dtype(np.uint16) if precision.uint16_is_bf16 else None)
                                if d is not None)
            grad_names = " or ".join(["bfloat16"] + (["uint16 (bf16 bits)"] if precision.uint16_is_bf16 else []))
            grad_view = np.uint16
        elif gstore == "f16":
            grad_dtypes, grad_names, grad_view = (FLOAT16,), "float16", np.uint16
        else:
            grad_dtypes, grad_names, grad_view = (np.dtype(np.float32),), "float32", np.float32
        why = ("mixed precision: half gradients update float32 master weights" if mixed else
               f"the parameter is {gstore}")
        gkind = {"mx_bf16": 1, "mx_f16": 2, "bf16": 3, "f16": 4}.get(
            ("mx_" + self.half) if mixed else (self.half or ""), 0)
        sr = int(precision.rounding == "stochastic")
        if sr and self.half != "bf16":
            raise ValueError(f"{name}: stochastic rounding is implemented for bfloat16 parameter stores only "
                             f"(this parameter stores {self.half or 'float32'})")
        if precision.state_rounding == "stochastic" and sstore == "bf16":    # variant_for refused the others
            sr |= 2
        bpe = (2 * (4 if mixed else _BYTES[pstore]) + _BYTES[gstore] + (2 if mixed else 0)
               + len(rule.state) * (2 if sstore == "q8" else 2 * (2 if sstore == "bf16" else 4)))
        self.slot = LowSlot(variant, self.q8, gkind, sr, bpe, self.engine_param.dtype, tuple(dtypes), tuple(sizes),
                            self.copy, grad_dtypes, grad_view, param.shape, grad_names, why)

    # --- state_dict form -----------------------------------------------------------------
    def entries(self):
        """``{name: array}`` of the live state: 8-bit states as ``name`` (uint8 codes) and
        ``name + "_absmax"`` (float32 per block), bfloat16 states as uint16 bit
        patterns, and ``"master"`` (float32) under mixed precision."""
        out = {}
        k = 0
        for s in self.rule.state:
            if self.q8:
                out[s], out[s + "_absmax"] = self.states[k], self.states[k + 1]
                k += 2
            else:
                out[s] = self.states[k]
                k += 1
        if self.mixed:
            out["master"] = self.engine_param
        return out

    def keys(self):
        return set(self.entries())

    def check_entry(self, k, entry):
        """The arrays of a saved entry in :meth:`entries`' order, checked against this
        parameter's storage (dtype, shape, block count, absmax finite and >= 0, the
        rule's state domains); ValueError naming the entry otherwise."""
        checked = {}
        for key, live in self.entries().items():
            a = entry[key]
            if isinstance(a, np.ndarray):
                a = np.asarray(a)
            if not isinstance(a, np.ndarray) or a.dtype != live.dtype or a.shape != live.shape:
                what = "block count" if key.endswith("_absmax") else "shape/dtype"
                raise ValueError(f"state[{k}]['{key}'] must be a {live.dtype} array of shape {live.shape} (wrong "
                                 f"{what}?), got {getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
            if key.endswith("_absmax") and not (np.isfinite(a).all() and (a >= 0).all()):
                raise ValueError(f"state[{k}]['{key}'] holds NaN, inf or negative block scales (corrupted "
                                 "8-bit state)")
            if key == "master" and not np.isfinite(a).all():
                raise ValueError(f"state[{k}]['master'] holds inf or NaN")
            checked[key] = a
        for s, uns in zip(self.rule.state, self.unsigned):
            if uns and self.sstore == "bf16":
                v = bf16_to_f32(checked[s])
                if (v < 0).any():
                    raise ValueError(f"state[{k}]['{s}'] holds negative values; it must be >= 0")
        return [checked[key] for key in self.entries()]

    def commit(self, arrays):
        for dst, src in zip(self.entries().values(), arrays):
            np.copyto(dst, src)
        if self.mixed:
            w = self.engine_param
            self.copy[...] = f32_to_bf16(w) if self.half == "bf16" else f32_to_f16(w)


def is_unsigned(rule, name):
    """True when state ``name`` of ``rule`` is non-negative (unsigned 8-bit map)."""
    dom = rule.domains.get(name)
    return dom is not None and dom.lo is not None and dom.lo >= 0.0
