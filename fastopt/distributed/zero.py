"""Sharded data-parallel optimizer (ZeRO stages 1 and 2) around any fastopt optimizer.

Every rank holds the full parameters and computes a full gradient on its own data;
rank r owns the elements ``ShardLayout.pieces[r]`` (about 1/P of them, in whole
reduction blocks) and keeps the optimizer state of those elements only. A step:

1. the gradients are exchanged shard by shard (an all-to-all in rounds of
   ``chunk_bytes`` per peer, the next round in flight while this one is reduced): rank
   r receives every rank's gradient of its shard and forms the mean with
   :func:`fastopt.distributed.mean_into` (float64 sum in rank order, / P, rounded) —
   the reduce-scatter, done in a fixed order so its bits depend on nothing but the
   gradients;
2. the wrapped optimizer's fused step runs on the shard. Global-norm clipping and the
   non-finite policy need the norm of the whole gradient: each rank computes its
   blocks' float64 terms, one all-gather of those terms (2 doubles per 8192-element
   block) gives every rank all of them, and each sums them in block order — the same
   additions in the same order as a single process, so the same bits;
3. the updated shards are all-gathered into every rank's parameters (in place).

Stage 1 keeps the reduced gradient in a buffer the size of all parameters (each rank
fills its own part, as ZeRO-1 keeps full gradient buffers); stage 2 keeps only the
shard. The user's own local gradient (full size) is theirs in both stages.

Result: every rank's parameters after a step are the bits a single process gets by
stepping the wrapped optimizer on ``mean_gradient`` of the ranks' gradients — for any
number of ranks (tests: 1 to 4, with clipping and every policy).
"""
import functools
import glob
import math
import json
import numbers
import os
import threading

import numpy as np

from fastopt.distributed.comm import (DEFAULT_TIMEOUT, MPI, DistributedError, agree, check_optimizer_class,
                                      join, wait)
from fastopt.distributed.layout import ALIGN, ShardLayout, packed_view
from fastopt.distributed.reduce import mean_into
from fastopt.optim.base import STATE_DICT_VERSION, ReentryError, groups_state
from fastopt.optim.state import flatten_state_dict, unflatten_state_dict
from fastopt.schedules import Schedule

__all__ = ["ShardedOptimizer"]


