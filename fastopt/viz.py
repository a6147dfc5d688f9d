"""Pictures of optimisation (needs matplotlib: ``pip install fastopt[plot]``).

* :func:`trajectory_figure`: the contour map of a 2-D surface with every optimizer's
  path from the same start, and the loss-vs-step curves beside it;
* :func:`animate_trajectories`: the same paths drawn step by step (GIF via Pillow);
* :func:`loss_curves_figure`: loss curves against a common x axis (batch vs
  mini-batch vs stochastic GD, the linear-scaling rule, early stopping).

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no display): they
render with the Agg backend anywhere. matplotlib is imported when a function is called.
"""
import numpy as np

__all__ = ["require_matplotlib", "trajectory_figure", "animate_trajectories", "loss_curves_figure", "save"]

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]


def require_matplotlib():
    """Import matplotlib or raise ImportError saying how to get it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("fastopt's pictures need matplotlib: pip install 'fastopt[plot]' "
                          "(or pip install matplotlib)") from None
    return Figure


def _grid(problem, n=200):
    (x0, x1), (y0, y1) = problem.bounds
    X, Y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return X, Y, problem.value(np.stack([X, Y]))


def _contour(ax, problem):
    X, Y, Z = _grid(problem)
    if np.nanmin(Z) >= 0:
        # log-spaced levels show both the valley floor and the walls
        levels = np.logspace(np.log10(max(np.nanmin(Z), 1e-3) + 1e-3), np.log10(np.nanmax(Z)), 30)
        ax.contour(X, Y, Z, levels=levels, cmap="viridis", linewidths=0.6)
    else:
        ax.contour(X, Y, Z, levels=30, cmap="viridis", linewidths=0.6)
    if problem.xmin is not None:
        ax.plot(*problem.xmin[:2], marker="*", color="k", markersize=12, linestyle="none")
    ax.set_xlim(*problem.bounds[0])
    ax.set_ylim(*problem.bounds[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def trajectory_figure(problem, paths, *, title=None, logy=None):
    """A figure: left, ``problem``'s contour map with each :class:`fastopt.training.Path`
    in ``paths`` (same start marked); right, each path's loss against the step."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(12, 5), dpi=100)
    ax, bx = fig.subplots(1, 2)
    _contour(ax, problem)
    for k, path in enumerate(paths):
        c = _COLORS[k % len(_COLORS)]
        label = path.algo if path.lr is None else f"{path.algo} (lr {path.lr:g})"
        ax.plot(path.xs[:, 0], path.xs[:, 1], "-", color=c, lw=1.4, label=label)
        ax.plot(path.xs[-1, 0], path.xs[-1, 1], "o", color=c, ms=4)
        losses = np.maximum(path.losses, 1e-16) if logy is not False and problem.fmin == 0.0 else path.losses
        bx.plot(np.arange(len(path.losses)), losses, color=c, lw=1.4, label=path.algo)
    if paths:
        ax.plot(*paths[0].xs[0, :2], "ks", ms=6)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or f"{problem.name}: paths from the same start")
    if logy is None:
        # a minimum of 0 (the losses floored at 1e-16 above): a log axis shows the convergence
        logy = problem.fmin == 0.0
    if logy:
        bx.set_yscale("log")
    bx.set_xlabel("step")
    bx.set_ylabel("f(x)")
    bx.set_title("loss per step")
    bx.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def animate_trajectories(problem, paths, filename, *, frames=60, fps=15):
    """Write an animated GIF (matplotlib's PillowWriter) of the paths growing step by step."""
    Figure = require_matplotlib()
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=(6, 5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _contour(ax, problem)
    lines = [ax.plot([], [], "-", color=_COLORS[k % len(_COLORS)], lw=1.4, label=p.algo)[0]
             for k, p in enumerate(paths)]
    ax.legend(fontsize=7, loc="best")
    longest = max(len(p.xs) for p in paths)
    ends = np.unique(np.linspace(1, longest, min(frames, longest)).astype(int))

    def draw(i):
        for line, p in zip(lines, paths):
            line.set_data(p.xs[:ends[i], 0], p.xs[:ends[i], 1])
        ax.set_title(f"{problem.name}: step {ends[i] - 1}")
        return lines

    anim = FuncAnimation(fig, draw, frames=len(ends), blit=False)
    anim.save(filename, writer=PillowWriter(fps=fps))
    return len(ends)


def loss_curves_figure(curves, *, xlabel="epoch", ylabel="loss", title="", logy=True, marks=None):
    """A figure of loss curves: ``curves`` maps a label to ``(x, y)``; ``marks`` maps a
    label to ``(x, y, text)`` drawn as annotated points (e.g. the best epoch)."""
    Figure = require_matplotlib()
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.subplots()
    for k, (label, (x, y)) in enumerate(curves.items()):
        ax.plot(x, y, color=_COLORS[k % len(_COLORS)], lw=1.4, label=label)
    for k, (label, (x, y, text)) in enumerate((marks or {}).items()):
        ax.plot([x], [y], "kv", ms=8)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 10 if k % 2 == 0 else -18), fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, filename):
    """Save a Figure from this module to ``filename`` (PNG by its suffix) with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    fig.savefig(filename)
    return filename
