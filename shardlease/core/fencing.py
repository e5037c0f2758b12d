"""Fencing the API server enforces: the ValidatingAdmissionPolicy objects that make kube-apiserver
refuse a deposed holder's write to a sharded object (docs/fencing.md). Pure: inputs in, manifests
(plain dicts) out; :mod:`shardlease.client.fencing` installs them.

A writer stamps an object with its shard's fence (``Shard.stamp``): the annotation
``shardlease.io/fence: <group>/<shard>/<generation>/<token>`` and the labels ``shardlease.io/fenced-group``
and ``shardlease.io/fenced-shard``. What gets installed for one group and one resource:

* one policy per 32 shards (:data:`BUCKET`), ``<name>-b<k>``, whose parameter is a shard Lease and
  which matches only objects stamped with one of its shards. Its rules refuse a fenced write whose
  (generation, token) is below that Lease's (generation, ``epoch * 2**20 + leaseTransitions``), an
  update whose fence goes below the fence the object already carries, and a delete of an object whose
  stored fence is below its Lease's (so a holder deletes by stamping first, then deleting with the
  stamped ``resourceVersion`` as a precondition).
* one binding per shard, ``<name>-<shard>``, selecting the objects labelled with that shard and naming
  that shard's Lease as the parameter. Measured on kube-apiserver 1.36.3, this keeps one rule evaluation
  per write whatever the shard count, where one binding selecting every shard Lease evaluates the rule
  once per Lease (docs/fencing.md has the figures). A missing Lease denies (``Deny``): fail closed.
* the anchor (:func:`anchor_manifests`), shared by every installation and never uninstalled: it works
  around a kube-apiserver bug that would otherwise disable every Lease-parameter policy of the cluster
  after the last one is removed;
* a guard policy without parameters, ``<name>-unbound``, with its one binding: it refuses a fenced write
  stamped with a shard that has no binding (the group grew past the count installed), naming the
  command that fixes it, rather than letting that write through unchecked.

Labels are used, not only the annotation, because a binding can select objects by label but not by
annotation; labels named apart from the Lease labels (``shardlease.io/group``) so a Lease that is itself
fenced is never confused with a shard Lease.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shardlease.core.records import (
    ANNOTATION_EPOCH,
    ANNOTATION_GENERATION,
    LABEL_GROUP,
    LABEL_SHARD,
    TOKEN_EPOCH_SHIFT,
    shard_lease_name,
)
from shardlease.errors import InvalidArgument

__all__ = [
    "ANNOTATION_FENCE",
    "ANNOTATION_FENCE_WRITE",
    "LABEL_FENCED_GROUP",
    "LABEL_FENCED_SHARD",
    "LABEL_FENCING_GROUP",
    "LABEL_FENCING_NAMESPACE",
    "LABEL_FENCING_RESOURCE",
    "LABEL_FENCING_SHARD",
    "LABEL_FENCING_BUCKET",
    "BUCKET",
    "ADMISSION_API_VERSION",
    "ANCHOR_NAME",
    "FencingTarget",
    "anchor_manifests",
    "binding_name",
    "format_fence",
    "manifests",
    "parse_fence",
    "parse_resource",
    "policy_name",
    "target",
]

#: On a fenced object: the fence of the shard holder that wrote it, ``<group>/<shard>/<generation>/<token>``.
ANNOTATION_FENCE = "shardlease.io/fence"
#: On a fenced object: a random id of the write that stamped it. A write that carries the stored fence
#: and id unchanged is another client's edit of the object, not a holder's write, and is not checked.
ANNOTATION_FENCE_WRITE = "shardlease.io/fence-write"
#: On a fenced object: the group and shard whose fence it carries (what the bindings select on).
LABEL_FENCED_GROUP = "shardlease.io/fenced-group"
LABEL_FENCED_SHARD = "shardlease.io/fenced-shard"
#: On the policies and bindings we install: what they fence, so ``uninstall`` finds exactly them.
LABEL_FENCING_GROUP = "fencing.shardlease.io/group"
LABEL_FENCING_NAMESPACE = "fencing.shardlease.io/namespace"
LABEL_FENCING_RESOURCE = "fencing.shardlease.io/resource"
LABEL_FENCING_SHARD = "fencing.shardlease.io/shard"
LABEL_FENCING_BUCKET = "fencing.shardlease.io/bucket"
#: Shards per policy. kube-apiserver matches every binding of a policy whose own selector matched the
#: request, and every policy of the resource: with ``S`` shards a write costs ``S / BUCKET`` policy
#: matches plus ``BUCKET`` binding matches (measured about 10 us of API server CPU each) instead of
#: ``S`` binding matches. A fixed size keeps a shard's policy the same whatever the count.
BUCKET = 32
ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION = re.compile(r"^v[0-9]+((alpha|beta)[0-9]+)?$")
_FENCE = re.compile(r"^([^/]+)/([0-9]+)/([0-9]+)/([0-9]+)$")


def format_fence(group: str, shard: int, generation: int, token: int) -> str:
    """The fence annotation's value for a holder of ``shard`` with fence ``(generation, token)``."""
    return f"{group}/{shard}/{generation}/{token}"


