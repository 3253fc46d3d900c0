"""Benchmarks (`make bench` runs `python -m tests.bench.run`); not collected by pytest."""
