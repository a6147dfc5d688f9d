"""Row-wise AdaGrad: AdaGrad with one accumulator per row of a 2-D parameter."""
import math
import numbers

import numpy as np

from fastopt._kernels.engine import NonFiniteGradientError, StepGuard
from fastopt._kernels.driver import data_span
from fastopt._kernels.rowwise import rowwise_adagrad
from fastopt._kernels.sparse import check_indices, coalesce, new_workspace
from fastopt._lifetime import pin_memory
from fastopt._validate import as_array, check_disjoint, check_like, grads_sequence
from fastopt.optim.base import POLICIES, _guarded
from fastopt.rules import FLAG, LR, MAX_STEP, NONNEG, WEIGHT_DECAY, Hyper
from fastopt.schedules import Schedule
from fastopt.sparse import checked_rows, is_sparse_input

__all__ = ["RowwiseAdagrad"]


def _layout(a):
    # what the kernel's raw pointers depend on: the memory span, dtype, shape and writeability
    return data_span(a), a.dtype, a.shape, a.flags.writeable, a.flags.c_contiguous


_HYPER = {"lr_decay": Hyper("lr_decay", 0.0, lo=0.0), "eps": Hyper("eps", 1e-10, lo=0.0),
          "initial_accumulator_value": Hyper("initial_accumulator_value", 0.0, lo=0.0)}


