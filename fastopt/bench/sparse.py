"""Sparse (row-wise) steps of an embedding table: ``python -m fastopt bench --sparse``.

A float32 table ``(rows, 64)`` (10⁷ rows by default: 2.56 GB per array) gets a batch
of row indices touching about 1% of its rows, drawn two ways: uniformly (few repeats)
and from a power law (Zipf, exponent 1.1, over a fixed scrambling of the rows: hot
rows repeat thousands of times, as in recommendation batches). Timed side by side, in
rotating order, in one run (medians):

* fastopt's sparse step (``SparseGrad``: checking and coalescing included) of Adam,
  Adagrad and RowwiseAdagrad, for both batches, and the coalescing alone;
* fastopt's dense step of the same table and rule (a dense gradient: every row);
* torch's ``SparseAdam`` and ``Adagrad`` with the same indices and values as an
  uncoalesced sparse COO gradient (torch coalesces too), when torch is importable;
* the sparse step's cost against the table size: the same 10⁴ touched rows of a 10⁶-row
  table and of the full table (10⁸ rows of 64 floats with Adam's state would need
  77 GB: the full table is the largest this bench builds).

The targets (issue 13) close the output: sparse Adam/Adagrad >= 50x the dense step,
>= 5x torch, and the two table sizes within 1.5x.

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
ZIPF = 1.1
DENSE_TARGET, TORCH_TARGET, SCALING_TARGET = 50.0, 5.0, 1.5


def _batch(rng, rows, draws, kind="uniform"):
    """``draws`` row indices (int64) and their gradient rows: uniform, or power-law
    ranks mapped to rows by a fixed bijection (so the hot rows are spread out)."""
    if kind == "uniform":
        idx = rng.integers(0, rows, draws)
    else:
        ranks = np.empty(0, np.int64)
        while ranks.size < draws:
            z = rng.zipf(ZIPF, 2 * draws)
            ranks = np.concatenate([ranks, z[z <= rows] - 1])
        ranks = ranks[:draws]
        mult = 2654435761                   # odd and prime: a bijection of [0, rows) unless rows shares it
        while np.gcd(mult, rows) != 1:
            mult += 2
        idx = ranks * mult % rows           # < 2^63 for rows <= 10^9
    return idx.astype(np.int64), rng.standard_normal((draws, DIM)).astype(np.float32)


def _round_times(fns, repeat):
    """``{name: [seconds, one per round]}``, the functions called in a rotating order
    each round."""
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            if i:                              # the first round warms up (page faults, allocation)
                times[name].append(time.perf_counter() - t0)
    return times


def _median_times(fns, repeat):
    """``{name: median seconds}``, the functions called in a rotating order each round."""
    return {name: statistics.median(ts) for name, ts in _round_times(fns, repeat).items()}


def measure(torch=None, rows=10_000_000, fraction=0.01, repeat=5, small_rows=1_000_000, fixed_touched=10_000):
    """A dict: ``"config"``; ``"steps"``: per rule, the median seconds of each way of
    stepping (``sparse``, ``sparse power-law``, ``dense``, ``torch``, ``torch
    power-law``; ``coalesce`` and ``coalesce power-law``: the coalescing alone);
    ``"scaling"``: the sparse Adam step with ``fixed_touched`` rows on ``small_rows``
    and on ``rows`` rows (median seconds); ``"scaling_ratio"``: the larger table's time
    over the smaller's, the median of each round's own ratio."""
    import fastopt
    from fastopt._kernels.sparse import coalesce_index, new_workspace
    from fastopt.sparse import SparseGrad

    rng = np.random.default_rng(0)
    draws = int(rows * fraction)
    table = np.zeros((rows, DIM), np.float32)
    table[:] = 0.01                      # written: no page faults inside the timings
    dense = np.empty_like(table)
    dense[:] = 0.001
    batches = {"": _batch(rng, rows, draws), " power-law": _batch(rng, rows, draws, "power-law")}
    uniq = {kind: np.unique(idx) for kind, (idx, _) in batches.items()}
    out = {"config": {"rows": rows, "dim": DIM, "draws": draws, "touched": int(uniq[""].size),
                      "touched_power_law": int(uniq[" power-law"].size),
                      "hottest_power_law": int(np.unique(batches[" power-law"][0], return_counts=True)[1].max()),
                      "threads": fastopt.get_num_threads(), "fixed_touched": fixed_touched},
           "steps": {}, "scaling": {}}
    tt = torch.from_numpy(table) if torch is not None else None
    tgrads = {}
    if torch is not None:
        tgrads = {kind: torch.sparse_coo_tensor(torch.from_numpy(idx[None]), torch.from_numpy(vals), (rows, DIM))
                  for kind, (idx, vals) in batches.items()}
    ws = new_workspace()
    for name in ("Adam", "Adagrad", "RowwiseAdagrad"):
        opt = getattr(fastopt, name)([table], lr=1e-4)
        fns = {"dense": lambda o=opt, g=dense: o.step([g])}
        for kind, (idx, vals) in batches.items():
            fns["sparse" + kind] = lambda o=opt, i=idx, v=vals: o.step([SparseGrad(i, v)])
            if name == "Adam":
                fns["coalesce" + kind] = lambda i=idx, v=vals: coalesce_index(i, v, rows, 0, ws)
            if torch is not None and name != "RowwiseAdagrad":
                fns["torch" + kind] = _torch_step(torch, name, tt, tgrads[kind], opt)
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
    times = _round_times({f"{small_rows:,} rows": lambda: small_opt.step([SparseGrad(idx_s, vals_s)]),
                          f"{rows:,} rows": lambda: large_opt.step([SparseGrad(idx_l, vals_l)])},
                         max(repeat, 9) * 3)
    out["scaling"] = {name: statistics.median(ts) for name, ts in times.items()}
    # sub-millisecond steps drift with the machine between rounds: each round's own ratio
    small_t, large_t = times.values()
    out["scaling_ratio"] = statistics.median(b / a for a, b in zip(small_t, large_t))
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
    """The table: per rule and batch, each way's median step time and fastopt sparse's
    speed-ups, then the targets' verdicts."""
    from fastopt.bench.table import fmt_time
    c = res["config"]
    out = [f"Sparse steps: float32 table {c['rows']:,} x {c['dim']}, {c['draws']:,} indices per batch: uniform "
           f"({c['touched']:,} distinct rows, {100 * c['touched'] / c['rows']:.2g}%), power-law "
           f"({c.get('touched_power_law', 0):,} distinct, hottest row {c.get('hottest_power_law', 0):,}x); "
           f"{c['threads']} threads (medians, interleaved, coalescing included):",
           f"{'rule':<16}{'batch':<11}{'fastopt sparse':>15}{'coalesce':>10}{'fastopt dense':>15}{'torch sparse':>14}"
           f"{'dense/sparse':>14}{'torch/sparse':>14}"]
    worst_dense, worst_torch = {}, {}
    for rule, t in res["steps"].items():
        for kind, label in (("", "uniform"), (" power-law", "power-law")):
            if "sparse" + kind not in t:
                continue
            sp, tt, co = t["sparse" + kind], t.get("torch" + kind), t.get("coalesce" + kind)
            out.append(f"{rule:<16}{label:<11}{fmt_time(sp):>15}{fmt_time(co) if co else '-':>10}"
                       f"{fmt_time(t['dense']):>15}{fmt_time(tt) if tt else '-':>14}{t['dense'] / sp:>13.1f}x"
                       + (f"{tt / sp:>13.1f}x" if tt else f"{'-':>14}"))
            if rule in ("Adam", "Adagrad"):
                worst_dense[f"{rule} {label}"] = t["dense"] / sp
                if tt:
                    worst_torch[f"{rule} {label}"] = tt / sp
    (a, ta), (b, tb) = res["scaling"].items()
    ratio = res["scaling_ratio"]
    out.append(f"Adam sparse step, {c['fixed_touched']:,} indices: table of {a} {fmt_time(ta)}, of {b} "
               f"{fmt_time(tb)} (ratio {ratio:.2f}, the median of each round's own)")

    def verdict(ok):
        return "met" if ok else "NOT met"
    if worst_dense:
        k = min(worst_dense, key=worst_dense.get)
        out.append(f"targets: sparse Adam/Adagrad vs dense >= {DENSE_TARGET:g}x: worst {worst_dense[k]:.1f}x ({k}) "
                   f"-> {verdict(worst_dense[k] >= DENSE_TARGET)}")
    if worst_torch:
        k = min(worst_torch, key=worst_torch.get)
        out.append(f"targets: sparse Adam/Adagrad vs torch >= {TORCH_TARGET:g}x: worst {worst_torch[k]:.1f}x ({k}) "
                   f"-> {verdict(worst_torch[k] >= TORCH_TARGET)}")
    out.append(f"targets: {b} vs {a} with the same touched rows within {SCALING_TARGET:g}x: ratio {ratio:.2f} "
               f"-> {verdict(ratio <= SCALING_TARGET)} (10^8 rows x 64 with Adam's state does not fit in memory)")
    return out
