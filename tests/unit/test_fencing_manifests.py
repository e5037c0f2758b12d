"""The admission policies that fence a group's writes: what `shardlease fencing install` would create.

The rules themselves are proven on kube-apiserver (tests/controlplane/test_fencing_real.py); here, the
shape a GitOps user reviews and the inputs refused with a message naming the flag."""

from __future__ import annotations

import pytest

from shardlease.core import fencing
from shardlease.errors import InvalidArgument


def test_one_policy_a_guard_and_one_binding_per_shard_naming_its_lease() -> None:
    t = fencing.target("cm", "team-a", "apps/v1/deployments", objects_namespace="prod")
    everything = fencing.manifests(t, 3)
    assert everything[:2] == fencing.anchor_manifests()
    guard, guard_binding, policy, *per_shard = everything[2:]
    assert [m["kind"] for m in (guard, guard_binding, policy)] == [
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"]
    assert policy["spec"]["paramKind"] == {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
    rule = policy["spec"]["matchConstraints"]["resourceRules"][0]
    assert (rule["apiGroups"], rule["apiVersions"], rule["resources"]) == (["apps"], ["v1"], ["deployments"])
    assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert len(per_shard) == 3
    for shard, binding in enumerate(per_shard):
        spec = binding["spec"]
        assert spec["policyName"] == policy["metadata"]["name"]
        assert spec["paramRef"] == {"name": f"cm-shard-{shard}", "namespace": "team-a", "parameterNotFoundAction": "Deny"}
        assert spec["matchResources"]["objectSelector"] == {"matchLabels": {
            fencing.LABEL_FENCED_GROUP: "cm", fencing.LABEL_FENCED_SHARD: str(shard)}}
        assert spec["matchResources"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "prod"}}
    for m in everything[2:]:
        assert m["metadata"]["labels"][fencing.LABEL_FENCING_GROUP] == "cm"
    assert "'0', '1', '2'" in guard["spec"]["validations"][0]["expression"]


def test_shards_are_split_over_policies_of_a_fixed_size() -> None:
    """kube-apiserver matches a request against every policy, then against the bindings of the policies
    that matched: a policy per 32 shards keeps that to S/32 + 32 selector matches, and a shard's policy
    the same whatever the count."""
    t = fencing.target("cm", "default", "v1/configmaps")
    out = fencing.manifests(t, 70)
    policies = [m for m in out[4:] if m["kind"] == "ValidatingAdmissionPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [fencing.policy_name(t, b) for b in range(3)]
    selected = [p["spec"]["matchConstraints"]["objectSelector"]["matchExpressions"][0]["values"] for p in policies]
    assert selected == [[str(i) for i in range(0, 32)], [str(i) for i in range(32, 64)], ["64", "65", "66", "67", "68", "69"]]
    by_policy = {}
    for m in out[4:]:
        if m["kind"] == "ValidatingAdmissionPolicyBinding":
            by_policy.setdefault(m["spec"]["policyName"], []).append(m["spec"]["paramRef"]["name"])
    assert by_policy[fencing.policy_name(t, 1)] == [f"cm-shard-{i}" for i in range(32, 64)]
    assert fencing.manifests(t, 40)[4] == fencing.manifests(t, 1000)[4]  # bucket 0 does not depend on the count


def test_core_group_resource_and_all_namespaces() -> None:
    t = fencing.target("cm", "default", "v1/configmaps")
    binding = fencing.manifests(t, 1)[-1]
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    assert "namespaceSelector" not in binding["spec"]["matchResources"]
    assert fencing.manifests(t, 1)[4]["spec"]["matchConstraints"]["resourceRules"][0]["apiGroups"] == [""]


@pytest.mark.parametrize(("resource", "words"), [
    ("configmaps", "[GROUP/]VERSION/RESOURCE"),
    ("v1/ConfigMaps", "lower-case plural"),
    ("1/configmaps", "like v1"),
    ("Apps/v1/deployments", "DNS name"),
    ("a/b/c/d", "[GROUP/]VERSION/RESOURCE"),
])
def test_bad_resource_names_the_flag_and_the_form(resource: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match="--resource") as info:
        fencing.target("cm", "default", resource)
    assert words in str(info.value)


def test_bad_group_namespace_and_count_name_their_flag() -> None:
    with pytest.raises(InvalidArgument, match="--group"):
        fencing.target("Bad_Group", "default", "v1/configmaps")
    with pytest.raises(InvalidArgument, match="--namespace"):
        fencing.target("cm", "Default", "v1/configmaps")
    with pytest.raises(InvalidArgument, match="--objects-namespace"):
        fencing.target("cm", "default", "v1/configmaps", objects_namespace="a b")
    with pytest.raises(InvalidArgument, match="--shards"):
        fencing.manifests(fencing.target("cm", "default", "v1/configmaps"), 0)
    with pytest.raises(InvalidArgument, match="own shard Leases"):
        fencing.target("cm", "default", "coordination.k8s.io/v1/leases")


def test_fence_round_trip() -> None:
    assert fencing.parse_fence(fencing.format_fence("cm", 5, 2, 1 << 40)) == ("cm", 5, 2, 1 << 40)
    assert fencing.parse_fence("cm/5/2") is None
    assert fencing.parse_fence("cm/x/2/3") is None


def test_shard_stamp_sets_the_fence_and_labels_on_dicts_and_models() -> None:
    from kubernetes.client import V1ConfigMap, V1ObjectMeta

    from shardlease import Shard

    shard = Shard(5, 16, (1_700_000_000_000 << 20) + 3, group="cm", generation=2)
    body: dict[str, object] = {"data": {"k": "v"}}
    assert shard.stamp(body) is body
    meta = body["metadata"]
    assert isinstance(meta, dict)
    write_id = meta["annotations"].pop(fencing.ANNOTATION_FENCE_WRITE)
    assert meta == {
        "labels": {fencing.LABEL_FENCED_GROUP: "cm", fencing.LABEL_FENCED_SHARD: "5"},
        "annotations": {fencing.ANNOTATION_FENCE: f"cm/5/2/{(1_700_000_000_000 << 20) + 3}"}}
    assert shard.stamp(body)["metadata"]["annotations"][fencing.ANNOTATION_FENCE_WRITE] != write_id  # new per write
    model = V1ConfigMap(metadata=V1ObjectMeta(name="x", labels={"app": "a"}, annotations={"keep": "1"}))
    shard.stamp(model)
    assert model.metadata.labels == {"app": "a", fencing.LABEL_FENCED_GROUP: "cm", fencing.LABEL_FENCED_SHARD: "5"}
    assert model.metadata.annotations["keep"] == "1"
    assert model.metadata.annotations[fencing.ANNOTATION_FENCE] == shard.fence_annotation
    assert fencing.parse_fence(shard.fence_annotation) == ("cm", 5, 2, (1_700_000_000_000 << 20) + 3)
    with pytest.raises(InvalidArgument, match="shard.stamp"):
        shard.stamp(object())