def _one_at_a_time(method):
    """A collective method: calls from several threads of one rank run one after the
    other, as a plain optimizer's steps do (their collectives interleaved on one
    communicator would pair with the wrong calls of the other ranks and hang); a call
    from inside one (a schedule, a gradient's ``__array__``) is a ReentryError before
    anything is sent."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        me = threading.get_ident()
        if self._owner == me:
            raise ReentryError(f"ShardedOptimizer.{method.__name__} was called from inside one of its own "
                               "collective calls on the same thread")
        with self._collective:
            self._owner = me
            try:
                return method(self, *args, **kwargs)
            finally:
                self._owner = None
    return wrapper


class ShardedOptimizer:
    """``ShardedOptimizer(fastopt.AdamW, params, lr=..., clip_norm=1.0, stage=2)``: the
    optimizer ``optimizer`` (any fastopt optimizer class) over ``params`` with its
    state sharded over the ranks of ``comm`` (default ``MPI.COMM_WORLD``). Every rank
    calls it collectively with the same parameters' shapes and dtypes and the same
    hyper-parameters (checked: a difference is a :class:`DistributedError` on every
    rank); ``params`` may be a list of arrays or of parameter-group dicts, as for the
    optimizer itself. Keyword arguments other than those below go to ``optimizer``
    (``grad_noise`` is refused: its draws are keyed by parameter and element, which the
    shards renumber).

    * ``stage``: 1 (reduced gradient kept in a full-size buffer) or 2 (shard only).
    * ``timeout``: seconds any wait for other ranks may take before a
      :class:`DistributedError` (no hang when a rank hangs or took another path).
    * ``chunk_bytes``: bytes per peer per round of the gradient exchange (bounds the
      receive buffers to ``2 · P · chunk_bytes``).
    * ``abort_on_error``: install the hook that aborts the job when a rank raises
      (see :mod:`fastopt.distributed.comm`).

    ``step(grads)`` is collective: the mean over the ranks of ``grads`` is the
    gradient."""

    def __init__(self, optimizer, params, *, comm=None, stage=1, timeout=DEFAULT_TIMEOUT, chunk_bytes=2 << 20,
                 abort_on_error=True, **kwargs):
        self._collective, self._owner = threading.Lock(), None
        comm = join(self, comm, timeout, abort_on_error)
        error, groups = None, None
        try:
            groups = self._check_args(optimizer, params, stage, chunk_bytes, kwargs)
        except (TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        agree(comm, error, self.timeout, "ShardedOptimizer's argument check")
        self._check_same_everywhere(optimizer, groups, stage, kwargs)
        self.optimizer_class, self.stage, self.kwargs = optimizer, stage, dict(kwargs)
        self._user_groups = groups
        self.params = [p for g in groups for p in g["params"]]
        self._flat = [p.reshape(-1) for p in self.params]
        self.layout = ShardLayout([p.size for p in self.params], [p.itemsize for p in self.params], self.nranks)
        self._group_of = [gi for gi, g in enumerate(groups) for _ in g["params"]]
        self._needs_norm = kwargs.get("clip_norm") is not None or kwargs.get("nonfinite", "ignore") != "ignore"
        self._nonfinite = kwargs.get("nonfinite", "ignore")
        self.chunk_bytes = int(chunk_bytes)
        error = None
        try:
            self._build_local()
        except (TypeError, ValueError, MemoryError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        agree(comm, error, self.timeout, f"creating the {optimizer.__name__} shard")
        self._last_norm = float("nan")

    # --- construction --------------------------------------------------------------------
    @staticmethod
    def _check_args(optimizer, params, stage, chunk_bytes, kwargs):
        check_optimizer_class(optimizer)
        if isinstance(stage, bool) or stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, numbers.Integral) or chunk_bytes < ALIGN:
            raise ValueError(f"chunk_bytes must be an int >= {ALIGN}, got {chunk_bytes!r}")
        if kwargs.get("grad_noise") is not None:
            raise ValueError("grad_noise is not supported by ShardedOptimizer: its draws are keyed by parameter "
                             "and element index, which sharding renumbers")
        groups = [params] if isinstance(params, np.ndarray) else list(params)
        if not groups:
            raise ValueError("params is empty")
        if not all(isinstance(g, dict) for g in groups):
            if any(isinstance(g, dict) for g in groups):
                raise TypeError("params must be all arrays or all parameter-group dicts")
            groups = [{"params": groups}]
        out = []
        for gi, g in enumerate(groups):
            if "params" not in g:
                raise ValueError(f"parameter group {gi} has no 'params'")
            ps = [g["params"]] if isinstance(g["params"], np.ndarray) else list(g["params"])
            if not ps:
                raise ValueError(f"parameter group {gi} is empty")
            for j, p in enumerate(ps):
                name = f"params[{gi}][{j}]" if len(groups) > 1 else f"params[{j}]"
                if not isinstance(p, np.ndarray):
                    raise TypeError(f"{name} must be a NumPy array, got {type(p).__name__}")
                if p.dtype not in (np.float32, np.float64):
                    raise TypeError(f"{name} must be float32 or float64, got {p.dtype}")
                if not p.flags.c_contiguous or not p.flags.writeable:
                    raise ValueError(f"{name} must be C-contiguous and writeable")
                if p.size == 0:
                    raise ValueError(f"{name} is empty")
            out.append(dict(g, params=ps))
        return out

    def _check_same_everywhere(self, optimizer, groups, stage, kwargs):
        def plain(v):
            if isinstance(v, (bool, int, float, str, type(None))):
                return v
            if isinstance(v, (np.bool_, np.integer, np.floating)):     # NumPy scalars: by value too
                return v.item()
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return type(v).__name__     # schedules, callables: their type must agree
        sig = {"optimizer": optimizer.__name__, "stage": stage,
               "options": {k: plain(v) for k, v in sorted(kwargs.items())},
               "groups": [{k: plain(v) for k, v in sorted(g.items()) if k != "params"} for g in groups],
               "params": [[[list(p.shape), p.dtype.str] for p in g["params"]] for g in groups]}
        sigs = self.comm.allgather(sig)
        bad = []
        for r, s in enumerate(sigs):
            for key in sig:
                if s[key] != sigs[0][key]:
                    bad.append(f"rank {r}'s {key} {s[key]!r} differ from rank 0's {sigs[0][key]!r}")
        if bad:
            raise DistributedError("ShardedOptimizer needs the same parameters (shapes, dtypes) and settings on "
                                   "every rank:\n  " + "\n  ".join(bad))

    def _build_local(self):
        L, me = self.layout, self.rank
        self.pieces = L.pieces[me]
        offsets, size = L.packed(me)
        base = sum(L.packed(r)[1] for r in range(me)) if self.stage == 1 else 0
        total = sum(L.packed(r)[1] for r in range(self.nranks)) if self.stage == 1 else size
        self._gbuf = np.empty(max(total, ALIGN), np.uint8)
        self._gviews = [packed_view(self._gbuf, base + o, b - a, self.params[k].dtype)
                        for (k, a, b), o in zip(self.pieces, offsets)]
        self._offsets = offsets
        # the inner optimizer: this rank's pieces, grouped as the user's groups
        inner_groups, self._inner_group_of = [], []
        for gi, g in enumerate(self._user_groups):
            views = [self._flat[k][a:b] for k, a, b in self.pieces if self._group_of[k] == gi]
            if views:
                inner_groups.append(dict({key: v for key, v in g.items() if key != "params"}, params=views))
                self._inner_group_of.append(gi)
        self.inner = self.optimizer_class(inner_groups, **self.kwargs) if inner_groups else None
        self._attach_reducer()
        # the gradient exchange, in rounds: round (k, j) moves, for every rank r, the j-th
        # run of at most C elements of r's piece of parameter k (contiguous in everyone's
        # gradient k), so each round is one all-to-all of plain byte ranges
        self._rounds = []
        for k, p in enumerate(self.params):
            C = max(1, self.chunk_bytes // p.itemsize)
            spans = [next(((a, b) for kk, a, b in L.pieces[r] if kk == k), (0, 0)) for r in range(self.nranks)]
            for j in range(max(-(-(b - a) // C) for a, b in spans)):
                runs = [(min(a + j * C, b), min(a + (j + 1) * C, b)) for a, b in spans]
                lo, hi = runs[me]
                gv = None
                if hi > lo:
                    i = next(i for i, (kk, a, b) in enumerate(self.pieces) if kk == k)
                    gv = self._gviews[i][lo - self.pieces[i][1]:hi - self.pieces[i][1]]
                self._rounds.append((k, runs, gv))
        # sized for this rank's largest round (at most chunk_bytes per peer), not P · chunk_bytes
        # whatever the parameters: small shards must not cost 2 · P · 2 MiB per rank
        largest = max(((runs[me][1] - runs[me][0]) * self.params[k].itemsize for k, runs, _ in self._rounds),
                      default=0)
        self._recv = [np.empty(self.nranks * largest if self.nranks > 1 else 0, np.uint8) for _ in range(2)]
        # the parameter all-gather: per parameter, every rank's piece (bytes) in place
        self._gather_specs = []
        for k, p in enumerate(self.params):
            spans = [next(((a, b) for kk, a, b in L.pieces[r] if kk == k), (0, 0)) for r in range(self.nranks)]
            isz = p.itemsize
            self._gather_specs.append((self._flat[k].view(np.uint8), [(b - a) * isz for a, b in spans],
                                       [a * isz for a, b in spans]))
        self._nblocks = [L.nblocks(r) for r in range(self.nranks)]

    def _attach_reducer(self):
        if self.inner is not None:
            self.inner._engine.set_norm_reducer(self._reduce_terms)

    # --- stepping --------------------------------------------------------------------------
    @property
    def param_groups(self):
        """The groups as given (full parameter lists): change hyper-parameters here, the
        same way on every rank; they reach the shards at the next step."""
        return self._user_groups

    @property
    def last_grad_norm(self):
        """The global gradient norm of the last step (when clip_norm or a non-finite
        policy needed it), else nan."""
        return self._last_norm

    def _check_grads(self, grads):
        if isinstance(grads, np.ndarray) or not hasattr(grads, "__len__"):
            return "grads must be a list with one array per parameter"
        if len(grads) != len(self.params):
            return f"expected {len(self.params)} gradients (one per parameter), got {len(grads)}"
        for k, (g, p) in enumerate(zip(grads, self.params)):
            if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype:
                return (f"grads[{k}] must be a {p.dtype} array of shape {p.shape}, got "
                        f"{getattr(g, 'dtype', type(g).__name__)} {getattr(g, 'shape', '')}")
            if not g.flags.c_contiguous:
                return f"grads[{k}] must be C-contiguous"
        return None

    def _sync_groups(self):
        if self.inner is None:
            return
        for ig, gi in zip(self.inner.param_groups, self._inner_group_of):
            for key, value in self._user_groups[gi].items():
                if key != "params" and ig.get(key) is not value:
                    ig[key] = value

    @_one_at_a_time
    def step(self, grads):
        """One collective step on the ranks' mean gradient (see the module docstring).
        Returns False when the step was skipped (``nonfinite="skip"``) — on every rank."""
        agree(self.comm, self._check_grads(grads), self.timeout, "the step's gradient check")
        self._sync_groups()
        self.reduce_scatter(grads)
        return self.local_step_and_gather()

    def reduce_scatter(self, grads):
        """Step part 1: this rank's shard of the mean gradient, into the gradient buffer."""
        flat = [g.reshape(-1) for g in grads]
        if self.nranks == 1:
            for (k, a, b), gv in zip(self.pieces, self._gviews):
                mean_into(gv, [flat[k][a:b]])
            return
        # round i+1 is in flight while round i is averaged
        pending = self._start_round(0, flat)
        for i, (k, runs, gv) in enumerate(self._rounds):
            nxt = self._start_round(i + 1, flat) if i + 1 < len(self._rounds) else None
            wait(pending, "the gradient exchange", self.timeout)
            if gv is not None:
                lo, hi = runs[self.rank]
                n, dt = hi - lo, self.params[k].dtype
                rows = self._recv[i % 2][:self.nranks * n * dt.itemsize].view(dt).reshape(self.nranks, n)
                mean_into(gv, [flat[k][lo:hi] if r == self.rank else rows[r] for r in range(self.nranks)])
            pending = nxt

    def _start_round(self, i, flat):
        k, runs, _ = self._rounds[i]
        isz, P, me = self.params[k].itemsize, self.nranks, self.rank
        lo, hi = runs[me]
        mine = (hi - lo) * isz
        scounts = [0 if r == me else (b - a) * isz for r, (a, b) in enumerate(runs)]
        sdispls = [a * isz for a, b in runs]
        rcounts = [0 if r == me else mine for r in range(P)]
        rdispls = [r * mine for r in range(P)]
        return self.comm.Ialltoallv([flat[k].view(np.uint8), scounts, sdispls, MPI.BYTE],
                                    [self._recv[i % 2], rcounts, rdispls, MPI.BYTE])

    def _reduce_terms(self, terms):
        """The engine's norm reducer: every rank's block terms, summed in block order.
        The engine calls it once its step's checks have passed and before it writes
        anything (with ``terms=None`` when no norm is needed), so it is where the ranks
        meet: a rank whose inner step failed earlier (a hyper-parameter or schedule
        value refused, which only the ranks holding a piece of that group see) says so
        here instead, and every rank raises before any shard changes."""
        self._met = True
        agree(self.comm, None, self.timeout, "the sharded step")
        if terms is None:
            return None
        counts = [2 * n for n in self._nblocks]
        everything = np.empty(sum(counts), np.float64)
        wait(self.comm.Iallgatherv(np.ascontiguousarray(terms, np.float64), [everything, counts]),
             "the gradient-norm all-gather", self.timeout)
        total = 0.0
        for x in everything[0::2].tolist():     # left to right from 0.0, as sumsq_slots adds
            total += x
        self._last_norm = math.sqrt(total)
        return total, bool(np.any(everything[1::2] != 0.0))

    def local_step_and_gather(self):
        """Step parts 2 and 3: the fused step on the shard, then the parameter all-gather."""
        self._met = False
        try:
            if self.inner is not None:
                ok = self.inner.step(self._gviews)
            elif self._needs_norm:
                from fastopt.optim.base import NonFiniteGradientError
                _, bad = self._reduce_terms(np.empty(0))
                if bad and self._nonfinite == "raise":
                    raise NonFiniteGradientError("a gradient holds inf or NaN; nothing was updated "
                                                 "(nonfinite='raise')")
                ok = not (bad and self._nonfinite == "skip")
            else:
                self._reduce_terms(None)
                ok = True
        except Exception as exc:
            if not self._met:     # failed before the meeting point: the others wait there for us
                agree(self.comm, f"{type(exc).__name__}: {exc}", self.timeout, "the sharded step")
            raise
        if ok:
            self.allgather_params()
        return ok

    def allgather_params(self):
        """Every rank's updated shard into every rank's parameters (in place): one
        all-gather per parameter, all in flight together."""
        if self.nranks == 1:
            return
        reqs = [self.comm.Iallgatherv(MPI.IN_PLACE, [buf, counts, displs, MPI.BYTE])
                for buf, counts, displs in self._gather_specs]
        wait(reqs, "the parameter all-gather", self.timeout)

    # --- memory ----------------------------------------------------------------------------
    def memory(self):
        """Bytes this rank holds, by kind: ``state`` (the optimizer state of its shard),
        ``grad_buffer`` (the reduced gradient: full size in stage 1, the shard in stage 2),
        ``exchange`` (the receive buffers of the gradient exchange), ``params`` (the full
        parameters, replicated) and ``unsharded_state`` (what one process would hold)."""
        state = 0
        if self.inner is not None:
            for entry in self.inner.state:
                state += sum(v.nbytes for v in entry.values() if isinstance(v, np.ndarray))
        # state buffers per parameter (Adam: 2), each of the parameter's size and dtype
        per_byte = state / max(1, self.layout.owner_bytes(self.rank))
        return {"state": state, "grad_buffer": self._gbuf.nbytes, "exchange": sum(b.nbytes for b in self._recv),
                "params": sum(p.nbytes for p in self.params),
                "unsharded_state": int(round(per_byte * self.layout.total_bytes))}

    # --- state_dict ----------------------------------------------------------------------------
    def _local_entries(self):
        """This rank's pieces with their state: [(k, a, b, {name: array or scalar, 'step': n})]."""
        if self.inner is None:
            return [], {}, None
        sd = self.inner.state_dict()
        entries = [(k, a, b, sd["state"][i]) for i, (k, a, b) in enumerate(self.pieces)]
        gsteps = {gi: ig["group_step"] for ig, gi in zip(sd["param_groups"], self._inner_group_of)}
        return entries, gsteps, sd["options"]

    @_one_at_a_time
    def state_dict(self):
        """Collective: the whole state gathered on rank 0, in the wrapped optimizer's own
        format (a plain ``optimizer`` over the full parameters can load it, and so can a
        ShardedOptimizer of any number of ranks). Other ranks get None."""
        local = self._local_entries()
        everyone = self.comm.gather(local, root=0)
        if self.rank != 0:
            return None
        gsteps, options, pieces = {}, None, []
        for entries, gs, opts in everyone:
            gsteps.update(gs)
            options = options or opts
            pieces.extend(entries)
        state = {}
        for k, a, b, entry in pieces:
            full = state.setdefault(k, {})
            for name, v in entry.items():
                if isinstance(v, np.ndarray):
                    if name not in full:
                        full[name] = np.empty(self.params[k].shape, v.dtype)
                    full[name].reshape(-1)[a:b] = v
                else:
                    full[name] = v
        groups = groups_state(self._user_groups, [gsteps.get(gi, 0) for gi in range(len(self._user_groups))])
        return {"algorithm": self.optimizer_class.__name__, "version": STATE_DICT_VERSION, "options": options,
                "param_groups": groups, "state": {k: state[k] for k in sorted(state)}}

    def _sub_state_dict(self, r, groups, options, fetch):
        """Rank r's inner state_dict from ``fetch(k, a, b) -> entry`` (arrays of a:b)."""
        pieces = self.layout.pieces[r]
        present = sorted({self._group_of[k] for k, _, _ in pieces})
        sub_groups, i = [], 0
        for gi in present:
            n = sum(1 for k, _, _ in pieces if self._group_of[k] == gi)
            entry = {key: v for key, v in groups[gi].items() if key != "params"}
            entry["params"] = list(range(i, i + n))
            i += n
            sub_groups.append(entry)
        state = {i: fetch(k, a, b) for i, (k, a, b) in enumerate(pieces)}
        return {"algorithm": self.optimizer_class.__name__, "version": STATE_DICT_VERSION, "options": options,
                "param_groups": sub_groups, "state": state}

    def _check_full(self, sd):
        name = self.optimizer_class.__name__
        if not isinstance(sd, dict) or sd.get("algorithm") != name:
            raise ValueError(f"the state_dict is for {sd.get('algorithm') if isinstance(sd, dict) else sd!r}, "
                             f"not {name}")
        groups, state = sd.get("param_groups"), sd.get("state")
        if not isinstance(groups, list) or len(groups) != len(self._user_groups):
            raise ValueError(f"the state_dict has {len(groups) if isinstance(groups, list) else '?'} parameter "
                             f"groups, the optimizer {len(self._user_groups)}")
        if not isinstance(state, dict) or len(state) != len(self.params):
            raise ValueError(f"the state_dict holds state for {len(state) if isinstance(state, dict) else '?'} "
                             f"parameters, the optimizer has {len(self.params)}")
        for gi, (saved, g) in enumerate(zip(groups, self._user_groups)):
            n = len(saved.get("params", ())) if isinstance(saved, dict) else None
            if n != len(g["params"]):
                raise ValueError(f"param_groups[{gi}] has {n} parameters in the state_dict, {len(g['params'])} in "
                                 "the optimizer (a checkpoint of another layout)")
        for k, p in enumerate(self.params):
            entry = state.get(k, state.get(str(k)))
            if not isinstance(entry, dict):
                raise ValueError(f"the state_dict has no state for parameter {k}")
            for n, v in entry.items():
                if isinstance(v, np.ndarray) and (v.shape != p.shape or v.dtype != p.dtype):
                    raise ValueError(f"state[{k}]['{n}'] is {v.dtype} {v.shape}; parameter {k} is "
                                     f"{p.dtype} {p.shape} (a checkpoint of another layout)")
        return groups, state

    @_one_at_a_time
    def load_state_dict(self, state_dict):
        """Collective: load a full state_dict (from :meth:`state_dict`, or a plain
        optimizer's) given on rank 0 (other ranks pass None or anything). It is checked
        first; on any error every rank raises :class:`DistributedError` and no rank's
        state changes."""
        subs, error = None, None
        if self.rank == 0:
            try:
                groups, state = self._check_full(state_dict)

                def fetch(k, a, b):
                    entry = state.get(k, state.get(str(k)))
                    return {n: (v.reshape(-1)[a:b].copy() if isinstance(v, np.ndarray) else v)
                            for n, v in entry.items()}
                subs = [self._sub_state_dict(r, groups, state_dict.get("options"), fetch)
                        for r in range(self.nranks)]
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        agree(self.comm, error, self.timeout, "load_state_dict's check")
        sub = self.comm.scatter(subs, root=0)
        self._load_sub(sub, state_dict if self.rank == 0 else None)

    def _load_sub(self, sub, full_for_groups):
        """Two phases: every rank loads (keeping its old state); if any failed, all that
        succeeded put their old state back and everyone raises."""
        error, backup = None, None
        if self.inner is not None:
            backup = self.inner.state_dict()
            try:
                self.inner.load_state_dict(sub)
            except (TypeError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        try:
            agree(self.comm, error, self.timeout, "loading the state")
        except DistributedError:
            if error is None and backup is not None:
                self.inner.load_state_dict(backup)
            raise
        finally:
            self._attach_reducer()
        # the user's groups see the loaded hyper-parameters (schedules were loaded in place)
        if self.inner is not None:
            for ig, gi in zip(self.inner.param_groups, self._inner_group_of):
                for key, value in ig.items():
                    if key != "params":
                        self._user_groups[gi][key] = value
        hyper = self.comm.bcast([{key: v for key, v in g.items() if key != "params"} for g in self._user_groups],
                                root=0)
        for g, h in zip(self._user_groups, hyper):
            for key, v in h.items():
                if not isinstance(g.get(key), Schedule):
                    g[key] = v
        if self.inner is not None:
            opts = self.inner._options
            self._needs_norm = opts["clip_norm"] is not None or opts["nonfinite"] != "ignore"
            self._nonfinite = opts["nonfinite"]
            self.kwargs.update(clip_norm=opts["clip_norm"], nonfinite=opts["nonfinite"])

    # --- sharded checkpoints ---------------------------------------------------------------------
    @_one_at_a_time
    def save_sharded(self, directory):
        """Collective: every rank writes its shard to ``directory/shard-<r>-of-<P>.npz``
        (the directory must exist). Files are written under temporary names and renamed
        only once every rank has written its own, so a failure leaves no partial
        checkpoint. Every file carries the save's id (drawn on rank 0): :meth:`load_sharded`
        refuses a directory whose files come from different saves."""
        # one id for this save on every rank: a directory whose files come from different
        # saves (a rank's file copied in from a later run) is refused at load
        save_id = np.frombuffer(os.urandom(8), np.uint64).copy() if self.rank == 0 else np.zeros(1, np.uint64)
        wait(self.comm.Ibcast(save_id, root=0), "save_sharded's checkpoint id", self.timeout)
        error = None
        tmp = os.path.join(str(directory), f".shard-{self.rank}-of-{self.nranks}.tmp.npz")
        final = os.path.join(str(directory), f"shard-{self.rank}-of-{self.nranks}.npz")
        try:
            if not os.path.isdir(directory):
                raise ValueError(f"{directory!r} is not a directory")
            entries, gsteps, options = self._local_entries()
            meta = {"algorithm": self.optimizer_class.__name__, "version": STATE_DICT_VERSION,
                    "layout": self.layout.describe(), "rank": self.rank, "save": f"{int(save_id[0]):016x}",
                    "params": [[list(p.shape), p.dtype.str] for p in self.params],
                    "groups": [len(g["params"]) for g in self._user_groups],
                    "group_steps": {str(k): v for k, v in gsteps.items()}, "options": options}
            payload = {"meta": json.dumps(meta), "pieces": [[k, a, b] for k, a, b, _ in entries],
                       "state": [e for _, _, _, e in entries]}
            with open(tmp, "wb") as f:
                np.savez(f, **flatten_state_dict(payload))
        except (OSError, TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            agree(self.comm, error, self.timeout, "save_sharded")
        except DistributedError:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, final)
        self.comm.Barrier()

    @_one_at_a_time
    def load_sharded(self, directory):
        """Collective: load a checkpoint written by :meth:`save_sharded` of any number of
        ranks (P written, Q reading): each rank reads the pieces of the files that overlap
        its own shard. Checked first (same algorithm, parameter shapes and dtypes, a
        complete set of files); on any error every rank raises and nothing changes."""
        error, sub = None, None
        try:
            files = sorted(glob.glob(os.path.join(str(directory), "shard-*-of-*.npz")))
            if not files:
                raise ValueError(f"no shard-*-of-*.npz files in {directory!r}")
            counts = {os.path.basename(f).rsplit("-of-", 1)[1][:-4] for f in files}
            if len(counts) != 1:
                raise ValueError(f"{directory!r} mixes checkpoints of {sorted(counts)} ranks")
            P = int(counts.pop())
            if len(files) != P:
                raise ValueError(f"{directory!r} has {len(files)} of the {P} shard files")
            loaded = []
            want = [[list(p.shape), p.dtype.str] for p in self.params]
            want_groups = [len(g["params"]) for g in self._user_groups]
            for f in files:
                with np.load(f) as z:
                    payload = unflatten_state_dict(z)
                meta = json.loads(payload["meta"])
                if meta["algorithm"] != self.optimizer_class.__name__:
                    raise ValueError(f"{f} is a {meta['algorithm']} checkpoint, not "
                                     f"{self.optimizer_class.__name__}")
                if meta["params"] != want:
                    raise ValueError(f"{f} holds parameters {meta['params']}, the optimizer has {want} "
                                     "(a checkpoint of another layout)")
                if meta.get("groups") != want_groups:
                    raise ValueError(f"{f} has parameter groups of {meta.get('groups')} parameters, the "
                                     f"optimizer {want_groups} (a checkpoint of another layout)")
                loaded.append((meta, payload))
            saves = sorted({str(m.get("save")) for m, _ in loaded})
            if len(saves) > 1:
                raise ValueError(f"the shard files in {directory!r} come from different saves ({', '.join(saves)}): "
                                 "a checkpoint is the files of one save_sharded call")
            options = next((m["options"] for m, _ in loaded if m["options"] is not None), None)
            gsteps = {}
            for m, _ in loaded:
                gsteps.update({int(k): v for k, v in m["group_steps"].items()})
            index = [(k, a, b, e) for _, pl in loaded for (k, a, b), e in zip(pl["pieces"], pl["state"])]
            covered = {}
            for k, a, b, _ in index:
                covered[k] = covered.get(k, 0) + (b - a)
            for k, p in enumerate(self.params):
                if covered.get(k, 0) != p.size:
                    raise ValueError(f"the checkpoint's shards cover {covered.get(k, 0)} of parameter {k}'s "
                                     f"{p.size} elements")

            def fetch(k, a, b):
                out = {}
                for kk, a2, b2, e in index:
                    lo, hi = max(a, a2), min(b, b2)
                    if kk != k or lo >= hi:
                        continue
                    for n, v in e.items():
                        if isinstance(v, np.ndarray):
                            if n not in out:
                                out[n] = np.empty(b - a, v.dtype)
                            out[n][lo - a:hi - a] = v[lo - a2:hi - a2]
                        else:
                            out[n] = v
                return out
            groups = groups_state(self._user_groups, [gsteps.get(gi, 0) for gi in range(len(self._user_groups))])
            sub = self._sub_state_dict(self.rank, groups, options, fetch)
        except (OSError, TypeError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        agree(self.comm, error, self.timeout, "load_sharded's check")
        self._load_sub(sub, None)
