"""Benchmark harness: ``python -m fastopt bench``.

For every algorithm, dtype, size and thread count it times a full ``opt.step(grads)``
(Python overhead included) and reports:

* the time per step (median of ``--repeat`` samples, after a warm-up);
* the effective bandwidth, ``accesses_per_element × itemsize × n / time``;
* the percentage of streaming bandwidth: :func:`fastopt._kernels.stream.stream` with
  the same access pattern (array count and size) and thread count, timed in the same
  run and interleaved with the step so that drift (turbo, other load) cancels; the
  stream call's fixed cost (argument checks, about 2 µs, measured on 16 elements) is
  subtracted so that small sizes compare the step with the memory system, not with
  the stream wrapper;
* the speedup over the plain-NumPy reference class (``fastopt.reference.X``);
* when PyTorch is importable, the time of ``torch.optim.X`` (``fused=True`` where
  PyTorch supports it on the CPU, else ``foreach=True``) on the same data, with
  ``torch.set_num_threads`` matching, and fastopt's speedup over it.

Two summary cases follow the table: Adam over many small arrays (160 × 10,000
float32) against one array of the same total size and against torch fused, and the
median latency of one full step on a 1,000-element array.

Big arrays are allocated (and first-touched) once per size and dtype and shared by
all algorithms; each algorithm starts from the same parameter values.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass, field

import numpy as np

import fastopt
from fastopt import reference
from fastopt._kernels import driver, waitpolicy
from fastopt._kernels import stream as _stream
from fastopt.rules import BY_NAME

__all__ = ["ALGOS", "Algo", "Config", "Job", "Timings", "Pool", "measure", "run", "main", "add_cli",
           "parse_sizes", "parse_threads", "parse_algos", "parse_dtypes"]

#: PyTorch optimizers that take ``fused=True`` on the CPU (torch >= 2.4); others use foreach.
TORCH_FUSED = ("SGD", "Adam", "AdamW", "Adagrad")
#: Sizes from this one up are "large": the NumPy reference gets fewer samples there.
LARGE = 1_000_000
#: Seconds one timing sample should last (small steps are called repeatedly per sample).
SAMPLE_SECONDS = 0.004
MANY_ARRAYS = (160, 10_000)
SMALL_SIZE = 1_000
SMALL_CALLS = 2_000


# --------------------------------------------------------------------------------------
# the algorithms
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Algo:
    """One benchmarked optimizer: the fastopt/reference class and its arguments, the
    kernel (rule) it runs, and the matching ``torch.optim`` class (None: no equivalent)."""
    key: str
    cls: str
    rule: str
    kwargs: dict = field(default_factory=dict)
    torch_cls: str | None = None
    torch_kwargs: dict = field(default_factory=dict)

    @property
    def accesses(self):
        """Array accesses per element of one step (param r+w, grad r, each state r+w)."""
        return BY_NAME[self.rule].accesses_per_element

    @property
    def nstate(self):
        """Number of per-element state buffers."""
        return len(BY_NAME[self.rule].state)


ALGOS = (
    Algo("sgd", "SGD", "sgd", {"lr": 1e-3}, "SGD", {"lr": 1e-3}),
    Algo("momentum", "Momentum", "momentum", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9}),
    Algo("nesterov", "Nesterov", "nesterov", {"lr": 1e-3}, "SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    Algo("adagrad", "Adagrad", "adagrad", {}, "Adagrad"),
    Algo("rmsprop", "RMSprop", "rmsprop", {}, "RMSprop"),
    Algo("adadelta", "Adadelta", "adadelta", {}, "Adadelta"),
    Algo("adam", "Adam", "adam", {}, "Adam"),
    Algo("adamw", "AdamW", "adam", {}, "AdamW"),
    Algo("amsgrad", "AMSGrad", "adam_amsgrad", {}, "Adam", {"amsgrad": True}),
    Algo("nadam", "NAdam", "nadam", {}, "NAdam"),
    Algo("adamax", "Adamax", "adamax", {}, "Adamax"),
    Algo("radam", "RAdam", "radam", {}, "RAdam"),
    Algo("lion", "Lion", "lion", {}, None),
)
ALGO_BY_KEY = {a.key: a for a in ALGOS}


# --------------------------------------------------------------------------------------
# configuration and argument parsing
# --------------------------------------------------------------------------------------
@dataclass
class Config:
    """Everything one run needs (the parsed command line)."""
    algos: list
    sizes: list
    dtypes: list
    threads: list
    repeat: int = 9
    reference: bool = True
    torch: bool = True
    table: bool = True
    many_arrays: bool = True
    small: bool = True
    json_path: str | None = None
    plot_path: str | None = None
    progress: bool = False


def parse_sizes(text):
    """``"1e3,1e5,10_000_000"`` -> ``[1000, 100000, 10000000]`` (positive integers)."""
    sizes = []
    for item in _items(text):
        try:
            value = float(item.replace("_", ""))
        except ValueError:
            raise ValueError(f"invalid size {item!r}: use numbers such as 1000, 1e5, 10_000_000") from None
        if not (math.isfinite(value) and value >= 1 and value == int(value)):
            raise ValueError(f"invalid size {item!r}: must be a positive integer")
        sizes.append(int(value))
    return sorted(set(sizes))


def parse_threads(text, maximum=None):
    """``"1,max"`` -> ``[1, N]`` with N = :func:`fastopt.get_num_threads` (deduplicated, sorted)."""
    maximum = maximum or max(1, fastopt.get_num_threads())
    out = []
    for item in _items(text):
        if item.lower() in ("max", "all"):
            out.append(maximum)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"invalid thread count {item!r}: use integers or 'max'") from None
        if value < 1:
            raise ValueError(f"invalid thread count {value}: must be >= 1")
        out.append(value)
    return sorted(set(out))


def parse_algos(text):
    """``"adam,sgd"`` or ``"all"`` -> the :class:`Algo` entries, in table order."""
    keys = [k.lower() for k in _items(text)]
    if "all" in keys:
        return list(ALGOS)
    unknown = [k for k in keys if k not in ALGO_BY_KEY]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGO_BY_KEY)}")
    return [a for a in ALGOS if a.key in keys]


def parse_dtypes(text):
    """``"float32,float64"`` -> numpy dtypes."""
    out = []
    for item in _items(text):
        if item not in ("float32", "float64"):
            raise ValueError(f"invalid dtype {item!r}: float32 or float64")
        out.append(np.dtype(item))
    return sorted(set(out), key=lambda d: d.itemsize)


def _items(text):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError("empty list")
    return items


def add_arguments(parser):
    """Add the ``bench`` options to an argparse parser."""
    parser.add_argument("--algos", default="all", help=f"comma-separated: {','.join(ALGO_BY_KEY)} (default all)")
    parser.add_argument("--sizes", default="1e3,1e5,1e7", help="elements per array (default 1e3,1e5,1e7)")
    parser.add_argument("--dtypes", default="float32,float64", help="default float32,float64")
    parser.add_argument("--threads", default="1,max", help="thread counts; 'max' = fastopt.get_num_threads() "
                                                           "(default 1,max)")
    parser.add_argument("--repeat", type=int, default=9, help="timed samples per figure (default 9)")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parts = parser.add_argument_group("parts", "run only the named parts (any combination; default: all three)")
    parts.add_argument("--table", action="store_true", help="the per-algorithm table")
    parts.add_argument("--many-arrays", action="store_true",
                       help="Adam over 160 x 10,000 float32 arrays vs one 1,600,000 array vs torch fused")
    parts.add_argument("--small", action="store_true",
                       help="median latency of one step on 1,000 float32 elements, fastopt vs torch fused")
    parser.add_argument("--json", metavar="PATH", help="also write machine-readable results to PATH")
    parser.add_argument("--plot", metavar="PATH", help="save a bar chart to PATH (needs matplotlib)")
    parser.add_argument("--progress", action="store_true", help="progress on stderr even when it is not a TTY")
    return parser


def config_from_args(args):
    """Build a :class:`Config` from parsed arguments (ValueError on bad values)."""
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    everything = not (args.table or args.many_arrays or args.small)
    return Config(algos=parse_algos(args.algos), sizes=parse_sizes(args.sizes), dtypes=parse_dtypes(args.dtypes),
                  threads=parse_threads(args.threads), repeat=args.repeat, reference=not args.no_reference,
                  torch=not args.no_torch, table=args.table or everything,
                  many_arrays=args.many_arrays or everything, small=args.small or everything,
                  json_path=args.json, plot_path=args.plot, progress=args.progress or sys.stderr.isatty())


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------
def time_calls(fn, number):
    """Seconds per call of ``fn`` over ``number`` back-to-back calls."""
    clock = time.perf_counter
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


def calibrate(fn, target=SAMPLE_SECONDS):
    """Warm ``fn`` up (first call: lazy state, page faults, thread start-up) and return how
    many calls make one sample of about ``target`` seconds."""
    fn()
    once = time_calls(fn, 1)
    if once >= target:
        return 1
    return max(1, min(100_000, int(target / max(once, 1e-7))))


@dataclass
class Job:
    """A function to time: ``fn`` is called back to back for each of ``repeats``
    samples; ``setup`` (e.g. choosing the thread count) runs untimed before each."""
    fn: object
    repeats: int
    setup: object = None

    def prepare(self):
        """Run the setup, if any."""
        if self.setup is not None:
            self.setup()


class Timings:
    """Seconds per call of each job, sample by sample (round ``r`` of every job was
    taken back to back). ``t[name]`` is the median; :meth:`ratio` pairs the samples of
    one round, which cancels drift that a ratio of medians would keep."""

    def __init__(self, samples):
        self.samples = samples

    def __getitem__(self, name):
        return statistics.median(self.samples[name])

    def __contains__(self, name):
        return name in self.samples

    def get(self, name):
        """The median, or None for a job that was not run."""
        return self[name] if name in self.samples else None

    def ratio(self, a, b, minus=0.0):
        """Median over rounds of ``(a - minus) / b`` (None if either job is missing)."""
        if a not in self.samples or b not in self.samples:
            return None
        return statistics.median((x - minus) / y for x, y in zip(self.samples[a], self.samples[b]))


def measure(jobs, target=SAMPLE_SECONDS):
    """Time every :class:`Job` of ``jobs`` (name -> job); return :class:`Timings`.

    The jobs are sampled round-robin: sample ``r`` of every job is taken before sample
    ``r + 1`` of any, so slow drift (clock changes, other load) affects all alike and
    cancels in their ratios. Jobs with fewer repeats drop out of the later rounds."""
    numbers = {}
    for name, job in jobs.items():
        job.prepare()
        numbers[name] = calibrate(job.fn, target)
    samples = {name: [] for name in jobs}
    for r in range(max(job.repeats for job in jobs.values())):
        for name, job in jobs.items():
            if r < job.repeats:
                job.prepare()
                samples[name].append(time_calls(job.fn, numbers[name]))
    return Timings(samples)


def single_call_median(fns, calls, rounds=20):
    """Median seconds of individual calls of each function (interleaved in ``rounds``)."""
    clock = time.perf_counter
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn()
        fn()
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            out = samples[name]
            for _ in range(per_round):
                t0 = clock()
                fn()
                out.append(clock() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def gbps(accesses, itemsize, n, seconds):
    """Effective bandwidth in GB/s (10^9 bytes) of ``accesses`` touches of ``n`` elements."""
    return accesses * itemsize * n / seconds / 1e9


# --------------------------------------------------------------------------------------
# PyTorch (optional)
# --------------------------------------------------------------------------------------
def load_torch(wanted=True):
    """The ``torch`` module, or None when it is not wanted or not importable."""
    if not wanted:
        return None
    try:
        import torch
    except Exception:       # ImportError, or a broken install
        return None
    return torch


def torch_optimizer(torch, algo, tensors):
    """``(optimizer, mode)`` for ``algo`` over ``tensors`` (their ``.grad`` already set):
    ``fused=True`` where supported on the CPU, else ``foreach=True``; None if torch has
    no such optimizer."""
    if algo.torch_cls is None or not hasattr(torch.optim, algo.torch_cls):
        return None
    cls = getattr(torch.optim, algo.torch_cls)
    params = inspect.signature(cls).parameters
    if algo.torch_cls in TORCH_FUSED and "fused" in params:
        try:
            return cls(tensors, fused=True, **algo.torch_kwargs), "fused"
        except (RuntimeError, ValueError, TypeError):
            pass                     # an older torch without CPU fused kernels
    kwargs = dict(algo.torch_kwargs, foreach=True) if "foreach" in params else dict(algo.torch_kwargs)
    return cls(tensors, **kwargs), ("foreach" if "foreach" in kwargs else "for-loop")


def torch_tensors(torch, params, grads):
    """Tensors sharing memory with the NumPy ``params``, with ``.grad`` set to ``grads``."""
    tensors = []
    for p, g in zip(params, grads):
        t = torch.from_numpy(p)
        t.grad = torch.from_numpy(g)
        tensors.append(t)
    return tensors


def set_threads(n, torch=None):
    """Use ``n`` threads in fastopt (and in torch when given)."""
    fastopt.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def pinned(n, torch=None):
    """A setup function for :class:`Job`: ``set_threads(n, torch)``."""
    return lambda: set_threads(n, torch)


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------
class Pool:
    """The arrays of one (size, dtype), allocated and first-touched once and shared by
    every algorithm: the gradient, the initial parameters, one parameter array per
    engine, the read-modify-write arrays of the stream kernel, and 16-element copies of
    the stream arrays that measure the stream call's fixed cost."""

    TINY = 16

    def __init__(self, n, dtype, nstream, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.dtype = n, np.dtype(dtype)
        self.grad = rng.standard_normal(n, dtype=self.dtype) * self.dtype.type(1e-2)
        self.init = rng.standard_normal(n, dtype=self.dtype)
        self.params = {name: self.init.copy() for name in ("fastopt", "numpy", "torch")}
        self.stream_rw = [self.init.copy() for _ in range(nstream)]
        self.tiny_grad = self.grad[:self.TINY].copy()
        self.tiny_rw = [a[:self.TINY].copy() for a in self.stream_rw]

    def reset(self):
        """Copy the initial values into every engine's parameters."""
        for p in self.params.values():
            _stream.copy(p, self.init)

    def stream_job(self, nw, threads, repeats):
        """A :class:`Job` running the stream kernel over ``nw`` read-modify-write arrays."""
        g, rw = self.grad, self.stream_rw[:nw]
        return Job(lambda: _stream.stream(g, rw, threads), repeats, pinned(threads))

    def stream_overhead_job(self, nw, repeats):
        """The same stream call on 16 elements: its fixed cost, to subtract."""
        g, rw = self.tiny_grad, self.tiny_rw[:nw]
        return Job(lambda: _stream.stream(g, rw, 1), repeats)

    def copy_gbps(self, threads, repeats):
        """``{threads: GB/s}`` of the parallel streaming copy (one array read, one written),
        net of the call's fixed cost."""
        dst, src, tdst, tsrc = self.stream_rw[0], self.init, self.tiny_rw[0], self.tiny_grad
        jobs = {t: Job(lambda t=t: _stream.copy(dst, src, t), repeats) for t in threads}
        jobs["tiny"] = Job(lambda: _stream.copy(tdst, tsrc, 1), repeats)
        t = measure(jobs)
        return {th: gbps(2, self.dtype.itemsize, self.n, max(t[th] - t["tiny"], 1e-9)) for th in threads}


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
    Ratios pair the samples of each round (see :meth:`Timings.ratio`)."""
    n, itemsize, acc = pool.n, pool.dtype.itemsize, algo.accesses
    mine, stream = f"fastopt@{threads}", f"stream@{threads}"
    step, raw, overhead = t[mine], t[stream], t["stream-overhead"]
    net = max(raw - overhead, 1e-9)
    tt = t.get(f"torch@{threads}")
    return {"algo": algo.key, "class": algo.cls, "rule": algo.rule, "dtype": pool.dtype.name, "n": n,
            "threads": threads, "accesses_per_element": acc,
            "time_s": step, "gbps": gbps(acc, itemsize, n, step),
            "thread_speedup": t.ratio(f"fastopt@{base_threads}", mine), "thread_speedup_base": base_threads,
            "stream_thread_speedup": t.ratio(f"stream@{base_threads}", stream),
            "stream_time_s": raw, "stream_overhead_s": overhead, "stream_net_s": net,
            "stream_gbps": gbps(acc, itemsize, n, net), "pct_stream": 100.0 * t.ratio(stream, mine, overhead),
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


# --------------------------------------------------------------------------------------
# the summary cases
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------
def fmt_time(seconds):
    """``1.23 ms``-style time with a unit that keeps 3-4 significant digits."""
    if seconds is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}" if seconds / scale < 100 else f"{seconds / scale:.0f} {unit}"
    return f"{seconds * 1e9:.0f} ns"


def fmt_ratio(x):
    """``12.3×``, or a dash for a missing value."""
    return "—" if x is None else (f"{x:.2f}×" if x < 10 else f"{x:.1f}×")


def header(cfg, torch):
    """The lines describing the machine and the run."""
    build = _build_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"fastopt {fastopt.__version__} bench — {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, OpenMP {'on' if fastopt.openmp_enabled() else 'OFF'}, "
             f"SIMD {driver.simd_level()}, serial threshold {driver.threshold_text()}",
             f"numpy {np.__version__}; torch {torch.__version__ if torch is not None else 'not used'}; "
             f"CFLAGS {build.get('CFLAGS', '?')}",
             f"threads {','.join(map(str, cfg.threads))}; {cfg.repeat} samples per figure (median); "
             f"load average {load:.2f} at start",
             f"OpenMP wait policy: {waitpolicy.describe()}" + (
                 "; torch shares this libgomp" if torch is not None and _shares_libgomp() else "")]
    return lines


def _shares_libgomp():
    """True when only one libgomp is mapped, i.e. torch's OpenMP is fastopt's."""
    paths = waitpolicy._libgomp_paths()
    return paths is not None and len(paths) == 1


def table_lines(records, copy_figures):
    """The table of one (dtype, size) as text lines."""
    r0 = records[0]
    copies = ", ".join(f"{v:.1f} GB/s ({t} thr)" for t, v in copy_figures.items())
    lines = [f"== {r0['dtype']}, n = {r0['n']:,} ({r0['n'] * np.dtype(r0['dtype']).itemsize / 1e6:.3g} MB per "
             f"array); streaming copy {copies} =="]
    cols = ("algorithm", "thr", "step", "GB/s", "%stream", "NumPy", "×NumPy", "torch", "mode", "×torch")
    widths = (10, 3, 9, 6, 7, 9, 7, 9, 7, 7)
    lines.append("  ".join(c.ljust(w) if i == 0 or c == "mode" else c.rjust(w)
                           for i, (c, w) in enumerate(zip(cols, widths))))
    for r in records:
        cells = (r["algo"], str(r["threads"]), fmt_time(r["time_s"]), f"{r['gbps']:.1f}",
                 f"{r['pct_stream']:.0f}%" if r["pct_stream_reliable"] else "—", fmt_time(r["numpy_time_s"]), fmt_ratio(r["speedup_numpy"]),
                 fmt_time(r["torch_time_s"]), r["torch_mode"] or "—", fmt_ratio(r["speedup_torch"]))
        lines.append("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    return lines


LEGEND = ("step: median time of one full opt.step(grads); GB/s: accesses/element × itemsize × n / step; "
          "%stream: time of the stream kernel with the same array count, size and threads (less its "
          "fixed call cost, measured on 16 elements) / step time, '—' where that cost exceeds the "
          "stream's own time (too small to measure); "
          "×NumPy, ×torch: fastopt's speedup (their time / fastopt's). NumPy is single-threaded: "
          "timed once per algorithm, dtype and size, and shown on every thread row.")


def geomean(values):
    """Geometric mean of positive numbers (NaN if any is NaN)."""
    return math.exp(sum(map(math.log, values)) / len(values))


def scaling_lines(records):
    """Thread scaling at the largest size: per dtype, the geometric mean over algorithms of
    the paired time(fewest threads) / time(most threads), beside the same ratio of the
    stream kernels with the same arrays: how far more threads can go on this memory bus."""
    out = []
    if not records:
        return out
    nmax = max(r["n"] for r in records)
    for dtype in sorted({r["dtype"] for r in records}):
        rows = [r for r in records if r["n"] == nmax and r["dtype"] == dtype]
        tmax = max(r["threads"] for r in rows)
        top = [r for r in rows if r["threads"] == tmax and r["threads"] != r["thread_speedup_base"]]
        if not top:
            continue
        ratios = [r["thread_speedup"] for r in top]
        bus = [r.get("stream_thread_speedup") or float("nan") for r in top]
        out.append(f"thread scaling, {dtype} n={nmax:,}: {tmax} vs {rows[0]['thread_speedup_base']} threads = "
                   f"{geomean(ratios):.2f}× (geometric mean over algorithms; range {min(ratios):.2f}–"
                   f"{max(ratios):.2f}×); the stream kernels with the same arrays: {geomean(bus):.2f}× "
                   f"(range {min(bus):.2f}–{max(bus):.2f}×), the most the memory bus allows")
    return out


def many_arrays_line(m):
    """One summary line of the many-arrays case."""
    count, size = m["arrays"], m["size"]
    text = (f"many arrays (Adam float32, {m['threads']} thr): {count} × {size:,}: {fmt_time(m['many_time_s'])}; "
            f"one × {count * size:,}: {fmt_time(m['one_time_s'])} (many/one {m['many_over_one']:.2f}×)")
    if m["torch_time_s"] is not None:
        text += (f"; torch {m['torch_mode']} on the {count} tensors: {fmt_time(m['torch_time_s'])} "
                 f"(fastopt {fmt_ratio(m['speedup_torch'])} faster)")
    return text


def small_line(s):
    """One summary line of the small case."""
    text = f"small step (Adam float32, n={s['n']:,}, {s['threads']} thr): fastopt {s['fastopt_us']:.1f} µs median"
    if s["torch_us"] is not None:
        text += f"; torch {s['torch_mode']} {s['torch_us']:.1f} µs ({s['torch_us'] / s['fastopt_us']:.1f}×)"
    return text


def _build_info():
    """``fastopt._build_info`` as a dict ({} when the module is missing)."""
    try:
        from fastopt import _build_info as info
    except ImportError:
        return {}
    return {k: getattr(info, k) for k in ("OPENMP", "CFLAGS", "PORTABLE") if hasattr(info, k)}


def write_plot(path, results):
    """Save bars of effective GB/s per algorithm (largest size, most threads) for fastopt,
    torch and NumPy, with the stream figure as a marker. Returns an error message or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed (pip install matplotlib); no plot written to {path}"
    rows = results["table"]
    if not rows:
        return "no table results to plot (the table was not run)"
    nmax, tmax = max(r["n"] for r in rows), max(r["threads"] for r in rows)
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(10, 3.6 * len(dtypes)), squeeze=False)
    for ax, dtype in zip(axes[:, 0], dtypes):
        sel = [r for r in rows if r["n"] == nmax and r["threads"] == tmax and r["dtype"] == dtype]
        x = np.arange(len(sel))
        series = [("fastopt", [r["gbps"] for r in sel])]
        if any(r["torch_time_s"] for r in sel):
            series.append(("torch", [r["torch_gbps"] or 0 for r in sel]))
        if any(r["numpy_time_s"] for r in sel):
            series.append(("NumPy", [gbps(r["accesses_per_element"], np.dtype(dtype).itemsize, nmax,
                                          r["numpy_time_s"]) if r["numpy_time_s"] else 0 for r in sel]))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.plot(x, [r["stream_gbps"] for r in sel], "k_", markersize=18, label="stream")
        ax.set_xticks(x, [r["algo"] for r in sel])
        ax.set_ylabel("effective GB/s")
        ax.set_title(f"{dtype}, n = {nmax:,}, {tmax} threads")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------
