"""The embedded Kubernetes API server (``shardlease dev-server``).

A small, faithful stand-in for kube-apiserver. It serves ``coordination.k8s.io/v1`` Leases and core
``v1`` ConfigMaps and Namespaces over plain HTTP on loopback, for tests, demos and chaos experiments. The official
Python client and kubectl work against it unchanged. It shares only the wire format with the rest of
shardlease and imports nothing from it.

Usage::

    with DevServer(faults=True) as srv:      # serves from a daemon thread with its own event loop
        srv.write_kubeconfig(path)           # context "shardlease-dev", namespace "default", no auth
        srv.faults.partition("replica-1")    # see faults.py; srv.request_counts() for counters

Module map: ``server`` (lifecycle), ``httpserver`` (HTTP/1.1 on asyncio), ``api`` (routing and
verbs), ``store`` (objects, resourceVersion, event log), ``watch``, ``validation`` and ``microtime``
(400 vs 422), ``selectors``, ``patch``, ``fieldmanager`` (managedFields, server-side apply), ``namespaces``,
``tables``, ``discovery``, ``openapi``, ``protobuf``
(request bodies from typed client-go clients), ``faults`` and ``admin`` (fault injection),
``counters``, ``kubeconfig``, ``cli``.

Where it differs from a real cluster, on purpose:

- Namespaces are real objects (``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease``
  exist from the start), but a write into a namespace that does not exist creates it instead of
  failing with 404, unless ``DevServer(strict_namespaces=True)``. Deleting a namespace removes it and
  its objects at once (no Terminating phase that outlasts the DELETE). See ``namespaces.py``.
- Reads always return the latest state. The ``resourceVersion`` parameter of list and get is
  ignored. A ``continue`` token resumes after its key in the *current* state, not a snapshot. A
  token older than the event history gets 410 Expired.
- The event history keeps the last ``history_limit`` (10,000) events that are younger than
  ``history_seconds`` (300 s). A watch from an older resourceVersion gets an ERROR 410 Expired event.
- No authentication, RBAC or admission. ``generation`` is never set. Finalizers are stored but
  never block a delete. Events are always an empty list.
- ``managedFields`` and server-side apply follow kube (ownership per manager and operation, removal
  of fields a manager stops applying, 409 conflicts, ``force``), but lists are owned as a whole, the
  ten-Update-managers cap is not applied, and apply bodies must be JSON (kubectl sends JSON); see
  ``fieldmanager.py`` and docs/fidelity.md.
- Discovery is the legacy (unaggregated) kind, and OpenAPI v2 and v3 carry no schemas (enough for
  ``kubectl apply`` and ``create -f``, but not for ``kubectl explain``). Responses are always JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import Faults
    from .server import DevServer

__all__ = ["DevServer", "Faults"]


def __getattr__(name: str) -> Any:
    """Import lazily, so ``shardlease --help`` (which imports ``devserver.cli``) stays fast."""
    if name == "DevServer":
        from .server import DevServer

        return DevServer
    if name == "Faults":
        from .faults import Faults

        return Faults
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
