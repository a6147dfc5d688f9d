"""``fastopt schedule NAME ...``: print or plot a learning-rate schedule of
:mod:`fastopt.schedules`."""
import sys

from fastopt.schedules import (
    Constant,
    CosineAnnealing,
    CosineWarmRestarts,
    Exponential,
    InverseSqrt,
    InverseTime,
    Linear,
    MultiStep,
    OneCycle,
    Polynomial,
    StepDecay,
    Warmup,
    plot,
    table,
)

_NAMES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "inverse-time",
    "inverse-sqrt",
    "cosine",
    "restarts",
    "linear",
    "polynomial",
    "onecycle",
)

# Schedules whose decay has a horizon: with --warmup W they decay over steps - W.
_HORIZON = ("cosine", "linear", "polynomial")


def add_cli(subparsers):
    """Register the ``schedule`` subcommand on an argparse ``subparsers`` object.

    ``python -m fastopt schedule NAME --lr LR --steps N [options]`` prints a table
    of the schedule (``--every K`` rows apart, default ``max(1, N // 20)``), or
    saves a plot with ``--plot PATH`` (falls back to the table, exit code 1, if
    matplotlib is missing).  ``--warmup W`` prepends a warmup (``--warmup-kind``,
    ``--warmup-start``); for cosine/linear/polynomial the decay then spans
    ``N − W`` steps so the whole schedule is ``N`` steps long; for inverse-sqrt
    it is the schedule's own Transformer warmup.  The handler is set with
    ``set_defaults(func=...)`` and returns an exit code (2 for invalid options).
    Returns the created sub-parser.
    """
    p = subparsers.add_parser(
        "schedule",
        help="print (or plot) a learning-rate schedule",
        description="Print a table of a learning-rate schedule, or plot it.",
    )
    p.add_argument("name", choices=_NAMES, help="schedule kind")
    p.add_argument("--lr", type=float, required=True, help="base lr (max lr for onecycle)")
    p.add_argument("--steps", type=int, required=True,
                   help="steps to show; the horizon T for cosine/linear/polynomial/onecycle")
    p.add_argument("--every", type=int, default=None, help="table row spacing")
    p.add_argument("--plot", metavar="PATH", default=None, help="save a plot to PATH")
    p.add_argument("--min-lr", type=float, default=0.0, help="cosine, restarts")
    p.add_argument("--end-lr", type=float, default=0.0, help="linear, polynomial")
    p.add_argument("--gamma", type=float, default=None,
                   help="step/multistep (default 0.1), exponential (required)")
    p.add_argument("--step-size", type=int, default=None, help="step (required)")
    p.add_argument("--milestones", default=None,
                   help="multistep: comma-separated steps, e.g. 30,60,90 (required)")
    p.add_argument("--k", type=float, default=None, help="inverse-time (required)")
    p.add_argument("--power", type=float, default=1.0, help="inverse-time, polynomial")
    p.add_argument("--period", type=int, default=None, help="restarts (required)")
    p.add_argument("--period-mult", type=int, default=1, help="restarts")
    p.add_argument("--pct-start", type=float, default=0.3, help="onecycle")
    p.add_argument("--div-factor", type=float, default=25.0, help="onecycle")
    p.add_argument("--final-div-factor", type=float, default=1e4, help="onecycle")
    p.add_argument("--anneal", choices=("cos", "linear"), default="cos", help="onecycle")
    p.add_argument("--three-phase", action="store_true", help="onecycle")
    p.add_argument("--warmup", type=int, default=0, help="warmup steps")
    p.add_argument("--warmup-kind", choices=("linear", "exponential", "cosine"),
                   default="linear")
    p.add_argument("--warmup-start", type=float, default=0.0, help="warmup start lr")
    p.set_defaults(func=handle)
    return p


def build(args):
    """Build the Schedule described by parsed CLI ``args`` (ValueError if invalid)."""
    name = args.name
    lr = args.lr
    steps = args.steps
    warmup = args.warmup
    if steps is None or steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")

    def need(value, opt):
        if value is None:
            raise ValueError(f"{name} requires {opt}")
        return value

    horizon = steps
    if warmup and name in _HORIZON:
        if warmup >= steps:
            raise ValueError(f"--warmup ({warmup}) must be < --steps ({steps}) for {name}")
        horizon = steps - warmup
    if warmup and name == "onecycle":
        raise ValueError("--warmup is not supported with onecycle (use --pct-start)")

    if name == "constant":
        sched = Constant(lr)
    elif name == "step":
        sched = StepDecay(lr, need(args.step_size, "--step-size"),
                          0.1 if args.gamma is None else args.gamma)
    elif name == "multistep":
        raw = need(args.milestones, "--milestones")
        try:
            ms = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--milestones must be comma-separated ints, got {raw!r}") from None
        sched = MultiStep(lr, ms, 0.1 if args.gamma is None else args.gamma)
    elif name == "exponential":
        sched = Exponential(lr, need(args.gamma, "--gamma"))
    elif name == "inverse-time":
        sched = InverseTime(lr, need(args.k, "--k"), args.power)
    elif name == "inverse-sqrt":
        return InverseSqrt(lr, warmup)
    elif name == "cosine":
        sched = CosineAnnealing(lr, horizon, args.min_lr)
    elif name == "restarts":
        sched = CosineWarmRestarts(lr, need(args.period, "--period"), args.period_mult,
                                   args.min_lr)
    elif name == "linear":
        sched = Linear(lr, horizon, args.end_lr)
    elif name == "polynomial":
        sched = Polynomial(lr, horizon, args.end_lr, args.power)
    elif name == "onecycle":
        sched = OneCycle(lr, steps, args.pct_start, args.div_factor, args.final_div_factor,
                         args.anneal, args.three_phase)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(f"unknown schedule {name!r}")
    if warmup:
        sched = Warmup(sched, warmup, start_lr=args.warmup_start, kind=args.warmup_kind)
    return sched


def handle(args):
    """Handler of ``fastopt schedule``: print the table or save the plot; exit code."""
    try:
        sched = build(args)
        every = args.every if args.every is not None else max(1, args.steps // 20)
        if every < 1:
            raise ValueError(f"--every must be >= 1, got {every}")
    except (TypeError, ValueError) as exc:
        print(f"fastopt schedule: error: {exc}", file=sys.stderr)
        return 2
    if args.plot is None:
        sys.stdout.write(table(sched, args.steps, every))
        return 0
    try:
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        sys.stdout.write(table(sched, args.steps, every))
        print("fastopt schedule: matplotlib is not installed; printed the table instead "
              f"of writing {args.plot}", file=sys.stderr)
        return 1
    try:
        plot(sched, args.steps, path=args.plot)
    except OSError as exc:
        print(f"fastopt schedule: error: cannot write {args.plot}: {exc}", file=sys.stderr)
        return 1
    print(f"saved {args.plot}")
    return 0
