"""A step on a machine whose cores are busy: ``python -m fastopt bench --contention``.

Starts as many CPU-bound processes as there are processors (each stops by itself),
then times Adam float32 steps with 1 thread and with every other thread count, the
counts interleaved so that drift hits both alike, and reports the median step time
and the ratio to one thread. On a shared machine a team member the OS has not
scheduled used to hold the whole step at the region's end (a 2-thread step 25-160x
slower than 1 thread at 30k-200k elements); fastopt now takes over its work and
shrinks the team for a while (``fastopt._kernels.driver``).
"""
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import fastopt
from fastopt._kernels import driver

SIZES = (30_000, 200_000, 1_000_000, 10_000_000)
STEPS = 41
_BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def start_busy(count, seconds):
    """``count`` processes that spin on a core for ``seconds`` (then exit by themselves)."""
    return [subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=seconds)]) for _ in range(count)]


def stop_busy(procs):
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def step_times(n, threads, steps, rounds=3):
    """Median seconds of one Adam float32 step on ``n`` elements, per thread count in
    ``threads``; the counts take turns in ``rounds`` blocks of ``steps // rounds`` steps."""
    driver.reset_team_cap()
    p = np.zeros(n, np.float32)
    opt = fastopt.Adam([p], lr=1e-3)
    g = [np.ones_like(p)]
    samples = {t: [] for t in threads}
    per = max(1, steps // rounds)
    for r in range(rounds + 1):
        for t in threads:
            fastopt.set_num_threads(t)
            for _ in range(3):
                opt.step(g)                      # settle the team (and any adaptation)
            if r == 0:
                continue                         # the first round only warms up
            for _ in range(per):
                t0 = time.perf_counter()
                opt.step(g)
                samples[t].append(time.perf_counter() - t0)
    fastopt.set_num_threads(0)
    driver.reset_team_cap()
    return {t: statistics.median(v) for t, v in samples.items()}


def measure(sizes=SIZES, busy=None, steps=STEPS, max_threads=None, warm=0.2):
    """Rows ``{"n", "busy", "times": {threads: seconds}}`` with ``busy`` spinning
    processes (default: one per processor) running beside the steps."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = ncpu if busy is None else busy
    threads = list(range(1, (max_threads or ncpu) + 1))
    procs = start_busy(busy, seconds=600)
    try:
        time.sleep(warm)
        rows = []
        for n in sizes:
            rows.append({"n": n, "busy": busy, "times": step_times(n, threads, steps)})
    finally:
        stop_busy(procs)
    return rows


def lines(rows, steps=STEPS):
    """The table: elements, the median step per thread count, and each count vs 1 thread."""
    if not rows:
        return []
    threads = sorted(rows[0]["times"])
    head = f"{'elements':>11}" + "".join(f"{f'{t} thr':>11}" for t in threads) + "".join(
        f"{f'{t} vs 1':>9}" for t in threads[1:])
    out = [f"Adam float32 with {rows[0]['busy']} busy processes beside it (median of {steps} steps):", head]
    for r in rows:
        t1 = r["times"][1]
        out.append(f"{r['n']:>11,}" + "".join(f"{r['times'][t] * 1e6:>9.0f}µs" for t in threads)
                   + "".join(f"{r['times'][t] / t1:>8.2f}×" for t in threads[1:]))
    return out


