"""Watch through kubernetes.watch.Watch and raw client streams: event types, resume, selectors,
bookmarks, timeouts and 410 Expired."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException, CoordinationV1Api, CoreV1Api

from shardlease.devserver import DevServer

from .conftest import make_client
from .helpers import lease_body


class Collector:
    """Runs ``Watch().stream(...)`` in a thread and hands events over through a queue."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = kubernetes.watch.Watch()
        self.events: queue.Queue[Any] = queue.Queue()
        kwargs.setdefault("timeout_seconds", 10)
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self.watch.stream(fn, *args, **kwargs):
                self.events.put(event)
        except Exception as exc:  # handed to the test thread
            self.events.put(exc)
        self.events.put(None)

    def next(self, timeout: float = 5.0, skip_bookmarks: bool = True) -> Any:
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, Exception):
                raise event
            if event is None or not (skip_bookmarks and event["type"] == "BOOKMARK"):
                return event

    def summary(self, count: int) -> list[tuple[str, str]]:
        return [(e["type"], e["object"].metadata.name) for e in (self.next() for _ in range(count))]

    def stop(self) -> None:
        self.watch.stop()


def raw_lines(response: Any) -> Iterator[dict[str, Any]]:
    for line in response.stream(amt=None):
        for part in line.splitlines():
            if part.strip():
                yield json.loads(part)


