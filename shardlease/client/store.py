"""``LeaseStore``: the few Lease operations the manager's shell needs, as a structural protocol.

client-go's leader election talks to its lock object through a small interface (read the record,
create it, update it) so the elector does not care which Kubernetes object carries the lock. This is
the same idea one level lower and for many Leases at once: plain Lease dicts in, plain Lease dicts out,
conditional writes carried by ``metadata.resourceVersion`` in the body, and failures as the typed
``ApiError`` subclasses of :mod:`shardlease.errors`. Two implementations exist: ``LeaseClient`` (the
real API server) and ``shardlease.harness.MemoryLeaseStore`` (in memory, for deterministic tests).

Contract shared by every implementation (the differential test checks it against the dev-server):

- ``create`` fails with ``AlreadyExists`` if the name is taken.
- ``replace`` is conditional: a stale ``resourceVersion`` fails with ``Conflict``, a missing one with
  ``Invalid`` (422); a Lease that does not exist is created (Lease create-on-update). A replace that
  changes nothing returns the stored object without a new resourceVersion and without an event.
- ``get`` of a missing Lease returns ``None`` instead of raising ``NotFound``.
- ``delete`` with ``resource_version`` fails with ``Conflict`` if it no longer matches, and with
  ``NotFound`` if the Lease is gone.
- ``list`` returns the matching Leases and the resourceVersion a ``watch`` continues from.
- ``watch`` yields ``{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK", "object": {...}}`` for
  changes after ``resource_version`` (a Lease moving in or out of the selector shows as ADDED/DELETED);
  it raises ``Expired`` when that version is older than the server's history (relist then), and
  ``RequestTimeout`` when the stream stays silent for ``read_timeout``; it ends cleanly after
  ``timeout_seconds``. ``close_watch`` ends a running watch from another thread.
- Every call is one attempt with the caller's timeout: retrying is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

__all__ = ["LeaseStore"]


class LeaseStore(Protocol):
    """Lease operations on one namespace. Implementations raise ``shardlease.errors.ApiError``
    subclasses, never the ``kubernetes`` client's exceptions, so callers stay independent of the
    transport."""

    def create(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Create the Lease; the stored object as the server returned it."""
        ...

    def replace(self, name: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Conditional replace on ``body["metadata"]["resourceVersion"]``; the stored object."""
        ...

    def get(self, name: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The Lease, or ``None`` if it does not exist."""
        ...

    def delete(self, name: str, *, resource_version: str | None = None, timeout: float | None = None) -> None:
        """Delete, conditional on ``resource_version`` when given."""
        ...

    def list(self, label_selector: str, *, timeout: float | None = None) -> tuple[list[dict[str, Any]], str]:
        """Matching Leases and the list's resourceVersion."""
        ...

    def watch(self, label_selector: str, resource_version: str, *, timeout_seconds: int,
              read_timeout: float, skip: Callable[[str, str], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Events after ``resource_version``; see the module docstring for the exact contract.

        ``skip(name, resource_version)``: an optimisation an implementation may ignore; one that reads
        raw lines asks it before decoding an event and drops the event when it answers True."""
        ...

    def close_watch(self) -> None:
        """End a running ``watch`` from another thread (used on shutdown)."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
