"""LeaseClient against the embedded API server: plain-dict CRUD, conditional writes, error kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shardlease.api import ApiError, LeaseClient, error_kind
from shardlease.devserver import DevServer
from shardlease.kube import load_api_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, LeaseClient]]:
    path = tmp_path_factory.mktemp("api") / "kubeconfig"
    with DevServer(port=0, faults=True) as srv:
        srv.write_kubeconfig(path)
        lc = LeaseClient(load_api_client(str(path), client_id="api-test"), "default")
        yield srv, lc
        lc.close()


def body(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {"shardlease.io/group": "t"}},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "leaseTransitions": 0}}


@pytest.mark.parametrize("path", ["urllib3", "rest", "call_api", "api"])
def test_crud_round_trip_through_each_path(client: tuple[DevServer, LeaseClient], path: str) -> None:
    srv, lc = client
    lc.path = path  # type: ignore[misc]
    try:
        name = f"crud-{path.replace('_', '-')}"
        created = lc.create(body(name))
        assert created["spec"]["holderIdentity"] == "me"
        created["spec"]["holderIdentity"] = "you"
        replaced = lc.replace(name, created)
        assert replaced["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
        with pytest.raises(ApiError) as stale:
            lc.replace(name, created)  # the old resourceVersion
        assert stale.value.kind == "conflict" and stale.value.status == 409
        with pytest.raises(ApiError) as exists:
            lc.create(body(name))
        assert exists.value.kind == "already_exists"
        got = lc.get(name)
        assert got is not None and got["spec"]["holderIdentity"] == "you"
        assert lc.get("does-not-exist") is None
    finally:
        lc.path = "urllib3"  # type: ignore[misc]


def test_delete_with_precondition_and_list(client: tuple[DevServer, LeaseClient]) -> None:
    _srv, lc = client
    obj = lc.create(body("to-delete"))
    items, rv = lc.list("shardlease.io/group=t")
    assert rv and any(i["metadata"]["name"] == "to-delete" for i in items)
    with pytest.raises(ApiError) as info:
        lc.delete("to-delete", resource_version="1")
    assert info.value.kind == "conflict"
    lc.delete("to-delete", resource_version=obj["metadata"]["resourceVersion"])
    assert lc.get("to-delete") is None


def test_throttling_carries_retry_after(client: tuple[DevServer, LeaseClient]) -> None:
    srv, lc = client
    srv.faults.set_errors(1.0, code=429, retry_after=3)
    try:
        with pytest.raises(ApiError) as info:
            lc.get("anything")
    finally:
        srv.faults.clear()
    assert info.value.kind == "throttled" and info.value.retry_after == 3


def test_timeout_and_network_errors_are_classified(client: tuple[DevServer, LeaseClient]) -> None:
    srv, lc = client
    srv.faults.set_latency(1.0)
    try:
        with pytest.raises(ApiError) as info:
            lc.get("slow", timeout=0.2)
    finally:
        srv.faults.clear()
    assert info.value.kind == "timeout"
    srv.faults.partition("api-test", mode="drop")
    try:
        with pytest.raises(ApiError) as dropped:
            lc.get("dropped", timeout=2)
    finally:
        srv.faults.clear()
    assert dropped.value.kind in ("network", "timeout")


def test_watch_streams_events_and_reports_expiry(client: tuple[DevServer, LeaseClient]) -> None:
    _srv, lc = client
    items, rv = lc.list("shardlease.io/group=w")
    lc.create({"metadata": {"name": "w1", "labels": {"shardlease.io/group": "w"}}, "spec": {"holderIdentity": "a"}})
    events = lc.watch("shardlease.io/group=w", rv, timeout_seconds=1, read_timeout=3)
    first = next(events)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "w1"
    events.close()


def test_error_kind_table() -> None:
    assert error_kind(409, "Conflict") == "conflict"
    assert error_kind(409, "AlreadyExists") == "already_exists"
    assert error_kind(410, "Expired") == "expired"
    assert error_kind(503, "") == "server"
    assert error_kind(422, "Invalid") == "invalid"
    assert error_kind(403, "Forbidden") == "forbidden"
