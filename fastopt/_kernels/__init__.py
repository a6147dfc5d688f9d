"""The compiled kernels. The driver is loaded first, under fastopt's OpenMP wait
policy (see :mod:`fastopt._kernels.waitpolicy`)."""
from fastopt._kernels import waitpolicy as _waitpolicy

_waitpolicy.load_kernels()
