"""The NumPy reference of the low-precision kernels: load every buffer into float32
(bfloat16 bits << 16, float16 via NumPy, 8-bit codes by :func:`q8.dequantize_blockwise`),
run the rule's float32 reference, and store back (round to nearest even or
stochastically, :func:`q8.quantize_blockwise`). The kernels do the same per element
and per 256-element block, so the two agree bit for bit.
"""
import numpy as np

from fastopt.lowprec import q8
from fastopt.lowprec.halfs import bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, state_sr_key, stochastic_bits
from fastopt.lowprec.storage import is_unsigned


def parts(variant):
    """``(param storage, grad storage, state storage, copy storage or None)`` of a
    variant name of ``LOW_VARIANTS``."""
    mixed = variant.startswith("mx_")
    bits = variant.split("_")
    if mixed:
        half = bits[1]
        state = "q8" if variant.endswith("_q8") else "bf16" if variant.endswith("_sbf16") else "f32"
        return "f32", half, state, half
    if bits[0] == "f32":
        return "f32", "f32", "q8" if bits[1] == "q8" else "bf16", None
    half = bits[0]
    state = "q8" if variant.endswith("_q8") else ("bf16" if half == "bf16" else "f32")
    return half, half, state, None


def to_f32(a, storage):
    """float32 values of a buffer stored as ``storage`` ("f32", "bf16", "f16")."""
    if storage == "f32":
        return a
    u = np.asarray(a).view(np.uint16)
    return bf16_to_f32(u) if storage == "bf16" else f16_to_f32(u)


def from_f32(x, storage, sr_bits=None):
    """``x`` (float32) as ``storage`` elements (uint16 bits for the halfs)."""
    if storage == "f32":
        return x
    return f32_to_bf16(x, sr_bits) if storage == "bf16" else f32_to_f16(x)


def load(variant, rule, param, grad, states):
    """``(p, g, state arrays)`` in float32 (copies where the storage is not float32)."""
    pstore, gstore, sstore, _ = parts(variant)
    p = to_f32(param, pstore).reshape(param.shape)
    g = to_f32(grad, gstore).reshape(param.shape)
    out = []
    if sstore == "q8":
        for j, name in enumerate(rule.state):
            codes, absmax = states[2 * j], states[2 * j + 1]
            out.append(q8.dequantize_blockwise(codes, absmax, signed=not is_unsigned(rule, name)))
    else:
        out = [to_f32(s, sstore).reshape(param.shape) for s in states]
    return p, g, out


def store(variant, rule, param, states, copy, p, s32, sr_key=None, sround=1):
    """Write float32 results back into the buffers of ``variant``; ``sr_key``: the
    step's counter key when stores round stochastically, ``sround`` which of them:
    bit 0 parameter stores, bit 1 bfloat16 state stores (each state with the key
    :func:`~fastopt.lowprec.halfs.state_sr_key`)."""
    pstore, _, sstore, cstore = parts(variant)
    half_store = cstore or pstore
    sr = None
    if sr_key is not None and sround & 1 and half_store == "bf16":
        sr = stochastic_bits(sr_key, p.size).reshape(p.shape)
    if cstore is not None:
        copy.view(np.uint16)[...] = from_f32(p, cstore, sr)
    elif pstore != "f32":
        param.view(np.uint16)[...] = from_f32(p, pstore, sr)
    if sstore == "q8":
        for j, name in enumerate(rule.state):
            codes, absmax = q8.quantize_blockwise(s32[j], signed=not is_unsigned(rule, name))
            states[2 * j][...] = codes
            states[2 * j + 1][...] = absmax
    elif sstore == "bf16":
        for j, (st, v) in enumerate(zip(states, s32)):
            bits = None
            if sr_key is not None and sround & 2:
                bits = stochastic_bits(state_sr_key(sr_key, j), v.size).reshape(v.shape)
            st.view(np.uint16)[...] = from_f32(v, "bf16", bits)
