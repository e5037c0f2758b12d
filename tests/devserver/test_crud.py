"""Lease and ConfigMap verbs through the official client: success paths, conflicts and errors,
with the exact Status bodies kube-apiserver writes."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException, CoordinationV1Api, CoreV1Api, V1DeleteOptions, V1Preconditions

from .helpers import lease_body, status_of


def raw(call, *args, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    """Call a client method and return the JSON body as a dict (no model conversion)."""
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


def test_create_sets_server_metadata(coord: CoordinationV1Api, ns: str) -> None:
    body = lease_body("a", renewTime="2024-01-01T00:00:00.123456Z")
    body["metadata"].update(uid="client-uid", creationTimestamp="2000-01-01T00:00:00Z")
    created = raw(coord.create_namespaced_lease, ns, body)
    meta = created["metadata"]
    assert created["kind"] == "Lease" and created["apiVersion"] == "coordination.k8s.io/v1"
    assert meta["namespace"] == ns
    assert meta["uid"] != "client-uid" and len(meta["uid"]) == 36
    assert meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert meta["resourceVersion"].isdigit()
    assert "generation" not in meta
    assert created["spec"] == {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                               "renewTime": "2024-01-01T00:00:00.123456Z"}
    got = raw(coord.read_namespaced_lease, "a", ns)
    assert got == created


def test_resource_versions_increase_across_resources(coord: CoordinationV1Api, core: CoreV1Api,
                                                     ns: str) -> None:
    first = coord.create_namespaced_lease(ns, lease_body("a"))
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    second = coord.create_namespaced_lease(ns, lease_body("b"))
    rvs = [int(first.metadata.resource_version), int(cm.metadata.resource_version),
           int(second.metadata.resource_version)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_empty_holder_is_kept_distinct_from_absent(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("released", holder=""))
    coord.create_namespaced_lease(ns, {"metadata": {"name": "bare"}, "spec": {}})
    assert raw(coord.read_namespaced_lease, "released", ns)["spec"]["holderIdentity"] == ""
    assert "holderIdentity" not in raw(coord.read_namespaced_lease, "bare", ns)["spec"]


def test_microtime_with_offset_is_normalised_to_utc(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns,
                  lease_body("a", acquireTime="2024-01-01T02:00:00.000001+02:00"))
    assert created["spec"]["acquireTime"] == "2024-01-01T00:00:00.000001Z"


def test_create_existing_is_409_already_exists(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("a"))
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'leases.coordination.k8s.io "a" already exists', "reason": "AlreadyExists",
        "details": {"name": "a", "group": "coordination.k8s.io", "kind": "leases"}, "code": 409}


def test_missing_is_404_with_status(coord: CoordinationV1Api, core: CoreV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.read_namespaced_lease("nope", ns)
    status = status_of(err.value)
    assert status["reason"] == "NotFound"
    assert status["message"] == 'leases.coordination.k8s.io "nope" not found'
    assert status["details"] == {"name": "nope", "group": "coordination.k8s.io", "kind": "leases"}
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("nope", ns)
    assert status_of(err.value)["message"] == 'configmaps "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "kind": "configmaps"}


def test_create_with_resource_version_is_500(coord: CoordinationV1Api, ns: str) -> None:
    body = lease_body("a")
    body["metadata"]["resourceVersion"] = "5"
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, body)
    status = status_of(err.value)
    assert err.value.status == 500 and "reason" not in status
    assert status["message"] == "resourceVersion should not be set on objects to be created"


def test_namespace_mismatch_is_400(coord: CoordinationV1Api, ns: str) -> None:
    body = lease_body("a")
    body["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, body)
    assert status_of(err.value)["message"] == (
        "the namespace of the provided object does not match the namespace sent on the request")


def test_invalid_namespace_is_404(coord: CoordinationV1Api) -> None:
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("Bad_NS", lease_body("a"))
    assert status_of(err.value)["message"] == 'namespaces "Bad_NS" not found'


def test_generate_name(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, {"metadata": {"generateName": "auto-"}, "spec": {}})
    assert created.metadata.name.startswith("auto-") and len(created.metadata.name) == 10


# ------------------------------------------------------------------ validation (422)

def test_invalid_lease_lists_every_cause(coord: CoordinationV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("a", leaseDurationSeconds=0, leaseTransitions=-1))
    status = status_of(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        'Lease.coordination.k8s.io "a" is invalid: [spec.leaseDurationSeconds: Invalid value: 0: must '
        'be greater than 0, spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0]')
    assert status["details"] == {
        "name": "a", "group": "coordination.k8s.io", "kind": "Lease",
        "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: 0: must be greater than 0",
             "field": "spec.leaseDurationSeconds"},
            {"reason": "FieldValueInvalid",
             "message": "Invalid value: -1: must be greater than or equal to 0",
             "field": "spec.leaseTransitions"}]}


def test_invalid_names(coord: CoordinationV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("Bad_Name"))
    message = status_of(err.value)["message"]
    assert message.startswith('Lease.coordination.k8s.io "Bad_Name" is invalid: metadata.name: '
                              'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist')
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("x" * 254))
    assert "must be no more than 253 characters" in status_of(err.value)["message"]
    coord.create_namespaced_lease(ns, lease_body("a." + "b" * 250))  # 253 is fine
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, {"metadata": {}, "spec": {}})
    status = status_of(err.value)
    assert status["details"]["causes"] == [{
        "reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
        "field": "metadata.name"}]


@pytest.mark.parametrize("labels", [{"bad key": "v"}, {"k": "bad value"}, {"k": "x" * 64},
                                    {"/k": "v"}, {"Bad_Prefix/k": "v"}])
def test_invalid_labels_are_422(coord: CoordinationV1Api, ns: str, labels: dict[str, str]) -> None:
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease(ns, lease_body("a", labels=labels))
    status = status_of(err.value)
    assert err.value.status == 422
    assert status["details"]["causes"][0]["field"] == "metadata.labels"


def test_coordinated_election_fields_are_dropped(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns,
                  lease_body("a", strategy="OldestEmulationVersion", preferredHolder="b"))
    assert "strategy" not in created["spec"] and "preferredHolder" not in created["spec"]


# ------------------------------------------------------------------ update (PUT)

def test_update_bumps_rv_and_keeps_creation_metadata(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns, lease_body("a"))
    created["spec"]["holderIdentity"] = "pod-b"
    created["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    updated = raw(coord.replace_namespaced_lease, "a", ns, created)
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert updated["metadata"]["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["spec"]["holderIdentity"] == "pod-b"


def test_identical_update_writes_nothing(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns, lease_body("a"))
    again = raw(coord.replace_namespaced_lease, "a", ns, created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_stale_update_is_409_conflict(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns, lease_body("a"))
    coord.replace_namespaced_lease("a", ns, dict(created, spec={"holderIdentity": "b"}))
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("a", ns, dict(created, spec={"holderIdentity": "c"}))
    status = status_of(err.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been '
        'modified; please apply your changes to the latest version and try again')
    assert status["details"] == {"name": "a", "group": "coordination.k8s.io", "kind": "leases"}


def test_update_without_rv_is_422_for_leases(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("a", ns, lease_body("a", holder="b"))
    status = status_of(err.value)
    assert err.value.status == 422
    assert status["message"] == ('leases.coordination.k8s.io "a" is invalid: metadata.resourceVersion: '
                                 'Invalid value: 0: must be specified for an update')
    assert status["details"]["kind"] == "leases"


def test_update_of_missing_lease_creates_it(coord: CoordinationV1Api, ns: str) -> None:
    body = lease_body("fresh")
    body["metadata"]["resourceVersion"] = "12345"
    response = coord.replace_namespaced_lease_with_http_info("fresh", ns, body)
    assert response[1] == 201
    assert response[0].metadata.uid


def test_update_name_mismatch_is_400(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns, lease_body("a"))
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("b", ns, created)
    assert status_of(err.value)["message"] == (
        "the name of the object (a) does not match the name on the URL (b)")


def test_update_with_other_uid_is_409(coord: CoordinationV1Api, ns: str) -> None:
    created = raw(coord.create_namespaced_lease, ns, lease_body("a"))
    created["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("a", ns, created)
    assert err.value.status == 409
    assert "Precondition failed: UID in precondition" in status_of(err.value)["message"]


def test_configmap_update_without_rv_is_unconditional(core: CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    updated = core.replace_namespaced_config_map("c", ns, {"metadata": {"name": "c"}, "data": {"k": "2"}})
    assert updated.data == {"k": "2"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("missing", ns, {"metadata": {"name": "missing"}})
    assert err.value.status == 404


def test_immutable_configmap(core: CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "1"}, "immutable": True})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", ns, {"data": {"k": "2"}})
    assert err.value.status == 422
    assert "field is immutable when `immutable` is set" in status_of(err.value)["message"]


def test_configmap_key_validation(core: CoreV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"bad key": "v"}})
    assert status_of(err.value)["details"]["causes"][0]["field"] == "data[bad key]"


# ------------------------------------------------------------------ patch

def test_merge_patch(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a", labels={"keep": "1", "drop": "1"}))
    patched = raw(coord.patch_namespaced_lease, "a", ns,
                  {"metadata": {"labels": {"drop": None, "new": "2"}}, "spec": {"holderIdentity": "b"}})
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "2"}
    assert patched["spec"]["holderIdentity"] == "b"
    assert patched["spec"]["leaseDurationSeconds"] == 15


def test_conditional_merge_patch(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    rv = created.metadata.resource_version
    coord.patch_namespaced_lease("a", ns, {"metadata": {"resourceVersion": rv},
                                           "spec": {"holderIdentity": "b"}})
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("a", ns, {"metadata": {"resourceVersion": rv},
                                               "spec": {"holderIdentity": "c"}})
    assert status_of(err.value)["reason"] == "Conflict"


def test_json_patch_with_test_op(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    patched = coord.patch_namespaced_lease("a", ns, [
        {"op": "test", "path": "/spec/holderIdentity", "value": "pod-a"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "pod-b"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}}])
    assert patched.spec.holder_identity == "pod-b"
    assert patched.metadata.annotations == {"a/b": "c"}
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("a", ns, [
            {"op": "test", "path": "/spec/holderIdentity", "value": "pod-a"},
            {"op": "replace", "path": "/spec/holderIdentity", "value": "pod-c"}])
    status = status_of(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"] == "the server rejected our request due to an error in our request"
    assert coord.read_namespaced_lease("a", ns).spec.holder_identity == "pod-b"


def test_strategic_merge_patch_acts_as_merge(coord: CoordinationV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("a"))
    patched = coord.patch_namespaced_lease("a", ns, {"spec": {"leaseTransitions": 4}},
                                           _content_type="application/strategic-merge-patch+json")
    assert patched.spec.lease_transitions == 4 and patched.spec.holder_identity == "pod-a"


def test_patch_missing_is_404_and_invalid_patch_is_422(coord: CoordinationV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("nope", ns, {"spec": {}})
    assert err.value.status == 404
    coord.create_namespaced_lease(ns, lease_body("a"))
    with pytest.raises(ApiException) as err:
        coord.patch_namespaced_lease("a", ns, {"spec": {"leaseDurationSeconds": -3}})
    assert err.value.status == 422


# ------------------------------------------------------------------ delete

def test_delete_returns_success_status(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    result = raw(coord.delete_namespaced_lease, "a", ns)
    assert result == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": {"name": "a", "group": "coordination.k8s.io", "kind": "leases",
                                  "uid": created.metadata.uid}}
    with pytest.raises(ApiException) as err:
        coord.delete_namespaced_lease("a", ns)
    assert err.value.status == 404


def test_delete_preconditions(coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(ns, lease_body("a"))
    stale = V1DeleteOptions(preconditions=V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as err:
        coord.delete_namespaced_lease("a", ns, body=stale)
    assert err.value.status == 409
    assert status_of(err.value)["message"].endswith(
        "Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: "
        f"{created.metadata.resource_version}")
    with pytest.raises(ApiException) as err:
        coord.delete_namespaced_lease("a", ns, body=V1DeleteOptions(
            preconditions=V1Preconditions(uid="not-the-uid")))
    assert err.value.status == 409
    coord.delete_namespaced_lease("a", ns, body=V1DeleteOptions(preconditions=V1Preconditions(
        uid=created.metadata.uid, resource_version=created.metadata.resource_version)))
    assert coord.list_namespaced_lease(ns).items == []


def test_delete_collection_with_selector(coord: CoordinationV1Api, core: CoreV1Api, ns: str) -> None:
    for i in range(4):
        coord.create_namespaced_lease(ns, lease_body(f"l{i}", labels={"odd": str(i % 2)}))
    deleted = raw(coord.delete_collection_namespaced_lease, ns, label_selector="odd=1")
    assert deleted["kind"] == "LeaseList"
    assert sorted(i["metadata"]["name"] for i in deleted["items"]) == ["l1", "l3"]
    assert [l.metadata.name for l in coord.list_namespaced_lease(ns).items] == ["l0", "l2"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    core.delete_collection_namespaced_config_map(ns)
    assert core.list_namespaced_config_map(ns).items == []


def test_dry_run_changes_nothing(coord: CoordinationV1Api, ns: str) -> None:
    dry = coord.create_namespaced_lease(ns, lease_body("a"), dry_run="All")
    assert dry.metadata.name == "a"
    assert coord.list_namespaced_lease(ns).items == []
    coord.create_namespaced_lease(ns, lease_body("a"))
    coord.delete_namespaced_lease("a", ns, dry_run="All")
    assert coord.read_namespaced_lease("a", ns).metadata.name == "a"
