"""``LeaseClient``: single Lease requests as plain JSON dicts, over :class:`~shardlease.client.transport.Transport`.

The transport is the measured fastest path (persistent sockets parsed by llhttp, a body serialised
once, auth and TLS from the user's kubernetes ``Configuration``). Client CPU per conditional PUT against
the dev-server in another process, for this path, urllib3's ``urlopen``, the generated
``CoordinationV1Api`` and ``RESTClientObject.request``: ``bench/request_paths.py``,
``bench/results/request_paths.json``.

Every call is a single attempt with an explicit timeout; errors come back as the typed ``ApiError``
subclasses of :mod:`shardlease.errors` (``Conflict``, ``RequestTimeout``, ``Throttled`` with
``retry_after``, ...). ``LeaseClient`` implements :class:`shardlease.client.LeaseStore`.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from kubernetes.client import ApiClient

from shardlease.client.transport import SkipVersion, Transport
from shardlease.errors import ApiError, NotFound

__all__ = ["ApiError", "LeaseClient", "group_lease_namespaces", "list_group_leases"]

_GROUP_PATH = "/apis/coordination.k8s.io/v1"


class LeaseClient(Transport):
    """Create / replace / get / delete / list / watch Leases of one namespace as JSON dicts.

    Implements :class:`shardlease.client.LeaseStore`; every failure is an ``ApiError`` subclass.
    """

    def __init__(self, api_client: ApiClient, namespace: str, *, pool_size: int = 16,
                 urllib3_only: bool = False) -> None:
        super().__init__(api_client, pool_size=pool_size, urllib3_only=urllib3_only)
        self.namespace = namespace
        self._base = f"{_GROUP_PATH}/namespaces/{quote(namespace, safe='')}/leases"
        self._paths: dict[str, str] = {}

    def _url(self, name: str | None = None, query: Mapping[str, Any] | None = None) -> str:
        if name is not None and query is None:
            path = self._paths.get(name)  # every renewal asks for the same few paths: quote each once
            if path is None:
                path = self._paths[name] = f"{self._base}/{quote(name, safe='')}"
            return path
        url = self._base if name is None else f"{self._base}/{quote(name, safe='')}"
        if query:
            url += "?" + urlencode(query)
        return url

    # ---- requests ----

    def get(self, name: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The Lease, or ``None`` if it does not exist."""
        try:
            return self._json(self._send("GET", self._url(name), None, timeout))
        except NotFound:
            return None

    def create(self, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """POST; ``AlreadyExists`` if the name is taken. Sent once: a ``NetworkError`` or ``RequestTimeout``
        with ``outcome_unknown`` means it went out and its answer was lost, so the Lease may exist now."""
        return self._json(self._send("POST", self._url(), body, timeout))

    def replace(self, name: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Conditional PUT: the body must carry ``metadata.resourceVersion``; a stale one gives ``Conflict``.
        Sent once: an error with ``outcome_unknown`` means it may have been applied (read the Lease back)."""
        return self._json(self._send("PUT", self._url(name), body, timeout))

    def delete(self, name: str, *, resource_version: str | None = None, timeout: float | None = None) -> None:
        """Delete, conditional on ``resource_version`` when given (DeleteOptions preconditions)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        self._send("DELETE", self._url(name), body, timeout)

    def list(self, label_selector: str, *, timeout: float | None = None) -> tuple[list[dict[str, Any]], str]:
        """All matching Leases and the list's resourceVersion (where a watch continues from)."""
        doc = self._json(self._send("GET", self._url(query={"labelSelector": label_selector}), None, timeout))
        items = doc.get("items")
        meta = doc.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return ([i for i in items if isinstance(i, dict)] if isinstance(items, list) else [],
                str(rv) if rv is not None else "")

    def watch(self, label_selector: str, resource_version: str, *, timeout_seconds: int,
              read_timeout: float, connect_timeout: float = 5.0,
              skip: SkipVersion | None = None) -> Generator[dict[str, Any], None, None]:
        """Stream watch events (``{"type": ..., "object": ...}``) from ``resource_version``, with bookmarks.

        ``read_timeout`` bounds every socket read, so a connection that went silent (a dead peer, a
        partition that drops packets) raises ``RequestTimeout`` instead of hanging forever. An
        ``ERROR`` event is raised as its error (``Expired`` for 410), never yielded.
        """
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
            "resourceVersion": resource_version,
            "timeoutSeconds": str(int(timeout_seconds)),
        }
        return self._watch(self._url(query=query), connect_timeout, read_timeout, skip)

if TYPE_CHECKING:  # LeaseClient must satisfy the protocol the runtime depends on; mypy checks it here.
    from shardlease.client.store import LeaseStore

    def _satisfies_protocol(client: LeaseClient) -> LeaseStore:
        return client




#: How long ``list_group_leases`` waits for the list (a human is waiting for the answer).
_LIST_TIMEOUT = 10.0


def list_group_leases(api: ApiClient, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
    """List Leases by label selector as plain dicts, plus the list's resourceVersion.

    ``_preload_content=False`` skips the client's model deserialisation: we only need the JSON.
    """
    from kubernetes.client import CoordinationV1Api

    # With _preload_content=False the client returns the raw urllib3 response, not the V1LeaseList
    # its annotations promise.
    response: Any = CoordinationV1Api(api).list_namespaced_lease(
        namespace, label_selector=selector, _preload_content=False,
        _request_timeout=_LIST_TIMEOUT)
    body = json.loads(response.data)
    items = body.get("items") or []
    return [item for item in items if isinstance(item, dict)], str(
        (body.get("metadata") or {}).get("resourceVersion") or "")


def group_lease_namespaces(api: ApiClient, selector: str) -> list[str]:
    """The namespaces holding Leases that match ``selector``, across the cluster, sorted.

    One list over all namespaces: used to tell someone who looked for a group in the wrong namespace
    where it runs. Needs ``list leases`` cluster-wide; the caller treats a refusal as "unknown".
    """
    from kubernetes.client import CoordinationV1Api

    response: Any = CoordinationV1Api(api).list_lease_for_all_namespaces(
        label_selector=selector, _preload_content=False, _request_timeout=_LIST_TIMEOUT)
    items = json.loads(response.data).get("items") or []
    found = {str((item.get("metadata") or {}).get("namespace") or "") for item in items if isinstance(item, dict)}
    return sorted(name for name in found if name)
