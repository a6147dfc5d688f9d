"""What the bench measures: every algorithm on a :class:`~fastopt.bench.pool.Pool`
beside the stream kernel, NumPy and torch, and the two summary cases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fastopt
from fastopt import reference
from fastopt.bench.algos import ALGO_BY_KEY
from fastopt.bench.peers import pinned, set_threads, torch_optimizer, torch_tensors
from fastopt.bench.timing import Job, gbps, measure, single_call_median

__all__ = ["LARGE", "MANY_ARRAYS", "SMALL_SIZE", "SMALL_CALLS", "Engines", "build_engines", "algo_jobs",
           "make_record", "bench_pool", "bench_many_arrays", "bench_small"]

#: Sizes from this one up are "large": the NumPy reference gets fewer samples there.
LARGE = 1_000_000
MANY_ARRAYS = (160, 10_000)
SMALL_SIZE = 1_000
SMALL_CALLS = 2_000


@dataclass
class Engines:
    """The optimizers of one algorithm on one pool, built once for all thread counts."""
    fast: object
    ref: object = None
    torch_opt: object = None
    torch_mode: str | None = None


def build_engines(algo, pool, cfg, torch):
    """Fresh optimizers for ``algo`` on ``pool`` (parameters reset to the initial values)."""
    pool.reset()
    fast = getattr(fastopt, algo.cls)([pool.params["fastopt"]], **algo.kwargs)
    ref = getattr(reference, algo.cls)([pool.params["numpy"]], **algo.kwargs) if cfg.reference else None
    topt = mode = None
    if torch is not None:
        made = torch_optimizer(torch, algo, torch_tensors(torch, [pool.params["torch"]], [pool.grad]))
        if made is not None:
            topt, mode = made
    return Engines(fast, ref, topt, mode)


def algo_jobs(algo, pool, engines, cfg, torch):
    """The jobs of one algorithm on one pool: fastopt, stream and torch at every thread
    count, the stream call's fixed cost, and the (single-threaded) NumPy reference."""
    grads, nw, jobs = [pool.grad], 1 + algo.nstate, {}
    for t in cfg.threads:
        jobs[f"fastopt@{t}"] = Job(lambda: engines.fast.step(grads), cfg.repeat, pinned(t, torch))
        jobs[f"stream@{t}"] = pool.stream_job(nw, t, cfg.repeat)
        if engines.torch_opt is not None:
            jobs[f"torch@{t}"] = Job(engines.torch_opt.step, cfg.repeat, pinned(t, torch))
    jobs["stream-overhead"] = pool.stream_overhead_job(nw, cfg.repeat)
    if engines.ref is not None:
        jobs["numpy"] = Job(lambda: engines.ref.step(grads), cfg.repeat if pool.n < LARGE else min(cfg.repeat, 3))
    return jobs


def make_record(algo, pool, threads, t, torch_mode, base_threads):
    """The result record of one (algorithm, dtype, size, threads) from the timings ``t``.
    Ratios pair the samples of each round (see :meth:`~fastopt.bench.timing.Timings.ratio`)."""
    n, itemsize, acc = pool.n, pool.dtype.itemsize, algo.accesses
    mine, stream = f"fastopt@{threads}", f"stream@{threads}"
    step, raw, overhead = t[mine], t[stream], t["stream-overhead"]
    net = max(raw - overhead, 1e-9)
    # floored like ``net``: where the stream's fixed cost exceeds its time (tiny arrays,
    # or a round disturbed by other load) the figure is unreliable, not negative
    pct = 100.0 * max(t.ratio(stream, mine, overhead), 1e-9 / step)
    tt = t.get(f"torch@{threads}")
    return {"algo": algo.key, "class": algo.cls, "rule": algo.rule, "dtype": pool.dtype.name, "n": n,
            "threads": threads, "accesses_per_element": acc,
            "time_s": step, "gbps": gbps(acc, itemsize, n, step),
            "thread_speedup": t.ratio(f"fastopt@{base_threads}", mine), "thread_speedup_base": base_threads,
            "stream_thread_speedup": t.ratio(f"stream@{base_threads}", stream),
            "stream_time_s": raw, "stream_overhead_s": overhead, "stream_net_s": net,
            "stream_gbps": gbps(acc, itemsize, n, net), "pct_stream": pct,
            "pct_stream_reliable": net >= overhead,
            "numpy_time_s": t.get("numpy"), "speedup_numpy": t.ratio("numpy", mine),
            "torch_mode": torch_mode if tt else None, "torch_time_s": tt,
            "torch_gbps": gbps(acc, itemsize, n, tt) if tt else None,
            "speedup_torch": t.ratio(f"torch@{threads}", mine)}