# progress and the machine's other load
# --------------------------------------------------------------------------------------
class LoadMeter:
    """CPU time used by *other* processes while the benchmark runs (Linux: busy time in
    /proc/stat less this process's own CPU time), in CPUs. Competing load makes the
    multi-thread figures wrong: a parallel step waits for its slowest thread."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick      # all but idle and iowait
        own = sum(os.times()[:2])
        return busy, own, time.monotonic()

    def other_cpus(self):
        """Average CPUs used by other processes since the start (None when unknown)."""
        end = self._sample()
        if self.start is None or end is None or end[2] - self.start[2] <= 0:
            return None
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, other / (end[2] - self.start[2]))


class Progress:
    """``[k/N] what  (elapsed)`` on stderr: rewritten in place on a TTY, one line per
    step otherwise; silent when disabled."""

    def __init__(self, total, enabled, stream=None):
        self.total, self.enabled, self.k = total, enabled, 0
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.t0 = time.perf_counter()

    def step(self, what):
        """Announce the next unit of work."""
        self.k += 1
        if not self.enabled:
            return
        text = f"[{self.k}/{self.total}] {what}  ({time.perf_counter() - self.t0:.0f} s)"
        self.out.write(f"\r\x1b[K{text}" if self.tty else text + "\n")
        self.out.flush()

    def clear(self):
        """Erase the in-place line (before printing results)."""
        if self.enabled and self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def run(cfg, out=None):
    """Run the benchmark described by ``cfg``, printing to ``out`` as results come in;
    return the results as a JSON-ready dict. Afterwards fastopt follows OpenMP's thread
    count again (``set_num_threads(0)``) and torch's thread count is restored."""
    out = out or sys.stdout
    torch = load_torch(cfg.torch)
    torch_threads = torch.get_num_threads() if torch is not None else None
    results = {"meta": meta(cfg, torch), "copy": [], "table": [], "many_arrays": [], "small": None}
    total = (len(cfg.dtypes) * len(cfg.sizes) * len(cfg.algos) if cfg.table else 0) + cfg.many_arrays + cfg.small
    progress = Progress(total, cfg.progress)
    t0, load = time.perf_counter(), LoadMeter()
    emit = _printer(out, progress)
    for line in header(cfg, torch):
        emit(line)
    try:
        if cfg.table:
            run_table(cfg, torch, progress, emit, results)
        if cfg.many_arrays:
            progress.step("many arrays")
            results["many_arrays"] = bench_many_arrays(cfg, torch)
            for record in results["many_arrays"]:
                emit(many_arrays_line(record))
        if cfg.small:
            progress.step("small step")
            results["small"] = bench_small(cfg, torch, max(cfg.threads))
            emit(small_line(results["small"]))
    finally:
        fastopt.set_num_threads(0)          # back to following OpenMP
        if torch is not None:
            torch.set_num_threads(torch_threads)
        progress.clear()
    results["meta"]["seconds"] = time.perf_counter() - t0
    results["meta"]["other_load_cpus"] = other = load.other_cpus()
    text = f"total benchmark time {results['meta']['seconds']:.0f} s"
    if other is not None:
        text += f"; other processes used {other:.2f} of {os.cpu_count()} CPUs meanwhile"
        if other > 0.2:
            text += " (competing load: the multi-thread figures are unreliable, rerun on a quiet machine)"
    emit(text)
    return results