class RowwiseAdagrad:
    """Row-wise AdaGrad (the memory-saving AdaGrad of recommendation embeddings, as
    FBGEMM/TorchRec's ``ROWWISE_ADAGRAD``): one accumulator per row of each 2-D
    parameter ``(rows, dim)`` — state of one float per row instead of one per element.

    For every row ``r`` with a gradient (after ``g = -g`` under ``maximize`` and
    ``g = g + λ p`` with ``weight_decay`` λ):

        clr = lr / (1 + (t-1) lr_decay);  s_r += mean_j(g_j²);  p_r -= clr · g / (√s_r + ε)

    with ``s`` starting at ``initial_accumulator_value`` and ``t`` the parameter's step
    count. The mean is a float64 sum (see ``fastopt/_kernels/rowwise.pyx``) rounded once.

    ``step`` takes, per parameter, ``None``, a dense gradient (every row) or a sparse
    one (:class:`fastopt.sparse.SparseGrad`, a scipy.sparse matrix or a torch sparse
    COO tensor), coalesced as the other optimizers do; rows without a gradient and
    their accumulators are not touched (for this rule a zero gradient row would change
    nothing, so lazy is exact). ``nonfinite``: ``"ignore"``, ``"raise"`` or ``"skip"``,
    as for the other optimizers. ``lr`` may be a schedule (of the optimizer's step count).
    """
    _kernel = staticmethod(rowwise_adagrad)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0,
                 weight_decay=0.0, *, maximize=False, nonfinite="ignore"):
        self._guard = StepGuard()
        if nonfinite not in POLICIES:
            raise ValueError(f"nonfinite must be one of {POLICIES}, got {nonfinite!r}")
        self._nonfinite = nonfinite
        raw = [params] if isinstance(params, np.ndarray) else list(params)
        if not raw:
            raise ValueError("optimizer got an empty parameter list")
        arrays = [as_array(p, f"params[{k}]", writeable=True) for k, p in enumerate(raw)]
        for k, p in enumerate(arrays):
            if p.ndim != 2:
                raise ValueError(f"params[{k}] has shape {p.shape}: RowwiseAdagrad keeps one accumulator per row "
                                 "of a 2-D parameter (rows, dim)")
        check_disjoint([(f"params[{k}]", p) for k, p in enumerate(arrays)])
        group = dict(lr=lr, lr_decay=lr_decay, eps=eps, initial_accumulator_value=initial_accumulator_value,
                     weight_decay=weight_decay, maximize=maximize)
        self._check(group)
        self.param_groups = [dict(group, params=arrays)]
        self._params = arrays
        init = float(initial_accumulator_value)
        self._sums = [np.full(p.shape[0], init, p.dtype) for p in arrays]
        self._ws = [new_workspace() for _ in arrays]        # each parameter's coalescing buffers
        self._steps = [0] * len(arrays)
        self._gstep = 0
        self._layouts = [(_layout(p), _layout(s)) for p, s in zip(arrays, self._sums)]

    @staticmethod
    def _check(group):
        lr = group["lr"]
        if not (isinstance(lr, Schedule) or (callable(lr) and not isinstance(lr, numbers.Real))):
            LR.check(lr)
        hyper = {k: h.check(group[k]) for k, h in _HYPER.items()}
        wd = WEIGHT_DECAY.check(group["weight_decay"])
        maximize = FLAG.check(group["maximize"], "maximize")
        return hyper, wd, maximize

    @property
    def params(self):
        return list(self._params)

    def _lr(self):
        lr = self.param_groups[0]["lr"]
        value = lr(self._gstep) if callable(lr) else lr
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"param_groups[0]: the learning rate (schedule) gave {value!r}; it must be finite "
                             "and >= 0")
        return float(value)

    @_guarded
    def step(self, grads):
        """Update every parameter with a gradient (see the class docstring); returns
        False when ``nonfinite="skip"`` skipped the step. Everything is checked first:
        on an error nothing is written."""
        held = grads_sequence(grads)
        if len(held) != len(self._params):
            raise ValueError(f"expected {len(self._params)} gradients (one per parameter), got {len(held)}")
        hyper, wd, maximize = self._check(self.param_groups[0])
        lr = self._lr()
        work = []
        for k, (p, g) in enumerate(zip(self._params, held)):
            if g is None:
                continue
            if is_sparse_input(g):
                idx, vals, ordered = checked_rows(g, f"grads[{k}]", p)
                # into this parameter's workspace: no fresh pages to fault in every step
                rows, vals = (idx, vals) if ordered else coalesce(idx, vals, p.shape[0], ws=self._ws[k])
            else:
                vals = as_array(g, f"grads[{k}]", writeable=False)
                check_like(vals, f"grads[{k}]", p, "its parameter")
                rows = np.arange(p.shape[0], dtype=np.intp)
            if vals.size and any(np.shares_memory(vals, a) for a in self._params + self._sums):
                raise ValueError(f"grads[{k}] shares memory with a parameter or optimizer state")
            work.append((k, rows, vals, rows is idx if is_sparse_input(g) else False, _layout(vals)))
        # no Python code runs from here to the kernels. A callback run above (a later
        # gradient's __array__, a hyper-parameter's __float__) may have resized a
        # parameter or rewritten indices already checked: the kernel indexes with them.
        self._check_final(work)
        if self._nonfinite != "ignore" and not all(np.isfinite(v).all() for _, _, v, _, _ in work):
            if self._nonfinite == "raise":
                raise NonFiniteGradientError("a gradient holds inf or NaN; nothing was updated (nonfinite='raise')")
            return False
        # weak references make NumPy refuse to resize (and free) these arrays from
        # another thread while the kernel runs without the GIL
        pins = pin_memory([a for k, rows, vals, _, _ in work for a in (self._params[k], self._sums[k], rows, vals)])
        for k, rows, vals, _, _ in work:
            t = self._steps[k] + 1
            clr = lr / (1.0 + (t - 1) * hyper["lr_decay"])
            if self._params[k].shape[1]:       # no columns: no mean, nothing to update
                self._kernel(self._params[k], self._sums[k], rows, vals, clr, hyper["eps"], bool(maximize), wd)
            self._steps[k] = t
        del pins
        self._gstep += 1
        return True

    def _check_final(self, work):
        for k, (pl, sl) in enumerate(self._layouts):
            if _layout(self._params[k]) != pl or _layout(self._sums[k]) != sl:
                raise ValueError(f"params[{k}] (or its accumulator) was resized, re-typed or made read-only "
                                 "since the optimizer was created; nothing was updated")
        for k, rows, vals, in_place, vl in work:
            if _layout(vals) != vl:
                raise ValueError(f"grads[{k}] was resized or re-typed during the step (by a callback); "
                                 "nothing was updated")
            if in_place and not check_indices(rows, self._params[k].shape[0], f"grads[{k}].indices"):
                raise ValueError(f"grads[{k}].indices were changed during the step (by a callback); "
                                 "nothing was updated")

    @property
    def state(self):
        """Per parameter: ``{"step": int, "sum": (rows,) array}`` (the live buffers)."""
        return [{"step": t, "sum": s} for t, s in zip(self._steps, self._sums)]

    @_guarded
    def state_dict(self):
        """A snapshot (copies) of the hyper-parameters, steps and accumulators."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        if isinstance(group["lr"], Schedule):
            group["lr"] = {"schedule": group["lr"].state_dict()}
        return {"algorithm": "RowwiseAdagrad", "group_step": self._gstep, "param_group": group,
                "state": {k: {"step": t, "sum": s.copy()} for k, (t, s) in enumerate(zip(self._steps, self._sums))}}

    @_guarded
    def load_state_dict(self, sd):
        """Restore a :meth:`state_dict` snapshot; everything is checked before anything changes."""
        if not isinstance(sd, dict) or sd.get("algorithm") != "RowwiseAdagrad":
            raise ValueError("state_dict is not a RowwiseAdagrad state_dict")
        state = sd.get("state")
        if not isinstance(state, dict) or len(state) != len(self._params):
            raise ValueError(f"state_dict must hold state for {len(self._params)} parameters")
        loaded = []
        for k, p in enumerate(self._params):
            entry = state.get(k, state.get(str(k)))
            if not isinstance(entry, dict) or set(entry) != {"step", "sum"}:
                raise ValueError(f"state[{k}] must be a dict with 'step' and 'sum'")
            t, s = entry["step"], entry["sum"]
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t <= MAX_STEP:
                raise ValueError(f"state[{k}]['step'] must be an int in [0, 2**53], got {t!r}")
            if not isinstance(s, np.ndarray) or s.shape != (p.shape[0],) or s.dtype != p.dtype:
                raise ValueError(f"state[{k}]['sum'] must be a {p.dtype} array of shape ({p.shape[0]},)")
            if (s < 0).any():
                raise ValueError(f"state[{k}]['sum'] must be {NONNEG.doc}")
            loaded.append((int(t), s))
        group = dict(sd.get("param_group", {}))
        current = self.param_groups[0]
        if isinstance(group.get("lr"), dict):
            if not isinstance(current["lr"], Schedule):
                raise ValueError("the state_dict's lr is a schedule: construct the optimizer with the same schedule")
            group["lr"] = current["lr"]
            schedule_state = sd["param_group"]["lr"]["schedule"]
        else:
            schedule_state = None
        candidate = dict(current, **{k: v for k, v in group.items() if k in current and k != "params"})
        self._check(candidate)
        gstep = sd.get("group_step", 0)
        if isinstance(gstep, bool) or not isinstance(gstep, numbers.Integral) or not 0 <= gstep <= MAX_STEP:
            raise ValueError(f"group_step must be an int in [0, 2**53], got {gstep!r}")
        for (t, s), dst in zip(loaded, self._sums):
            np.copyto(dst, s)
        self._steps = [t for t, _ in loaded]
        self._gstep = int(gstep)
        if schedule_state is not None:
            current["lr"].load_state_dict(schedule_state)
        current.update({k: v for k, v in candidate.items() if k != "lr" or schedule_state is None})
