"""``fastopt trajectories --problem P --algos a,b,c``: every optimizer's path on a 2-D
surface from the same start, on its contour map, with the loss curves (PNG), and an
animated GIF with ``--animate``."""
import sys

from fastopt.problems import SURFACES, get_problem
from fastopt.training import ALGOS, optimizer_path

DEFAULT_ALGOS = "sgd,momentum,nesterov,adagrad,rmsprop,adadelta,adam"


def parse_algos(text):
    """The comma-separated algorithm names, checked; ValueError naming ``--algos``."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    if not names:
        raise ValueError("--algos is empty")
    bad = [a for a in names if a not in ALGOS]
    if bad:
        raise ValueError(f"--algos: unknown algorithm(s) {bad}; choose from {sorted(ALGOS)}")
    return names


def run(problem, algos, *, steps, out, animate=None, x0=None, noise=None, seed=0, frames=60):
    """Compute the paths and write the pictures; returns ``(paths, lines)`` (the printed table)."""
    prob = get_problem(problem)
    paths = [optimizer_path(prob, a, steps=steps, x0=x0, noise=noise, seed=seed) for a in algos]
    from fastopt import viz
    fig = viz.trajectory_figure(prob, paths)
    viz.save(fig, out)
    if animate:
        viz.animate_trajectories(prob, paths, animate, frames=frames)
    lines = [f"{'algorithm':>10} {'lr':>8} {'steps':>6} {'f(start)':>12} {'f(end)':>12}  end point"]
    for p in paths:
        lr = "-" if p.lr is None else f"{p.lr:g}"
        end = ", ".join(f"{v:.4g}" for v in p.xs[-1])
        note = "  (diverged)" if p.diverged else ("  (escaped the window)" if p.escaped else "")
        lines.append(f"{p.algo:>10} {lr:>8} {len(p.xs) - 1:>6} {p.losses[0]:>12.5g} {p.losses[-1]:>12.5g}  "
                     f"({end}){note}")
    return paths, lines


def _handler(args):
    try:
        algos = parse_algos(args.algos)
        try:
            x0 = None if args.start is None else [float(v) for v in args.start.split(",")]
        except ValueError:
            raise ValueError(f"--start must be two numbers x,y, got {args.start!r}") from None
        from fastopt import viz
        viz.require_matplotlib()
    except (ValueError, ImportError) as exc:
        print(f"fastopt trajectories: {exc}", file=sys.stderr)
        return 2
    try:
        _, lines = run(args.problem, algos, steps=args.steps, out=args.out, animate=args.animate, x0=x0,
                       noise=args.noise, seed=args.seed)
    except ValueError as exc:
        print(f"fastopt trajectories: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"wrote {args.out}" + (f" and {args.animate}" if args.animate else ""))
    return 0


def add_cli(subparsers):
    """Register ``trajectories`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("trajectories", help="draw optimizers' paths on a 2-D test surface",
                              description="Contour map of a test surface with every optimizer's path from the "
                                          "same start, and the loss curves (needs matplotlib).")
    p.add_argument("--problem", default="rosenbrock", choices=SURFACES, help="the surface")
    p.add_argument("--algos", default=DEFAULT_ALGOS, help=f"comma-separated, from {','.join(ALGOS)}")
    p.add_argument("--steps", type=int, default=300, help="steps per optimizer")
    p.add_argument("--start", default=None, help="start point x,y (default: the problem's)")
    p.add_argument("--noise", type=float, default=None, help="gradient noise eta (the optimizers' grad_noise)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", default="trajectories.png", help="PNG file to write")
    p.add_argument("--animate", metavar="GIF", default=None, help="also write an animated GIF here")
    p.set_defaults(func=_handler)
    return p
