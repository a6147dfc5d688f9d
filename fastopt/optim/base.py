"""The optimizer base class: parameter groups, state, validation, ``state_dict``.

An optimizer owns the state of a list of parameter arrays. ``opt.step(grads)`` updates
every array in place in one call into compiled code (one parallel region, threads
balanced over all elements). Hyper-parameters live in ``opt.param_groups`` (a list of
dicts, as in PyTorch) and may be changed between steps; a learning rate may be a
float or a schedule from :mod:`fastopt.schedules`.
"""
import copy
import math
import numbers

import numpy as np

import functools

from fastopt._kernels.driver import data_span
from fastopt._kernels.engine import Engine, NonFiniteGradientError, StepGuard
from fastopt._validate import ReentryError, as_array, check_disjoint, check_domain
from fastopt.rules import CLIP_VALUE, FLAG, L1, LR, MAX_STEP, WEIGHT_DECAY, Hyper
from fastopt.schedules import Schedule
from fastopt.lowprec import storage as lowprec_storage

POLICIES = ("ignore", "raise", "skip")
SPARSE_MODES = ("lazy", "exact")
STATE_DICT_VERSION = 1


def _is_count(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 0 <= value <= MAX_STEP


def _check_row_steps(value, k, rows, step):
    """``state[k]['row_steps']`` of an exact-mode state_dict, checked: an integer array of
    one count per row, none above the parameter's step (a copy, int64)."""
    where = f"state[{k}]['row_steps']"
    if not isinstance(value, np.ndarray) or isinstance(value, np.ma.MaskedArray) or value.dtype.kind not in "iu" \
            or value.shape != (rows,):
        raise ValueError(f"{where} must be an integer array of shape ({rows},) (the step each row's state was last "
                         f"brought up to), got {getattr(value, 'dtype', type(value).__name__)} "
                         f"{getattr(value, 'shape', '')}")
    out = np.array(value, dtype=np.int64)
    if not _is_count(step):
        return out                          # the step's own check names it
    if rows and (out.min() < 0 or out.max() > step):
        raise ValueError(f"{where} must lie in [0, step={step}], found {out.min() if out.min() < 0 else out.max()}")
    return out


__all__ = ["Optimizer", "NonFiniteGradientError", "ReentryError"]


# From this size on (128 MiB) a parameter and its state are beyond the caches of the
# machines measured (see state_buffer)
ALIGNED_STATE_BYTES = 1 << 27


def page_placed(p, offset):
    """An uninitialised array like ``p`` whose data starts ``offset`` bytes into a 4 KiB
    page."""
    raw = np.empty(p.nbytes + 4096, np.uint8)
    start = (offset - data_span(raw)[0]) % 4096
    return raw[start:start + p.nbytes].view(p.dtype).reshape(p.shape)


def state_buffer(p):
    """An uninitialised array like ``p``, placed for the step's loads and stores.

    Its data starts at the same offset within a 4 KiB page as ``p``'s (arrays under
    4 KiB: plain ``np.empty``). A load from one array 4 KiB-aliases a pending store to
    another when their addresses agree in the low 12 bits, and then waits for it. With
    Adam's state on 64-byte boundaries and the parameter 16 bytes into its page (as
    NumPy places large arrays), an in-cache step ran 1.3-1.7x slower on the reference
    machine; at the parameter's own offset it is as fast as the best layout tried.

    From ``ALIGNED_STATE_BYTES`` on, a parameter that does not start on a 64-byte
    boundary gets its state on one instead, half a page away from its own offset. A
    dense step then runs from DRAM, where the layout made no difference (arrays of
    160 MB: 0.98-1.01x), while a sparse step reads and writes scattered rows, and a
    256-byte row of state spans 4 cache lines instead of 5 (sparse Adam and Adagrad on
    a 10M x 64 float32 NumPy table: about 7% faster on a uniform batch). Below that
    size the aligned layout cost up to 1.2x in L3 (arrays of 4-16 MB). Half a page
    keeps the state's loads far from the parameter's stores in the low 12 bits."""
    if p.nbytes < 4096:
        return np.empty(p.shape, p.dtype)
    want = data_span(p)[0] % 4096
    if p.nbytes >= ALIGNED_STATE_BYTES and want % 64:
        want = ((want + 63) // 64 * 64 + 2048) % 4096
    return page_placed(p, want)


def _guarded(method):
    """Run ``method`` holding the optimizer's guard (see :class:`StepGuard`)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._guard.acquire(method.__name__)
        try:
            return method(self, *args, **kwargs)
        finally:
            self._guard.release()
    return wrapper



def groups_state(param_groups, group_steps):
    """The ``param_groups`` entry of a state_dict: each group's settings as plain values,
    its parameters as their indices in the optimizer's order, a schedule as its own
    state_dict, a callable by name, and the group's step count ``group_steps[i]``."""
    groups, k = [], 0
    for gi, group in enumerate(param_groups):
        entry = {}
        for key, value in group.items():
            if key == "params":
                entry["params"] = list(range(k, k + len(value)))
                k += len(value)
            elif isinstance(value, Schedule):
                entry[key] = {"schedule": value.state_dict()}
            elif callable(value):
                entry[key] = {"callable": getattr(value, "__name__", repr(value))}
            else:
                entry[key] = list(value) if isinstance(value, tuple) else value
        entry["group_step"] = group_steps[gi]
        groups.append(entry)
    return groups

class Optimizer:
    """Base class of the fastopt optimizers.

    Threads: an optimizer may be shared between threads. ``step``, ``state_dict``,
    ``load_state_dict``, ``add_param_group`` and ``state`` hold its lock, so each sees
    the others' work whole (a thread waiting for the lock has released the GIL);
    calling back into the same optimizer from inside one of them (from a gradient's
    ``__array__`` or a schedule) raises RuntimeError. After ``os.fork()`` the child's
    steps run serially if the parent may have had an OpenMP team (see
    :func:`fastopt.driver.forked_serial`).

    Parameters common to every optimizer (keyword-only):

    * ``clip_norm``: clip the gradients by their global L2 norm over all parameters,
      ``g = g · min(1, clip_norm / (‖g‖ + 1e-6))``, with a deterministic float64
      reduction (the same bits for any thread count).
    * ``grad_noise``: ``eta`` or ``(eta, gamma)``: add N(0, σ_t²) with
      ``σ_t² = η / (1 + t)^γ`` (γ = 0.55 by default) to every gradient element, drawn from
      a counter-based generator keyed by (``seed``, step, parameter, element).
    * ``nonfinite``: what a gradient holding inf/NaN does: ``"ignore"`` (update
      anyway, as PyTorch does), ``"raise"`` (raise :class:`NonFiniteGradientError`,
      nothing changed) or ``"skip"`` (leave parameters, state and schedules untouched;
      ``step`` returns False).
    * ``sparse``: how a sparse gradient (:class:`fastopt.sparse.SparseGrad`, a
      scipy.sparse matrix or a torch sparse COO tensor, for a 2-D parameter) steps
      its rows: ``"lazy"`` (default: only the touched rows and their state change,
      as torch's ``SparseAdam``) or ``"exact"`` (the dense step with zero rows, for the
      rules where that has a closed form; see :mod:`fastopt.sparse`). In exact mode a
      row's state is caught up when the row is next touched, or when :attr:`state` is
      read; :meth:`state_dict` saves the rows as they are plus ``row_steps`` (the step
      each row was last brought up to), so a save and load mid-run keeps the run's bits.
    * ``precision``: a :class:`fastopt.Precision`: bfloat16/float16 parameters and
      gradients, float32 master weights (mixed precision), bfloat16 or 8-bit block-wise
      state, loss scaling and stochastic rounding (see its docstring).

    Per-group keys common to every optimizer: ``lr``, ``weight_decay``, ``maximize``,
    ``clip_value`` (clip every gradient element to [-c, c]; None for no clipping),
    ``l1`` and ``l1_coupled`` (L1 regularisation λ1, elastic net together with
    ``weight_decay``: by default proximal, ``p = sign(p) · max(|p| − lr λ1, 0)`` after
    the update, which makes exact zeros; with ``l1_coupled=True`` the subgradient
    ``g = g + λ1 sign(p)`` just before the rule, after clipping and gradient noise)
    and, where the rule allows both forms, ``decoupled_weight_decay``.
    """

    #: rule-hyper-parameter name -> (group key, index into a tuple value or None)
    _hyper_keys = {}
    #: group keys whose value is fixed by the class (e.g. AdamW's decoupled decay)
    _fixed = {}
    #: boolean group keys that choose the kernel variant (checked before the choice)
    _flags = ()
    _engine_class = Engine

    def __init__(self, params, defaults, *, clip_norm=None, grad_noise=None, seed=0, nonfinite="ignore",
                 sparse="lazy", precision=None):
        self._guard = StepGuard()
        if sparse not in SPARSE_MODES:
            raise ValueError(f"sparse must be one of {SPARSE_MODES}, got {sparse!r}")
        self._sparse = sparse
        # low precision (fastopt.lowprec): None keeps every array in its own float32/float64
        # (a copy: set_loss_scale changes it, and a Precision may be shared by optimizers)
        self._precision = None if precision is None else copy.copy(lowprec_storage.Precision.check(precision))
        self._low = []
        self.defaults = dict(defaults, **self._fixed)
        self.defaults.setdefault("clip_value", None)
        self.defaults.setdefault("weight_decay", 0.0)
        self.defaults.setdefault("maximize", False)
        self.defaults.setdefault("decoupled_weight_decay", False)
        self.defaults.setdefault("l1", 0.0)
        self.defaults.setdefault("l1_coupled", False)
        self._options = self._check_options(clip_norm, grad_noise, seed, nonfinite)
        self._param_groups = []
        self._group_rule = []
        self._params = []
        self._states = []
        self._group_of = []
        groups = list(params) if not isinstance(params, np.ndarray) else [params]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not all(isinstance(g, dict) for g in groups):
            if any(isinstance(g, dict) for g in groups):
                raise TypeError("params must be all arrays or all parameter-group dicts")
            groups = [{"params": groups}]
        pending = [self._make_group(g, i) for i, g in enumerate(groups)]
        check_disjoint([(f"params[{k}]", p) for k, p in enumerate(p for g in pending for p in g[0]["params"])])
        for group, rule in pending:
            self._append_group(group, rule)
        self._build_engine()

    # --- construction ------------------------------------------------------------------
    @staticmethod
    def _check_options(clip_norm, grad_noise, seed, nonfinite):
        if clip_norm is not None:
            clip_norm = Hyper("clip_norm", 1.0, lo=0.0, lo_open=True).check(clip_norm)
        if grad_noise is not None:
            if isinstance(grad_noise, (tuple, list)) and len(grad_noise) != 2:
                raise ValueError(f"grad_noise must be eta or (eta, gamma), got {grad_noise!r}")
            eta, gamma = grad_noise if isinstance(grad_noise, (tuple, list)) else (grad_noise, 0.55)
            grad_noise = (Hyper("grad_noise eta", 0.0, lo=0.0, lo_open=True).check(eta),
                          Hyper("grad_noise gamma", 0.55, lo=0.0).check(gamma))
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if nonfinite not in POLICIES:
            raise ValueError(f"nonfinite must be one of {POLICIES}, got {nonfinite!r}")
        return {"clip_norm": clip_norm, "grad_noise": grad_noise, "seed": int(seed), "nonfinite": nonfinite}

    def _make_group(self, group, index):
        if "params" not in group:
            raise ValueError(f"parameter group {index} has no 'params'")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"parameter group {index} has unknown keys {sorted(unknown)}; "
                             f"{type(self).__name__} takes {sorted(self.defaults)}")
        raw = group["params"]
        raw = [raw] if isinstance(raw, np.ndarray) else list(raw)
        if not raw:
            raise ValueError(f"parameter group {index} is empty")
        if self._precision is None:
            arrays = [as_array(p, f"param_groups[{index}]['params'][{j}]", writeable=True) for j, p in enumerate(raw)]
        else:
            arrays = [lowprec_storage.as_param(p, f"param_groups[{index}]['params'][{j}]", self._precision)
                      for j, p in enumerate(raw)]
        new = dict(self.defaults)
        new.update({k: v for k, v in group.items() if k != "params"})
        new["params"] = arrays
        self._normalize(new)
        rule = self._rule_for(new)
        self._check_group(new, index, rule)
        return new, rule

    def _normalize(self, group):
        """Lists become tuples (so a change is seen) and kernel-choosing flags are checked."""
        for key in ("betas",):
            if key in group and isinstance(group[key], list):
                group[key] = tuple(group[key])
        for key in self._flags + ("maximize", "decoupled_weight_decay", "l1_coupled"):
            if key in group:
                FLAG.check(group[key], key)

    @property
    def param_groups(self):
        """The parameter groups (dicts, as in PyTorch): change their values between steps
        (checked at the next step); add groups with :meth:`add_param_group`."""
        return self._param_groups

    @param_groups.setter
    def param_groups(self, value):
        # the engine reads the list it was built with: a new list would be silently ignored
        raise AttributeError("param_groups cannot be replaced: change the values in its dicts, or use "
                             "add_param_group / load_state_dict")

    def _append_group(self, group, rule):
        # allocate first: a MemoryError here leaves the optimizer as it was
        values = tuple(0.0 if rule.state_init.get(name) is None else float(group[rule.state_init[name]])
                       for name in rule.state)
        low = [None] * len(group["params"])
        if self._precision is not None:
            low = self._low_params(group["params"], rule, values)
        plain = [p for p, lp in zip(group["params"], low) if lp is None]
        states = [tuple(state_buffer(p) for _ in rule.state) for p in plain]
        # written now, by the threads that will update them, so the first step does not
        # pay for page faults (and on NUMA machines each piece is near its thread)
        self._engine_class.first_touch(states, [values] * len(states))
        states.reverse()
        states = [states.pop() if lp is None else lp.states for lp in low]
        gi = len(self._param_groups)
        self._param_groups.append(group)
        self._group_rule.append(rule)
        for p, st, lp in zip(group["params"], states, low):
            self._params.append(p)
            self._states.append(st)
            self._group_of.append(gi)
            self._low.append(lp)

    def _low_params(self, params, rule, values):
        """Per parameter: its :class:`~fastopt.lowprec.storage.LowParam`, or None where
        it runs the float32/float64 kernels."""
        from fastopt._kernels.lowrules import LOW_GENERATED
        out = []
        for j, p in enumerate(params):
            name = f"params[{len(self._params) + j}]"
            store = lowprec_storage.storage_of(p, name, self._precision)
            variant = lowprec_storage.variant_for(store, p.size, name, rule, self._precision, LOW_GENERATED)
            out.append(None if variant is None else
                       lowprec_storage.LowParam(p, name, variant, rule, values, self._precision))
        return out

    def set_loss_scale(self, loss_scale):
        """Divide the gradients of the next steps by ``loss_scale`` (fused into the step;
        needs ``precision=Precision(...)`` and half gradients)."""
        scale = lowprec_storage.check_loss_scale(loss_scale)
        self._check_loss_scale_use()
        self._precision.loss_scale = scale
        self._engine.set_grad_scale(1.0 / scale)

    def _check_loss_scale_use(self):
        if self._precision is None or not any(lp is not None and lp.half for lp in self._low):
            raise ValueError("loss_scale needs bfloat16/float16 gradients (precision=fastopt.Precision(...) with "
                             "half parameters)")
        if self._options["clip_norm"] is not None:
            raise ValueError("loss_scale together with clip_norm is not supported (the norm would be the scaled "
                             "gradient's); unscale the gradients yourself or clip by value")
        if any(lp is None or not lp.half for lp in self._low):
            raise ValueError("loss_scale needs every parameter in bfloat16/float16 (a float32 gradient would be "
                             "unscaled too)")

    def _build_engine(self, carry=None):
        keys = [[k for k in g if k != "params"] for g in self.param_groups]
        low = {}
        if self._precision is not None:
            if self._precision.loss_scale is not None:
                self._check_loss_scale_use()
            low = {"low": [None if lp is None else lp.slot for lp in self._low],
                   "grad_scale": 1.0 / (self._precision.loss_scale or 1.0)}
        params = [p if lp is None else lp.engine_param for p, lp in zip(self._params, self._low or
                                                                         [None] * len(self._params))]
        engine = self._engine_class(
            params, list(self._states), [self._group_rule[g].name for g in self._group_of],
            list(self._group_of), self.param_groups, keys, self._validate_group,
            clip_norm=self._options["clip_norm"], noise=self._options["grad_noise"],
            seed=self._options["seed"], nonfinite=self._options["nonfinite"], guard=self._guard, **low)
        if carry is not None:
            steps, sstate, gsteps = carry
            engine.set_steps(steps + [0] * (len(self._params) - len(steps)))
            for k, ss in enumerate(sstate):
                engine.set_scalar_state(k, ss)
            engine.set_group_steps(gsteps + [0] * (len(self.param_groups) - len(gsteps)))
        if self._sparse != "lazy":
            engine.set_sparse_mode(self._sparse)
        for k in range(0 if carry is None else len(carry[1]), len(self._params)):
            rule = self._group_rule[self._group_of[k]]
            engine.set_scalar_state(k, [v for _, v in rule.scalar_state])
        # only a complete engine replaces the running one
        old = getattr(self, "_engine", None)
        self._engine = engine
        if old is not None:
            old.retire(engine)

    # --- validation ----------------------------------------------------------------------
    def _rule_for(self, group):
        """The rule variant a group runs (subclasses choose by their flags)."""
        raise NotImplementedError

    def _check_group(self, group, index, rule):
        """Validate a group; return what the engine needs. Raises naming the key."""
        missing = set(self.defaults) - set(group)
        if missing:
            raise ValueError(f"param_groups[{index}] lacks {sorted(missing)}")
        for key, value in self._fixed.items():
            if group[key] != value:
                raise ValueError(f"{type(self).__name__} always uses {key}={value!r}")
        lr = group["lr"]
        if not (isinstance(lr, Schedule) or (callable(lr) and not isinstance(lr, numbers.Real))):
            LR.check(lr, f"param_groups[{index}]['lr']")
        hyper = []
        for h in rule.hyper:
            key, idx = self._hyper_keys.get(h.name, (h.name, None))
            value = group[key]
            label = key
            if idx is not None:
                size = self._tuple_sizes()[key]
                if not isinstance(value, tuple) or len(value) != size:
                    raise ValueError(f"{key} must be a tuple of {size} numbers, got {value!r}")
                value, label = value[idx], f"{key}[{idx}]"
            hyper.append(h.check(value, label))
        wd = WEIGHT_DECAY.check(group["weight_decay"])
        maximize = FLAG.check(group["maximize"], "maximize")
        decoupled = FLAG.check(group["decoupled_weight_decay"], "decoupled_weight_decay")
        clip = group["clip_value"]
        clip = None if clip is None else CLIP_VALUE.check(clip)
        l1 = L1.check(group["l1"])
        l1_coupled = FLAG.check(group["l1_coupled"], "l1_coupled")
        if l1 and self._precision is not None:
            raise ValueError(f"param_groups[{index}]['l1']: L1 is not available with precision=... (the "
                             "low-precision kernels have no L1 loop); use l1=0 or full-precision storage")
        self._check_extra(group)
        return tuple(hyper), wd, maximize, decoupled, clip, l1, l1_coupled

    @classmethod
    def _tuple_sizes(cls):
        """Group key -> the length its tuple value must have (e.g. betas: 2)."""
        sizes = {}
        for key, idx in cls._hyper_keys.values():
            if idx is not None:
                sizes[key] = max(sizes.get(key, 0), idx + 1)
        return sizes

    def _check_extra(self, group):
        """Cross-parameter constraints of a subclass (e.g. Nesterov needs momentum)."""

    def _validate_group(self, gi):
        """Called by the engine when a group's values changed since the last step."""
        group = self.param_groups[gi]
        self._normalize(group)
        rule = self._rule_for(group)
        if rule is not self._group_rule[gi]:
            raise ValueError(f"param_groups[{gi}]: this change would need the '{rule.name}' kernel and "
                             f"its state, but the group was created for '{self._group_rule[gi].name}'; "
                             "create a new optimizer instead")
        return self._check_group(group, gi, rule)

    # --- stepping ----------------------------------------------------------------------------
    def step(self, grads):
        """Update every parameter in place with ``grads`` (a list in parameter order; an
        entry may be None to leave that parameter alone). Returns False when the step
        was skipped because of a non-finite gradient (``nonfinite="skip"``)."""
        return self._engine.step(grads)

    @property
    def params(self):
        """The parameter arrays, in the order ``step`` expects the gradients."""
        return list(self._params)

    @property
    def last_grad_norm(self):
        """The global gradient norm of the last step (when clip_norm or a non-finite
        policy made the optimizer compute it), else nan."""
        return self._engine.last_grad_norm if (self._options["clip_norm"] or
                                               self._options["nonfinite"] != "ignore") else math.nan

    def _lr_at(self, gi):
        lr = self.param_groups[gi]["lr"]
        return float(lr(self._engine.get_group_steps()[gi])) if callable(lr) else float(lr)

    @property
    def current_lr(self):
        """The learning rate the next step uses in the first group (after its schedule)."""
        return self.current_lrs[0]

    @property
    def current_lrs(self):
        """The learning rate the next step uses, per group. Read under the optimizer's
        lock, so a step running in another thread is seen whole (its count and lr)."""
        self._guard.acquire("current_lrs")
        try:
            return [self._lr_at(g) for g in range(len(self.param_groups))]
        finally:
            self._guard.release()

    @property
    def state(self):
        """Per parameter (in ``params`` order): ``{"step": int, <state name>: array, ...}``.
        The arrays are the live buffers."""
        self._guard.acquire("state")
        try:
            return self._state_entries()
        finally:
            self._guard.release()

    def _state_entries(self, flush=True):
        if flush:
            self._engine.sparse_flush()      # exact sparse mode: every row's state up to date
        steps = self._engine.get_steps()
        out = []
        for k, p in enumerate(self._params):
            rule = self._group_rule[self._group_of[k]]
            entry = {"step": steps[k]}
            lp = self._low[k] if self._low else None
            entry.update(zip(rule.state, self._states[k]) if lp is None else lp.entries().items())
            entry.update(zip((n for n, _ in rule.scalar_state), self._engine.get_scalar_state(k)))
            out.append(entry)
        return out

    @_guarded
    def add_param_group(self, group):
        """Add a group of new parameters (with optional hyper-parameter overrides)."""
        if not isinstance(group, dict):
            raise TypeError("a parameter group is a dict with a 'params' entry")
        new, rule = self._make_group(group, len(self.param_groups))
        existing = [(f"params[{k}]", p) for k, p in enumerate(self._params)]
        existing += [(f"the state of params[{k}]", s) for k, states in enumerate(self._states) for s in states]
        n = len(self._params)
        check_disjoint(existing + [(f"params[{n + j}]", p) for j, p in enumerate(new["params"])])
        self._engine.sparse_flush()          # the new engine starts with every row current
        carry = (self._engine.get_steps(), [self._engine.get_scalar_state(k) for k in range(len(self._params))],
                 self._engine.get_group_steps())
        sizes = (len(self._param_groups), len(self._params))
        try:
            self._append_group(new, rule)
            self._build_engine(carry)
        except BaseException:
            # e.g. MemoryError for the new state: back to the groups the engine still runs
            del self._param_groups[sizes[0]:], self._group_rule[sizes[0]:]
            del self._params[sizes[1]:], self._states[sizes[1]:], self._group_of[sizes[1]:], self._low[sizes[1]:]
            raise

    # --- state_dict --------------------------------------------------------------------------
    @_guarded
    def state_dict(self):
        """A snapshot of everything a resumed run needs, as plain Python scalars, lists,
        dicts and NumPy arrays (copies). See :func:`fastopt.flatten_state_dict` to save it
        with ``np.savez``."""
        groups = groups_state(self.param_groups, self._engine.get_group_steps())
        state = {}
        # exact sparse mode: the rows' state as it is, with the step each row was last
        # brought up to, not caught up here: a catch-up rounds (d^a d^b is not d^(a+b)),
        # so saving mid-run would change the rest of the run's bits
        rows = self._engine.get_row_steps()
        for k, entry in enumerate(self._state_entries(flush=False)):
            state[k] = {name: (v.copy() if isinstance(v, np.ndarray) else v) for name, v in entry.items()}
            if rows[k] is not None:
                state[k]["row_steps"] = rows[k]
        return {"algorithm": type(self).__name__, "version": STATE_DICT_VERSION,
                "options": {"clip_norm": self._options["clip_norm"],
                            "grad_noise": list(self._options["grad_noise"] or []),
                            "seed": self._options["seed"], "nonfinite": self._options["nonfinite"]},
                "param_groups": groups, "state": state}

    @_guarded
    def load_state_dict(self, state_dict):
        """Restore a snapshot from :meth:`state_dict`. Everything is checked first (the
        algorithm, group and parameter counts, every state array's shape, dtype and values
        against the rule's domain — e.g. no negative second moment —, every
        hyper-parameter and option); on any mismatch a ValueError (TypeError for a value
        of the wrong type) is raised and nothing changes. The saved options (clip_norm,
        grad_noise, seed, nonfinite) are restored."""
        sd = state_dict
        name = type(self).__name__
        if not isinstance(sd, dict) or sd.get("algorithm") != name:
            raise ValueError(f"state_dict is for {sd.get('algorithm') if isinstance(sd, dict) else sd!r}, "
                             f"not {name}")
        if sd.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"state_dict version {sd.get('version')!r} is not {STATE_DICT_VERSION}")
        options = self._options
        if "options" in sd:
            saved = sd["options"]
            if not isinstance(saved, dict) or set(saved) - set(self._options):
                raise ValueError(f"state_dict['options'] must be a dict with keys from {sorted(self._options)}, "
                                 f"got {saved!r}")
            merged = dict(self._options, **saved)
            noise = merged["grad_noise"]
            if isinstance(noise, (list, tuple)) and not noise:
                noise = None
            try:
                options = self._check_options(merged["clip_norm"], noise, merged["seed"], merged["nonfinite"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state_dict['options']: {exc}") from None
        groups, state = sd.get("param_groups"), sd.get("state")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups) if isinstance(groups, list) else '?'} parameter "
                             f"groups, the optimizer has {len(self.param_groups)}")
        if not isinstance(state, dict) or len(state) != len(self._params):
            raise ValueError(f"state_dict holds state for {len(state) if isinstance(state, dict) else '?'} "
                             f"parameters, the optimizer has {len(self._params)}")
        new_groups, k = [], 0
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
                raise ValueError(f"param_groups[{gi}] in the state_dict is not a group (a dict with a "
                                 "'params' list)")
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(f"param_groups[{gi}] has {len(saved.get('params', ()))} parameters in the "
                                 f"state_dict, {len(group['params'])} in the optimizer")
            extra = set(saved) - set(group) - {"group_step"}
            if extra:
                raise ValueError(f"param_groups[{gi}] in the state_dict has unknown keys {sorted(extra)}")
            candidate = dict(group)
            for key, value in saved.items():
                if key in ("params", "group_step"):
                    continue
                current = group.get(key)
                if isinstance(value, dict) and "schedule" in value:
                    if not isinstance(current, Schedule):
                        raise ValueError(f"param_groups[{gi}]['{key}'] was a schedule when saved; construct "
                                         "the optimizer with the same schedule before loading")
                    probe = Schedule.from_state_dict(value["schedule"])
                    if type(probe) is not type(current):
                        raise ValueError(f"param_groups[{gi}]['{key}']: saved schedule is "
                                         f"{type(probe).__name__}, the optimizer has {type(current).__name__}")
                    continue
                if isinstance(value, dict) and "callable" in value:
                    if not callable(current):
                        raise ValueError(f"param_groups[{gi}]['{key}'] was a function when saved")
                    continue
                if callable(current) and not isinstance(current, numbers.Real):
                    raise ValueError(f"param_groups[{gi}]['{key}'] is a schedule in the optimizer but the number "
                                     f"{value!r} in the state_dict")
                candidate[key] = tuple(value) if isinstance(value, list) else value
            self._normalize(candidate)
            if self._rule_for(candidate) is not self._group_rule[gi]:
                raise ValueError(f"param_groups[{gi}]: the state_dict's flags select another kernel "
                                 f"({self._rule_for(candidate).name}, not {self._group_rule[gi].name})")
            self._check_group(candidate, gi, self._group_rule[gi])
            gstep = saved.get("group_step", 0)
            if not _is_count(gstep):
                raise ValueError(f"param_groups[{gi}]['group_step'] must be an int in [0, 2**53], got {gstep!r}")
            new_groups.append((candidate, saved, int(gstep)))
        loaded = []
        for k, p in enumerate(self._params):
            entry = state.get(k, state.get(str(k)))
            if not isinstance(entry, dict):
                raise ValueError(f"state_dict has no state for parameter {k}")
            rule = self._group_rule[self._group_of[k]]
            lp = self._low[k] if self._low else None
            want = {"step"} | (set(rule.state) if lp is None else lp.keys()) | {n for n, _ in rule.scalar_state}
            row_steps = None
            if "row_steps" in entry and self._sparse == "exact" and p.ndim == 2:
                entry = dict(entry)
                row_steps = _check_row_steps(entry.pop("row_steps"), k, p.shape[0], entry.get("step"))
            if set(entry) != want:
                raise ValueError(f"state of parameter {k} has keys {sorted(entry)}, expected {sorted(want)} "
                                 f"for the '{rule.name}' kernel")
            step = entry["step"]
            if not _is_count(step):
                raise ValueError(f"state[{k}]['step'] must be an int in [0, 2**53], got {step!r}")
            arrays = [] if lp is None else lp.check_entry(k, entry)
            for name in (rule.state if lp is None else ()):
                a = entry[name]
                if isinstance(a, np.ndarray) and not isinstance(a, np.ma.MaskedArray):
                    a = np.asarray(a)        # a subclass's own comparisons and copies are not ours to trust
                if (not isinstance(a, np.ndarray) or isinstance(a, np.ma.MaskedArray) or a.shape != p.shape
                        or a.dtype != p.dtype):
                    raise ValueError(f"state[{k}]['{name}'] must be a {p.dtype} array of shape {p.shape}, got "
                                     f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
                if name in rule.domains:
                    check_domain(a, f"state[{k}]['{name}']", rule.domains[name])
                arrays.append(a)
            scalars = []
            for n, _ in rule.scalar_state:
                v = entry[n]
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ValueError(f"state[{k}]['{n}'] must be a finite number, got {v!r}")
                if n in rule.domains:
                    rule.domains[n].check(v, f"state[{k}]['{n}']")
                scalars.append(float(v))
            loaded.append((int(step), arrays, scalars, row_steps))
        # everything checked: commit
        for gi, (candidate, saved, _) in enumerate(new_groups):
            group = self.param_groups[gi]
            for key, value in saved.items():
                if key in ("params", "group_step"):
                    continue
                if isinstance(value, dict) and "schedule" in value:
                    group[key].load_state_dict(value["schedule"])
                elif not (isinstance(value, dict) and "callable" in value):
                    group[key] = candidate[key]
        for k, (step, arrays, scalars, _) in enumerate(loaded):
            if self._low and self._low[k] is not None:
                self._low[k].commit(arrays)
                continue
            for dst, src in zip(self._states[k], arrays):
                np.copyto(dst, src)
        if options != self._options:
            self._options = options
            self._build_engine()
        for k, (step, arrays, scalars, _) in enumerate(loaded):
            self._engine.set_scalar_state(k, scalars)
        self._engine.set_steps([s for s, _, _, _ in loaded])
        self._engine.set_group_steps([g for _, _, g in new_groups])
        # rows saved mid-way in exact mode resume from their own steps; others are current
        self._engine.set_row_steps([r for _, _, _, r in loaded])

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for gi, group in enumerate(self.param_groups):
            lines.append(f"  group {gi}: {len(group['params'])} arrays, kernel {self._group_rule[gi].name}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]!r}")
        return "\n".join(lines + [")"])