def parse_fence(value: str) -> tuple[str, int, int, int] | None:
    """``(group, shard, generation, token)`` from a fence annotation; ``None`` if it is not one."""
    match = _FENCE.match(value)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))


@dataclass(frozen=True)
class FencingTarget:
    """What one installation fences: the writes of ``group`` (whose Leases live in ``namespace``) to
    ``resource`` of ``api_group``/``version``, in ``objects_namespace`` only or everywhere (``None``)."""

    group: str
    namespace: str
    api_group: str
    version: str
    resource: str
    objects_namespace: str | None = None

    @property
    def resource_id(self) -> str:
        """``resource`` or ``resource.apigroup``: how kubectl names it, and a valid label value."""
        return f"{self.resource}.{self.api_group}" if self.api_group else self.resource

    @property
    def policy_name(self) -> str:
        return f"shardlease-fence.{self.namespace}.{self.group}.{self.resource_id}"

    def selector(self) -> str:
        """The label selector of every policy and binding of this target (what ``uninstall`` deletes)."""
        return ",".join(f"{k}={v}" for k, v in self._labels().items())

    def _labels(self) -> dict[str, str]:
        return {LABEL_FENCING_GROUP: self.group, LABEL_FENCING_NAMESPACE: self.namespace,
                LABEL_FENCING_RESOURCE: self.resource_id}


def parse_resource(value: str) -> tuple[str, str, str]:
    """``[GROUP/]VERSION/RESOURCE`` -> ``(api_group, version, resource)``; ``api_group`` is ``""`` for the
    core group (``v1/configmaps``). Raises :class:`InvalidArgument` naming ``--resource`` and the form."""
    parts = value.split("/")
    form = ("--resource must be [GROUP/]VERSION/RESOURCE with the plural resource name, e.g. v1/configmaps or "
            f"apps/v1/deployments; got {value!r}")
    if len(parts) == 2:
        api_group, version, resource = "", parts[0], parts[1]
    elif len(parts) == 3:
        api_group, version, resource = parts
        if not _DNS_SUBDOMAIN.match(api_group):
            raise InvalidArgument(f"{form} (the group {api_group!r} is not a DNS name)")
    else:
        raise InvalidArgument(form)
    if not _VERSION.match(version):
        raise InvalidArgument(f"{form} (the version {version!r} is not like v1 or v1beta1)")
    if not _DNS_LABEL.match(resource):
        raise InvalidArgument(f"{form} (the resource {resource!r} must be a lower-case plural like configmaps)")
    return api_group, version, resource


def target(group: str, namespace: str, resource: str, objects_namespace: str | None = None) -> FencingTarget:
    """A checked :class:`FencingTarget` from the command line's words."""
    if not group or len(group) > 63 or not _DNS_LABEL.match(group):
        raise InvalidArgument(f"--group must be a DNS label of at most 63 characters (lower-case letters, digits "
                              f"and '-'), as for `shardlease run`; got {group!r}")
    if not _DNS_LABEL.match(namespace):
        raise InvalidArgument(f"--namespace must be a namespace name (a DNS label); got {namespace!r}")
    if objects_namespace is not None and not _DNS_LABEL.match(objects_namespace):
        raise InvalidArgument(f"--objects-namespace must be a namespace name (a DNS label); got {objects_namespace!r}")
    api_group, version, plural = parse_resource(resource)
    if (api_group, plural) == ("coordination.k8s.io", "leases") and objects_namespace in (None, namespace):
        raise InvalidArgument("--resource coordination.k8s.io/v1/leases would fence the group's own shard Leases, "
                              "which the policy reads; pass --objects-namespace naming another namespace")
    return FencingTarget(group, namespace, api_group, version, plural, objects_namespace)


