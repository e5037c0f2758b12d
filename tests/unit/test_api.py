"""LeaseClient against the embedded API server: plain-dict CRUD, conditional writes, typed errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shardlease.client import LeaseStore
from shardlease.client.connect import load_api_client
from shardlease.client.leases import LeaseClient
from shardlease.devserver import DevServer
from shardlease.errors import AlreadyExists, Conflict, Expired, NetworkError, RequestTimeout, Throttled, api_error_class


@pytest.fixture(scope="module", params=["wire", "urllib3"])
def client(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, LeaseClient]]:
    """Every test runs over both HTTP paths: the library's own, and urllib3 (taken through a proxy)."""
    path = tmp_path_factory.mktemp("api") / "kubeconfig"
    with DevServer(port=0, faults=True) as srv:
        srv.write_kubeconfig(path)
        lc = LeaseClient(load_api_client(str(path), client_id="api-test"), "default",
                         urllib3_only=request.param == "urllib3")
        assert lc.http_path == request.param
        yield srv, lc
        lc.close()


def body(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {"shardlease.io/group": "t"}},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "leaseTransitions": 0}}


def test_crud_round_trip(client: tuple[DevServer, LeaseClient]) -> None:
    _srv, lc = client
    store: LeaseStore = lc  # LeaseClient is the production LeaseStore (checked by mypy)
    created = store.create(body("crud"))
    assert created["spec"]["holderIdentity"] == "me"
    created["spec"]["holderIdentity"] = "you"
    replaced = store.replace("crud", created)
    assert replaced["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with pytest.raises(Conflict) as stale:
        store.replace("crud", created)  # the old resourceVersion
    assert stale.value.status == 409 and stale.value.reason == "Conflict"
    with pytest.raises(AlreadyExists) as exists:
        store.create(body("crud"))
    assert exists.value.status == 409 and str(exists.value).startswith("HTTP 409 AlreadyExists: ")
    got = store.get("crud")
    assert got is not None and got["spec"]["holderIdentity"] == "you"
    assert store.get("does-not-exist") is None


def test_delete_with_precondition_and_list(client: tuple[DevServer, LeaseClient]) -> None:
    _srv, lc = client
    obj = lc.create(body("to-delete"))
    items, rv = lc.list("shardlease.io/group=t")
    assert rv and any(i["metadata"]["name"] == "to-delete" for i in items)
    with pytest.raises(Conflict):
        lc.delete("to-delete", resource_version="1")
    lc.delete("to-delete", resource_version=obj["metadata"]["resourceVersion"])
    assert lc.get("to-delete") is None


def test_throttling_carries_retry_after(client: tuple[DevServer, LeaseClient]) -> None:
    srv, lc = client
    srv.faults.set_errors(1.0, code=429, retry_after=3)
    try:
        with pytest.raises(Throttled) as info:
            lc.get("anything")
    finally:
        srv.faults.clear()
    assert info.value.status == 429 and info.value.retry_after == 3


def test_timeout_and_network_errors_are_classified(client: tuple[DevServer, LeaseClient]) -> None:
    srv, lc = client
    srv.faults.set_latency(1.0)
    try:
        with pytest.raises(RequestTimeout) as info:
            lc.get("slow", timeout=0.2)
    finally:
        srv.faults.clear()
    assert info.value.status is None
    srv.faults.partition("api-test", mode="drop")
    try:
        with pytest.raises((NetworkError, RequestTimeout)):
            lc.get("dropped", timeout=2)
    finally:
        srv.faults.clear()


def test_watch_streams_events_and_reports_expiry(client: tuple[DevServer, LeaseClient]) -> None:
    _srv, lc = client
    items, rv = lc.list("shardlease.io/group=w")
    lc.create({"metadata": {"name": "w1", "labels": {"shardlease.io/group": "w"}}, "spec": {"holderIdentity": "a"}})
    events = lc.watch("shardlease.io/group=w", rv, timeout_seconds=1, read_timeout=3)
    first = next(events)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "w1"
    events.close()


def test_watch_from_a_compacted_version_raises_expired(client: tuple[DevServer, LeaseClient]) -> None:
    """The server answers with an ERROR event (410) inside a 200 stream; callers get ``Expired``."""
    srv, lc = client
    _items, rv = lc.list("shardlease.io/group=x")
    lc.create({"metadata": {"name": "x1", "labels": {"shardlease.io/group": "x"}}, "spec": {}})
    srv.compact()
    with pytest.raises(Expired) as info:
        next(lc.watch("shardlease.io/group=x", rv, timeout_seconds=2, read_timeout=3))
    assert info.value.status == 410 and info.value.label == "expired"


def test_error_classes_carry_the_metric_label_of_their_kind() -> None:
    """``shardlease_api_errors_total{kind}`` keeps the label values it always had."""
    assert api_error_class(409, "Conflict").label == "conflict"
    assert api_error_class(409, "AlreadyExists").label == "already_exists"
    assert api_error_class(410, "Expired").label == "expired"
    assert api_error_class(503, "").label == "server"
    assert api_error_class(422, "Invalid").label == "invalid"
    assert api_error_class(403, "Forbidden").label == "forbidden"
    assert api_error_class(429, "TooManyRequests").label == "throttled"
