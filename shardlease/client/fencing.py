"""Installing and removing the admission policies of :mod:`shardlease.core.fencing` on a cluster.

Policies and bindings are cluster-scoped objects of ``admissionregistration.k8s.io/v1`` (GA in
Kubernetes 1.30). An API server that does not serve that API (an older cluster, or shardlease's own
dev-server, which evaluates no admission policy at all) is refused with :class:`FencingUnsupported`
before anything is written: an install that "succeeds" where nothing is enforced would be worse than
none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes.client import ApiClient

from shardlease.client.leases import LeaseClient
from shardlease.client.transport import Transport
from shardlease.core.fencing import ADMISSION_API_VERSION, FencingTarget, manifests
from shardlease.core.records import LeaseRecord, group_lease_name
from shardlease.core.resharding import GroupState
from shardlease.errors import InvalidArgument, NotFound, ShardleaseError

__all__ = ["FencingChange", "FencingUnsupported", "group_span", "install", "uninstall"]

_BASE = f"/apis/{ADMISSION_API_VERSION}"
_PLURAL = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
           "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}
REQUEST_TIMEOUT = 30.0


class FencingUnsupported(ShardleaseError):
    """The API server does not serve ValidatingAdmissionPolicy, so it cannot enforce fencing."""


@dataclass(frozen=True)
class FencingChange:
    """What an install or uninstall did: ``kind/name`` of each object created, updated or deleted."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


class _Admission(Transport):
    """Plain-JSON requests on the two admission policy kinds, failing with the typed ``ApiError``s."""

    def url(self, kind: str, name: str | None = None, query: Mapping[str, str] | None = None) -> str:
        path = f"{_BASE}/{_PLURAL[kind]}" + (f"/{quote(name, safe='')}" if name else "")
        return path + ("?" + urlencode(query) if query else "")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json(self._send("GET", self.url(kind, name), None, REQUEST_TIMEOUT))
        except NotFound:
            return None

    def list(self, kind: str, selector: str) -> list[dict[str, Any]]:
        items = self._json(self._send("GET", self.url(kind, query={"labelSelector": selector}), None,
                                      REQUEST_TIMEOUT)).get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def create(self, body: Mapping[str, Any]) -> None:
        self._send("POST", self.url(body["kind"]), body, REQUEST_TIMEOUT)

    def replace(self, body: Mapping[str, Any]) -> None:
        self._send("PUT", self.url(body["kind"], body["metadata"]["name"]), body, REQUEST_TIMEOUT)

    def delete(self, kind: str, name: str) -> None:
        try:
            self._send("DELETE", self.url(kind, name), None, REQUEST_TIMEOUT)
        except NotFound:
            pass

    def check_served(self) -> None:
        """Raise :class:`FencingUnsupported` unless the server serves both kinds."""
        try:
            self._send("GET", self.url("ValidatingAdmissionPolicy", query={"limit": "1"}), None, REQUEST_TIMEOUT)
        except NotFound:
            raise FencingUnsupported(
                f"this API server does not serve ValidatingAdmissionPolicy ({ADMISSION_API_VERSION}, Kubernetes "
                f"1.30 or later), so it cannot refuse a stale holder's write; nothing was installed. The shardlease "
                f"dev-server serves only Leases, ConfigMaps and Namespaces and evaluates no admission policy: "
                f"use a real cluster, or `shardlease dev-server --kube-assets DIR` for a real kube-apiserver") from None


def group_span(api_client: ApiClient, group: str, namespace: str) -> int:
    """One past the highest shard index the group may hold a Lease for (its count, or more while a
    shrink is not cleaned up): the bindings ``install`` creates when no count is given."""
    store = LeaseClient(api_client, namespace, pool_size=1)
    try:
        obj = store.get(group_lease_name(group), timeout=REQUEST_TIMEOUT)
    finally:
        store.close()
    record = LeaseRecord.from_object(obj) if obj is not None else None
    state = GroupState.from_record(record) if record is not None else None
    if state is None:
        raise InvalidArgument(f"group {group!r} has no readable group Lease {group_lease_name(group)} in namespace "
                              f"{namespace!r} to take the shard count from: check --group and --namespace, or pass "
                              f"--shards N")
    return state.span


def install(api_client: ApiClient, target: FencingTarget, shards: int) -> FencingChange:
    """Create or update the policies and one binding per shard ``0..shards-1``; delete this target's
    policies and bindings that are not part of that (left from a larger count)."""
    wanted = manifests(target, shards)
    admission = _Admission(api_client, pool_size=1)
    created: list[str] = []
    updated: list[str] = []
    deleted: list[str] = []
    try:
        admission.check_served()
        for body in wanted:
            kind, name = body["kind"], body["metadata"]["name"]
            current = admission.get(kind, name)
            if current is None:
                admission.create(body)
                created.append(f"{kind}/{name}")
            elif not (_covers(current.get("spec"), body["spec"]) and _labels(current) == body["metadata"]["labels"]):
                version = current.get("metadata", {}).get("resourceVersion")
                admission.replace({**body, "metadata": {**body["metadata"], "resourceVersion": version}})
                updated.append(f"{kind}/{name}")
        wanted_names = {(m["kind"], m["metadata"]["name"]) for m in wanted}
        for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
            for obj in admission.list(kind, target.selector()):
                name = obj["metadata"]["name"]
                if (kind, name) not in wanted_names:  # a shard or bucket of a larger count
                    admission.delete(kind, name)
                    deleted.append(f"{kind}/{name}")
    finally:
        admission.close()
    return FencingChange(tuple(created), tuple(updated), tuple(deleted))


def uninstall(api_client: ApiClient, target: FencingTarget) -> FencingChange:
    """Delete every policy and binding installed for ``target`` (bindings first, so no binding is left
    naming a missing policy); nothing to delete is not an error."""
    admission = _Admission(api_client, pool_size=1)
    deleted: list[str] = []
    try:
        admission.check_served()
        for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
            for obj in admission.list(kind, target.selector()):
                name = obj["metadata"]["name"]
                admission.delete(kind, name)
                deleted.append(f"{kind}/{name}")
    finally:
        admission.close()
    return FencingChange(deleted=tuple(deleted))


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, dict) else {}


def _covers(current: Any, wanted: Any) -> bool:
    """``current`` holds everything ``wanted`` sets: the server adds defaults (``matchPolicy``, empty
    selectors, a rule's ``scope``), which are no reason to rewrite an object."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(_covers(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(current, list) and len(current) == len(wanted)
                and all(_covers(c, w) for c, w in zip(current, wanted)))
    return bool(current == wanted)