# --- the CEL -------------------------------------------------------------------------------------
# Variables are evaluated lazily and at most once per evaluation. ``fence``/``oldFence`` are the parts of
# the new and stored fence annotations (``[]`` when absent); a fence is "ours" when it names the group of
# the Lease given as the parameter.

def _fence_of(obj: str) -> str:
    return (f"{obj} != null && has({obj}.metadata.annotations) && '{ANNOTATION_FENCE}' in {obj}.metadata.annotations"
            f" ? {obj}.metadata.annotations['{ANNOTATION_FENCE}'].split('/') : []")


_VARIABLES: list[tuple[str, str]] = [
    ("group", f"params.metadata.labels['{LABEL_GROUP}']"),
    ("shard", f"params.metadata.labels['{LABEL_SHARD}']"),
    ("fence", _fence_of("object")),
    ("oldFence", _fence_of("oldObject")),
    ("ours", "size(variables.fence) > 0 && variables.fence[0] == variables.group"),
    ("oldOurs", "size(variables.oldFence) > 0 && variables.oldFence[0] == variables.group"),
    # An update that carries the stored stamp unchanged (fence and write id) is not a holder's write but
    # someone else's edit (kubectl edit, a user's read-modify-write): a holder's write is stamped anew.
    ("carried",
     "object != null && oldObject != null && has(object.metadata.annotations) && has(oldObject.metadata.annotations)"
     f" && '{ANNOTATION_FENCE_WRITE}' in object.metadata.annotations"
     f" && '{ANNOTATION_FENCE_WRITE}' in oldObject.metadata.annotations"
     f" && object.metadata.annotations['{ANNOTATION_FENCE_WRITE}'] == oldObject.metadata.annotations['{ANNOTATION_FENCE_WRITE}']"
     f" && '{ANNOTATION_FENCE}' in oldObject.metadata.annotations"
     f" && object.metadata.annotations['{ANNOTATION_FENCE}'] == oldObject.metadata.annotations['{ANNOTATION_FENCE}']"),
    ("stamped", "variables.ours && !variables.carried"),
    ("leaseGeneration",
     f"has(params.metadata.annotations) && '{ANNOTATION_GENERATION}' in params.metadata.annotations"
     f" ? int(params.metadata.annotations['{ANNOTATION_GENERATION}']) : 1"),
    ("leaseToken",
     f"(has(params.metadata.annotations) && '{ANNOTATION_EPOCH}' in params.metadata.annotations"
     f" ? int(params.metadata.annotations['{ANNOTATION_EPOCH}']) : 0) * {1 << TOKEN_EPOCH_SHIFT}"
     " + (has(params.spec.leaseTransitions) ? params.spec.leaseTransitions : 0)"),
]


def _wellformed(var: str) -> str:
    return (f"size({var}) == 4 && {var}[1].matches('^[0-9]{{1,9}}$') && {var}[2].matches('^[0-9]{{1,18}}$')"
            f" && {var}[3].matches('^[0-9]{{1,19}}$')")


def _not_below(var: str, generation: str, token: str) -> str:
    """``var``'s (generation, token) >= (``generation``, ``token``), generation first: a reshard changes an
    object's shard, and the new shard's tokens are not comparable with the old one's, its generation is."""
    return f"(int({var}[2]) > {generation} || (int({var}[2]) == {generation} && int({var}[3]) >= {token}))"


_LEASE_AT = ("'shard Lease ' + params.metadata.name + ' is at generation ' + string(variables.leaseGeneration)"
             " + ', token ' + string(variables.leaseToken)")
#: DELETEs by the namespace controller and the garbage collector are not checked: they delete for
#: the cluster, not for a shard holder, and refusing them would wedge a namespace's deletion.
_CLUSTER_DELETER = ("request.userInfo.username == 'system:kube-controller-manager'"
                    " || request.userInfo.username.startsWith('system:serviceaccount:kube-system:')")

