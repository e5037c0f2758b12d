"""MemoryLeaseStore: what simulations rely on beyond the behaviour shared with the dev-server (that part
is tests/unit/test_memstore_vs_devserver.py): fault hooks, deterministic event access, isolation of
stored state, the blocking watch, selectors, and clear errors for bad arguments."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from shardlease.client import LeaseStore
from shardlease.errors import (
    AlreadyExists,
    Conflict,
    Expired,
    Invalid,
    InvalidArgument,
    NetworkError,
    RequestTimeout,
    ServerError,
)
from shardlease.harness import MemoryLeaseStore

FIXED = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def lease(name: str, holder: str = "me", *, rv: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"group": "g", **labels}}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {"metadata": meta, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def rv_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore("default", wall=lambda: FIXED)


def test_commit_then_timeout_renewal_is_committed_and_a_blind_retry_conflicts(store: MemoryLeaseStore) -> None:
    """The case that matters most for leases: the renewal reached etcd, the client saw a timeout.
    Retrying with the old resourceVersion conflicts; a re-read shows we still hold the Lease."""
    first = store.create(lease("s-0"))
    store.commit_then_fail_next("replace", name="s-0")
    renewed = lease("s-0", rv=rv_of(first))
    renewed["spec"]["renewTime"] = "2024-05-01T10:00:02.000000Z"
    with pytest.raises(RequestTimeout):
        store.replace("s-0", renewed)
    current = store.get("s-0")
    assert current is not None and current["spec"]["renewTime"] == "2024-05-01T10:00:02.000000Z"
    assert int(rv_of(current)) > int(rv_of(first))
    assert [e["type"] for e in store.drain_events(rv_of(first))] == ["MODIFIED"]
    with pytest.raises(Conflict):
        store.replace("s-0", renewed)


def test_commit_then_fail_create_makes_the_retry_see_already_exists(store: MemoryLeaseStore) -> None:
    store.commit_then_fail_next("create", ServerError)
    with pytest.raises(ServerError, match="committed"):
        store.create(lease("m-a"))
    with pytest.raises(AlreadyExists):
        store.create(lease("m-a"))


def test_fail_next_changes_nothing_and_counts_down_per_name(store: MemoryLeaseStore) -> None:
    store.create(lease("a"))
    before = store.resource_version
    store.fail_next("get", NetworkError("connection refused"), name="a", count=2)
    assert store.get("b") is None  # other names are not affected
    for _ in range(2):
        with pytest.raises(NetworkError, match="refused"):
            store.get("a")
    assert store.get("a") is not None
    store.fail_next("delete", RequestTimeout)
    with pytest.raises(RequestTimeout):
        store.delete("a")
    assert store.get("a") is not None and store.resource_version == before


def test_commit_then_fail_delete_removes_the_lease(store: MemoryLeaseStore) -> None:
    created = store.create(lease("gone"))
    store.commit_then_fail_next("delete")
    with pytest.raises(RequestTimeout):
        store.delete("gone", resource_version=rv_of(created))
    assert store.get("gone") is None


def test_a_write_that_fails_on_its_own_raises_its_own_error(store: MemoryLeaseStore) -> None:
    store.create(lease("x"))
    store.commit_then_fail_next("create", name="x")
    with pytest.raises(AlreadyExists):
        store.create(lease("x"))
    store.create(lease("y"))  # the fault was used up: no timeout here


def test_stored_state_cannot_be_changed_through_arguments_or_results(store: MemoryLeaseStore) -> None:
    body = lease("iso")
    created = store.create(body)
    body["spec"]["holderIdentity"] = "mallory"
    created["spec"]["holderIdentity"] = "mallory"
    got = store.get("iso")
    assert got is not None and got["spec"]["holderIdentity"] == "me"
    got["metadata"]["labels"]["group"] = "other"
    items, _rv = store.list("group=g")
    assert [i["metadata"]["name"] for i in items] == ["iso"]
    store.drain_events("")[0]["object"]["spec"]["holderIdentity"] = "mallory"
    assert store.pending_events()[0]["object"]["spec"]["holderIdentity"] == "me"


def test_pending_events_hands_out_each_event_once(store: MemoryLeaseStore) -> None:
    a = store.create(lease("a"))
    store.replace("a", lease("a", "you", rv=rv_of(a)))
    assert [e["type"] for e in store.pending_events()] == ["ADDED", "MODIFIED"]
    assert store.pending_events() == []
    store.delete("a")
    deleted = store.pending_events()
    assert [e["type"] for e in deleted] == ["DELETED"] and int(rv_of(deleted[0]["object"])) > int(rv_of(a))


def test_history_window_expires_old_versions(store: MemoryLeaseStore) -> None:
    small = MemoryLeaseStore(history=3)
    start = small.resource_version
    for i in range(3):
        small.create(lease(f"l{i}"))
    assert len(small.drain_events(start)) == 3
    small.create(lease("l3"))
    with pytest.raises(Expired) as info:
        small.drain_events(start)
    assert info.value.status == 410
    with pytest.raises(Expired):
        small.pending_events()
    _items, rv = small.list("")
    small.compact()
    assert small.drain_events(rv) == []


@pytest.mark.parametrize(("selector", "names"), [
    ("group=g", ["a", "b", "c"]),
    ("group==g,role=shard", ["a", "b"]),
    ("role in (shard, member)", ["a", "b", "c"]),
    ("role notin (shard)", ["c", "d"]),
    ("role!=shard", ["c", "d"]),
    ("zone", ["a"]),
    ("!zone,group=g", ["b", "c"]),
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(store: MemoryLeaseStore, selector: str, names: list[str]) -> None:
    store.create(lease("a", role="shard", zone="z1"))
    store.create(lease("b", role="shard"))
    store.create(lease("c", role="member"))
    store.create({"metadata": {"name": "d"}, "spec": {}})
    items, _rv = store.list(selector)
    assert [i["metadata"]["name"] for i in items] == names


def test_unsupported_selector_is_invalid_and_names_what_is_supported(store: MemoryLeaseStore) -> None:
    with pytest.raises(Invalid, match=r"k in \(a,b\)"):
        store.list("shard > 3")


def test_blocking_watch_wakes_on_writes_from_another_thread(store: MemoryLeaseStore) -> None:
    _items, rv = store.list("group=g")
    seen: list[str] = []

    def consume() -> None:
        for event in store.watch("group=g", rv, timeout_seconds=30, read_timeout=30):
            seen.append(event["type"])

    reader = threading.Thread(target=consume)
    reader.start()
    store.create(lease("w"))
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close_watch()
    reader.join(10)
    assert not reader.is_alive() and seen == ["ADDED"]


def test_silent_watch_times_out_and_short_watch_ends(store: MemoryLeaseStore) -> None:
    _items, rv = store.list("")
    with pytest.raises(RequestTimeout):
        list(store.watch("", rv, timeout_seconds=30, read_timeout=0.05))
    started = time.monotonic()
    assert list(store.watch("", rv, timeout_seconds=0, read_timeout=30)) == []
    assert time.monotonic() - started < 5


def test_watch_without_version_lists_then_marks_the_end(store: MemoryLeaseStore) -> None:
    store.create(lease("one"))
    stream = store.watch("group=g", "", timeout_seconds=0, read_timeout=1)
    first, bookmark = next(stream), next(stream)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "one"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_runs_are_deterministic() -> None:
    def run() -> list[dict[str, Any]]:
        s = MemoryLeaseStore(wall=lambda: FIXED)
        a = s.create(lease("a"))
        s.replace("a", lease("a", "b", rv=rv_of(a)))
        return s.drain_events("")

    assert run() == run()
    assert run()[0]["object"]["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"


def test_bad_arguments_name_the_field() -> None:
    store = MemoryLeaseStore()
    with pytest.raises(InvalidArgument, match="op must be one of"):
        store.fail_next("patch", RequestTimeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="a write"):
        store.commit_then_fail_next("get")
    with pytest.raises(InvalidArgument, match="count must be"):
        store.fail_next("get", RequestTimeout, count=0)
    with pytest.raises(InvalidArgument, match="error must be an ApiError"):
        store.fail_next("get", TimeoutError())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="history must be"):
        MemoryLeaseStore(history=0)
    with pytest.raises(Invalid, match="metadata.name"):
        store.create({"metadata": {}, "spec": {}})


def test_is_a_lease_store() -> None:
    store: LeaseStore = MemoryLeaseStore()  # mypy checks the protocol here
    assert store.get("nothing") is None
