"""The three resource types this stand-in serves, described once as data.

Everything type-specific (paths, kinds, list kinds, the wire schema, table columns) hangs off a
:class:`Resource`, so the store, the HTTP layer and discovery stay generic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Schema nodes for decoding request bodies the way Go's JSON decoder would (see validation.decode).
# A node is a type name string, or ("struct", GoTypeName, {field: node}), ("map", node), ("list", node).
Schema = Any

OBJECT_META: Schema = ("struct", "ObjectMeta", {
    "name": "string", "generateName": "string", "namespace": "string", "selfLink": "string",
    "uid": "string", "resourceVersion": "string", "generation": "int64",
    "creationTimestamp": "time", "deletionTimestamp": "time", "deletionGracePeriodSeconds": "int64",
    "labels": ("map", "string"), "annotations": ("map", "string"), "ownerReferences": ("list", "any"),
    "finalizers": ("list", "string"),
    "managedFields": ("list", ("struct", "ManagedFieldsEntry", {
        "manager": "string", "operation": "string", "apiVersion": "string", "time": "time",
        "fieldsType": "string", "fieldsV1": "any", "subresource": "string"})),
})

LEASE_SCHEMA: Schema = ("struct", "Lease", {
    "kind": "string", "apiVersion": "string", "metadata": OBJECT_META,
    "spec": ("struct", "LeaseSpec", {
        "holderIdentity": "string", "leaseDurationSeconds": "int32", "acquireTime": "microtime",
        "renewTime": "microtime", "leaseTransitions": "int32", "strategy": "string",
        "preferredHolder": "string",
    }),
})

NAMESPACE_SCHEMA: Schema = ("struct", "Namespace", {
    "kind": "string", "apiVersion": "string", "metadata": OBJECT_META,
    "spec": ("struct", "NamespaceSpec", {"finalizers": ("list", "string")}),
    "status": ("struct", "NamespaceStatus", {"phase": "string", "conditions": ("list", "any")}),
})

CONFIGMAP_SCHEMA: Schema = ("struct", "ConfigMap", {
    "kind": "string", "apiVersion": "string", "metadata": OBJECT_META,
    "data": ("map", "string"), "binaryData": ("map", "bytes"), "immutable": "bool",
})


@dataclass(frozen=True, eq=False)  # identity equality and hashing: there is one of each
class Resource:
    """One namespaced resource type, e.g. ``leases`` in ``coordination.k8s.io/v1``."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    schema: Schema
    storage_version_hash: str
    #: Leases refuse a PUT without resourceVersion (422); ConfigMaps treat it as unconditional.
    unconditional_update: bool
    #: Leases are created by a PUT to a missing name (201); ConfigMaps answer 404.
    create_on_update: bool
    #: Namespaces are the one cluster-scoped type; their store key is ("", name).
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    api_version: str = field(init=False)
    list_kind: str = field(init=False)
    qualified: str = field(init=False)
    kind_label: str = field(init=False)
    #: Serialised objects start with this, so list items (which carry no kind/apiVersion) are a slice.
    prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        api_version = f"{self.group}/{self.version}" if self.group else self.version
        object.__setattr__(self, "api_version", api_version)
        object.__setattr__(self, "list_kind", self.kind + "List")
        object.__setattr__(self, "qualified", f"{self.plural}.{self.group}" if self.group else self.plural)
        object.__setattr__(self, "kind_label", f"{self.kind}.{self.group}" if self.group else self.kind)
        object.__setattr__(self, "prefix",
                           f'{{"kind":"{self.kind}","apiVersion":"{api_version}",'.encode())

    def discovery_entry(self) -> dict[str, Any]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        if not self.namespaced:
            verbs.remove("deletecollection")  # kube-apiserver serves no deletecollection on namespaces
        entry: dict[str, Any] = {"name": self.plural, "singularName": self.singular,
                                 "namespaced": self.namespaced, "kind": self.kind, "verbs": verbs}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        entry["storageVersionHash"] = self.storage_version_hash
        return entry


LEASES = Resource("coordination.k8s.io", "v1", "leases", "lease", "Lease", LEASE_SCHEMA, "gqkMMb/YqFM=",
                  unconditional_update=False, create_on_update=True)
CONFIGMAPS = Resource("", "v1", "configmaps", "configmap", "ConfigMap", CONFIGMAP_SCHEMA, "qFsyl6wFWjQ=",
                  unconditional_update=True, create_on_update=False, short_names=("cm",))
NAMESPACES = Resource("", "v1", "namespaces", "namespace", "Namespace", NAMESPACE_SCHEMA, "Q3oi5N2YM8M=",
                  unconditional_update=True, create_on_update=False, namespaced=False,
                  short_names=("ns",))

ALL: tuple[Resource, ...] = (LEASES, CONFIGMAPS, NAMESPACES)
#: The resources whose objects live inside a namespace (deleted with it).
NAMESPACED: tuple[Resource, ...] = tuple(r for r in ALL if r.namespaced)
#: (api prefix, plural) -> Resource, for routing.
BY_PATH: dict[tuple[str, str], Resource] = {
    (("/apis/" + r.api_version) if r.group else "/api/v1", r.plural): r for r in ALL
}
