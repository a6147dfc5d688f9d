"""The torch.optim.Optimizer subclass that drives a fastopt optimizer over NumPy views
of the parameters, and the class factory that makes one per fastopt class."""
import math
import numbers
import re
from collections import defaultdict
from copy import deepcopy

import numpy as np
import torch

import fastopt
from fastopt._kernels.driver import data_span
from fastopt._kernels import driver, waitpolicy
from fastopt.optim import ALL as FASTOPT_CLASSES
from fastopt.optim.base import STATE_DICT_VERSION
from fastopt.rules import BY_NAME
from fastopt.sparse import SparseGrad
from fastopt.torch import _format, _lowprec
from fastopt.torch._format import EAGER, NO_STEP, SCHEDULER_KEYS, TORCH_ONLY

__all__ = ["Optimizer", "ALL"]

_SIMPLE = (float, int, bool, str, type(None))
_FLOATS = (torch.float32, torch.float64)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _plain(value, label):
    """A group value as fastopt takes it: 1-element tensors become Python numbers
    (torch allows a tensor ``lr``, and schedulers keep its type), tuples stay tuples."""
    if type(value) in _SIMPLE:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{label} is a tensor of {value.numel()} elements; a hyper-parameter is one number")
        return value.item()
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v, f"{label}[{i}]") for i, v in enumerate(value))
    return value


def _separate_runtime():
    """True when torch's intra-op threads do not come from the libgomp fastopt uses, so
    ``torch.set_num_threads`` does not reach fastopt by itself. With the pip wheels
    there is one libgomp whichever is imported first: torch 2.13 bundles
    ``libgomp.so.1`` under that soname, and the loader gives both the one loaded first."""
    info = torch.__config__.parallel_info()
    if "OpenMP" not in info.split("parallel backend:", 1)[-1].splitlines()[0]:
        return True
    mine = waitpolicy.openmp_runtime(driver.__file__)
    return mine is None or mine != waitpolicy.torch_openmp_runtime(torch)


_SEPARATE_RUNTIME = _separate_runtime()