_VALIDATIONS: list[tuple[str, str]] = [
    # A fenced write must be readable and labelled with the shard its fence names.
    ("!variables.stamped || (" + _wellformed("variables.fence") + " && has(object.metadata.labels)"
     f" && '{LABEL_FENCED_SHARD}' in object.metadata.labels"
     f" && object.metadata.labels['{LABEL_FENCED_SHARD}'] == variables.fence[1])",
     "'malformed shard fence ' + object.metadata.annotations['" + ANNOTATION_FENCE + "'] + ': expected "
     "<group>/<shard>/<generation>/<token> and the label " + LABEL_FENCED_SHARD + " naming the same shard "
     "(stamp objects with Shard.stamp)'"),
    # The writer's fence is not below its shard Lease's.
    ("!variables.stamped || variables.fence[1] != variables.shard || "
     + _not_below("variables.fence", "variables.leaseGeneration", "variables.leaseToken"),
     "'stale shard fence ' + object.metadata.annotations['" + ANNOTATION_FENCE + "'] + ': ' + " + _LEASE_AT),
    # An update does not put a fence below the one the object carries.
    ("!variables.stamped || !variables.oldOurs || !(" + _wellformed("variables.oldFence") + ") || "
     + _not_below("variables.fence", "int(variables.oldFence[2])", "int(variables.oldFence[3])"),
     "'stale shard fence ' + object.metadata.annotations['" + ANNOTATION_FENCE + "'] + ': the object already "
     "carries the newer fence ' + oldObject.metadata.annotations['" + ANNOTATION_FENCE + "']"),
    # A delete: the stored fence is not below its shard Lease's.
    ("object != null || !variables.oldOurs || variables.oldFence[1] != variables.shard || " + _CLUSTER_DELETER
     + " || (" + _wellformed("variables.oldFence") + " && "
     + _not_below("variables.oldFence", "variables.leaseGeneration", "variables.leaseToken") + ")",
     "'stale shard fence ' + oldObject.metadata.annotations['" + ANNOTATION_FENCE + "'] + ' on the object to delete: ' "
     "+ " + _LEASE_AT + " + ' (the holder deletes by stamping its fence first)'"),
]


def _meta(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "labels": labels}


def _match_resources(t: FencingTarget, shard_selector: dict[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {"objectSelector": shard_selector}
    if t.objects_namespace is not None:
        match["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": t.objects_namespace}}
    return match


def _constraints(t: FencingTarget) -> dict[str, Any]:
    return {"resourceRules": [{"apiGroups": [t.api_group], "apiVersions": [t.version], "resources": [t.resource],
                               "operations": ["CREATE", "UPDATE", "DELETE"]}]}


#: The cluster-wide policy and binding that keep kube-apiserver's Lease parameter informer alive.
ANCHOR_NAME = "shardlease-fence-anchor"
LABEL_ANCHOR = "fencing.shardlease.io/anchor"


def anchor_manifests() -> list[dict[str, Any]]:
    """A policy with ``paramKind: Lease`` and a binding that matches no object, never uninstalled.

    Why: kube-apiserver (1.30 through at least 1.36.3, kubernetes/kubernetes#130887, #133827) stops its
    informer for a built-in ``paramKind`` as soon as no binding uses that kind for one policy refresh
    (about a second), and a policy created afterwards reuses the stopped informer for the life of the
    process: every fenced write is then refused with "no params found", or, worse, checked against the
    Lease as it was when the informer stopped. Uninstalling the last fenced resource of a cluster would
    do exactly that, so this binding stays and the informer with it. It costs one label-selector match
    per request of the one resource it names."""
    labels = {LABEL_ANCHOR: "true"}
    return [
        {"apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicy",
         "metadata": _meta(ANCHOR_NAME, labels),
         "spec": {"failurePolicy": "Ignore",
                  "paramKind": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"},
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                                                          "resources": ["leases"], "operations": ["DELETE"]}]},
                  "validations": [{"expression": "true"}]}},
        {"apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": _meta(ANCHOR_NAME, labels),
         "spec": {"policyName": ANCHOR_NAME, "validationActions": ["Deny"],
                  "paramRef": {"name": ANCHOR_NAME, "namespace": "default", "parameterNotFoundAction": "Allow"},
                  "matchResources": {"objectSelector": {"matchLabels": {LABEL_ANCHOR: "never-set"}}}}},
    ]


