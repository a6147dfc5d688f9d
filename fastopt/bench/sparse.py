"""Sparse (row-wise) steps of an embedding table: ``python -m fastopt bench --sparse``.

A float32 table ``(rows, 64)`` (10⁷ rows by default: 2.56 GB per array) gets a batch
of random row indices (with the duplicates an embedding batch has) touching about 1% of
its rows. Timed side by side, in rotating order, in one run (medians):

* fastopt's sparse step (``SparseGrad``: coalescing included) of Adam, Adagrad and
  RowwiseAdagrad;
* fastopt's dense step of the same table (a dense gradient: every row);
* torch's ``SparseAdam`` and ``Adagrad`` with the same indices as a sparse COO
  gradient (torch coalesces too), when torch is importable;
* the sparse step's cost against the table size: the same 10⁴ touched rows of a 10⁶-row
  table and of the full table.

To keep the peak memory at the table, its dense gradient and one optimizer's state,
torch's optimizers are handed fastopt's state arrays (``torch.from_numpy``, shared
memory) instead of allocating their own: both update the same buffers.
"""
from __future__ import annotations

import gc
import statistics
import time

import numpy as np

DIM = 64


def _batch(rng, rows, touched):
    # an embedding batch: `touched` draws, so about that many distinct rows, with repeats
    return rng.integers(0, rows, touched).astype(np.int64), rng.standard_normal((touched, DIM)).astype(np.float32)


def _median_times(fns, repeat):
    """``{name: median seconds}``, the functions called in a rotating order each round."""
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            if i:                              # the first round warms up (page faults, allocation)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure(torch=None, rows=10_000_000, fraction=0.01, repeat=5, small_rows=1_000_000, fixed_touched=10_000):
    """A dict: ``"config"``, and ``"steps"``: per rule, the median seconds of each way of
    stepping (``sparse``, ``dense``, ``torch``), and ``"scaling"``: the sparse Adam step
    with ``fixed_touched`` rows on ``small_rows`` and on ``rows`` rows."""
    import fastopt
    from fastopt.sparse import SparseGrad

    rng = np.random.default_rng(0)
    touched = int(rows * fraction)
    table = np.zeros((rows, DIM), np.float32)
    table[:] = 0.01                      # written: no page faults inside the timings
    dense = np.empty_like(table)
    dense[:] = 0.001
    idx, vals = _batch(rng, rows, touched)
    out = {"config": {"rows": rows, "dim": DIM, "draws": touched, "touched": int(np.unique(idx).size),
                      "threads": fastopt.get_num_threads(), "fixed_touched": fixed_touched},
           "steps": {}, "scaling": {}}
    tt = torch.from_numpy(table) if torch is not None else None
    tgrad = None
    if torch is not None:
        tgrad = torch.sparse_coo_tensor(torch.from_numpy(idx[None]), torch.from_numpy(vals), (rows, DIM))
    for name in ("Adam", "Adagrad", "RowwiseAdagrad"):
        opt = getattr(fastopt, name)([table], lr=1e-4)
        fns = {"sparse": lambda o=opt: o.step([SparseGrad(idx, vals)]),
               "dense": lambda o=opt, g=dense: o.step([g])}
        if torch is not None and name != "RowwiseAdagrad":
            fns["torch"] = _torch_step(torch, name, tt, tgrad, opt)
        out["steps"][name] = _median_times(fns, repeat)
        del opt, fns
        gc.collect()                          # the last optimizer's state goes before the next one's
    del dense
    gc.collect()
    # cost against table size: the same number of touched rows (a 10x smaller table at least)
    small_rows = min(small_rows, rows // 10)
    small = np.full((small_rows, DIM), 0.01, np.float32)
    idx_s, vals_s = _batch(rng, small_rows, fixed_touched)
    idx_l, vals_l = _batch(rng, rows, fixed_touched)
    small_opt = fastopt.Adam([small], lr=1e-4)
    large_opt = fastopt.Adam([table], lr=1e-4)
    out["scaling"] = _median_times({f"{small_rows:,} rows": lambda: small_opt.step([SparseGrad(idx_s, vals_s)]),
                                    f"{rows:,} rows": lambda: large_opt.step([SparseGrad(idx_l, vals_l)])},
                                   max(repeat, 9) * 3)
    return out


def _torch_step(torch, name, tt, tgrad, opt):
    """torch's sparse step of ``name`` on the tensor ``tt``, its state the fastopt
    optimizer's arrays (shared memory)."""
    param = torch.nn.Parameter(tt, requires_grad=True)
    state = opt.state[0]
    if name == "Adam":
        topt = torch.optim.SparseAdam([param], lr=1e-4)
        topt.state[param] = {"step": 0, "exp_avg": torch.from_numpy(state["exp_avg"]),
                             "exp_avg_sq": torch.from_numpy(state["exp_avg_sq"])}
    else:
        topt = torch.optim.Adagrad([param], lr=1e-4)
        topt.state[param] = {"step": torch.tensor(0.0), "sum": torch.from_numpy(state["sum"])}

    def step():
        param.grad = tgrad
        topt.step()
    return step


def lines(res):
    """The table: per rule, each way's median step time and fastopt sparse's speed-up."""
    c = res["config"]
    out = [f"Sparse steps: float32 table {c['rows']:,} x {c['dim']}, {c['draws']:,} indices "
           f"({c['touched']:,} distinct rows, {100 * c['touched'] / c['rows']:.2g}%), {c['threads']} threads "
           "(medians, interleaved):",
           f"{'rule':<16}{'fastopt sparse':>15}{'fastopt dense':>15}{'torch sparse':>14}"
           f"{'dense/sparse':>14}{'torch/sparse':>14}"]
    from fastopt.bench.table import fmt_time
    for rule, t in res["steps"].items():
        torch_t = t.get("torch")
        out.append(f"{rule:<16}{fmt_time(t['sparse']):>15}{fmt_time(t['dense']):>15}"
                   f"{fmt_time(torch_t) if torch_t else '-':>14}{t['dense'] / t['sparse']:>13.1f}x"
                   + (f"{torch_t / t['sparse']:>13.1f}x" if torch_t else f"{'-':>14}"))
    (a, ta), (b, tb) = res["scaling"].items()
    out.append(f"Adam sparse step, {c['fixed_touched']:,} indices: table of {a} {fmt_time(ta)}, of {b} "
               f"{fmt_time(tb)} (ratio {tb / ta:.2f})")
    return out
