"""The benchmark scenarios run by ``bench/run.py``, one module per concern.

Kept import-light on purpose: replica processes import :mod:`bench.scenarios.idle` as their handler,
and that must not pull in matplotlib or the observer machinery.
"""
