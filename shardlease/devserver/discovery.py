"""Discovery documents and ``/version``: what kubectl reads before it can talk about resources.

Only legacy (unaggregated) discovery is served; kubectl falls back to it when the answer to its
aggregated-discovery Accept header is plain APIVersions/APIGroupList JSON.
"""

from __future__ import annotations

from typing import Any

from .resources import CONFIGMAPS, LEASES, NAMESPACES
from .reviews import ALL as REVIEWS
from .reviews import Review

VERSION_INFO: dict[str, str] = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-shardlease",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
    "platform": "linux/amd64",
}

_COORDINATION_VERSION = {"groupVersion": LEASES.api_version, "version": LEASES.version}
_COORDINATION_GROUP = {"name": LEASES.group, "versions": [_COORDINATION_VERSION],
                       "preferredVersion": _COORDINATION_VERSION}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _review_group(review: Review) -> dict[str, Any]:
    version = {"groupVersion": review.api_version, "version": review.version}
    return {"name": review.group, "versions": [version], "preferredVersion": version}


def api_group_list() -> dict[str, Any]:
    """Groups in kube-apiserver's order (authentication and authorization come before coordination)."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [*(_review_group(review) for review in REVIEWS), _COORDINATION_GROUP]}


def review_group(review: Review) -> dict[str, Any]:
    """``/apis/authorization.k8s.io`` and ``/apis/authentication.k8s.io``."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_review_group(review)}


def review_resources(review: Review) -> dict[str, Any]:
    """The one review type served in its group version (kube-apiserver lists the others of the group
    too, e.g. SubjectAccessReview; they are not served here, so they are not listed)."""
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": review.api_version,
            "resources": [review.discovery_entry()]}


def coordination_group() -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_COORDINATION_GROUP}


def coordination_resources() -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": LEASES.api_version,
            "resources": [LEASES.discovery_entry()]}


def core_resources() -> dict[str, Any]:
    """Core v1: ConfigMaps and Namespaces, plus (read-only, always empty) events so ``kubectl
    describe`` is clean."""
    events = {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event",
              "verbs": ["get", "list"], "shortNames": ["ev"], "storageVersionHash": "r2yiGXH7wu8="}
    return {"kind": "APIResourceList", "groupVersion": "v1",
            "resources": [CONFIGMAPS.discovery_entry(), events, NAMESPACES.discovery_entry()]}