def bench_pool(pool, cfg, torch, progress):
    """Every algorithm on one (size, dtype); all thread counts of an algorithm are timed
    interleaved, so thread scaling is not skewed by drift. The NumPy reference is
    single-threaded: timed once, its time is shown on every thread row."""
    records = []
    for algo in cfg.algos:
        progress.step(f"{pool.dtype.name} n={pool.n:,} {algo.key}")
        engines = build_engines(algo, pool, cfg, torch)
        t = measure(algo_jobs(algo, pool, engines, cfg, torch))
        records += [make_record(algo, pool, th, t, engines.torch_mode, cfg.threads[0]) for th in cfg.threads]
        del engines
    return records


def bench_many_arrays(cfg, torch):
    """Adam over 160 arrays × 10,000 float32, against one array of 1,600,000 and against
    torch fused Adam on the same 160 tensors; every thread count, all interleaved.
    Returns one record per thread count."""
    count, size = MANY_ARRAYS
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(size, dtype=np.float32) * np.float32(1e-2) for _ in range(count)]
    many = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
    one_g = [np.concatenate(grads)]
    fast_many, fast_one = fastopt.Adam(many), fastopt.Adam([np.concatenate(many)])
    topt = mode = None
    if torch is not None:
        topt, mode = torch_optimizer(torch, ALGO_BY_KEY["adam"], torch_tensors(torch, [p.copy() for p in many], grads))
    repeats, jobs = max(cfg.repeat, 5), {}
    for t in cfg.threads:
        jobs[f"many@{t}"] = Job(lambda: fast_many.step(grads), repeats, pinned(t, torch))
        jobs[f"one@{t}"] = Job(lambda: fast_one.step(one_g), repeats, pinned(t, torch))
        if topt is not None:
            jobs[f"torch@{t}"] = Job(topt.step, repeats, pinned(t, torch))
    t = measure(jobs)
    out = []
    for th in cfg.threads:
        many = f"many@{th}"
        out.append({"algo": "adam", "dtype": "float32", "arrays": count, "size": size, "threads": th,
                    "many_time_s": t[many], "one_time_s": t[f"one@{th}"],
                    "many_over_one": t.ratio(many, f"one@{th}"), "torch_mode": mode,
                    "torch_time_s": t.get(f"torch@{th}"), "speedup_torch": t.ratio(f"torch@{th}", many)})
    return out


def bench_small(cfg, torch, threads):
    """Median latency of one full ``opt.step([g])`` (Adam, 1,000 float32 elements), for
    fastopt and torch fused, individual calls interleaved."""
    rng = np.random.default_rng(2)
    p = rng.standard_normal(SMALL_SIZE, dtype=np.float32)
    g = rng.standard_normal(SMALL_SIZE, dtype=np.float32) * np.float32(1e-2)
    fast = fastopt.Adam([p])
    grads = [g]
    set_threads(threads, torch)
    fns = {"fastopt": lambda: fast.step(grads)}
    mode = None
    if torch is not None:
        topt, mode = torch_optimizer(torch, ALGO_BY_KEY["adam"], torch_tensors(torch, [p.copy()], [g]))
        fns["torch"] = topt.step
    calls = SMALL_CALLS if cfg.repeat >= 3 else 200
    t = single_call_median(fns, calls)
    return {"algo": "adam", "dtype": "float32", "n": SMALL_SIZE, "threads": threads,
            "fastopt_us": t["fastopt"] * 1e6, "torch_mode": mode,
            "torch_us": t["torch"] * 1e6 if "torch" in t else None}
