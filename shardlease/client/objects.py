"""``ObjectClient``: LIST and WATCH of any resource as plain dicts, with a KEP-5866 ``shardSelector``.

The server applies the selector only when its ``ShardedListAndWatch`` gate is on, and says so by
echoing it in the list's ``metadata.shardInfo``; a server without the feature ignores the parameter
and returns everything. So the selector is always sent, the list reports whether it was applied, and
the caller filters on its side in any case (see :mod:`shardlease.runtime.objects`).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes.client import ApiClient

from shardlease.client.transport import Transport
from shardlease.errors import InvalidArgument

__all__ = ["ObjectClient", "ObjectList", "resource_path"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def resource_path(api_version: str, resource: str, namespace: str | None = None) -> str:
    """The collection URL path: ``/api/v1/...`` for the core group, ``/apis/GROUP/VERSION/...`` else.

    ``resource`` is the plural lower-case name kubectl shows in ``api-resources`` (``configmaps``,
    ``deployments``), not the kind; ``namespace=None`` means all namespaces (or a cluster-scoped resource).
    """
    parts = api_version.split("/") if isinstance(api_version, str) else []
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise InvalidArgument(f"api_version must be 'v1' or 'GROUP/VERSION' (e.g. 'apps/v1'), got {api_version!r}")
    if not isinstance(resource, str) or not _NAME.match(resource) or "." in resource:
        raise InvalidArgument(f"resource must be the plural lower-case resource name (e.g. 'configmaps', "
                              f"as in kubectl api-resources), got {resource!r}")
    if namespace is not None and (not isinstance(namespace, str) or not _NAME.match(namespace)):
        raise InvalidArgument(f"namespace must be a namespace name or None for all namespaces, got {namespace!r}")
    base = "/api/v1" if parts == ["v1"] else "/apis/" + "/".join(quote(p, safe="") for p in parts)
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    return f"{base}/{resource}"


class ObjectList:
    """One LIST answer: the items, the resourceVersion to watch from, and the selector the server applied."""

    __slots__ = ("items", "resource_version", "applied_selector")

    def __init__(self, items: list[dict[str, Any]], resource_version: str, applied_selector: str | None) -> None:
        self.items = items
        self.resource_version = resource_version
        #: ``metadata.shardInfo.selector``: ``None`` when the server did not filter (no gate, old server).
        self.applied_selector = applied_selector


class ObjectClient(Transport):
    """List and watch one collection path (see :func:`resource_path`)."""

    def __init__(self, api_client: ApiClient, path: str, *, label_selector: str | None = None,
                 pool_size: int = 2) -> None:
        super().__init__(api_client, pool_size=pool_size)
        self.path = path
        self.label_selector = label_selector

    def _query(self, shard_selector: str, extra: dict[str, str]) -> str:
        query: dict[str, str] = {}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if shard_selector:
            query["shardSelector"] = shard_selector
        query.update(extra)
        return f"{self.path}?{urlencode(query)}" if query else self.path

    def list(self, shard_selector: str, *, timeout: float) -> ObjectList:
        doc = self._json(self._send("GET", self._query(shard_selector, {}), None, timeout))
        items = doc.get("items")
        meta = doc.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        info = meta.get("shardInfo")
        applied = info.get("selector") if isinstance(info, dict) else None
        return ObjectList([i for i in items if isinstance(i, dict)] if isinstance(items, list) else [],
                          str(meta.get("resourceVersion") or ""), applied if isinstance(applied, str) else None)

    def watch(self, shard_selector: str, resource_version: str, *, timeout_seconds: int, read_timeout: float,
              connect_timeout: float = 5.0) -> Generator[dict[str, Any], None, None]:
        """Watch events from ``resource_version`` with bookmarks; ``ERROR`` events are raised (410: ``Expired``)."""
        url = self._query(shard_selector, {"watch": "true", "allowWatchBookmarks": "true",
                                           "resourceVersion": resource_version,
                                           "timeoutSeconds": str(int(timeout_seconds))})
        return self._watch(url, connect_timeout, read_timeout)
