"""The public Python entry points of fencing the API server enforces (docs/fencing.md): the manifests
for GitOps, and installing or removing them with a kubernetes ``ApiClient``, as ``shardlease fencing``
does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shardlease.client.fencing import FencingChange, FencingUnsupported, group_span, install, uninstall
from shardlease.core.fencing import FencingTarget, manifests, target

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["FencingChange", "FencingUnsupported", "fencing_manifests", "install_fencing", "uninstall_fencing"]


def _target(group: str, resource: str, namespace: str | None, objects_namespace: str | None) -> FencingTarget:
    if namespace is None:
        from shardlease.config import checked_namespace

        namespace = checked_namespace().name
    return target(group, namespace, resource, objects_namespace)


def fencing_manifests(group: str, resource: str, shards: int, *, namespace: str | None = None,
                      objects_namespace: str | None = None) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies and bindings that make the API server refuse a stale holder's
    write to ``resource`` (``[GROUP/]VERSION/RESOURCE``, e.g. ``"v1/configmaps"``) for ``group``'s
    shards ``0..shards-1``, as plain dicts (what ``shardlease fencing install --dry-run -o yaml`` prints).

    ``namespace``: where the group's Leases are (``None``: the rule every command uses);
    ``objects_namespace``: fence only the objects of that namespace (``None``: of every namespace).
    Raises ``InvalidArgument`` naming the bad input."""
    return manifests(_target(group, resource, namespace, objects_namespace), shards)


def install_fencing(group: str, resource: str, *, shards: int | None = None, namespace: str | None = None,
                    objects_namespace: str | None = None, api_client: ApiClient | None = None) -> FencingChange:
    """Install (or bring up to date) the fencing of ``group``'s writes to ``resource``.

    ``shards``: bind shards ``0..shards-1``; ``None`` reads the group's span (its count, or the larger
    count of a shrink not yet cleaned up) from its group Lease. Run it with the new count before every
    change of the shard count (docs/fencing.md, "Resharding"): a write stamped with a shard that has no
    binding is refused (fail closed), and bindings above the new count are removed. Raises
    :class:`FencingUnsupported` on a server that cannot enforce it (the dev-server; Kubernetes before
    1.30), before writing anything."""
    t = _target(group, resource, namespace, objects_namespace)
    owned = api_client is None
    if api_client is None:
        from shardlease.client.connect import load_api_client

        api_client = load_api_client(user_agent="shardlease-fencing")
    try:
        count = shards if shards is not None else group_span(api_client, t.group, t.namespace)
        return install(api_client, t, count)
    finally:
        if owned:
            api_client.close()


def uninstall_fencing(group: str, resource: str, *, namespace: str | None = None,
                      objects_namespace: str | None = None, api_client: ApiClient | None = None) -> FencingChange:
    """Remove every policy and binding ``install_fencing`` created for ``group`` and ``resource``."""
    t = _target(group, resource, namespace, objects_namespace)
    owned = api_client is None
    if api_client is None:
        from shardlease.client.connect import load_api_client

        api_client = load_api_client(user_agent="shardlease-fencing")
    try:
        return uninstall(api_client, t)
    finally:
        if owned:
            api_client.close()
