"""Simulations and benchmarks, each runnable as ``python -m simulations.NAME``."""
