"""Benchmarks of the companion library (run them all with ``python -m bench``)."""
