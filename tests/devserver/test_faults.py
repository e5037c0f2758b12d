"""Fault injection: latency, error fractions, 429 with Retry-After, frozen and cut watches,
per-client partitions, request counters -- in-process and through the admin endpoint."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException, CoordinationV1Api

from shardlease.devserver import DevServer, Faults

from .conftest import make_client
from .helpers import lease_body, status_of
from .test_watch import Collector


def client_named(kubeconfig: Path, name: str) -> CoordinationV1Api:
    client = make_client(kubeconfig)
    client.set_default_header("X-Shardlease-Client", name)
    return CoordinationV1Api(client)


def test_latency(faults: Faults, coord: CoordinationV1Api, ns: str) -> None:
    faults.set_latency(0.2, jitter=0.1)
    start = time.monotonic()
    coord.list_namespaced_lease(ns)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.6
    faults.clear()
    start = time.monotonic()
    coord.list_namespaced_lease(ns)
    assert time.monotonic() - start < 0.15


def test_error_fraction(faults: Faults, coord: CoordinationV1Api, ns: str) -> None:
    faults.set_errors(0.5, code=503)
    codes = []
    for _ in range(200):
        try:
            coord.list_namespaced_lease(ns)
            codes.append(200)
        except ApiException as exc:
            assert status_of(exc)["reason"] == "ServiceUnavailable"
            codes.append(exc.status)
    assert set(codes) == {200, 503}
    assert 60 <= codes.count(503) <= 140
    faults.set_errors(1.0, code=500)
    with pytest.raises(ApiException) as err:
        coord.read_namespaced_lease("x", ns)
    assert err.value.status == 500 and status_of(err.value)["reason"] == "InternalError"


def test_429_carries_retry_after(faults: Faults, coord: CoordinationV1Api, ns: str) -> None:
    faults.set_errors(1.0, code=429, retry_after=3)
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("a"))
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == "3"
    status = status_of(err.value)
    assert status["reason"] == "TooManyRequests" and status["details"]["retryAfterSeconds"] == 3
    faults.clear()
    with pytest.raises(ApiException):
        coord.read_namespaced_lease("a", ns)  # the rejected create never happened


def test_health_endpoints_are_exempt(faults: Faults, devserver: DevServer) -> None:
    faults.set_errors(1.0)
    for path in ("/healthz", "/readyz", "/livez"):
        with urllib.request.urlopen(devserver.url + path, timeout=5) as response:
            assert response.status == 200 and response.read() == b"ok"


def test_freeze_holds_events_back_then_delivers_them(faults: Faults, coord: CoordinationV1Api,
                                                     ns: str) -> None:
    rv = coord.list_namespaced_lease(ns).metadata.resource_version
    watch = Collector(coord.list_namespaced_lease, ns, resource_version=rv)
    time.sleep(0.1)
    faults.freeze_watches()
    coord.create_namespaced_lease(ns, lease_body("a"))
    coord.create_namespaced_lease(ns, lease_body("b"))
    with pytest.raises(Exception):  # queue.Empty: nothing arrives while frozen
        watch.next(timeout=0.7)
    assert coord.read_namespaced_lease("a", ns)  # the API itself still works
    faults.unfreeze_watches()
    assert watch.summary(2) == [("ADDED", "a"), ("ADDED", "b")]
    watch.stop()


def test_cut_closes_watches(faults: Faults, coord: CoordinationV1Api, ns: str) -> None:
    response = coord.list_namespaced_lease(ns, watch=True, _preload_content=False, timeout_seconds=30)
    time.sleep(0.1)
    start = time.monotonic()
    faults.cut_watches()
    with pytest.raises(Exception):  # urllib3 ProtocolError: the stream ended mid-chunk
        for _ in response.stream():
            pass
    assert time.monotonic() - start < 2


def test_graceful_cut_lets_python_watch_resume(faults: Faults, coord: CoordinationV1Api,
                                               ns: str) -> None:
    rv = coord.list_namespaced_lease(ns).metadata.resource_version
    watch = kubernetes.watch.Watch()
    stream = watch.stream(coord.list_namespaced_lease, ns, resource_version=rv)
    coord.create_namespaced_lease(ns, lease_body("before"))
    assert next(stream)["object"].metadata.name == "before"
    faults.cut_watches(graceful=True)
    coord.create_namespaced_lease(ns, lease_body("after"))
    assert next(stream)["object"].metadata.name == "after"  # re-watched from the last RV
    watch.stop()


def test_partition_one_client_by_header(faults: Faults, kubeconfig: Path, ns: str) -> None:
    isolated = client_named(kubeconfig, "replica-1")
    healthy = client_named(kubeconfig, "replica-2")
    isolated.create_namespaced_lease(ns, lease_body("a"))
    faults.partition("replica-1")
    with pytest.raises(ApiException) as err:
        isolated.read_namespaced_lease("a", ns)
    assert err.value.status == 503 and "replica-1" in status_of(err.value)["message"]
    assert healthy.read_namespaced_lease("a", ns).metadata.name == "a"
    faults.heal("replica-1")
    assert isolated.read_namespaced_lease("a", ns).metadata.name == "a"


def test_partition_cuts_the_clients_watches(faults: Faults, kubeconfig: Path, ns: str) -> None:
    isolated = client_named(kubeconfig, "replica-9")
    response = isolated.list_namespaced_lease(ns, watch=True, _preload_content=False, timeout_seconds=30)
    time.sleep(0.1)
    faults.partition("replica-9")
    with pytest.raises(Exception):
        for _ in response.stream():
            pass


def test_partition_by_user_agent_and_drop_mode(faults: Faults, kubeconfig: Path, ns: str) -> None:
    client = make_client(kubeconfig)
    client.user_agent = "my-agent/1.0"
    agent = CoordinationV1Api(client)
    client.configuration.retries = 0
    faults.partition("my-agent/1.0", mode="drop")
    with pytest.raises(Exception) as err:
        agent.list_namespaced_lease(ns, _request_timeout=5)
    assert not isinstance(err.value, ApiException)  # no HTTP answer at all
    faults.heal()
    assert agent.list_namespaced_lease(ns).items == []


def test_request_counters(devserver: DevServer, coord: CoordinationV1Api, ns: str) -> None:
    devserver.reset_request_counts()
    coord.create_namespaced_lease(ns, lease_body("a"))
    lease = coord.read_namespaced_lease("a", ns)
    coord.replace_namespaced_lease("a", ns, lease)
    coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": 1}})
    coord.list_namespaced_lease(ns)
    coord.list_namespaced_lease(ns, watch=True, timeout_seconds=1, _preload_content=False).read()
    coord.delete_namespaced_lease("a", ns)
    coord.delete_collection_namespaced_lease(ns)
    counts = devserver.request_counts()
    for verb in ("create", "get", "update", "patch", "list", "watch", "delete", "deletecollection"):
        assert counts[(verb, "leases")] == 1, verb
    devserver.reset_request_counts()
    assert devserver.request_counts() == {}


def admin(srv: DevServer, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(srv.url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_admin_endpoint(faults: Faults, devserver: DevServer, kubeconfig: Path, ns: str) -> None:
    state = admin(devserver, "POST", "/_shardlease/faults",
                  {"latency": 0.05, "errors": {"fraction": 0.0, "code": 429, "retry_after": 2},
                   "partition": ["replica-7"], "freeze_watches": True})
    assert state["latency"] == 0.05 and state["partitions"] == {"replica-7": "error"}
    assert state["watches_frozen"] is True and state["errors"]["code"] == 429
    with pytest.raises(ApiException):
        client_named(kubeconfig, "replica-7").list_namespaced_lease(ns)
    state = admin(devserver, "POST", "/_shardlease/faults", {"clear": True})
    assert state["partitions"] == {} and state["latency"] == 0 and not state["watches_frozen"]
    admin(devserver, "DELETE", "/_shardlease/requests")
    client_named(kubeconfig, "replica-7").list_namespaced_lease(ns)
    counts = admin(devserver, "GET", "/_shardlease/requests")["requests"]
    assert {"verb": "list", "resource": "leases", "count": 1} in counts


def test_admin_endpoint_absent_without_faults(tmp_path: Path) -> None:
    with DevServer() as srv:
        with pytest.raises(urllib.error.HTTPError) as err:
            admin(srv, "GET", "/_shardlease/faults")
        assert err.value.code == 404
        srv.faults.set_errors(1.0)  # the in-process API works regardless
        with pytest.raises(ApiException):
            CoordinationV1Api(make_client(srv.write_kubeconfig(tmp_path / "kc"))).list_namespaced_lease("a")


def test_connection_is_reused_after_a_finished_watch(faults: Faults, kubeconfig: Path, ns: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A cleanly ended watch leaves its keep-alive connection usable, as urllib3 assumes."""
    caplog.set_level(logging.ERROR)
    client = make_client(kubeconfig)
    client.configuration.retries = 0  # a broken pooled connection must not be papered over
    client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 1
    api = CoordinationV1Api(client)
    for _ in range(3):
        response = api.list_namespaced_lease(ns, watch=True, _preload_content=False, timeout_seconds=30)
        faults.cut_watches(graceful=True)
        assert response.read() == b""
        response.release_conn()
        assert api.list_namespaced_lease(ns).items == []
    time.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
