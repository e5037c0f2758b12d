"""SelfSubjectAccessReview and SelfSubjectReview on both servers: what ``kubectl auth can-i`` and
``kubectl auth whoami`` send, and what they get back, must be the same (the dev-server answers as the
admin it is; the real server's kubeconfig user is an admin too)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from .conftest import Server, call, kubectl_binary

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
ADMIN = {"username": "shardlease-admin", "uid": "shardlease-admin",
         "groups": ["system:masters", "system:authenticated"]}


def review(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}


def test_access_review_of_a_resource_is_allowed_and_echoed(api_client: kubernetes.client.ApiClient) -> None:
    # Keys out of Go's order: the answer puts them back in it.
    spec = {"resourceAttributes": {"resource": "leases", "verb": "create", "group": "coordination.k8s.io",
                                   "namespace": "default"}}
    code, body = call(api_client, "POST", SSAR, review(spec))
    assert code == 201, body
    assert list(body) == ["kind", "apiVersion", "metadata", "spec", "status"]
    assert list(body["spec"]["resourceAttributes"]) == ["namespace", "verb", "group", "resource"]
    assert body["status"] == {"allowed": True}
    [entry] = body["metadata"]["managedFields"]
    # The field manager is the User-Agent up to its first "/" (urllib3's own, as `call` sends none).
    assert (entry["manager"], entry["operation"], entry["apiVersion"], entry["fieldsType"]) == (
        "python-urllib3", "Update", "authorization.k8s.io/v1", "FieldsV1")
    assert entry["fieldsV1"] == {"f:spec": {"f:resourceAttributes": {
        ".": {}, "f:group": {}, "f:namespace": {}, "f:resource": {}, "f:verb": {}}}}
    assert set(body["metadata"]) == {"managedFields"}  # no name, uid or creationTimestamp: nothing stored


def test_access_review_of_a_path_is_allowed(api_client: kubernetes.client.ApiClient) -> None:
    code, body = call(api_client, "POST", SSAR, review({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}}))
    assert code == 201, body
    assert body["spec"] == {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}
    assert body["status"] == {"allowed": True}


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({}, "spec.resourceAttributes",
     "Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified"),
    ({"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/x", "verb": "get"}},
     "spec.nonResourceAttributes",
     'Invalid value: {"Path":"/x","Verb":"get"}: cannot be specified in combination with resourceAttributes'),
])
def test_access_review_needs_exactly_one_kind_of_attributes(api_client: kubernetes.client.ApiClient,
                                                            spec: dict[str, Any], field: str, message: str) -> None:
    code, body = call(api_client, "POST", SSAR, review(spec))
    assert code == 422
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f'.authorization.k8s.io "" is invalid: {field}: {message}', "reason": "Invalid",
                    "details": {"group": "authorization.k8s.io",
                                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]},
                    "code": 422}


def test_access_review_with_metadata_is_refused(api_client: kubernetes.client.ApiClient) -> None:
    body_in = review({"resourceAttributes": {"verb": "get"}})
    body_in["metadata"] = {"name": "x"}
    code, body = call(api_client, "POST", SSAR, body_in)
    assert code == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('.authorization.k8s.io "" is invalid: metadata: Invalid value: {"name":"x",')
    assert body["message"].endswith(": must be empty") and body["details"]["causes"][0]["field"] == "metadata"


def test_self_subject_review_names_the_admin(api_client: kubernetes.client.ApiClient) -> None:
    code, body = call(api_client, "POST", SSR, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert code == 201, body
    assert list(body) == ["kind", "apiVersion", "metadata", "status"]
    assert list(body["metadata"]) == ["creationTimestamp"]
    assert body["status"] == {"userInfo": ADMIN}


@pytest.mark.parametrize("path", [SSAR, SSR])
def test_reviews_are_create_only(api_client: kubernetes.client.ApiClient, path: str) -> None:
    code, body = call(api_client, "GET", path)
    assert code == 405
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server does not allow this method on the requested resource",
                    "reason": "MethodNotAllowed", "details": {}, "code": 405}


def test_discovery_lists_the_review_types(api_client: kubernetes.client.ApiClient) -> None:
    code, groups = call(api_client, "GET", "/apis")
    assert code == 200
    names = [group["name"] for group in groups["groups"]]
    assert names.index("authentication.k8s.io") < names.index("authorization.k8s.io") < names.index(
        "coordination.k8s.io")
    for group, plural, kind in (("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
                                ("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview")):
        code, listed = call(api_client, "GET", f"/apis/{group}")
        assert code == 200 and listed["preferredVersion"] == {"groupVersion": f"{group}/v1", "version": "v1"}
        code, resources = call(api_client, "GET", f"/apis/{group}/v1")
        assert code == 200
        entry = next(r for r in resources["resources"] if r["name"] == plural)
        assert entry == {"name": plural, "singularName": plural[:-1], "namespaced": False, "kind": kind,
                         "verbs": ["create"]}


@pytest.mark.parametrize("version", ["1.28", "1.33"])
def test_kubectl_auth_can_i_and_whoami(server: Server, version: str, tmp_path: Path) -> None:
    """kubectl 1.28 sends both reviews as JSON, 1.33 as protobuf; both servers answer either."""
    env = dict(os.environ, KUBECONFIG=server.kubeconfig, HOME=str(tmp_path))

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(version), "--cache-dir", str(tmp_path / "cache"), *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    for args in (("create", "leases"), ("create", "leases", "--subresource", "status", "-n", "kube-system"),
                 ("get", "/healthz")):
        done = kubectl("auth", "can-i", *args)
        assert (done.returncode, done.stdout.strip()) == (0, "yes"), done.stderr
    done = kubectl("auth", "whoami")
    assert done.returncode == 0, done.stderr
    assert [line.split(None, 1) for line in done.stdout.strip().splitlines()] == [
        ["ATTRIBUTE", "VALUE"], ["Username", "shardlease-admin"], ["UID", "shardlease-admin"],
        ["Groups", "[system:masters system:authenticated]"]]
