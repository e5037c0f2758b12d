"""The library's own HTTP path (``shardlease.client.wire``) against both servers: TLS, auth, keep-alive,
and the watch echo check that reads a raw event line before decoding it.

The echo check drops a watch event unread when the first ``"name"`` and ``"resourceVersion"`` in its
raw line are a version the replica already holds. That is only sound if those first fields are the
object's own metadata on every server, whatever labels, annotations and managedFields follow: here
every event of a watch is checked against its decoded form.
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes

from shardlease.client.leases import LeaseClient

from .conftest import Server


def lease(name: str, holder: str, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        # Keys that look like the fields the check reads, in labels and annotations, before and after them.
        "labels": {"shardlease.io/group": "echo", "name": "not-the-name", "resourceVersion": "1"},
        "annotations": {"a/name": "x", "resourceVersion": "123", "z": '{"name":"y","resourceVersion":"5"}'},
    }
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def test_the_first_name_and_version_of_a_raw_watch_line_are_the_objects_own(
        server: Server, api_client: kubernetes.client.ApiClient, ns: str) -> None:
    client = LeaseClient(api_client, ns, pool_size=2)
    assert client.http_path == "wire"
    _items, list_rv = client.list("shardlease.io/group=echo")
    seen: list[tuple[str, str]] = []
    events: list[dict[str, Any]] = []

    def skip(name: str, version: str) -> bool:
        seen.append((name, version))
        return False

    stream = client.watch("shardlease.io/group=echo", list_rv, timeout_seconds=30, read_timeout=20, skip=skip)

    def read() -> None:
        for event in stream:
            events.append(event)
            if len(events) == 4:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    a = client.create(lease("echo-a", "one"))
    a = client.replace("echo-a", lease("echo-a", "two", a["metadata"]["resourceVersion"]))
    client.create(lease("echo-b", "one"))
    client.delete("echo-a")
    reader.join(20)
    client.close_watch()
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "ADDED", "DELETED"], (server.kind, events)
    assert seen[:4] == [(e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                        for e in events], server.kind
    if server.is_real:
        assert "managedFields" in events[0]["object"]["metadata"]  # the fields that follow were really there
    client.close()


def test_a_skipped_event_is_not_yielded(server: Server, api_client: kubernetes.client.ApiClient, ns: str) -> None:
    client = LeaseClient(api_client, ns, pool_size=2)
    _items, list_rv = client.list("shardlease.io/group=echo")
    created = client.create(lease("echo-c", "one"))
    ours = created["metadata"]["resourceVersion"]
    client.replace("echo-c", lease("echo-c", "two", ours))
    stream = client.watch("shardlease.io/group=echo", list_rv, timeout_seconds=30, read_timeout=20,
                          skip=lambda name, version: (name, version) == ("echo-c", ours))
    first = next(stream)
    client.close_watch()
    assert first["type"] == "MODIFIED" and first["object"]["spec"]["holderIdentity"] == "two"
    client.close()


def test_many_requests_share_one_kept_alive_connection(server: Server, api_client: kubernetes.client.ApiClient,
                                                       ns: str) -> None:
    client = LeaseClient(api_client, ns, pool_size=2)
    obj = client.create(lease("echo-d", "one"))
    for i in range(30):
        obj = client.replace("echo-d", lease("echo-d", f"h{i}", obj["metadata"]["resourceVersion"]))
    wire = client._wire
    assert wire is not None and len(wire._idle) == 1  # one connection carried all 31, and is pooled again
    client.close()