class Optimizer(torch.optim.Optimizer):
    """Base class of the ``fastopt.torch`` optimizers: a ``torch.optim.Optimizer`` whose
    ``step`` runs a fastopt optimizer (one fused, OpenMP-parallel pass over every
    parameter) on NumPy views of the parameters and gradients, sharing their memory.

    * ``param_groups`` are torch's (tensors and hyper-parameters); they are read at
      every ``step``, so ``torch.optim.lr_scheduler`` and hand edits take effect on the
      next step. A parameter whose ``.grad`` is None is skipped (its state too).
    * The fastopt optimizer owns the state. ``state[p]`` shows it in torch's format,
      the arrays as live tensors; ``state_dict``/``load_state_dict`` use torch's format
      (``torch.optim.X`` can load what this saves and the reverse), with copies of
      the tensors. Loading checks everything first and changes nothing on an error.
    * Parameters: dense, contiguous, float32 or float64 CPU tensors that share no
      memory, and bfloat16/float16 ones with ``precision=fastopt.Precision(...)`` (see
      :mod:`fastopt.torch`); anything else is refused at construction naming its group
      and index.
    * Threads: ``torch.set_num_threads(n)`` sets both (see :mod:`fastopt.torch`).
    * fastopt's own options pass through as keywords: ``clip_norm``, ``grad_noise``,
      ``seed``, ``nonfinite``, ``precision`` (see :class:`fastopt.Optimizer`);
      ``clip_value`` is a group key.
    """

    #: set by the class factory
    _fastopt_class = None
    _twin = None
    _fo_keys = ()
    _fo_defaults = {}
    _required = frozenset()
    _foreign = frozenset()

    def __init__(self, params, defaults, options):
        self._inner = None
        self._init_state = None
        self._options = dict(options)
        if "precision" in self._options:
            self._options["precision"] = _lowprec.precision_for(self._options["precision"])
        self._skipped = False
        _check_torch_only(defaults, "the arguments")
        torch.optim.Optimizer.__init__(self, params, defaults)
        if "precision" not in self._options and any(
                isinstance(p, torch.Tensor) and p.dtype is torch.bfloat16
                for g in self.param_groups for p in g["params"]):
            # the drop-in default for bfloat16 models: bfloat16 state beside bfloat16
            # parameters, the storage (and memory) torch.optim keeps for them
            self._options["precision"] = _lowprec.precision_for(fastopt.Precision())
        views = self._check_params(self.param_groups, [])
        self._inner = self._fastopt_class([self._inner_group(g, v, gi) for gi, (g, v) in
                                           enumerate(zip(self.param_groups, views))], **self._options)
        self._flat = []
        for gi, (group, vs) in enumerate(zip(self.param_groups, views)):
            self._extend_flat(group, vs, gi)

    # --- construction and checks ---------------------------------------------------------
    def _check_params(self, groups, existing, first=0):
        """The NumPy views of every parameter of ``groups`` (numbered from ``first``),
        or an error naming the first unusable one. ``existing``: (label, view) pairs
        already in the optimizer, for the shared-memory check."""
        views, named = [], list(existing)
        for gi, group in enumerate(groups, first):
            if len(groups) and not isinstance(group.get("params"), list):
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of tensors")
            vs = []
            for j, p in enumerate(group["params"]):
                view = _param_view(p, f"param_groups[{gi}]['params'][{j}]",
                                   self._options.get("precision") is not None)
                vs.append(view)
                named.append((f"param_groups[{gi}]['params'][{j}]", view))
            views.append(vs)
        spans = sorted(data_span(v) + (name,) for name, v in named if v.size)
        for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
            if lo2 < hi1:
                raise ValueError(f"{n1} and {n2} share memory (the same tensor twice, or tied weights?): each "
                                 "parameter must be given once and own its elements; nothing was added")
        return views

    def _inner_group(self, group, views, gi):
        _check_torch_only(group, f"param_groups[{gi}]")
        out = {"params": views}
        for key in self._fo_keys:
            out[key] = _plain(group[key], f"param_groups[{gi}]['{key}']")
        return out

    def _extend_flat(self, group, views, gi):
        for j, (p, v) in enumerate(zip(group["params"], views)):
            self._flat.append((p, p.data_ptr(), v, gi, j))

    def add_param_group(self, param_group):
        """torch's ``add_param_group`` (defaults filled in, duplicates refused), then
        the new tensors are checked and handed to the fastopt optimizer; on any error
        the optimizer is left as it was."""
        if self._inner is None:            # called by torch.optim.Optimizer.__init__
            return torch.optim.Optimizer.add_param_group(self, param_group)
        n = len(self.param_groups)
        torch.optim.Optimizer.add_param_group(self, param_group)
        try:
            group = self.param_groups[n]
            existing = [(f"param_groups[{gi}]['params'][{j}]", v) for _, _, v, gi, j in self._flat]
            views = self._check_params([group], existing, first=n)[0]
            self._inner.add_param_group(self._inner_group(group, views, n))
        except BaseException:
            del self.param_groups[n:]
            raise
        self._extend_flat(group, views, n)

    # --- state ---------------------------------------------------------------------------
    @property
    def state(self):
        """``{parameter: {"step": tensor, <state>: tensor, ...}}`` in torch's format
        for every parameter that has state (torch creates it at a parameter's first
        step; Adagrad at construction). The state tensors are live views of the
        fastopt optimizer's buffers; ``step`` is a snapshot."""
        if self._inner is None:
            return self._init_state
        out = defaultdict(dict)
        for k, entry in enumerate(self._inner.state):
            p, _, _, gi, _ = self._flat[k]
            rule = self._inner._group_rule[gi]
            if (entry["step"] or self._eager()) and _format.expected_keys(rule):
                out[p] = self._torch_entry(k, rule, entry, gi, share=True)
        return out

    def _torch_entry(self, k, rule, entry, gi, share):
        lp = self._inner._low[k] if self._inner._low else None
        fused = self.param_groups[gi].get("fused")
        if lp is None:
            return _format.to_torch_entry(rule, entry, fused, share=share)
        return _lowprec.to_torch_entry(rule, lp, entry, fused, share=share)

    @state.setter
    def state(self, value):
        if self._inner is not None:
            raise AttributeError(f"{type(self).__name__}.state is the fastopt optimizer's: change it with "
                                 "load_state_dict, or in place through the tensors state[p] holds")
        self._init_state = value           # torch.optim.Optimizer.__init__'s empty dict

    def _eager(self):
        return self._twin is not None and self._twin.__name__ in EAGER

    def __getstate__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled or deep-copied (its state lives in compiled "
                        "code); save opt.state_dict() and load it into a new optimizer")

    # --- step ----------------------------------------------------------------------------
    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure``, if given, is
        called first with gradients enabled and its result returned (torch's rule)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads, stepped = self._grads()
        self._sync_groups()
        if _SEPARATE_RUNTIME:
            n = torch.get_num_threads()
            if fastopt.get_num_threads() != n:
                fastopt.set_num_threads(n)
        applied = self._inner.step(grads)
        self._skipped = not applied
        if applied and stepped:
            # the update wrote through NumPy: tell autograd, as an in-place torch op
            # would, so a graph that saved a parameter fails instead of using new values
            torch.autograd.graph.increment_version(stepped)
        return loss

    @property
    def last_step_skipped(self):
        """True when the last ``step`` changed nothing because a gradient held inf or NaN
        and ``nonfinite="skip"`` (e.g. float16 training with a loss scale too large)."""
        return self._skipped

    def set_loss_scale(self, loss_scale):
        """Divide the gradients of the next steps by ``loss_scale`` (fused into the step;
        bfloat16/float16 parameters with ``precision=``; see
        :meth:`fastopt.Optimizer.set_loss_scale`)."""
        self._inner.set_loss_scale(loss_scale)

    def _grads(self):
        grads, stepped = [], []
        for k, (p, ptr, view, gi, j) in enumerate(self._flat):
            if p.data_ptr() != ptr or p.dtype is not _TORCH_DTYPE[view.dtype.char] or p.shape != tuple(view.shape):
                raise ValueError(f"param_groups[{gi}]['params'][{j}] no longer has the memory, dtype or shape it "
                                 "had when the optimizer was created (p.data = ..., .to(...), resize_?); create "
                                 "the optimizer after the model is final; nothing was updated")
            g = p.grad
            if g is None:
                grads.append(None)
                continue
            try:
                a = g.numpy() if view.dtype.char != "H" else None
            except (RuntimeError, TypeError):
                a = None
            if a is None or a.dtype != view.dtype or a.shape != view.shape or not a.flags.c_contiguous:
                a = _grad_view(g, p, f"param_groups[{gi}]['params'][{j}]")
            grads.append(a)
            stepped.append(p)
        return grads, stepped

    def _sync_groups(self):
        groups, inner = self.param_groups, self._inner.param_groups
        if len(groups) != len(inner):
            raise ValueError(f"param_groups has {len(groups)} groups, the optimizer has {len(inner)}: add groups "
                             "with add_param_group and never remove them")
        for gi, (tg, ig) in enumerate(zip(groups, inner)):
            if len(tg["params"]) != len(ig["params"]):
                raise ValueError(f"param_groups[{gi}]['params'] has {len(tg['params'])} tensors, the optimizer "
                                 f"was given {len(ig['params'])}: add parameters with add_param_group")
            for key in self._fo_keys:
                try:
                    v = tg[key]
                except KeyError:
                    raise ValueError(f"param_groups[{gi}] has no '{key}'") from None
                ig[key] = v if type(v) in _SIMPLE else _plain(v, f"param_groups[{gi}]['{key}']")

    # --- state_dict ----------------------------------------------------------------------
    def state_dict(self):
        """The state in ``torch.optim``'s format: ``{"state": {index: {"step":
        tensor, <state>: tensor, ...}}, "param_groups": [{<torch's keys>, "params":
        [indices]}]}``. fastopt's own group keys (``clip_value``, NAdam's
        ``variant``) appear only when they differ from their defaults. The tensors are
        copies (torch's own state_dict hands out its live tensors)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        inner = self._inner.state_dict()
        groups, start = [], 0
        for group in self.param_groups:
            packed = {}
            for key, value in group.items():
                if key == "params" or (key in self._fo_only and _same(value, self._fo_defaults[key])):
                    continue
                packed[key] = value
            packed["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(packed)
        state = {}
        for k, entry in inner["state"].items():
            gi = self._flat[k][3]
            rule = self._inner._group_rule[gi]
            # torch keeps no entry before a parameter's first step, nor ever for plain SGD
            if (entry["step"] or self._eager()) and _format.expected_keys(rule):
                state[k] = self._torch_entry(k, rule, entry, gi, share=True)
        sd = {"state": state, "param_groups": groups}
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        return sd

    def load_state_dict(self, state_dict):
        """Load a state_dict in torch's format: one saved by ``torch.optim.X`` (the
        class this one replaces) or by this class. Everything is checked first — group
        and parameter counts, each group's keys (a state_dict of another optimizer is
        refused), each entry's keys, shapes and values — and nothing changes on an
        error. Saved tensors are cast to the parameter's dtype, as torch does; a
        parameter without an entry starts afresh."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        name = type(self).__name__
        saved_groups, saved_state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(saved_groups, list) or not isinstance(saved_state, dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict with a 'param_groups' list and a 'state' "
                             f"dict (torch.optim's format), got keys {sorted(map(str, state_dict))}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state_dict has {len(saved_groups)} parameter groups, the "
                             f"optimizer {len(self.param_groups)}")
        id_map = {}
        fo_groups = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            fo_groups.append(self._saved_group(saved, group, gi, id_map))
        for key in saved_state:
            if key not in id_map:
                raise ValueError(f"{name}.load_state_dict: state[{key!r}] belongs to no parameter of the "
                                 "state_dict's param_groups")
        saved_ids = {k: sid for sid, k in id_map.items()}
        fo_state = {}
        for k, (p, _, view, gi, j) in enumerate(self._flat):
            fo_state[k] = self._saved_entry(saved_state, view, gi, j, fo_groups[gi], saved_ids[k])
        try:
            self._inner.load_state_dict({"algorithm": type(self._inner).__name__, "version": STATE_DICT_VERSION,
                                         "param_groups": fo_groups, "state": fo_state})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}.load_state_dict: {self._locate(str(exc))}") from None
        # checked and loaded: torch's groups take the saved values (and keys), as torch does
        for saved, group in zip(saved_groups, self.param_groups):
            new = {k: deepcopy(v) for k, v in saved.items() if k != "params"}
            for key, default in self.defaults.items():
                new.setdefault(key, default)
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            params = group["params"]
            group.clear()
            group.update(new)
            group["params"] = params
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _saved_group(self, saved, group, gi, id_map):
        name = type(self).__name__
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
            raise ValueError(f"{name}.load_state_dict: param_groups[{gi}] is not a dict with a 'params' list")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"{name}.load_state_dict: param_groups[{gi}] has {len(saved['params'])} parameters in "
                             f"the state_dict, {len(group['params'])} in the optimizer")
        missing = sorted(self._required - set(saved))
        foreign = sorted(self._foreign & set(saved))
        if missing or foreign:
            what = (f" lacks {missing}" if missing else "") + (" and" if missing and foreign else "") + \
                   (f" has {foreign}, which {name} does not take" if foreign else "")
            raise ValueError(f"{name}.load_state_dict: param_groups[{gi}]{what}: is this the state_dict of "
                             f"another optimizer? ({name} replaces torch.optim."
                             f"{self._twin.__name__ if self._twin else name})")
        _check_torch_only(saved, f"{name}.load_state_dict: param_groups[{gi}]")
        first = sum(len(g["params"]) for g in self.param_groups[:gi])
        for j, sid in enumerate(saved["params"]):
            if sid in id_map:
                raise ValueError(f"{name}.load_state_dict: parameter id {sid!r} appears twice in param_groups")
            id_map[sid] = first + j
        out = {"params": list(range(first, first + len(group["params"]))), "group_step": 0}
        for key in self._fo_keys:
            out[key] = _plain(saved.get(key, self._fo_defaults[key]), f"param_groups[{gi}]['{key}']")
        return out

    def _saved_entry(self, saved_state, view, gi, j, fo_group, saved_id):
        name = type(self).__name__
        rule = self._inner._group_rule[gi]
        where = f"state[{saved_id!r}] (param_groups[{gi}]['params'][{j}])"
        entry = saved_state.get(saved_id)
        lp = self._inner._low[self._inner_index(gi, j)] if self._inner._low else None
        if lp is not None:
            return self._saved_low_entry(entry, lp, rule, view, fo_group, where)
        if entry is None:                  # torch creates state at a parameter's first step
            arrays = {}
            for n in rule.state:
                init = rule.state_init.get(n)
                arrays[n] = np.full(view.shape, 0.0 if init is None else float(fo_group[init]), view.dtype)
            return {"step": 0, **arrays, **dict(rule.scalar_state)}
        if not isinstance(entry, dict):
            raise ValueError(f"{name}.load_state_dict: {where} is not a dict")
        want = _format.expected_keys(rule)
        if set(entry) != want:
            raise ValueError(f"{name}.load_state_dict: {where} has keys {sorted(map(str, entry))}, the "
                             f"'{rule.name}' update keeps {sorted(want)}: is this the state_dict of another "
                             "optimizer (or of other options, e.g. amsgrad, momentum, centered)?")
        out = {}
        if rule.name in NO_STEP:
            out["step"] = 1                # a momentum buffer exists only after a first step
        else:
            out["step"] = _count(entry["step"], f"{name}.load_state_dict: {where}['step']")
        for n, _ in rule.scalar_state:
            out[n] = _number(entry[_format.torch_name(rule, n)], f"{name}.load_state_dict: {where}['{n}']")
        for n in rule.state:
            key = _format.torch_name(rule, n)
            out[n] = _saved_array(entry[key], view, f"{name}.load_state_dict: {where}['{key}']")
        return out

    def _inner_index(self, gi, j):
        return sum(len(g["params"]) for g in self.param_groups[:gi]) + j

    def _saved_low_entry(self, entry, lp, rule, view, fo_group, where):
        """A saved entry of a bfloat16/float16 (or low-precision-state) parameter as the
        fastopt optimizer's entry (see :mod:`fastopt.torch._lowprec`)."""
        name = type(self).__name__
        label = f"{name}.load_state_dict: {where}"
        if entry is None:
            return _lowprec.from_torch_entry(rule, lp, None, view, fo_group, label)
        if not isinstance(entry, dict):
            raise ValueError(f"{label} is not a dict")
        want, extra = _format.expected_keys(rule), _lowprec.extra_keys(rule, lp)
        if not want <= set(entry) or set(entry) - want - extra:
            raise ValueError(f"{label} has keys {sorted(map(str, entry))}, the '{rule.name}' update keeps "
                             f"{sorted(want)} (and, for this parameter's storage, optionally {sorted(extra)}): is "
                             "this the state_dict of another optimizer (or of other options)?")
        out = _lowprec.from_torch_entry(rule, lp, entry, view, fo_group, label)
        if rule.name in NO_STEP:
            out["step"] = 1
        else:
            out["step"] = _count(entry["step"], f"{label}['step']")
        for n, _ in rule.scalar_state:
            out[n] = _number(entry[_format.torch_name(rule, n)], f"{label}['{n}']")
        return out

    def _locate(self, message):
        """fastopt numbers parameters across groups (``state[k]``): add the group."""
        def where(m):
            k = int(m.group(1))
            if k < len(self._flat):
                _, _, _, gi, j = self._flat[k]
                return f"{m.group(0)} (param_groups[{gi}]['params'][{j}])"
            return m.group(0)
        return re.sub(r"state\[(\d+)\]", where, message, count=1)


