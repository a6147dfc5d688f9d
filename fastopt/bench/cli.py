"""The ``bench`` command line: options, their parsing, and the subcommand."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

import fastopt
from fastopt.bench.algos import ALGO_BY_KEY, ALGOS
from fastopt.bench.plot import write_plot
from fastopt.bench.runner import Config, run

__all__ = ["DESCRIPTION", "parse_sizes", "parse_threads", "parse_algos", "parse_dtypes", "add_arguments",
           "config_from_args", "handle", "add_cli", "main"]

DESCRIPTION = ("Time every optimizer step against the memory bus (a stream kernel with the same arrays), "
               "the NumPy reference and torch.optim (when installed). The default run takes a few minutes.")


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
    """``"adam,sgd"`` or ``"all"`` -> the :class:`~fastopt.bench.algos.Algo` entries, in table order."""
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
    parser.add_argument("--contention", action="store_true",
                        help="also (or, with no part named, only) time Adam steps at 30k-10M elements with 1 and "
                             "more threads while one busy process per processor runs beside them")
    parser.add_argument("--torch-training", action="store_true",
                        help="also (or, with no part named, only) time CPU training steps of a ~20M-parameter "
                             "embedding+MLP model and a ~15M-parameter transformer: forward+backward and optimizer "
                             "step, fastopt.torch vs torch.optim foreach and fused (and DeepSpeedCPUAdam when "
                             "installed), and what mixing torch ops with the steps costs (needs torch; "
                             "--training-steps timed rounds)")
    parser.add_argument("--training-steps", type=int, default=21, metavar="N",
                        help="--torch-training(-bf16): timed rounds per optimizer, every mode stepping once per round "
                             "(default 21; each ratio is the median of the rounds' own ratios)")
    parser.add_argument("--torch-training-bf16", action="store_true",
                        help="also (or, with no part named, only) time the embedding+MLP training step in bfloat16: "
                             "fastopt.torch Adam with float32 master weights and all-bfloat16, vs torch.optim Adam "
                             "foreach and fused on bfloat16 parameters (and DeepSpeedCPUAdam when installed)")
    parser.add_argument("--mpi", action="store_true",
                        help="only the MPI part (needs the mpi extra): ShardedOptimizer (ZeRO-1/2) steps vs MPI "
                             "reduce-scatter + all-gather + local step on 1/P, and vs Allreduce + full step; step "
                             "time split into communication and update, state memory per rank")
    parser.add_argument("--ranks", default="2,3,4", help="--mpi: rank counts, comma-separated (default 2,3,4)")
    parser.add_argument("--mpi-size", type=float, default=1e7, help="--mpi: float32 parameters (default 1e7)")
    parser.add_argument("--sparse", action="store_true",
                        help="also time sparse (row-wise) steps of an embedding table against dense steps and torch's "
                             "SparseAdam/Adagrad (opt-in: needs ~10 GB at the default --sparse-rows)")
    parser.add_argument("--sparse-rows", type=float, default=1e7, metavar="N",
                        help="rows of the --sparse table (x 64 float32; default 1e7)")
    parser.add_argument("--hogwild", action="store_true",
                        help="also (or, with no part named, only) run the Hogwild! trainers: logistic regression on "
                             "an RCV1-shaped set vs scikit-learn's SGDClassifier and across thread counts, and matrix "
                             "factorisation on a Netflix-shaped set (a few minutes; --threads sets the counts)")
    parser.add_argument("--lowprec", action="store_true",
                        help="also (or, with no part named, only) time Adam with bf16/fp16 parameters, bf16 and 8-bit "
                             "state and mixed precision at 10M elements against fp32 Adam, a stream of the same "
                             "bytes, torch fused Adam (fp32, bf16) and bitsandbytes' 8-bit Adam when installed; "
                             "state memory and update quality")
    parser.add_argument("--second-order", action="store_true",
                        help="also (or, with no part named, only) measure L-BFGS/Newton: optimizer overhead per "
                             "iteration at n=1e7 vs torch and scipy, evaluations vs scipy's L-BFGS-B, iterations vs "
                             "cost per iteration (needs scipy; torch optional; several minutes)")
    parser.add_argument("--busy", type=int, default=None, metavar="N",
                        help="busy processes beside the --contention steps (default: one per processor)")
    parser.add_argument("--json", metavar="PATH", help="also write machine-readable results to PATH")
    parser.add_argument("--plot", metavar="PATH", help="save a bar chart to PATH (needs matplotlib)")
    parser.add_argument("--progress", action="store_true", help="progress on stderr even when it is not a TTY")
    return parser


def _opt_in_parts(args):
    """True when a part that the default run leaves out was asked for."""
    return any(getattr(args, name, False) for name in ("contention", "torch_training", "torch_training_bf16",
                                                         "sparse", "hogwild", "lowprec"))


def config_from_args(args):
    """Build a :class:`~fastopt.bench.runner.Config` from parsed arguments (ValueError on bad values)."""
    if args.busy is not None and not 0 <= args.busy <= 256:
        raise ValueError(f"--busy must be in [0, 256], got {args.busy}")
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    if args.training_steps < 1:
        raise ValueError(f"--training-steps must be >= 1, got {args.training_steps}")
    named = args.table or args.many_arrays or args.small
    everything = not named and not _opt_in_parts(args)
    if not 1e6 <= args.sparse_rows <= 1e9 or args.sparse_rows != int(args.sparse_rows):
        raise ValueError(f"--sparse-rows must be an integer in [1e6, 1e9], got {args.sparse_rows:g}")
    return Config(algos=parse_algos(args.algos), sizes=parse_sizes(args.sizes), dtypes=parse_dtypes(args.dtypes),
                  threads=parse_threads(args.threads), repeat=args.repeat, reference=not args.no_reference,
                  torch=not args.no_torch, table=args.table or everything,
                  many_arrays=args.many_arrays or everything, small=args.small or everything,
                  contention=args.contention, busy=args.busy, torch_training=args.torch_training,
                  torch_training_bf16=args.torch_training_bf16, training_steps=args.training_steps,
                  sparse=args.sparse, sparse_rows=int(args.sparse_rows),
                  hogwild=args.hogwild,
                  lowprec=args.lowprec,
                  json_path=args.json, plot_path=args.plot, progress=args.progress or sys.stderr.isatty())


def handle(args):
    """The ``bench`` subcommand: run, print, optionally write JSON and a plot; exit code."""
    if getattr(args, "mpi", False):
        return _handle_mpi(args)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"fastopt bench: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "second_order", False):
        second = _second_order()
        if second is None:
            return 2
        if not (args.table or args.many_arrays or args.small or _opt_in_parts(args)):
            return 0
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


def _handle_mpi(args):
    try:
        ranks = [int(x) for x in args.ranks.split(",")]
        if not ranks or min(ranks) < 1 or args.mpi_size < 1 or args.repeat < 1:
            raise ValueError
    except ValueError:
        print(f"fastopt bench: error: --ranks must be positive ints, --mpi-size and --repeat >= 1 "
              f"(got {args.ranks!r}, {args.mpi_size}, {args.repeat})", file=sys.stderr)
        return 2
    try:
        from fastopt.distributed import bench as mpi_bench
        from fastopt.distributed.launch import mpiexec_path
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec_path = None
    if mpiexec_path is None or mpiexec_path() is None:
        print("fastopt bench: error: --mpi needs mpi4py and mpiexec: pip install 'fastopt[mpi]'", file=sys.stderr)
        return 2
    results = mpi_bench.run(ranks, int(args.mpi_size), repeat=args.repeat)
    print("\n".join(mpi_bench.lines(results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mpi": results}, f, indent=1)
        print(f"results written to {args.json}")
    return 0


def _second_order():
    """The ``--second-order`` part (printed as it goes); None when scipy is missing."""
    try:
        import scipy.optimize as scipy_optimize
    except ImportError:
        print("fastopt bench: error: --second-order needs scipy (pip install 'fastopt[test]')", file=sys.stderr)
        return None
    try:
        import torch
    except ImportError:
        torch = None
    from fastopt.bench import second_order
    res = second_order.run(torch=torch, scipy_optimize=scipy_optimize)
    for line in second_order.lines(res):
        print(line, flush=True)
    return res


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
