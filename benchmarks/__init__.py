"""Benchmarks run by hand (not in CI): each figure beside its floor, measured in the same run."""
