"""bfloat16/float16 parameters in ``fastopt.torch``: zero-copy NumPy views of half
tensors, the :class:`fastopt.Precision` the adapter hands the fastopt optimizer, and
the torch-format state entries of a low-precision parameter.

State entries (``state_dict()["state"][i]``) of a parameter stored in low precision:

* ``step`` and each state of the rule under torch's name (``exp_avg``,
  ``exp_avg_sq``, ...), as a dense tensor of its values: bfloat16 state as a bfloat16
  tensor (what ``torch.optim.Adam`` keeps for bfloat16 parameters), float32 state as
  float32, 8-bit state dequantised to float32. ``torch.optim`` can load it (it casts
  the tensors to the parameter's dtype).
* extra keys, read only by fastopt.torch, that make its own round trip bitwise:
  ``master`` (float32 master weights, ``precision.master_weights``) and, for 8-bit
  state, ``<state>_q8`` (uint8 codes) and ``<state>_absmax`` (float32, one per block
  of 256 elements).

Loading: a ``master`` (float32) is taken as the master weights; without it (a
``torch.optim`` state_dict) the master weights are the parameter's current values.
8-bit state is taken from ``<state>_q8``/``<state>_absmax`` when they are uint8 and
float32, else quantised from the dense values. ``torch.optim`` casts every state
tensor it loads to the parameter's dtype and then never updates the extra keys:
extras in another dtype than fastopt's (uint8 codes, float32 absmax and master) came
through ``torch.optim``, are stale and are ignored (the dense keys, which torch did
update, are used; for 8-bit state both extras must be intact).
"""
import numpy as np
import torch

from fastopt.lowprec import q8
from fastopt.lowprec.halfs import bf16_to_f32, f16_to_f32, f32_to_bf16
from fastopt.lowprec.storage import Precision
from fastopt.torch import _format

HALF = (torch.bfloat16, torch.float16)


def numpy_view(t):
    """The NumPy array sharing ``t``'s memory: float16 as float16, bfloat16 (which NumPy
    lacks) as uint16 bit patterns, float32/float64 as themselves."""
    t = t.detach()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.resolve_neg().resolve_conj().numpy()


def precision_for(value):
    """The :class:`fastopt.Precision` handed to the fastopt optimizer: the user's (a
    copy) with ``uint16_is_bf16=True``, since bfloat16 tensors are viewed as uint16."""
    if value is None:
        return None
    p = Precision.check(value)
    return Precision(p.state, master_weights=p.master_weights, loss_scale=p.loss_scale, rounding=p.rounding,
                     uint16_is_bf16=True, min_8bit_size=p.min_8bit_size, force_8bit=p.force_8bit,
                     state_rounding=p.state_rounding)


def extra_keys(rule, lp):
    """The fastopt-only keys a torch-format entry of ``lp`` may carry."""
    keys = {"master"} if lp.mixed else set()
    if lp.sstore == "q8":
        for s in rule.state:
            keys |= {_format.torch_name(rule, s) + "_q8", _format.torch_name(rule, s) + "_absmax"}
    return keys


def _tensor(a, share):
    a = a if share else a.copy()
    if a.dtype == np.uint16:                       # bfloat16 bit patterns
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_torch_entry(rule, lp, entry, fused, share):
    """fastopt's state entry of a low-precision parameter (``lp``: its
    :class:`~fastopt.lowprec.storage.LowParam`) in the torch format described above.
    ``share``: tensors view the live buffers where they can (dequantised 8-bit values
    are always new)."""
    out = {}
    if rule.name not in _format.NO_STEP:
        out["step"] = torch.tensor(float(entry["step"]), dtype=_format.scalar_dtype(fused))
    for name, _ in rule.scalar_state:
        out[_format.torch_name(rule, name)] = torch.tensor(float(entry[name]), dtype=_format.scalar_dtype(fused))
    for name, uns in zip(rule.state, lp.unsigned):
        key = _format.torch_name(rule, name)
        if lp.sstore == "q8":
            codes, absmax = entry[name], entry[name + "_absmax"]
            out[key] = torch.from_numpy(q8.dequantize_blockwise(codes, absmax, signed=not uns).reshape(codes.shape))
            out[key + "_q8"] = _tensor(codes, share)
            out[key + "_absmax"] = _tensor(absmax, share)
        else:
            out[key] = _tensor(entry[name], share)
    if lp.mixed:
        out["master"] = _tensor(entry["master"], share)
    return out


