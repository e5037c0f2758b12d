"""Input the official client refuses to send (it validates bodies with pydantic), sent raw over
http.client: each gets the right 4xx Status, and the server keeps serving with its store intact."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from typing import Any

import pytest
from kubernetes.client import CoordinationV1Api

from shardlease.devserver import DevServer

from .helpers import lease_body

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def send(srv: DevServer, method: str, path: str, body: bytes | str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        data = response.read()
        payload = json.loads(data) if data[:1] in (b"{", b"[") else data
        return response.status, dict(response.getheaders()), payload
    finally:
        conn.close()


def post_lease(srv: DevServer, ns: str, body: Any, query: str = "") -> tuple[int, dict[str, str], Any]:
    return send(srv, "POST", LEASES.format(ns=ns) + query, json.dumps(body),
                {"Content-Type": "application/json"})


@pytest.fixture(autouse=True)
def store_survives(devserver: DevServer, coord: CoordinationV1Api) -> Any:
    """After every malformed request the server still answers and a canary object is unchanged."""
    canary = coord.create_namespaced_lease("canary-" + uuid.uuid4().hex[:8], lease_body("c"))
    yield
    again = coord.read_namespaced_lease("c", canary.metadata.namespace)
    assert again.metadata.resource_version == canary.metadata.resource_version


@pytest.mark.parametrize(("value", "detail"), [
    ("2024-01-01T00:00:00+00:00", 'cannot parse "+00:00" as ".000000"'),
    ("2024-01-01T00:00:00Z", 'cannot parse "Z" as ".000000"'),
    ("2024-01-01T00:00:00.123Z", 'cannot parse ".123Z" as ".000000"'),
    ("2024-01-01T00:00:00.123456789Z", 'cannot parse "789Z" as "Z07:00"'),
    ("2024-13-01T00:00:00.000000Z", "month out of range"),
])
def test_bad_microtime_is_400_like_go_time_parse(devserver: DevServer, ns: str, value: str,
                                                 detail: str) -> None:
    code, _, status = post_lease(devserver, ns, lease_body("a", renewTime=value))
    assert code == 400 and status["reason"] == "BadRequest" and status["code"] == 400
    prefix = f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}"'
    assert status["message"].startswith(prefix) and status["message"].endswith(detail)


def test_wrong_json_types_are_400(devserver: DevServer, ns: str) -> None:
    code, _, status = post_lease(devserver, ns, lease_body("a", leaseDurationSeconds="15"))
    assert code == 400
    assert status["message"] == (
        'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal string into Go '
        'struct field LeaseSpec.spec.leaseDurationSeconds of type int32')
    code, _, status = send(devserver, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                           json.dumps({"metadata": {"name": "c"}, "data": {"n": 1}}))
    assert code == 400 and "cannot be handled as a ConfigMap" in status["message"]


def test_field_validation_strict_and_warn(devserver: DevServer, ns: str) -> None:
    body = lease_body("a", foo="bar")
    code, _, status = post_lease(devserver, ns, body, "?fieldValidation=Strict")
    assert code == 400
    assert status["message"].endswith('strict decoding error: unknown field "spec.foo"')
    code, headers, created = post_lease(devserver, ns, body)
    assert code == 201
    assert headers["Warning"] == '299 - "unknown field \\"spec.foo\\""'
    assert "foo" not in created["spec"]


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]", b'"text"'])
def test_undecodable_bodies_are_400(devserver: DevServer, ns: str, body: bytes) -> None:
    code, _, status = send(devserver, "POST", LEASES.format(ns=ns), body)
    assert code == 400 and status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert "cannot be handled as a Lease" in status["message"]


def test_wrong_kind_or_api_version_for_path(devserver: DevServer, ns: str) -> None:
    code, _, status = post_lease(devserver, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "a"}})
    assert code == 400
    assert status["message"] == ("the API version in the data (v1) does not match the expected API "
                                 "version (coordination.k8s.io/v1)")
    code, _, status = post_lease(devserver, ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Pod",
                                                 "metadata": {"name": "a"}})
    assert code == 400 and 'no kind "Pod" is registered' in status["message"]


def test_oversized_body_is_413(devserver: DevServer, ns: str) -> None:
    huge = json.dumps(lease_body("a", holderIdentity="x" * (4 * 1024 * 1024)))
    code, _, status = send(devserver, "POST", LEASES.format(ns=ns), huge)
    assert code == 413 and status["reason"] == "RequestEntityTooLarge"


def test_unknown_paths_are_404(devserver: DevServer) -> None:
    for path in ("/apis/apps/v1/deployments", "/api/v1/pods", "/nothing",
                 "/apis/coordination.k8s.io/v1/namespaces/a/leases/b/status"):
        code, _, status = send(devserver, "GET", path)
        assert code == 404
        assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "the server could not find the requested resource",
                          "reason": "NotFound", "details": {}, "code": 404}


def test_bad_query_parameters_are_400(devserver: DevServer, ns: str) -> None:
    base = LEASES.format(ns=ns)
    for query in ("limit=abc", "watch=maybe", "timeoutSeconds=-1", "labelSelector=a%20in%20b",
                  "fieldSelector=spec.holderIdentity%3Dx", "continue=%%%",
                  "watch=true&resourceVersion=abc"):
        code, _, status = send(devserver, "GET", f"{base}?{query}")
        assert code == 400, query
        assert status["reason"] == "BadRequest", query
    code, _, status = post_lease(devserver, ns, lease_body("a"), "?dryRun=Some")
    assert code == 400 and status["message"] == 'dryRun: Unsupported value: "Some": supported values: "All"'
    code, _, status = send(devserver, "GET", f"{base}?fieldSelector=spec.holderIdentity%3Dx")
    assert status["message"] == ('"spec.holderIdentity" is not a known field selector: only '
                                 '"metadata.name", "metadata.namespace"')


def test_unsupported_patch_type_is_415(devserver: DevServer, coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    code, _, status = send(devserver, "PATCH", LEASES.format(ns=ns) + "/a", "{}",
                           {"Content-Type": "text/plain"})
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
    assert status["message"].startswith("the body of the request was in an unknown format")


def test_unsupported_method_is_405(devserver: DevServer, ns: str) -> None:
    code, _, status = send(devserver, "POST", LEASES.format(ns=ns) + "/a", "{}")
    assert code == 405 and status["reason"] == "MethodNotAllowed"


def test_chunked_request_body_is_accepted(devserver: DevServer, ns: str) -> None:
    body = json.dumps(lease_body("chunky")).encode()
    conn = http.client.HTTPConnection("127.0.0.1", devserver.port, timeout=10)
    conn.request("POST", LEASES.format(ns=ns), iter([body[:10], body[10:]]),
                 {"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 201 and json.loads(response.read())["metadata"]["name"] == "chunky"
    conn.close()


@pytest.mark.parametrize("garbage", [b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
                                     b"POST /api HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                                     b"\x00\xff" * 100 + b"\r\n\r\n"])
def test_garbage_requests_get_400_and_a_closed_connection(devserver: DevServer, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", devserver.port), timeout=5) as sock:
        sock.sendall(garbage)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_keep_alive_serves_many_requests_on_one_connection(devserver: DevServer, ns: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", devserver.port, timeout=10)
    for i in range(20):
        conn.request("POST", LEASES.format(ns=ns), json.dumps(lease_body(f"k{i}")))
        response = conn.getresponse()
        assert response.status == 201
        response.read()
    conn.request("GET", LEASES.format(ns=ns))
    assert len(json.loads(conn.getresponse().read())["items"]) == 20
    conn.close()


@pytest.mark.parametrize("body", [
    b'{"metadata":{"name":"a","annotations":{"x":"\\ud800"}},"spec":{}}',
    b'{"metadata":{"name":"a","ownerReferences":[{"n":NaN}]},"spec":{}}',
    b"[" * 100_000,
    b'{"metadata":{"name":"\xff\xfe"}}',
])
def test_json_go_would_refuse_is_400(devserver: DevServer, ns: str, body: bytes) -> None:
    code, _, status = send(devserver, "POST", LEASES.format(ns=ns), body)
    assert code == 400 and status["reason"] == "BadRequest"


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def test_protobuf_lease_as_typed_client_go_sends_it(devserver: DevServer, coord: CoordinationV1Api,
                                                     ns: str) -> None:
    """client-go's typed clients may send protobuf; kubectl does for ``create configmap``."""
    meta = _field(1, b"proto") + _field(11, _field(1, b"app") + _field(2, b"x"))
    renew = _field(1, 1714557942) + _field(2, 654321000)
    spec = _field(1, b"pod-a") + _field(2, 15) + _field(4, renew) + _field(5, 3)
    body = (b"k8s\x00" + _field(1, _field(1, b"coordination.k8s.io/v1") + _field(2, b"Lease"))
            + _field(2, _field(1, meta) + _field(2, spec)))
    headers = {"Content-Type": "application/vnd.kubernetes.protobuf",
               "Accept": "application/vnd.kubernetes.protobuf, application/json"}
    code, response_headers, created = send(devserver, "POST", LEASES.format(ns=ns), body, headers)
    assert code == 201 and response_headers["Content-Type"] == "application/json"
    lease = coord.read_namespaced_lease("proto", ns)
    assert lease.metadata.labels == {"app": "x"}
    assert (lease.spec.holder_identity, lease.spec.lease_duration_seconds,
            lease.spec.lease_transitions) == ("pod-a", 15, 3)
    assert created["spec"]["renewTime"] == "2024-05-01T10:05:42.654321Z"
    code, _, status = send(devserver, "POST", LEASES.format(ns=ns), body[:-3], headers)
    assert code == 400 and "unable to decode protobuf" in status["message"]
