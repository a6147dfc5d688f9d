"""A bar chart of the table (needs matplotlib, imported only when a plot is asked for)."""
from __future__ import annotations

import numpy as np

from fastopt.bench.timing import gbps

__all__ = ["write_plot"]


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
