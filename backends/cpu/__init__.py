"""Numba implementations, one module per spec module."""
