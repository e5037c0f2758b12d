"""Selectors, pagination, watch (from a resourceVersion, bookmarks, 410 Expired) and Table output."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request
from typing import Any
from urllib.parse import urlencode

import kubernetes
import pytest

from .conftest import Server, auth_headers, call
from .test_objects import LEASES, lease


def make(api_client: kubernetes.client.ApiClient, ns: str, name: str, **labels: str) -> dict[str, Any]:
    body = lease(name)
    body["metadata"]["labels"] = labels
    code, created = call(api_client, "POST", LEASES.format(ns=ns), body)
    assert code == 201, created
    return dict(created)


def names(listed: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listed["items"]]


def test_label_and_field_selectors(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    make(api_client, ns, "a", tier="web", shard="1")
    make(api_client, ns, "b", tier="db")
    make(api_client, ns, "c")
    path = LEASES.format(ns=ns)
    cases = {"tier=web": ["a"], "tier!=web": ["b", "c"], "tier in (web,db)": ["a", "b"], "!tier": ["c"],
             "tier,shard": ["a"], "tier notin (db)": ["a", "c"]}
    for selector, expected in cases.items():
        code, listed = call(api_client, "GET", path, query=[("labelSelector", selector)])
        assert (code, names(listed)) == (200, expected), selector
    code, listed = call(api_client, "GET", path, query=[("fieldSelector", "metadata.name=b")])
    assert names(listed) == ["b"]
    code, listed = call(api_client, "GET", "/apis/coordination.k8s.io/v1/leases",
                        query=[("fieldSelector", f"metadata.namespace={ns},metadata.name!=b")])
    assert names(listed) == ["a", "c"]


def test_pagination(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    for name in "abcde":
        make(api_client, ns, name)
    path = LEASES.format(ns=ns)
    code, first = call(api_client, "GET", path, query=[("limit", "2")])
    assert names(first) == ["a", "b"] and first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    code, second = call(api_client, "GET", path, query=[("limit", "2"), ("continue", token)])
    assert names(second) == ["c", "d"] and second["metadata"]["remainingItemCount"] == 1
    code, last = call(api_client, "GET", path, query=[("limit", "2"), ("continue", second["metadata"]["continue"])])
    assert names(last) == ["e"] and "continue" not in last["metadata"]
    assert "remainingItemCount" not in last["metadata"]
    code, bad = call(api_client, "GET", path, query=[("limit", "2"), ("continue", "not-a-token")])
    assert (code, bad["reason"]) == (400, "BadRequest")


def watch(api_client: kubernetes.client.ApiClient, path: str, **query: str) -> list[dict[str, Any]]:
    """Every event of a watch that the server ends itself (timeoutSeconds), in order."""
    headers = dict(auth_headers(api_client), Accept="application/json")
    url = f"{api_client.configuration.host}{path}?{urlencode(dict(query, watch='true'))}"
    response = api_client.rest_client.pool_manager.request("GET", url, headers=headers, timeout=30,
                                                           preload_content=False)
    assert response.status == 200
    lines = b"".join(response.stream(4096)).splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_watch_from_resource_version(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    path = LEASES.format(ns=ns)
    first = make(api_client, ns, "a")
    since = first["metadata"]["resourceVersion"]
    call(api_client, "PATCH", f"{path}/a", {"spec": {"holderIdentity": "b"}}, "application/merge-patch+json")
    make(api_client, ns, "b")
    call(api_client, "DELETE", f"{path}/a")
    # Both watches at once (nothing is written any more): each runs until the server ends it.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        current = pool.submit(watch, api_client, path, timeoutSeconds="1")
        events = watch(api_client, path, resourceVersion=since, timeoutSeconds="1")
        initial = current.result()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert events[0]["object"]["kind"] == "Lease" and events[0]["object"]["spec"]["holderIdentity"] == "b"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(since)
    # Without a resourceVersion: the current state as synthetic ADDED events.
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [("ADDED", "b")]


def test_bookmarks(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    """As kube's watch cache does: a bookmark 2 s before a watch times out, but only if the store has
    moved past what the watch already reported; and one that ends the initial events of a watch
    without resourceVersion (with or without sendInitialEvents)."""
    path = LEASES.format(ns=ns)
    created = make(api_client, ns, "a")
    since = created["metadata"]["resourceVersion"]
    # While the quiet watch runs, nothing is written anywhere: only the two initial-events watches
    # (reads, one after the other) run next to it.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        quieting = pool.submit(watch, api_client, path, resourceVersion=since, allowWatchBookmarks="true",
                               timeoutSeconds="3")
        for streaming in ({}, {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}):
            events = watch(api_client, path, allowWatchBookmarks="true", timeoutSeconds="1", **streaming)
            assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"], (streaming, events)
            assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        quiet = quieting.result()
    assert [e for e in quiet if e["type"] == "BOOKMARK"
            and int(e["object"]["metadata"]["resourceVersion"]) <= int(since)] == []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a write elsewhere while the watch runs
        watching = pool.submit(watch, api_client, path, resourceVersion=since, allowWatchBookmarks="true",
                               timeoutSeconds="5")
        time.sleep(1.0)
        code, elsewhere = call(api_client, "POST", LEASES.format(ns="default"),
                               {"metadata": {"generateName": "bookmark-"}, "spec": {}})
        assert code == 201
        events = watching.result()
    call(api_client, "DELETE", LEASES.format(ns="default") + "/" + elsewhere["metadata"]["name"])
    # How many is the server's choice (kube-apiserver sometimes sends the same one twice).
    assert events and {e["type"] for e in events} == {"BOOKMARK"}, events
    for event in events:
        bookmark = event["object"]
        assert (bookmark["kind"], bookmark["apiVersion"]) == ("Lease", "coordination.k8s.io/v1")
        assert int(bookmark["metadata"]["resourceVersion"]) >= int(elsewhere["metadata"]["resourceVersion"])


def etcd(control_plane: Any, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call to etcd's JSON gateway (``/v3/kv/...``)."""
    request = urllib.request.Request(f"{control_plane.etcd_url}/v3/kv/{method}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_watch_after_compaction_gets_410(server: Server, api_client: kubernetes.client.ApiClient,
                                         ns: str) -> None:
    """A watch from a resourceVersion whose history is gone: HTTP 200, one ERROR event with a 410
    Expired Status, end of stream.

    Dev-server: ``compact()`` drops the event history. Real server: etcd is compacted to its
    current revision, and kube-apiserver restarted so that its watch cache (which, not etcd, serves
    watches and keeps its own window of events) starts after that revision too."""
    created = make(api_client, ns, "a")
    call(api_client, "PATCH", LEASES.format(ns=ns) + "/a", {"spec": {"holderIdentity": "b"}},
         "application/merge-patch+json")
    old = created["metadata"]["resourceVersion"]
    if server.is_real:
        if server.control_plane is None:
            pytest.skip("compaction needs the control plane (etcd URL); not available with "
                        "SHARDLEASE_REAL_KUBECONFIG")
        revision = etcd(server.control_plane, "range", {"key": "AA=="})["header"]["revision"]
        etcd(server.control_plane, "compaction", {"revision": revision, "physical": True})
        server.control_plane.restart_apiserver()
        api_client.rest_client.pool_manager.clear()  # its kept-alive connections died with the server
    else:
        server.dev.compact()
    events = watch(api_client, LEASES.format(ns=ns), resourceVersion=old, timeoutSeconds="2")
    assert len(events) == 1 and events[0]["type"] == "ERROR", events
    status = events[0]["object"]
    assert {k: status[k] for k in ("kind", "apiVersion", "metadata", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410}
    assert status["message"].startswith(f"too old resource version: {old} (")


TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"


def test_table_output(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    created = make(api_client, ns, "a", tier="web")
    code, table = call(api_client, "GET", LEASES.format(ns=ns), accept=TABLE)
    assert code == 200 and (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [(c["name"], c["type"], c["format"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", "name"), ("Holder", "string", ""), ("Age", "string", "")]
    [row] = table["rows"]
    assert row["cells"][:2] == ["a", "pod-a"] and row["cells"][2].endswith("s")
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["labels"] == {"tier": "web"}
    assert row["object"]["metadata"]["uid"] == created["metadata"]["uid"]
    code, one = call(api_client, "GET", LEASES.format(ns=ns) + "/a", accept=TABLE)
    assert code == 200 and [r["cells"][0] for r in one["rows"]] == ["a"]
    code, cms = call(api_client, "GET", f"/api/v1/namespaces/{ns}/configmaps", accept=TABLE)
    assert [c["name"] for c in cms["columnDefinitions"]] == ["Name", "Data", "Age"] and cms["rows"] == []
    code, nss = call(api_client, "GET", "/api/v1/namespaces", accept=TABLE)
    assert [c["name"] for c in nss["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert [ns, "Active"] in [r["cells"][:2] for r in nss["rows"]]


@pytest.mark.parametrize("include, kind", [("None", None), ("Object", "Lease")])
def test_table_include_object(api_client: kubernetes.client.ApiClient, ns: str, include: str,
                              kind: str | None) -> None:
    make(api_client, ns, "a")
    code, table = call(api_client, "GET", LEASES.format(ns=ns), accept=TABLE, query=[("includeObject", include)])
    assert code == 200
    assert (table["rows"][0].get("object") or {}).get("kind") == kind
