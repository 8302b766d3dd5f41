"""Benchmarks of `ser` (issue 4): data-loader throughput by storage, and `ser precompute` maps per second.

Run all with `python -m benchmarks` (a Rich table; `--json` for machine-readable rows), or one with
`python -m benchmarks loader` / `python -m benchmarks precompute`. Every benchmark builds its own temporary inputs,
so it needs no dataset. A benchmark is a function registered by name with `@register_benchmark` that returns rows.
"""

from benchmarks.common import BENCHMARKS, Row, register_benchmark

__all__ = ["BENCHMARKS", "Row", "register_benchmark"]
