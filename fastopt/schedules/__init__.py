"""Learning-rate schedules for fastopt optimizers.

A schedule is a plain-Python function of ``s``, the number of optimizer steps
already completed (``s = 0`` for the very first step).  ``sched(s)`` returns the
learning rate used by step ``s + 1``.  Evaluation is plain float arithmetic (no
NumPy), so it is cheap enough to call on every optimizer step.

Notation in the docstrings: ``α0`` is the base learning rate (``lr``), ``s`` the
0-based count of completed steps, ``T`` a horizon in steps, ``W`` a warmup length.

All schedules share the :class:`Schedule` interface:

* ``sched(s) -> float`` -- the learning rate for step ``s + 1`` (``s`` an int
  ``>= 0``; a negative ``s`` raises ``ValueError``).
* ``initial_lr`` -- ``sched(0)``.
* ``state_dict()`` / ``load_state_dict(d)`` -- a dict of plain Python values
  (floats, ints, strings, lists and, for composite schedules, nested dicts) that
  names the schedule kind, its hyper-parameters and any mutable state.
  ``load_state_dict`` restores it exactly and raises ``ValueError`` if the dict
  belongs to another schedule class or has missing/extra keys.
  ``Schedule.from_state_dict(d)`` rebuilds a schedule of any kind from such a dict.

Schedules follow the closed forms of ``torch.optim.lr_scheduler`` where a
PyTorch counterpart exists (StepLR, MultiStepLR, ExponentialLR,
CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR, ReduceLROnPlateau);
``Join`` follows ``optax.join_schedules``.  Deliberate differences are
documented on each class (clamping after the horizon instead of raising, exact
integer cycle arithmetic for warm restarts).

Layout (as optax's ``schedules/``): ``_base`` (the base class, the argument
declaration and the ``state_dict`` registry), ``_check`` (argument checks, on
:class:`fastopt.rules.Hyper`), ``_closed`` (closed forms), ``_compose``
(:class:`Warmup`, :class:`Join`), ``_plateau`` (:class:`ReduceOnPlateau`) and
``_display`` (:func:`table`, :func:`plot`).  The ``schedule`` subcommand lives in
:mod:`fastopt.cli.schedule`.  Importing the package loads only the standard
library and :mod:`fastopt.rules` (standard library only itself); matplotlib is
imported by :func:`plot` when called.
"""
from ._base import Schedule
from ._closed import (
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
    scale_lr_for_batch,
)
from ._compose import Join, Warmup
from ._display import plot, table
from ._plateau import ReduceOnPlateau

__all__ = [
    "Schedule",
    "Constant",
    "StepDecay",
    "MultiStep",
    "Exponential",
    "InverseTime",
    "InverseSqrt",
    "CosineAnnealing",
    "CosineWarmRestarts",
    "Linear",
    "Polynomial",
    "OneCycle",
    "Warmup",
    "Join",
    "ReduceOnPlateau",
    "scale_lr_for_batch",
    "table",
    "plot",
    "add_cli",
]


def add_cli(subparsers):
    """Register the ``schedule`` subcommand on an argparse ``subparsers`` object.

    Kept for callers of the single-file module; the command is
    :func:`fastopt.cli.schedule.add_cli`, imported only when this is called so that
    the library never loads the command line.
    """
    from fastopt.cli.schedule import add_cli as register
    return register(subparsers)
