"""Differential test: one script of Lease operations against ``MemoryLeaseStore`` and against
``LeaseClient`` on the dev-server must give the same outcomes.

The in-memory store is only worth its speed if simulations built on it mean something for the real
server; this is what pins it down. Outcomes compare result fields and error classes; resourceVersions
are compared by order (ranks), since the dev-server's counter also counts other tests' writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from shardlease.client import LeaseStore
from shardlease.client.leases import LeaseClient
from shardlease.errors import ApiError
from shardlease.harness import MemoryLeaseStore

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from shardlease.devserver import DevServer

T0 = "2024-05-01T10:00:00.000000Z"
T1 = "2024-05-01T10:00:02.500000Z"


class Recorder:
    """Runs steps, writing each outcome as plain data with names and resourceVersions made comparable."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.outcomes: list[tuple[str, Any]] = []
        self.rvs: set[int] = set()

    def rv(self, value: str) -> tuple[str, int]:
        self.rvs.add(int(value))
        return ("rv", int(value))

    def obj(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        labels = {k: v.replace(self.prefix, "P") for k, v in (meta.get("labels") or {}).items()}
        return {
            "top": sorted(obj),
            "kind": (obj.get("kind"), obj.get("apiVersion")),
            "meta_keys": sorted(k for k in meta if k != "managedFields"),
            "name": meta["name"].replace(self.prefix, "P"),
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": meta.get("annotations"),
            "spec": obj.get("spec"),
            "rv": self.rv(meta["resourceVersion"]),
        }

    def step(self, label: str, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except ApiError as err:
            self.outcomes.append((label, ("error", type(err).__name__, err.status, err.label)))
            return None
        self.outcomes.append((label, self.normalise(result)))
        return result

    def normalise(self, value: Any) -> Any:
        if isinstance(value, dict) and "metadata" in value:
            return self.obj(value)
        if isinstance(value, dict) and "type" in value:
            return (value["type"], self.normalise(value["object"]))
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):  # a list result
            return ([self.obj(i) for i in value[0]], self.rv(value[1]))
        if isinstance(value, list):
            return [self.normalise(v) for v in value]
        return value

    def ranked(self) -> list[tuple[str, Any]]:
        """Outcomes with every resourceVersion replaced by its rank among all versions seen."""
        rank = {rv: i for i, rv in enumerate(sorted(self.rvs))}

        def fix(value: Any) -> Any:
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "rv":
                return ("rv", rank[value[1]])
            if isinstance(value, dict):
                return {k: fix(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(fix(v) for v in value)
            return value

        return [(label, fix(outcome)) for label, outcome in self.outcomes]


def lease(prefix: str, name: str, role: str, holder: str, *, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{prefix}-{name}",
                            "labels": {"shardlease.io/group": prefix, "shardlease.io/role": role},
                            "annotations": {"shardlease.io/shards": "4"}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": T0, "renewTime": T1,
                     "leaseTransitions": 0}}


def events(store: LeaseStore, selector: str, rv: str) -> list[dict[str, Any]]:
    """Every event after ``rv`` (a short watch that ends by itself), bookmarks left out: the dev-server
    sends them on its own schedule, the memory store only at the end of initial events."""
    stream = store.watch(selector, rv, timeout_seconds=1, read_timeout=5)
    return [e for e in stream if e["type"] != "BOOKMARK"]


def script(store: LeaseStore, prefix: str, compact: Callable[[], None]) -> list[tuple[str, Any]]:
    r = Recorder(prefix)
    group = f"shardlease.io/group={prefix}"
    name = f"{prefix}-a"
    _items, rv0 = r.step("list empty", lambda: store.list(group))
    a = r.step("create a", lambda: store.create(lease(prefix, "a", "shard", "one")))
    r.step("create a again", lambda: store.create(lease(prefix, "a", "shard", "two")))
    r.step("create with rv", lambda: store.create(lease(prefix, "x", "shard", "one", rv="5")))
    r.step("create b", lambda: store.create(lease(prefix, "b", "member", "one")))
    a2 = r.step("replace a current rv",
                lambda: store.replace(name, lease(prefix, "a", "shard", "two", rv=a["metadata"]["resourceVersion"])))
    r.step("replace a stale rv",
           lambda: store.replace(name, lease(prefix, "a", "shard", "three", rv=a["metadata"]["resourceVersion"])))
    r.step("replace a without rv", lambda: store.replace(name, lease(prefix, "a", "shard", "three")))
    r.step("replace a unchanged",
           lambda: store.replace(name, lease(prefix, "a", "shard", "two", rv=a2["metadata"]["resourceVersion"])))
    r.step("replace a name mismatch",
           lambda: store.replace(name, lease(prefix, "b", "shard", "two", rv=a2["metadata"]["resourceVersion"])))
    c_name = f"{prefix}-c"
    c = r.step("replace missing c creates it",
               lambda: store.replace(c_name, lease(prefix, "c", "shard", "one", rv="1")))
    r.step("c leaves the shard selector",
           lambda: store.replace(c_name, lease(prefix, "c", "member", "one", rv=c["metadata"]["resourceVersion"])))
    r.step("get a", lambda: store.get(name))
    r.step("get missing", lambda: store.get(f"{prefix}-missing"))
    r.step("delete a stale precondition", lambda: store.delete(name, resource_version=a["metadata"]["resourceVersion"]))
    r.step("delete a current precondition",
           lambda: store.delete(name, resource_version=a2["metadata"]["resourceVersion"]))
    r.step("get deleted a", lambda: store.get(name))
    r.step("delete a again", lambda: store.delete(name))
    r.step("delete b unconditionally", lambda: store.delete(f"{prefix}-b"))
    r.step("list shard role", lambda: store.list(f"{group},shardlease.io/role in (shard)"))
    r.step("list not shard", lambda: store.list(f"{group},shardlease.io/role!=shard"))
    r.step("list group", lambda: store.list(group))
    r.step("watch group from first list", lambda: events(store, group, rv0))
    r.step("watch shards from first list", lambda: events(store, f"{group},shardlease.io/role=shard", rv0))
    r.step("watch without rv", lambda: events(store, group, ""))
    compact()
    r.step("watch from compacted rv", lambda: events(store, group, rv0))
    return r.ranked()


@pytest.fixture
def lease_client(kube_api_client: ApiClient) -> Iterator[LeaseClient]:
    client = LeaseClient(kube_api_client, "default")
    yield client
    client.close()


def test_memory_store_matches_the_devserver(lease_client: LeaseClient, kube_devserver: DevServer) -> None:
    memory = MemoryLeaseStore("default")
    stores: list[LeaseStore] = [memory, lease_client]  # both satisfy the protocol (checked by mypy)
    prefix = f"diff{uuid.uuid4().hex[:8]}"
    expected = script(stores[1], prefix, kube_devserver.compact)
    got = script(stores[0], prefix, memory.compact)
    for (label, want), (label2, have) in zip(expected, got, strict=True):
        assert label == label2
        assert have == want, f"step {label!r}: memory store gave {have!r}, dev-server gave {want!r}"
