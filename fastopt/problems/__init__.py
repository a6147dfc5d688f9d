"""Test problems with value, gradient and Hessian-vector product, in plain NumPy.

* Surfaces (vectorised over trailing axes, for contour maps): :class:`Rosenbrock`
  (2-D and extended n-D), :class:`Beale`, :class:`Booth`, :class:`Saddle` (x² − y²),
  :class:`MonkeySaddle` (x³ − 3xy²), :class:`IllConditionedQuadratic` (chosen condition
  number).
* On data (full batch or the rows ``idx``): :class:`LogisticRegression`,
  :class:`SoftmaxRegression` (L2-regularised), :class:`TwoLayerMLP` (on scikit-learn's
  bundled ``digits`` by default, :func:`load_digits`).
* :func:`get_problem` builds one by name (the names of :data:`PROBLEMS`).
* :func:`rosenbrock` (chained, as ``scipy.optimize.rosen``), :func:`extended_rosenbrock`
  (separable pairs, Moré–Garbow–Hillstrom's) and :func:`logistic_regression`: the
  function-style objectives the second-order tests and benchmarks use.
"""
from fastopt.problems._base import Problem, as_point
from fastopt.problems._data import (LogisticRegression, SoftmaxRegression, TwoLayerMLP, load_digits,
                                    synthetic_classification)
from fastopt.problems._shared import extended_rosenbrock, logistic_regression, rosenbrock, sparse_logistic_regression
from fastopt.problems._surfaces import Beale, Booth, IllConditionedQuadratic, MonkeySaddle, Rosenbrock, Saddle

#: name -> factory of every problem :func:`get_problem` knows
PROBLEMS = {
    "rosenbrock": Rosenbrock,
    "beale": Beale,
    "booth": Booth,
    "saddle": Saddle,
    "monkey_saddle": MonkeySaddle,
    "quadratic": IllConditionedQuadratic,
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "mlp": TwoLayerMLP,
}

#: the 2-D surfaces (those a contour map can show)
SURFACES = ("rosenbrock", "beale", "booth", "saddle", "monkey_saddle", "quadratic")


def get_problem(name, **kwargs):
    """The problem called ``name`` (one of :data:`PROBLEMS`), built with ``kwargs``."""
    if not isinstance(name, str) or name not in PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](**kwargs)


__all__ = ["Problem", "as_point", "Rosenbrock", "Beale", "Booth", "Saddle", "MonkeySaddle",
           "IllConditionedQuadratic", "LogisticRegression", "SoftmaxRegression", "TwoLayerMLP", "load_digits",
           "synthetic_classification", "rosenbrock", "extended_rosenbrock", "logistic_regression",
           "sparse_logistic_regression", "PROBLEMS",
           "SURFACES", "get_problem"]