def manifests(t: FencingTarget, shards: int) -> list[dict[str, Any]]:
    """Every object fencing ``t`` for shards ``0..shards-1``, policies first (a binding naming a policy
    that does not exist yet is accepted, but applying policies first reads better in a GitOps diff)."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 65536:
        raise InvalidArgument(f"--shards must be an integer in 1..65536 (the group's shard count, or more); "
                              f"got {shards!r}")
    labels = t._labels()
    name = t.policy_name
    unbound = f"{name}-unbound"
    known = [str(i) for i in range(shards)]
    group_only = {"matchLabels": {LABEL_FENCED_GROUP: t.group}}
    guard = {
        "apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicy",
        "metadata": _meta(unbound, labels),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {**_constraints(t), "objectSelector": group_only},
            "variables": [{"name": n, "expression": e} for n, e in _VARIABLES if n == "carried"],
            "validations": [{
                "expression": (f"object == null || variables.carried || !has(object.metadata.labels) || "
                               f"!('{LABEL_FENCED_SHARD}' in "
                               f"object.metadata.labels) || object.metadata.labels['{LABEL_FENCED_SHARD}'] "
                               f"in {known!r}"),
                "messageExpression": (f"'shard ' + object.metadata.labels['{LABEL_FENCED_SHARD}'] + ' of group "
                                      f"{t.group} has no fencing binding (installed for {shards} shards): run "
                                      f"`shardlease fencing install --group {t.group} --namespace {t.namespace} "
                                      f"--resource {_resource_arg(t)} --shards <count>` (before each change of "
                                      f"the shard count)'"),
                "reason": "Forbidden",
            }],
        },
    }
    out: list[dict[str, Any]] = [*anchor_manifests(), guard, {
        "apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": _meta(unbound, labels),
        "spec": {"policyName": unbound, "validationActions": ["Deny"], "matchResources": _match_resources(t, group_only)},
    }]
    for bucket in range(-(-shards // BUCKET)):
        members = range(bucket * BUCKET, min(shards, (bucket + 1) * BUCKET))
        out.append({
            "apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicy",
            "metadata": _meta(policy_name(t, bucket), {**labels, LABEL_FENCING_BUCKET: str(bucket)}),
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"},
                "matchConstraints": {**_constraints(t), "objectSelector": {
                    "matchLabels": {LABEL_FENCED_GROUP: t.group},
                    "matchExpressions": [{"key": LABEL_FENCED_SHARD, "operator": "In",
                                          "values": [str(i) for i in members]}]}},
                "variables": [{"name": n, "expression": e} for n, e in _VARIABLES],
                "validations": [{"expression": e, "messageExpression": m, "reason": "Forbidden"}
                                for e, m in _VALIDATIONS],
            },
        })
        for shard in members:
            out.append({
                "apiVersion": ADMISSION_API_VERSION, "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": _meta(binding_name(t, shard), {**labels, LABEL_FENCING_SHARD: str(shard)}),
                "spec": {
                    "policyName": policy_name(t, bucket),
                    "validationActions": ["Deny"],
                    "paramRef": {"name": shard_lease_name(t.group, shard), "namespace": t.namespace,
                                 "parameterNotFoundAction": "Deny"},
                    "matchResources": _match_resources(t, {"matchLabels": {LABEL_FENCED_GROUP: t.group,
                                                                           LABEL_FENCED_SHARD: str(shard)}}),
                },
            })
    return out


def policy_name(t: FencingTarget, bucket: int) -> str:
    """The policy of shards ``bucket * BUCKET`` up to ``(bucket + 1) * BUCKET - 1``."""
    return f"{t.policy_name}-b{bucket}"


def binding_name(t: FencingTarget, shard: int) -> str:
    return f"{t.policy_name}-{shard}"


def _resource_arg(t: FencingTarget) -> str:
    return f"{t.api_group}/{t.version}/{t.resource}" if t.api_group else f"{t.version}/{t.resource}"
