"""Command line: ``python -m fastopt {info,bench,schedule,trajectories,tour} ...`` (also the ``fastopt`` script).

* ``info``: version, OpenMP, threads, build flags, SIMD level, serial threshold;
* ``bench``: the benchmark table (:mod:`fastopt.bench`);
* ``schedule``: print or plot a learning-rate schedule (:mod:`fastopt.cli.schedule`);
* ``trajectories``: optimizers' paths on a test surface (:mod:`fastopt.cli.trajectories`);
* ``tour``: the seeds' claims, reproduced with numbers and pictures (:mod:`fastopt.cli.tour`).

The library never imports this package (``tests/test_layout.py``): the command line
may pull in the benchmark harness, an import of fastopt must not.
"""
import argparse
import sys

from fastopt.cli import schedule, tour, trajectories


def info_lines():
    """The lines printed by ``fastopt info``."""
    import fastopt
    from fastopt._kernels import driver, lowrules, waitpolicy
    lines = [f"fastopt {fastopt.__version__}",
             f"OpenMP enabled: {fastopt.openmp_enabled()}",
             f"threads: {fastopt.get_num_threads()}",
             f"SIMD level: {driver.simd_level()}",
             "bf16 lean loops in AVX-512 BF16 intrinsics: " + ("yes" if lowrules.LOW_SIMD else "no (the compiler "
                                                                "does not target AVX512-BF16)"),
             f"serial threshold: {driver.threshold_text()}",
             f"OpenMP wait policy: {waitpolicy.describe()}"]
    try:
        from fastopt import _build_info as build
    except ImportError:
        lines.append("build flags: unknown (fastopt._build_info is missing)")
    else:
        lines += [f"build OPENMP: {getattr(build, 'OPENMP', '?')}",
                  f"build PORTABLE: {getattr(build, 'PORTABLE', '?')}",
                  f"build CFLAGS: {getattr(build, 'CFLAGS', '?')}"]
    return lines


def _info(args):
    """Handler of ``fastopt info``."""
    print("\n".join(info_lines()))
    return 0


def build_parser():
    """The argparse parser with every subcommand."""
    # imported here, not at the top: ``info_lines`` alone must not load the benchmark
    from fastopt import bench
    parser = argparse.ArgumentParser(prog="fastopt", description="fastopt: fused OpenMP optimizer kernels")
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,schedule,trajectories,tour}")
    sub.add_parser("info", help="print version, OpenMP, threads and build information").set_defaults(func=_info)
    bench.add_cli(sub)
    schedule.add_cli(sub)
    trajectories.add_cli(sub)
    tour.add_cli(sub)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)
