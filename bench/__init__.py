"""Benchmarks: print figures, assert nothing. Run from the repository root with
``python -m bench.<name> --help``."""
