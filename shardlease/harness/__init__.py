"""Test harness: in-memory Kubernetes stand-ins and (after the issue 8 move) the local cluster, the
work journal and the chaos engine. The runtime never imports this package; tests and tools do.
"""

from __future__ import annotations

from .memstore import MemoryLeaseStore, Operation

__all__ = ["MemoryLeaseStore", "Operation"]
