"""One call to change how an optimizer stores its state: float32 <-> bfloat16 <-> 8-bit."""
import numpy as np

from fastopt.lowprec import q8
from fastopt.lowprec.halfs import bf16_to_f32, f32_to_bf16
from fastopt.lowprec.storage import Precision, is_unsigned


def _values(opt, k, entry):
    """``{state name: float32 (or the parameter's float64) values}`` of parameter k's saved entry."""
    lp = opt._low[k]
    rule = opt._group_rule[opt._group_of[k]]
    out = {}
    for name in rule.state:
        if lp is None:
            out[name] = entry[name]
        elif lp.sstore == "q8":
            out[name] = q8.dequantize_blockwise(entry[name], entry[name + "_absmax"],
                                                signed=not is_unsigned(rule, name))
        elif lp.sstore == "bf16":
            out[name] = bf16_to_f32(entry[name]).reshape(entry[name].shape)
        else:
            out[name] = entry[name]
    return out, (entry["master"] if lp is not None and lp.mixed else None)


def _entry(opt, k, values, master, old_entry):
    lp = opt._low[k]
    rule = opt._group_rule[opt._group_of[k]]
    entry = {key: v for key, v in old_entry.items() if key in ("step",) or key in {n for n, _ in rule.scalar_state}}
    for name in rule.state:
        v = values[name]
        if lp is None:
            entry[name] = np.asarray(v, dtype=opt._params[k].dtype).reshape(opt._params[k].shape)
        elif lp.sstore == "q8":
            entry[name], entry[name + "_absmax"] = q8.quantize_blockwise(np.asarray(v, np.float32),
                                                                         signed=not is_unsigned(rule, name))
        elif lp.sstore == "bf16":
            entry[name] = f32_to_bf16(np.asarray(v, np.float32))
        else:
            entry[name] = np.asarray(v, np.float32)
    if lp is not None and lp.mixed:
        entry["master"] = lp.engine_param.copy() if master is None else np.asarray(master, np.float32)
    return entry


def convert_precision(opt, precision=None):
    """A new optimizer of ``opt``'s class over the same parameter arrays, groups,
    hyper-parameters, options and step counts, with its state stored as ``precision``
    says (a :class:`Precision`, a dict of its arguments, or None for the parameters'
    own precision), converted from ``opt``'s: e.g. float32 Adam state to 8-bit
    (block-wise quantised) and back (dequantised; the quantisation error stays)::

        opt8 = fastopt.convert_precision(opt, fastopt.Precision("8bit"))
        opt32 = fastopt.convert_precision(opt8, None)

    Use the new optimizer from then on (both update the same parameter arrays).
    Master weights carry over between mixed-precision optimizers; going from
    master weights to none keeps the half parameters as they are."""
    precision = None if precision is None else Precision.check(precision)
    sd = opt.state_dict()
    groups = [dict(g) for g in opt.param_groups]
    options = dict(opt._options)
    new = type(opt)(groups, clip_norm=options["clip_norm"], grad_noise=options["grad_noise"],
                    seed=options["seed"], nonfinite=options["nonfinite"], precision=precision)
    state = {}
    for k in range(len(opt._params)):
        values, master = _values(opt, k, sd["state"][k])
        state[k] = _entry(new, k, values, master, sd["state"][k])
    new.load_state_dict(dict(sd, state=state))
    return new