def _dense(value, shape, label):
    """A saved state tensor's values as a float32 array (torch casts state to the
    parameter's dtype when it loads; fastopt keeps low-precision state in float32 or
    narrower, so float32 loses nothing a half tensor had)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{label} must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{label} has shape {tuple(value.shape)}, the parameter {tuple(shape)}")
    if not value.is_floating_point() or value.is_complex() or value.layout != torch.strided:
        raise TypeError(f"{label} is a {value.layout} {value.dtype} tensor; optimizer state is a dense "
                        "floating-point tensor")
    return value.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def _exact(value, dtype, label):
    """An extra key's tensor as a NumPy copy, if it has the dtype fastopt saved it in
    (else None: it came through torch.optim, which cast it to the parameter's dtype and
    never updated it)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{label} must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(f"{label} is a {value.layout} tensor, fastopt saves it as a dense {dtype} tensor")
    if value.dtype != dtype:
        return None
    return value.detach().cpu().contiguous().numpy().copy()


def from_torch_entry(rule, lp, entry, param_view, fo_group, label):
    """A torch-format entry (or None: no state yet) as fastopt's state entry for ``lp``
    (``{"step", <lp.entries() keys>, <scalars>}``); values are checked by the fastopt
    optimizer's ``load_state_dict`` (dtypes, block counts, finite absmax, domains)."""
    shape = param_view.shape
    if lp.mixed:
        bits = param_view.view(np.uint16)
        current = (bf16_to_f32(bits) if lp.half == "bf16" else f16_to_f32(bits)).reshape(shape)
    out = {}
    if entry is None:
        out["step"] = 0
        values = {}
        for n in rule.state:
            init = rule.state_init.get(n)
            values[n] = np.full(shape, 0.0 if init is None else float(fo_group[init]), np.float32)
        out.update(_stored(rule, lp, values, {}))
        out.update(dict(rule.scalar_state))
        if lp.mixed:
            out["master"] = current
        return out
    values, exact = {}, {}
    for n in rule.state:
        key = _format.torch_name(rule, n)
        values[n] = _dense(entry[key], shape, f"{label}['{key}']")
        if lp.sstore == "q8" and key + "_q8" in entry and key + "_absmax" in entry:
            codes = _exact(entry[key + "_q8"], torch.uint8, f"{label}['{key}_q8']")
            absmax = _exact(entry[key + "_absmax"], torch.float32, f"{label}['{key}_absmax']")
            if codes is not None and absmax is not None:
                exact[n] = (codes, absmax)
    out.update(_stored(rule, lp, values, exact))
    if lp.mixed:
        master = None
        if "master" in entry:
            master = _exact(entry["master"], torch.float32, f"{label}['master']")
            if master is not None and master.shape != shape:
                raise ValueError(f"{label}['master'] has shape {master.shape}, the parameter {shape}")
        out["master"] = current if master is None else master
    return out


def _stored(rule, lp, values, exact):
    """float32 state values in ``lp``'s storage (the keys of ``lp.entries()``)."""
    out = {}
    for n, uns in zip(rule.state, lp.unsigned):
        v = values[n]
        if lp.sstore == "q8":
            if n in exact:
                out[n], out[n + "_absmax"] = exact[n]
            else:
                out[n], out[n + "_absmax"] = q8.quantize_blockwise(v, signed=not uns)
        elif lp.sstore == "bf16":
            out[n] = f32_to_bf16(v).reshape(v.shape)
        else:
            out[n] = np.ascontiguousarray(v, np.float32)
    return out
