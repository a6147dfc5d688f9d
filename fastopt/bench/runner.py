"""One bench run: its configuration, the order of the parts, printing as results come
in, and the JSON-ready results."""
from __future__ import annotations

import os
import platform
import sys
import textwrap
import time
from dataclasses import dataclass

import numpy as np

import fastopt
from fastopt._kernels import driver, waitpolicy
from fastopt.bench import contention, sparse, torch_training
from fastopt.bench.cases import bench_many_arrays, bench_pool, bench_small
from fastopt.bench.load import LoadMeter
from fastopt.bench.peers import load_torch, set_threads
from fastopt.bench.pool import Pool
from fastopt.bench.progress import Progress
from fastopt.bench.table import (LEGEND, build_info, header, many_arrays_line, scaling_lines, small_line,
                                 table_lines)

__all__ = ["Config", "run", "run_table", "meta"]


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
    contention: bool = False
    busy: int | None = None
    torch_training: bool = False
    torch_training_bf16: bool = False
    training_steps: int = 21
    sparse: bool = False
    sparse_rows: int = 10_000_000
    hogwild: bool = False
    lowprec: bool = False
    json_path: str | None = None
    plot_path: str | None = None
    progress: bool = False


def run(cfg, out=None):
    """Run the benchmark described by ``cfg``, printing to ``out`` as results come in;
    return the results as a JSON-ready dict. Afterwards fastopt follows OpenMP's thread
    count again (``set_num_threads(0)``) and torch's thread count is restored."""
    out = out or sys.stdout
    torch = load_torch(cfg.torch)
    torch_threads = torch.get_num_threads() if torch is not None else None
    results = {"meta": meta(cfg, torch), "copy": [], "table": [], "many_arrays": [], "small": None,
               "contention": [], "torch_training": [], "torch_training_bf16": [], "sparse": None, "hogwild": None,
               "lowprec": None}
    total = ((len(cfg.dtypes) * len(cfg.sizes) * len(cfg.algos) if cfg.table else 0) + cfg.many_arrays + cfg.small
             + cfg.contention + len(torch_training.MODELS) * cfg.torch_training + cfg.torch_training_bf16
             + cfg.sparse + cfg.hogwild + cfg.lowprec)
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
        if cfg.contention:
            progress.step("busy machine")
            results["contention"] = contention.measure(busy=cfg.busy, max_threads=max(cfg.threads))
            for line in contention.lines(results["contention"]):
                emit(line)
        if cfg.torch_training:
            if torch is None:
                progress.step("torch training step")
                emit("--torch-training: PyTorch is not importable (or --no-torch was given); skipped")
            else:
                threads = max(cfg.threads)
                set_threads(threads, torch)
                for model in torch_training.MODELS:
                    progress.step(f"torch training step ({model})")
                    rows = torch_training.measure(torch, steps=cfg.training_steps, model=model)
                    results["torch_training"] += rows
                    for line in torch_training.lines(rows, threads):
                        emit(line)
        if cfg.torch_training_bf16:
            progress.step("torch training step (bfloat16)")
            if torch is None:
                emit("--torch-training-bf16: PyTorch is not importable (or --no-torch was given); skipped")
            else:
                threads = max(cfg.threads)
                set_threads(threads, torch)
                results["torch_training_bf16"] = []
                for model in torch_training.MODELS:
                    rows = torch_training.measure_bf16(torch, steps=cfg.training_steps, model=model)
                    results["torch_training_bf16"] += rows
                    for line in torch_training.lines(rows, threads):
                        emit(line)
        if cfg.sparse:
            progress.step("sparse steps")
            set_threads(max(cfg.threads), torch)
            results["sparse"] = sparse.measure(torch, rows=cfg.sparse_rows, repeat=min(cfg.repeat, 9))
            for line in sparse.lines(results["sparse"]):
                emit(line)
        if cfg.hogwild:
            progress.step("hogwild")
            from fastopt.bench import hogwild
            # every thread count up to the largest asked for: the scaling curve
            results["hogwild"] = hogwild.measure(threads=list(range(1, max(cfg.threads) + 1)),
                                                 repeat=min(cfg.repeat, 3), emit=emit)
        if cfg.lowprec:
            progress.step("low precision")
            from fastopt.bench import lowprec
            results["lowprec"] = lowprec.run(torch, rounds=max(cfg.repeat, 3), out=emit)
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
            "wait_policy": waitpolicy.policy, "build": build_info(),
            "threads": cfg.threads, "sizes": cfg.sizes, "dtypes": [d.name for d in cfg.dtypes],
            "algos": [a.key for a in cfg.algos], "repeat": cfg.repeat,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
