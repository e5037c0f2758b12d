"""CRUD of Leases, ConfigMaps and Namespaces, and the Status bodies of failed writes, exactly as
kube-apiserver answers them (details, causes and messages included)."""

from __future__ import annotations

from typing import Any

import kubernetes

from shardlease.devserver import DevServer

from .conftest import Server, call

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"


def lease(name: str, holder: str = "pod-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, **spec}}


def test_lease_crud(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    path = LEASES.format(ns=ns)
    code, created = call(api_client, "POST", path, lease("a", acquireTime="2024-05-01T10:00:00.123456Z"))
    assert code == 201
    meta = created["metadata"]
    assert (created["kind"], created["apiVersion"], meta["name"], meta["namespace"]) == (
        "Lease", "coordination.k8s.io/v1", "a", ns)
    assert meta["uid"] and meta["resourceVersion"].isdigit() and meta["creationTimestamp"].endswith("Z")
    assert "generation" not in meta
    assert created["spec"] == {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                               "acquireTime": "2024-05-01T10:00:00.123456Z"}
    assert call(api_client, "GET", f"{path}/a")[1] == created

    created["spec"]["holderIdentity"] = "pod-b"
    code, replaced = call(api_client, "PUT", f"{path}/a", created)
    assert code == 200 and replaced["spec"]["holderIdentity"] == "pod-b"
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    code, patched = call(api_client, "PATCH", f"{path}/a", {"spec": {"leaseTransitions": 2}},
                         "application/merge-patch+json")
    assert code == 200 and patched["spec"]["leaseTransitions"] == 2

    code, listed = call(api_client, "GET", path)
    assert code == 200 and listed["kind"] == "LeaseList" and [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    assert "kind" not in listed["items"][0]

    code, gone = call(api_client, "DELETE", f"{path}/a")
    assert (code, gone) == (200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": "a", "group": "coordination.k8s.io", "kind": "leases",
                                              "uid": meta["uid"]}})
    assert call(api_client, "GET", path)[1]["items"] == []


def test_put_creates_a_lease_but_not_a_configmap(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    assert call(api_client, "PUT", LEASES.format(ns=ns) + "/made", lease("made"))[0] == 201
    code, body = call(api_client, "PUT", CONFIGMAPS.format(ns=ns) + "/made",
                      {"metadata": {"name": "made"}, "data": {"k": "v"}})
    assert (code, body["reason"], body["message"]) == (404, "NotFound", 'configmaps "made" not found')


def test_a_put_naming_a_deleted_leases_uid_is_refused_not_a_create(api_client: kubernetes.client.ApiClient,
                                                                   ns: str) -> None:
    """The body of every write shardlease builds carries the uid it read. On a Lease deleted since (a
    retired shard's), kube-apiserver refuses it as a failed precondition instead of creating a new
    Lease, which is what keeps a replica that missed a reshard from taking a deleted shard back under
    its old generation (chaos seed 101 on the dev-server, before it did the same). Without a uid, a
    PUT creates, resourceVersion or not."""
    path = LEASES.format(ns=ns) + "/gone"
    _, created = call(api_client, "POST", LEASES.format(ns=ns), lease("gone"))
    assert call(api_client, "DELETE", path)[0] == 200
    code, body = call(api_client, "PUT", path, created)
    uid = created["metadata"]["uid"]
    assert (code, body) == (409, failure(
        409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io "gone": StorageError: '
                         f"invalid object, Code: 4, Key: /registry/leases/{ns}/gone, ResourceVersion: 0, "
                         f"AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: ",
        {"name": "gone", **LEASE_DETAILS}))
    without_uid = {**created, "metadata": {k: v for k, v in created["metadata"].items() if k != "uid"}}
    code, body = call(api_client, "PUT", path, without_uid)
    assert code == 201 and body["metadata"]["uid"] != uid


def test_configmap_crud_and_unconditional_put(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    path = CONFIGMAPS.format(ns=ns)
    code, created = call(api_client, "POST", path, {"metadata": {"name": "c"}, "data": {"b": "2", "a": "1"}})
    assert code == 201 and list(created["data"]) == ["a", "b"]  # Go writes map keys sorted
    code, replaced = call(api_client, "PUT", f"{path}/c", {"metadata": {"name": "c"}, "data": {"a": "3"}})
    assert code == 200 and replaced["data"] == {"a": "3"}  # a ConfigMap PUT needs no resourceVersion
    code, gone = call(api_client, "DELETE", f"{path}/c")
    assert code == 200 and gone["details"] == {"name": "c", "kind": "configmaps",
                                               "uid": created["metadata"]["uid"]}


def test_namespace_lifecycle(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    code, got = call(api_client, "GET", f"/api/v1/namespaces/{ns}")
    assert code == 200
    assert got["metadata"]["labels"] == {"kubernetes.io/metadata.name": ns}
    assert got["spec"] == {"finalizers": ["kubernetes"]} and got["status"] == {"phase": "Active"}
    names = [i["metadata"]["name"] for i in call(api_client, "GET", "/api/v1/namespaces")[1]["items"]]
    assert {"default", "kube-system", "kube-public", "kube-node-lease", ns} <= set(names)
    code, again = call(api_client, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    assert (code, again["reason"], again["details"]) == (409, "AlreadyExists", {"name": ns, "kind": "namespaces"})
    code, bad = call(api_client, "POST", "/api/v1/namespaces", {"metadata": {"name": "Bad_NS"}})
    assert (code, bad["reason"], bad["details"]["kind"], bad["details"]["causes"][0]["field"]) == (
        422, "Invalid", "Namespace", "metadata.name")
    assert "a lowercase RFC 1123 label must consist of" in bad["message"]
    code, protected = call(api_client, "DELETE", "/api/v1/namespaces/default")
    assert (code, protected["reason"]) == (403, "Forbidden")
    code, deleting = call(api_client, "DELETE", f"/api/v1/namespaces/{ns}")
    assert code == 200 and deleting["status"]["phase"] == "Terminating"
    assert deleting["metadata"]["deletionTimestamp"]


# --------------------------------------------------------------------------- Status bodies

def failure(code: int, reason: str | None, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message}
    if reason is not None:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


LEASE_DETAILS = {"group": "coordination.k8s.io", "kind": "leases"}


def test_not_found(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    code, body = call(api_client, "GET", LEASES.format(ns=ns) + "/missing")
    assert (code, body) == (404, failure(404, "NotFound", 'leases.coordination.k8s.io "missing" not found',
                                         {"name": "missing", **LEASE_DETAILS}))
    code, body = call(api_client, "GET", "/apis/coordination.k8s.io/v1/nosuchthing")
    assert (code, body) == (404, failure(404, "NotFound", "the server could not find the requested resource",
                                         {}))


def test_already_exists(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    call(api_client, "POST", LEASES.format(ns=ns), lease("a"))
    code, body = call(api_client, "POST", LEASES.format(ns=ns), lease("a"))
    assert (code, body) == (409, failure(409, "AlreadyExists", 'leases.coordination.k8s.io "a" already exists',
                                         {"name": "a", **LEASE_DETAILS}))


def test_conflict_on_stale_resource_version(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    _, created = call(api_client, "POST", LEASES.format(ns=ns), lease("a"))
    call(api_client, "PATCH", LEASES.format(ns=ns) + "/a", {"spec": {"holderIdentity": "other"}},
         "application/merge-patch+json")
    code, body = call(api_client, "PUT", LEASES.format(ns=ns) + "/a", created)
    assert (code, body) == (409, failure(
        409, "Conflict", 'Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been '
                         "modified; please apply your changes to the latest version and try again",
        {"name": "a", **LEASE_DETAILS}))


def test_invalid_lists_every_cause(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    code, body = call(api_client, "POST", LEASES.format(ns=ns),
                      lease("a", leaseDurationSeconds=0, leaseTransitions=-1))
    assert code == 422 and body["reason"] == "Invalid"
    assert {k: body["details"][k] for k in ("name", "group", "kind")} == {
        "name": "a", "group": "coordination.k8s.io", "kind": "Lease"}
    assert [(c["reason"], c["field"]) for c in body["details"]["causes"]] == [
        ("FieldValueInvalid", "spec.leaseDurationSeconds"), ("FieldValueInvalid", "spec.leaseTransitions")]
    assert body["message"].startswith('Lease.coordination.k8s.io "a" is invalid: [spec.leaseDurationSeconds: '
                                      "Invalid value: 0: must be greater than 0")


def test_update_without_resource_version(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    call(api_client, "POST", LEASES.format(ns=ns), lease("a"))
    code, body = call(api_client, "PUT", LEASES.format(ns=ns) + "/a", lease("a", holder="b"))
    assert (code, body["reason"], body["details"]["kind"]) == (422, "Invalid", "leases")
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "metadata.resourceVersion",
                                          "message": "Invalid value: 0: must be specified for an update"}]


def test_missing_namespace_is_not_found(server: Server, api_client: kubernetes.client.ApiClient,
                                        tmp_path: Any) -> None:
    """kube-apiserver refuses objects in a namespace that does not exist. The dev-server does too
    with ``strict_namespaces=True``; by default it creates the namespace (docs/fidelity.md)."""
    expected = failure(404, "NotFound", 'namespaces "nowhere" not found', {"name": "nowhere", "kind": "namespaces"})
    if server.is_real:
        client = api_client
        answers = [call(client, "POST", LEASES.format(ns="nowhere"), lease("a")),
                   call(client, "PUT", LEASES.format(ns="nowhere") + "/a", lease("a"))]
    else:
        with DevServer(strict_namespaces=True) as strict:
            config = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(str(strict.write_kubeconfig(tmp_path / "k")),
                                               client_configuration=config)
            with kubernetes.client.ApiClient(config) as client:
                answers = [call(client, "POST", LEASES.format(ns="nowhere"), lease("a")),
                           call(client, "PUT", LEASES.format(ns="nowhere") + "/a", lease("a"))]
    assert answers == [(404, expected), (404, expected)]


def test_unsupported_field_selector(api_client: kubernetes.client.ApiClient, ns: str) -> None:
    code, body = call(api_client, "GET", LEASES.format(ns=ns), query=[("fieldSelector", "spec.holderIdentity=x")])
    assert (code, body["reason"]) == (400, "BadRequest")
    assert '"spec.holderIdentity" is not a known field selector' in body["message"]
