"""Kubernetes I/O: the ``LeaseStore`` protocol the runtime depends on, and (after the issue 8 move)
the real client, the watch cache and kubeconfig loading.

Only the protocol is imported here, so importing the package costs nothing and pulls in neither the
``kubernetes`` client nor the test harness.
"""

from __future__ import annotations

from .store import LeaseStore

__all__ = ["LeaseStore"]
