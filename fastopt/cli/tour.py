"""``fastopt tour``: the seeds' claims reproduced one after another, with their numbers
(printed) and pictures (written to ``--out``, when matplotlib is installed)."""
import os
import sys

from fastopt.tour import CLAIMS


def run(out=None, only=None):
    """Run the claims (all, or the stems in ``only``); pictures go into directory ``out``
    (None: none). Returns the :class:`fastopt.tour.Claim` list."""
    chosen = [(stem, fn) for stem, fn in CLAIMS if only is None or stem in only]
    if out is not None:
        os.makedirs(out, exist_ok=True)
    results = []
    for stem, fn in chosen:
        claim = fn(picture=None if out is None else os.path.join(out, f"{stem}.png"))
        print(claim, flush=True)
        results.append(claim)
    return results


def _handler(args):
    stems = [s for s, _ in CLAIMS]
    only = None
    if args.only:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in only if s not in stems]
        if bad:
            print(f"fastopt tour: --only: unknown claim(s) {bad}; choose from {stems}", file=sys.stderr)
            return 2
    out = None if args.no_pictures else args.out
    if out is not None:
        try:
            from fastopt import viz
            viz.require_matplotlib()
        except ImportError as exc:
            print(f"fastopt tour: {exc}; printing the numbers only", file=sys.stderr)
            out = None
    run(out, only)
    return 0


def add_cli(subparsers):
    """Register ``tour`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("tour", help="reproduce the lecture notes' claims with numbers and pictures",
                              description="Each claim of the seeds (momentum, Adagrad, Adam's bias correction, "
                                          "Newton, saddle noise, early stopping, batch sizes) with its numbers.")
    p.add_argument("--out", default="fastopt_tour", help="directory for the pictures")
    p.add_argument("--no-pictures", action="store_true", help="print the numbers only")
    p.add_argument("--only", default=None, help="comma-separated claims: " + ",".join(s for s, _ in CLAIMS))
    p.set_defaults(func=_handler)
    return p
