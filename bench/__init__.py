"""Benchmarks of the simulator: runtime overhead, the reference datacenter, the scale curve.

Run them with ``make bench`` or ``python -m bench.run --help``.
"""
