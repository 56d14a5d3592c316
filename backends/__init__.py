"""Compiled implementations of the spec: cpu (Numba) and cuda (CuPy), and the registry."""
