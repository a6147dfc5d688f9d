"""Low-precision storage (issue 12): bfloat16/float16 parameters and gradients,
mixed precision with float32 master weights, and 8-bit block-wise optimizer state.

:mod:`fastopt.lowprec.halfs` and :mod:`fastopt.lowprec.q8` hold the conversions and
the quantisation (the NumPy reference of the kernels); the optimizers take the
options documented in :class:`fastopt.optim.base.Optimizer`.
"""
