"""The bench's text: the header, one table per (dtype, size), the thread-scaling and
summary lines."""
from __future__ import annotations

import math
import os
import platform

import numpy as np

import fastopt
from fastopt._kernels import driver, waitpolicy
from fastopt.bench.peers import shares_libgomp

__all__ = ["fmt_time", "fmt_ratio", "header", "table_lines", "LEGEND", "geomean", "scaling_lines",
           "many_arrays_line", "small_line", "build_info"]


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


def build_info():
    """``fastopt._build_info`` as a dict ({} when the module is missing)."""
    try:
        from fastopt import _build_info as info
    except ImportError:
        return {}
    return {k: getattr(info, k) for k in ("OPENMP", "CFLAGS", "PORTABLE") if hasattr(info, k)}


def header(cfg, torch):
    """The lines describing the machine and the run."""
    build = build_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"fastopt {fastopt.__version__} bench — {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, OpenMP {'on' if fastopt.openmp_enabled() else 'OFF'}, "
             f"SIMD {driver.simd_level()}, serial threshold {driver.threshold_text()}",
             f"numpy {np.__version__}; torch {torch.__version__ if torch is not None else 'not used'}; "
             f"CFLAGS {build.get('CFLAGS', '?')}",
             f"threads {','.join(map(str, cfg.threads))}; {cfg.repeat} samples per figure (median); "
             f"load average {load:.2f} at start",
             f"OpenMP wait policy: {waitpolicy.describe()}" + (
                 "; torch shares this libgomp" if torch is not None and shares_libgomp() else "")]
    return lines


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
                 f"{r['pct_stream']:.0f}%" if r["pct_stream_reliable"] else "—", fmt_time(r["numpy_time_s"]),
                 fmt_ratio(r["speedup_numpy"]),
                 fmt_time(r["torch_time_s"]), r["torch_mode"] or "—", fmt_ratio(r["speedup_torch"]))
        lines.append("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    return lines


LEGEND = ("step: median time of one full opt.step(grads); GB/s: accesses/element × itemsize × n / step; "
          "%stream: time of the stream kernel with the same array count, size, threads and placement "
          "within 4 KiB pages (less its fixed call cost, measured on 16 elements) / step time, '—' where "
          "that cost exceeds the stream's own time (too small to measure); "
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