def run_table(cfg, torch, progress, emit, results):
    """The main table: one block per (dtype, size), printed as soon as it is done."""
    nstream = 1 + max(a.nstate for a in cfg.algos)
    for dtype in cfg.dtypes:
        for n in cfg.sizes:
            pool = Pool(n, dtype, nstream)
            copies = pool.copy_gbps(cfg.threads, cfg.repeat)
            results["copy"] += [{"dtype": dtype.name, "n": n, "threads": t, "gbps": v} for t, v in copies.items()]
            records = bench_pool(pool, cfg, torch, progress)
            results["table"] += records
            del pool
            for line in table_lines(records, copies) + [""]:
                emit(line)
    for line in textwrap.wrap(LEGEND, 100):
        emit(line)
    for line in scaling_lines(results["table"]):
        emit(line)


def _printer(out, progress):
    """A function printing one line to ``out`` without mixing it into the progress line."""
    def emit(line):
        progress.clear()
        print(line, file=out, flush=True)
    return emit


def meta(cfg, torch):
    """Run metadata for the JSON output."""
    return {"fastopt": fastopt.__version__, "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "openmp": fastopt.openmp_enabled(),
            "simd": driver.simd_level(), "serial_threshold": driver.serial_threshold(),
            "serial_threshold_asleep": driver.serial_thresholds()[1], "hot_window_s": driver.hot_window(),
            "wait_policy": waitpolicy.policy, "build": _build_info(),
            "threads": cfg.threads, "sizes": cfg.sizes, "dtypes": [d.name for d in cfg.dtypes],
            "algos": [a.key for a in cfg.algos], "repeat": cfg.repeat,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
DESCRIPTION = ("Time every optimizer step against the memory bus (a stream kernel with the same arrays), "
               "the NumPy reference and torch.optim (when installed). The default run takes a few minutes.")


def handle(args):
    """The ``bench`` subcommand: run, print, optionally write JSON and a plot; exit code."""
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"fastopt bench: error: {exc}", file=sys.stderr)
        return 2
    results = run(cfg)
    code = 0
    if cfg.json_path:
        with open(cfg.json_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {cfg.json_path}")
    if cfg.plot_path:
        problem = write_plot(cfg.plot_path, results)
        if problem:
            print(f"fastopt bench: {problem}", file=sys.stderr)
            code = 1
        else:
            print(f"plot written to {cfg.plot_path}")
    return code


def add_cli(subparsers):
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("bench", help="benchmark the optimizers", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=handle)
    return p


def main(argv=None):
    """``python -m fastopt.bench [options]``: the same as ``python -m fastopt bench``."""
    parser = add_arguments(argparse.ArgumentParser(prog="fastopt bench", description=DESCRIPTION))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code
    return handle(args)


if __name__ == "__main__":
    sys.exit(main())
