"""Benchmark harness: ``python -m fastopt bench``.

For every algorithm, dtype, size and thread count it times a full ``opt.step(grads)``
(Python overhead included) and reports:

* the time per step (median of ``--repeat`` samples, after a warm-up);
* the effective bandwidth, ``accesses_per_element × itemsize × n / time``;
* the percentage of streaming bandwidth: :func:`fastopt._kernels.stream.stream` with
  the same access pattern (array count and size), the same placement of its arrays
  within 4 KiB pages as the step's parameter, gradient and state, and the same thread
  count, timed in the same run and interleaved with the step so that drift (turbo,
  other load) cancels; the stream call's fixed cost (argument checks, about 2 µs,
  measured on 16 elements) is subtracted so that small sizes compare the step with the
  memory system, not with the stream wrapper;
* the speedup over the plain-NumPy reference class (``fastopt.reference.X``);
* when PyTorch is importable, the time of ``torch.optim.X`` (``fused=True`` where
  PyTorch supports it on the CPU, else ``foreach=True``) on the same data, with
  ``torch.set_num_threads`` matching, and fastopt's speedup over it.

Two summary cases follow the table: Adam over many small arrays (160 × 10,000
float32) against one array of the same total size and against torch fused, and the
median latency of one full step on a 1,000-element array.

Big arrays are allocated (and first-touched) once per size and dtype and shared by
all algorithms; each algorithm starts from the same parameter values.

The modules, one job each (only :mod:`.timing` is reusable outside the bench: it
knows nothing about optimizers):

* :mod:`.timing`: calibrated, interleaved samples and paired ratios;
* :mod:`.algos`: the benchmarked optimizers and the rules they run;
* :mod:`.peers`: PyTorch's optimizers on the same arrays, thread counts for both;
* :mod:`.pool`: the shared arrays of one (size, dtype) and the stream kernel's jobs;
* :mod:`.cases`: what is measured (the table's records, the summary cases);
* :mod:`.table`: the text (header, tables, scaling and summary lines);
* :mod:`.plot`, :mod:`.load`, :mod:`.progress`: the chart, other processes' load,
  progress on stderr;
* :mod:`.runner`: one run (:class:`Config`, :func:`run`); :mod:`.cli`: the options
  and the ``bench`` subcommand (:func:`add_cli`, :func:`main`).

Nothing in the library imports this package; only the command line does.
"""
import fastopt  # noqa: F401 - bench.fastopt, as the single-module bench had it

from fastopt.bench.algos import ALGO_BY_KEY, ALGOS, Algo
from fastopt.bench.cases import (LARGE, MANY_ARRAYS, SMALL_CALLS, SMALL_SIZE, Engines, algo_jobs, bench_many_arrays,
                                 bench_pool, bench_small, build_engines, make_record)
from fastopt.bench.cli import (DESCRIPTION, add_arguments, add_cli, config_from_args, handle, main, parse_algos,
                               parse_dtypes, parse_sizes, parse_threads)
from fastopt.bench.load import LoadMeter
from fastopt.bench.peers import (TORCH_FUSED, load_torch, pinned, set_threads, shares_libgomp, torch_optimizer,
                                 torch_tensors)
from fastopt.bench.plot import write_plot
from fastopt.bench.pool import Pool
from fastopt.bench.progress import Progress
from fastopt.bench.runner import Config, meta, run, run_table
from fastopt.bench.table import (LEGEND, build_info, fmt_ratio, fmt_time, geomean, header, many_arrays_line,
                                 scaling_lines, small_line, table_lines)
from fastopt.bench.timing import (SAMPLE_SECONDS, Job, Timings, calibrate, gbps, measure, single_call_median,
                                  time_calls)

# the single-module bench's private names, for code that reached into it
_build_info = build_info
_shares_libgomp = shares_libgomp

__all__ = ["ALGOS", "Algo", "Config", "Job", "Timings", "Pool", "measure", "run", "main", "add_cli",
           "parse_sizes", "parse_threads", "parse_algos", "parse_dtypes"]