def test_added_modified_deleted(coord: CoordinationV1Api, ns: str) -> None:
    rv = coord.list_namespaced_lease(ns).metadata.resource_version
    watch = Collector(coord.list_namespaced_lease, ns, resource_version=rv)
    time.sleep(0.1)
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    coord.patch_namespaced_lease("a", ns, {"spec": {"holderIdentity": "b"}})
    coord.delete_namespaced_lease("a", ns)
    events = [watch.next() for _ in range(3)]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[0]["object"].metadata.uid == created.metadata.uid
    assert events[1]["object"].spec.holder_identity == "b"
    rvs = [int(e["object"].metadata.resource_version) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    watch.stop()


def test_watch_without_rv_starts_with_current_objects(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("old-1"))
    coord.create_namespaced_lease(ns, lease_body("old-2"))
    watch = Collector(coord.list_namespaced_lease, ns)
    assert watch.summary(2) == [("ADDED", "old-1"), ("ADDED", "old-2")]
    coord.create_namespaced_lease(ns, lease_body("new"))
    assert watch.summary(1) == [("ADDED", "new")]
    watch.stop()


def test_resume_from_resource_version(coord: CoordinationV1Api, ns: str) -> None:
    first = coord.create_namespaced_lease(ns, lease_body("a"))
    coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": 1}})
    coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": 2}})
    coord.create_namespaced_lease(ns, lease_body("b"))
    watch = Collector(coord.list_namespaced_lease, ns, resource_version=first.metadata.resource_version)
    events = [watch.next() for _ in range(3)]
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("MODIFIED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert [e["object"].spec.lease_transitions for e in events[:2]] == [1, 2]
    watch.stop()


def test_label_selector_moves_become_added_and_deleted(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a", labels={"role": "shard"}))
    rv = coord.list_namespaced_lease(ns).metadata.resource_version
    watch = Collector(coord.list_namespaced_lease, ns, label_selector="role=shard", resource_version=rv)
    time.sleep(0.1)
    coord.patch_namespaced_lease("a", ns, {"metadata": {"labels": {"role": "member"}}})
    coord.create_namespaced_lease(ns, lease_body("ignored", labels={"role": "member"}))
    coord.patch_namespaced_lease("a", ns, {"metadata": {"labels": {"role": "shard"}}})
    coord.patch_namespaced_lease("a", ns, {"spec": {"holderIdentity": "z"}})
    assert watch.summary(3) == [("DELETED", "a"), ("ADDED", "a"), ("MODIFIED", "a")]
    watch.stop()


def test_field_selector_and_all_namespaces(coord: CoordinationV1Api, ns: str) -> None:
    rv = coord.list_lease_for_all_namespaces().metadata.resource_version
    watch = Collector(coord.list_lease_for_all_namespaces, resource_version=rv,
                      field_selector="metadata.name=wanted")
    time.sleep(0.1)
    coord.create_namespaced_lease(ns, lease_body("unwanted"))
    coord.create_namespaced_lease(ns + "-x", lease_body("wanted"))
    event = watch.next()
    assert (event["type"], event["object"].metadata.namespace) == ("ADDED", ns + "-x")
    watch.stop()


def test_bookmarks_carry_the_current_rv(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    watch = Collector(coord.list_namespaced_lease, ns, allow_watch_bookmarks=True,
                      resource_version=created.metadata.resource_version)
    # Bookmarks come every 0.5 s here, but only once the store has moved past what the watch has
    # seen (as with kube's watch cache): a write in another namespace moves it.
    elsewhere = coord.create_namespaced_lease(ns + "-other", lease_body("b"))
    bookmark = watch.next(skip_bookmarks=False)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "Lease"
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= int(elsewhere.metadata.resource_version)
    watch.stop()


def test_no_bookmarks_unless_allowed(coord: CoordinationV1Api, ns: str) -> None:
    watch = Collector(coord.list_namespaced_lease, ns, timeout_seconds=1)
    assert watch.next(skip_bookmarks=False) is None  # clean end after the timeout, no bookmark


def test_timeout_seconds_ends_the_stream(coord: CoordinationV1Api, ns: str) -> None:
    start = time.monotonic()
    watch = Collector(coord.list_namespaced_lease, ns, timeout_seconds=1)
    assert watch.next(timeout=5) is None
    assert 0.9 <= time.monotonic() - start < 3


def test_send_initial_events_ends_with_marked_bookmark(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    watch = Collector(coord.list_namespaced_lease, ns, send_initial_events=True,
                      allow_watch_bookmarks=True, resource_version_match="NotOlderThan")
    assert watch.summary(1) == [("ADDED", "a")]
    bookmark = watch.next(skip_bookmarks=False)
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    watch.stop()


def test_configmap_watch(core: CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    watch = Collector(core.list_namespaced_config_map, ns, resource_version=rv)
    time.sleep(0.1)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    core.delete_namespaced_config_map("c", ns)
    assert watch.summary(2) == [("ADDED", "c"), ("DELETED", "c")]
    watch.stop()


def test_deprecated_watch_path(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    client = coord.api_client
    url = f"{client.configuration.host}/apis/coordination.k8s.io/v1/watch/namespaces/{ns}/leases/a"
    response = client.call_api("GET", url + "?timeoutSeconds=1", {"Accept": "application/json"})
    assert response.status == 200
    events = list(raw_lines(response.response))
    assert [(e["type"], e["object"]["metadata"]["uid"]) for e in events] == [
        ("ADDED", created.metadata.uid)]


@pytest.fixture(scope="module")
def short_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinationV1Api]:
    """A server that keeps only 3 events, so resuming from an older RV gets 410."""
    with DevServer(history_limit=3) as srv:
        client = make_client(srv.write_kubeconfig(tmp_path_factory.mktemp("short") / "config"))
        yield CoordinationV1Api(client)


def test_expired_rv_gets_410_error_event(short_history: CoordinationV1Api, ns: str) -> None:
    coord = short_history
    first = coord.create_namespaced_lease(ns, lease_body("a"))
    for i in range(5):
        coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": i}})
    response = coord.list_namespaced_lease(ns, watch=True, _preload_content=False,
                                           resource_version=first.metadata.resource_version)
    assert response.status == 200
    events = list(raw_lines(response))
    assert len(events) == 1
    error = events[0]
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410 and error["object"]["reason"] == "Expired"
    assert error["object"]["message"].startswith(
        f"too old resource version: {first.metadata.resource_version} (")
    # The newest RVs are still in the log: resuming from the latest works.
    latest = coord.read_namespaced_lease("a", ns).metadata.resource_version
    watch = Collector(coord.list_namespaced_lease, ns, resource_version=latest, timeout_seconds=1)
    assert watch.next() is None


def test_python_watch_raises_410_after_retrying(short_history: CoordinationV1Api, ns: str) -> None:
    coord = short_history
    first = coord.create_namespaced_lease(ns, lease_body("a"))
    for i in range(5):
        coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": i}})
    watch = kubernetes.watch.Watch()
    with pytest.raises(ApiException) as err:
        for _ in watch.stream(coord.list_namespaced_lease, ns,
                              resource_version=first.metadata.resource_version):
            pass
    assert err.value.status == 410


def test_continue_token_older_than_history_is_410(short_history: CoordinationV1Api, ns: str) -> None:
    coord = short_history
    for i in range(3):
        coord.create_namespaced_lease(ns, lease_body(f"p{i}"))
    page = coord.list_namespaced_lease(ns, limit=1)
    for i in range(5):
        coord.patch_namespaced_lease("p2", ns, {"spec": {"leaseTransitions": i}})
    with pytest.raises(ApiException) as err:
        coord.list_namespaced_lease(ns, limit=1, _continue=page.metadata._continue)
    assert err.value.status == 410


def test_compact_forces_410(devserver: DevServer, coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": 1}})
    devserver.compact()
    response = coord.list_namespaced_lease(ns, watch=True, _preload_content=False,
                                           resource_version=created.metadata.resource_version)
    assert [e["object"]["code"] for e in raw_lines(response)] == [410]


def test_watch_events_delivered_are_counted_per_client() -> None:
    """Fan-out is measured, not guessed: each watch's object events count for the client that opened it."""
    with DevServer(port=0) as srv:
        def request(method: str, path: str, client: str, body: dict[str, object] | None = None) -> Any:
            req = urllib.request.Request(srv.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json", "X-Shardlease-Client": client})
            return urllib.request.urlopen(req, timeout=10)

        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x", "labels": {"a": "1"}},
                 "spec": {"holderIdentity": "h"}}
        watches = [request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1&labelSelector=a%3D1"
                           "&timeoutSeconds=3", client) for client in ("one", "two")]
        other = request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1&labelSelector=a%3D2"
                        "&timeoutSeconds=3", "three")
        request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", "writer", lease)
        for i in range(3):
            lease["spec"]["holderIdentity"] = f"h{i}"
            current = json.loads(request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", "writer").read())
            lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            request("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", "writer", lease)
        for response in (*watches, other):
            response.read()                    # until the 3 s timeout ends each watch
        counts = srv.watch_event_counts()
        assert counts.get("one") == counts.get("two") == 4      # ADDED + 3 MODIFIED, no bookmarks
        assert "three" not in counts and "writer" not in counts  # nothing matched its selector
        srv.reset_request_counts()
        assert srv.watch_event_counts() == {}
