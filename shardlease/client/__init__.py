"""Kubernetes I/O: the ``LeaseStore`` protocol the runtime depends on (``store``), the real client
(``leases.LeaseClient``), the list+watch that keeps the core's cache current (``watch.LeaseWatcher``)
and kubeconfig loading like kubectl's (``connect``).

Only the protocol is imported here, so importing the package costs nothing and pulls in neither the
``kubernetes`` client nor the test harness.
"""

from __future__ import annotations

from shardlease.client.store import LeaseStore

__all__ = ["LeaseStore"]
