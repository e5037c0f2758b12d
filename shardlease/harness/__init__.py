"""Test harness: an in-memory LeaseStore (``memstore``), a local group of real replica processes
(``localcluster``), the work journal that proves exclusivity (``journal``) and the chaos engine
(``chaos``). The runtime never imports this package (import-linter checks it); tests, benchmarks and
``shardlease demo`` do.
"""

from __future__ import annotations

from shardlease.harness.memstore import MemoryLeaseStore, Operation

__all__ = ["MemoryLeaseStore", "Operation"]
