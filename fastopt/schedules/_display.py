"""Showing a schedule: a text table of its values, or a matplotlib figure."""
from ._base import Schedule
from ._check import count

_STEPS = count(1)


def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")


def _table_steps(steps, every):
    out = list(range(0, steps, every))
    if out[-1] != steps - 1:
        out.append(steps - 1)
    return out


def table(schedule, steps, every=1):
    """Return a text table of ``s`` and ``schedule(s)``.

    Rows are ``s = 0, every, 2·every, ... < steps`` plus ``s = steps − 1`` (so the
    last value is always shown).  ``steps`` and ``every`` are ints >= 1.
    """
    _check_schedule(schedule)
    steps = _STEPS("steps", steps)
    every = _STEPS("every", every)
    rows = [(str(s), f"{schedule(s):.10g}") for s in _table_steps(steps, every)]
    w0 = max(len("step"), max(len(r[0]) for r in rows))
    w1 = max(len("lr"), max(len(r[1]) for r in rows))
    lines = [f"{'step':>{w0}}  {'lr':<{w1}}".rstrip()]
    lines += [f"{a:>{w0}}  {b}" for a, b in rows]
    return "\n".join(lines) + "\n"


def plot(schedule, steps, path=None):
    """Draw ``schedule(s)`` for ``s = 0 .. steps − 1``.

    If matplotlib is importable, build a :class:`matplotlib.figure.Figure` (no
    pyplot, so no GUI backend is touched), save it to ``path`` when given, and
    return the Figure.  Without matplotlib, print :func:`table` (about 20 rows)
    to stdout and return that text instead; ``path`` is then not written.
    """
    _check_schedule(schedule)
    steps = _STEPS("steps", steps)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        text = table(schedule, steps, max(1, steps // 20))
        print(text, end="")
        return text
    xs = list(range(steps))
    ys = [schedule(s) for s in xs]
    fig = Figure(figsize=(6.0, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys)
    ax.set_xlabel("step s")
    ax.set_ylabel("learning rate")
    ax.set_title(type(schedule).__name__)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
