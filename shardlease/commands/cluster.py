"""What the commands that read or write a group's Leases from outside share: their cluster flags, how
they find the kubeconfig and the namespace (as ``shardlease run`` does), and how they word a failed
connection or request, or a group that is not where they looked.

``shardlease status`` and ``shardlease reshard`` both run from a laptop against any cluster; a user who
mistyped a context must get the same message from either.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

    from shardlease.config import NamespaceChoice

__all__ = ["ConnectFailed", "add_cluster_flags", "api_failure", "connect", "connection_settings", "kubeconfig_tried",
           "namespace_of", "no_group", "reason"]

#: ``--namespace``'s help: the rule of ``shardlease.config.find_namespace``, shared by every command.
NAMESPACE_HELP = ("namespace of the group's Leases (default: $SHARDLEASE_NAMESPACE, then $POD_NAMESPACE, then the "
                  "in-cluster service account namespace, then 'default'; the same rule for every command)")


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--group``, ``--namespace``, ``--kubeconfig`` and ``--context``."""
    parser.add_argument("--group", required=True, help="the shard group")
    parser.add_argument("--namespace", default=None, metavar="NS", help=NAMESPACE_HELP)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $SHARDLEASE_KUBECONFIG, then "
                                             "$KUBECONFIG, ~/.kube/config, in-cluster, as for run)")
    parser.add_argument("--context", help="kubeconfig context to use (default: $SHARDLEASE_CONTEXT, "
                                          "else the kubeconfig's current context)")


def connection_settings(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(kubeconfig, context)`` as ``shardlease run`` would pick them: the flag, else
    ``SHARDLEASE_KUBECONFIG`` / ``SHARDLEASE_CONTEXT``; ``None`` leaves the rest of the search
    (``$KUBECONFIG``, ``~/.kube/config``, in-cluster) to ``shardlease.client.connect``. An empty variable counts as
    unset, as it does for ``run``."""
    kubeconfig = args.kubeconfig or os.environ.get("SHARDLEASE_KUBECONFIG") or None
    context = args.context or os.environ.get("SHARDLEASE_CONTEXT") or None
    return kubeconfig, context


def kubeconfig_tried(args: argparse.Namespace) -> str:
    """Which configuration the search will end up using, for messages."""
    kubeconfig, _ = connection_settings(args)
    if kubeconfig:
        return kubeconfig
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = os.path.expanduser("~/.kube/config")
    if os.path.exists(default):
        return default
    return "in-cluster service account" if os.environ.get("KUBERNETES_SERVICE_HOST") else default


def namespace_of(args: argparse.Namespace) -> NamespaceChoice:
    """The namespace the flags and environment name, by the rule ``shardlease run`` follows; stores the
    name in ``args.namespace``. Raises :class:`shardlease.errors.ConfigError` for a name that cannot be
    one, naming where it came from."""
    from shardlease.config import checked_namespace

    choice = checked_namespace(args.namespace)
    args.namespace = choice.name
    return choice


def no_group(api: ApiClient, group: str, choice: NamespaceChoice) -> str:
    """The message for a group with no Lease in the namespace looked at: which namespace, why that one,
    and (when the cluster lets this user list Leases everywhere) the namespaces where the group does run."""
    from shardlease.client.leases import group_lease_namespaces
    from shardlease.core.records import group_selector

    message = (f"no group {group!r} in namespace {choice.name!r}: no Lease there is labelled {group_selector(group)} "
               f"({choice.why()})")
    try:
        elsewhere = [ns for ns in group_lease_namespaces(api, group_selector(group)) if ns != choice.name]
    except Exception:
        elsewhere = []  # e.g. no cluster-wide list permission: say nothing rather than guess
    if elsewhere:
        shown = ", ".join(repr(ns) for ns in elsewhere[:5]) + (", ..." if len(elsewhere) > 5 else "")
        return (f"{message}; the group has Leases in namespace {shown}: pass --namespace {elsewhere[0]} "
                f"or set SHARDLEASE_NAMESPACE={elsewhere[0]}")
    return f"{message}; check --group, or pass --namespace / set SHARDLEASE_NAMESPACE to where its replicas run"


class ConnectFailed(Exception):
    """No usable Kubernetes configuration; the message names what was tried."""


def connect(args: argparse.Namespace, user_agent: str) -> ApiClient:
    """A client for the cluster the flags and environment name, or :class:`ConnectFailed`."""
    from shardlease.client.connect import load_api_client

    kubeconfig, context = connection_settings(args)
    try:
        return load_api_client(kubeconfig=kubeconfig, context=context, user_agent=user_agent)
    except Exception as exc:
        raise ConnectFailed(f"cannot load a Kubernetes configuration (tried {kubeconfig_tried(args)}"
                            f"{', context ' + context if context else ''}): {exc}") from exc


def api_failure(exc: BaseException, api: ApiClient, args: argparse.Namespace, refused: str) -> str:
    """A failed request, worded for the user: ``refused`` says what the server refused (an HTTP error,
    e.g. RBAC), otherwise the server could not be reached."""
    server = getattr(api.configuration, "host", "?")
    problem = f"the Kubernetes API at {server} refused {refused}" if getattr(exc, "status", None) \
        else f"cannot reach the Kubernetes API at {server}"
    return f"{problem} (kubeconfig: {kubeconfig_tried(args)}): {reason(exc)}"


def reason(exc: BaseException) -> str:
    status: Any = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__
