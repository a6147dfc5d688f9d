"""fastopt: fused, OpenMP-parallel optimizer update kernels for NumPy arrays."""
__version__ = "0.1.0"
