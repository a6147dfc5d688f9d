"""bfloat16 and float16 storage: conversions to and from float32 exactly as the
kernels do them (``fo_lowprec.h``), the reference of the low-precision kernels.

bfloat16 arrays are accepted as ``ml_dtypes.bfloat16`` (the type JAX uses) or, when
the caller says so explicitly, as ``uint16`` arrays holding bfloat16 bit patterns
(a zero-copy view of a ``torch.bfloat16`` tensor). float16 is ``numpy.float16``.
"""
import numpy as np

try:
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:              # bf16 then only through uint16 views
    ml_dtypes = None
    BFLOAT16 = None

FLOAT16 = np.dtype(np.float16)


def bits(a):
    """The uint16 bit patterns of a bfloat16/float16/uint16 array (a view)."""
    return a.view(np.uint16)


def bf16_to_f32(u):
    """float32 values of bfloat16 bit patterns ``u`` (uint16): ``bits << 16``."""
    return (np.asarray(u, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x, sr_bits=None):
    """bfloat16 bit patterns of float32 ``x``: round to nearest even, or, with
    ``sr_bits`` (uint32 random values < 2**16), stochastically: ``(bits + r) >> 16``.
    NaN stays a (quiet) NaN of the same sign."""
    u = np.asarray(x, np.float32).view(np.uint32)
    if sr_bits is None:
        r = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16
    else:
        r = (u + np.asarray(sr_bits, np.uint32)) >> 16
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (u >> 16) | np.uint32(0x40), r).astype(np.uint16)


def f16_to_f32(u):
    """float32 values of float16 bit patterns."""
    return np.asarray(u, np.uint16).view(np.float16).astype(np.float32)


def f32_to_f16(x):
    """float16 bit patterns of float32 ``x`` (round to nearest even)."""
    return np.asarray(x, np.float32).astype(np.float16).view(np.uint16)


SR_KEY_MIX = 0x85EBCA6B


def state_sr_key(key, k):
    """The counter key of state ``k``'s stochastic rounding (``state_rounding=
    "stochastic"``): the step's key xor ``(k + 1) * 0x9E3779B97F4A7C15`` (mod 2**64), a
    stream apart from the parameter's."""
    return (int(key) ^ ((k + 1) * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF


def stochastic_bits(key, n, start=0):
    """The 16-bit random values (as uint32) the kernels add before truncating element
    ``start + i`` to bfloat16 under stochastic rounding; ``key`` is the step's 64-bit
    counter key (seed, step, parameter), as for gradient noise."""
    key = int(key) & 0xFFFFFFFFFFFFFFFF
    k0 = np.uint32((key & 0xFFFFFFFF) ^ SR_KEY_MIX)
    k1 = np.uint32(key >> 32)
    i = np.arange(start, start + n, dtype=np.uint64).astype(np.uint32)
    with np.errstate(over="ignore"):
        x = (i ^ k0) * np.uint32(0x9E3779B1) + k1
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x21F0AAAD)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x735A2D97)
        x ^= x >> np.uint32(15)
    return x >> np.uint32(16)