_TORCH_DTYPE = {"f": torch.float32, "d": torch.float64, "e": torch.float16, "H": torch.bfloat16}


def _same(a, b):
    return type(a) is type(b) and a == b


def _check_torch_only(group, label):
    if group.get("capturable"):
        raise ValueError(f"{label}: capturable=True is for CUDA graph capture; fastopt.torch steps CPU tensors "
                         "(leave it False)")
    if group.get("differentiable"):
        raise ValueError(f"{label}: differentiable=True (autograd through the optimizer step) is not supported "
                         "by fastopt.torch; use torch.optim for it")
    for key in ("foreach", "fused"):
        v = group.get(key)
        if v is not None and not isinstance(v, bool):
            raise TypeError(f"{label}: {key} must be None or a bool, got {v!r}")


def _param_view(p, where, low_precision=False):
    """The NumPy view of parameter ``p`` (bfloat16 as uint16 bit patterns), or an error
    naming it. ``low_precision``: the optimizer was given ``precision=``."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} is a {type(p).__name__}, not a tensor")
    if p.layout != torch.strided:
        raise TypeError(f"{where} is a sparse tensor ({p.layout}): sparse parameters and gradients are not "
                        "supported yet (sparse updates are a feature of their own); use a dense tensor")
    if p.device.type != "cpu":
        raise ValueError(f"{where} is on {p.device}: fastopt.torch updates CPU tensors only (use torch.optim "
                         "for other devices)")
    if p.dtype in _LOW_PRECISION and not low_precision:
        raise TypeError(f"{where} is {p.dtype}: float16 parameters (and bfloat16 ones added to an optimizer "
                        "created for float32 parameters only) need precision=fastopt.Precision(...): "
                        "master_weights=True for float32 master weights in the optimizer (ZeRO-Offload's mixed "
                        "precision, with loss scaling for float16), or fastopt.Precision() for storage in the "
                        "parameters' dtype (see fastopt.torch); nothing was created")
    if p.dtype not in _FLOATS + _LOW_PRECISION:
        raise TypeError(f"{where} is {p.dtype}: fastopt.torch updates float32, float64, and (with precision=) "
                        "bfloat16 and float16 tensors")
    if not p.is_contiguous():
        raise ValueError(f"{where} is not contiguous (shape {tuple(p.shape)}, strides {p.stride()}): fastopt "
                         "updates a parameter's memory in one pass; make it contiguous before creating the "
                         "optimizer (e.g. model.to(memory_format=torch.contiguous_format))")
    return _lowprec.numpy_view(p)


def _grad_view(g, p, where):
    """The NumPy view of gradient ``g`` of ``p``, or an error naming the parameter."""
    head = f"the gradient of {where}"
    if g.layout == torch.sparse_coo:
        return _sparse_grad(g, p, head)
    if g.layout != torch.strided:
        raise TypeError(f"{head} is a {g.layout} tensor: of the sparse layouts fastopt steps sparse COO gradients "
                        "(nn.Embedding(sparse=True) gives them); nothing was updated")
    if g.device.type != "cpu":
        raise ValueError(f"{head} is on {g.device}, the parameter on the CPU; nothing was updated")
    if g.dtype != p.dtype:
        raise TypeError(f"{head} is {g.dtype}, the parameter {p.dtype}: a gradient must have its parameter's "
                        "dtype; nothing was updated")
    if g.shape != p.shape:
        raise ValueError(f"{head} has shape {tuple(g.shape)}, the parameter {tuple(p.shape)}; nothing was updated")
    if not g.is_contiguous():
        raise ValueError(f"{head} is not contiguous (strides {g.stride()}); assign p.grad = p.grad.contiguous() "
                         "first; nothing was updated")
    return _lowprec.numpy_view(g)


def _sparse_grad(g, p, head):
    """A sparse COO gradient (``nn.Embedding(sparse=True)``, ``EmbeddingBag``) as a
    :class:`fastopt.sparse.SparseGrad` sharing its index and value memory: the
    optimizer's sparse (row-wise) step then touches only those rows (see
    :mod:`fastopt.sparse`)."""
    if g.device.type != "cpu":
        raise ValueError(f"{head} is on {g.device}, the parameter on the CPU; nothing was updated")
    if p.dtype in _LOW_PRECISION:
        raise TypeError(f"{head} is sparse and the parameter {p.dtype}: the low-precision kernels have no sparse "
                        "(row-wise) step; use a dense gradient (sparse=False) or a float32 parameter; nothing "
                        "was updated")
    if g.dtype != p.dtype:
        raise TypeError(f"{head} is {g.dtype}, the parameter {p.dtype}: a gradient must have its parameter's "
                        "dtype; nothing was updated")
    if g.shape != p.shape or p.dim() != 2 or g.sparse_dim() != 1:
        raise ValueError(f"{head} is a sparse tensor of shape {tuple(g.shape)} with {g.sparse_dim()} sparse "
                         f"dimension(s), the parameter {tuple(p.shape)}: fastopt steps sparse gradients of 2-D "
                         "parameters (rows, dim) with one sparse dimension (the rows); nothing was updated")
    values = g._values()
    if not values.is_contiguous():
        values = values.contiguous()
    return SparseGrad(g._indices()[0].numpy(), values.detach().resolve_neg().numpy())


def _count(value, label):
    value = _number(value, label)
    if not (math.isfinite(value) and value >= 0 and value == int(value) and value <= 2 ** 53):
        raise ValueError(f"{label} must be a whole number of steps in [0, 2**53], got {value!r}")
    return int(value)


def _number(value, label):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{label} must be one number, got a tensor of {value.numel()} elements")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label} must be a number, got {type(value).__name__}")
    return float(value)


def _saved_array(value, view, label):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{label} must be a tensor, got {type(value).__name__}")
    if tuple(value.shape) != view.shape:
        raise ValueError(f"{label} has shape {tuple(value.shape)}, the parameter {view.shape}")
    if not value.is_floating_point() or value.is_complex() or value.layout != torch.strided:
        raise TypeError(f"{label} is a {value.layout} {value.dtype} tensor; the state of a "
                        f"{view.dtype} parameter is a dense floating-point tensor")
    # torch casts saved state to the parameter's dtype and device when it loads it
    value = value.detach().to(device="cpu", dtype=_TORCH_DTYPE[view.dtype.char]).contiguous()
    return value.resolve_neg().numpy()


# --- the classes ---------------------------------------------------------------------------
def _twin_of(spec):
    """The ``torch.optim`` class a fastopt class replaces, and the defaults of an
    instance of it (torch's group keys), or (None, {})."""
    name = spec.bench.torch if spec.bench is not None else None
    twin = getattr(torch.optim, name, None) if name else None
    if twin is None:
        return None, {}
    return twin, twin([torch.zeros(1)], **spec.bench.torch_kwargs).defaults


def _all_keys(specs_and_twins):
    keys = set()
    for spec, twin_defaults in specs_and_twins:
        keys |= set(spec.keys) | set(twin_defaults)
    return keys


def _init_function(name, args, kwonly, defaults, keys):
    shown = list(args) + (["*"] + list(kwonly) if kwonly else [])
    params = ", ".join(a if a == "*" else f"{a}=_defaults[{a!r}]" for a in shown)
    passed = ", ".join(f"{k!r}: {k}" if k in args or k in kwonly else f"{k!r}: _defaults[{k!r}]" for k in keys)
    source = (f"def __init__(self, params, {params}, **options):\n"
              f"    _Base.__init__(self, params, {{{passed}}}, options)\n")
    namespace = {"_defaults": defaults, "_Base": Optimizer}
    exec(compile(source, f"<fastopt.torch: {name}.__init__>", "exec"), namespace)
    return namespace["__init__"]


def _make_classes():
    pairs = [(cls, _twin_of(cls._spec)) for cls in FASTOPT_CLASSES]
    every_key = _all_keys((cls._spec, d) for cls, (_, d) in pairs)
    out = []
    for fo_cls, (twin, twin_defaults) in pairs:
        spec = fo_cls._spec
        fo_defaults = spec.signature_defaults(BY_NAME)
        torch_only = tuple(k for k in TORCH_ONLY if k in twin_defaults)
        defaults = dict(fo_defaults, **{k: twin_defaults[k] for k in torch_only})
        keys = tuple(fo_defaults) + torch_only
        kwonly = tuple(spec.kwonly) + torch_only
        # what a saved group must have: the keys that choose and parameterise the update
        family = [BY_NAME[r] for r, _ in spec.rules]
        hyper = {spec.hyper_keys().get(h.name, (h.name, None))[0] for rule in family for h in rule.hyper}
        required = ({"lr", "weight_decay"} | hyper | set(spec.flags)) & (set(twin_defaults) or set(fo_defaults))
        own = set(keys) | set(twin_defaults)
        doc = (f"``{spec.name}`` for PyTorch training loops" +
               (f" (replaces ``torch.optim.{twin.__name__}``" +
                (f" with {', '.join(f'{k}={v!r}' for k, v in spec.bench.torch_kwargs.items())})"
                 if spec.bench.torch_kwargs else ")") if twin else " (no torch.optim equivalent)") +
               f": see :class:`fastopt.torch.Optimizer`.\n\n    {spec.doc}")
        attrs = {"__doc__": doc, "__module__": "fastopt.torch", "__qualname__": spec.name,
                 "__init__": _init_function(spec.name, spec.args, kwonly, defaults, keys),
                 "_fastopt_class": fo_cls, "_twin": twin, "_fo_keys": tuple(fo_defaults),
                 "_fo_defaults": fo_defaults, "_fo_only": frozenset(fo_defaults) - set(twin_defaults) if twin else
                 frozenset(), "_required": frozenset(required), "_foreign": frozenset(every_key - own - SCHEDULER_KEYS)}
        cls = type(spec.name, (Optimizer,), attrs)
        cls.__init__.__qualname__ = f"{spec.name}.__init__"
        out.append(cls)
    return out


ALL = _make_classes()
