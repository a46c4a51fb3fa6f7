"""Benchmarks (run as files, e.g. ``python benchmarks/step.py``); a package so that
tests can import ``benchmarks.plain_step``."""
