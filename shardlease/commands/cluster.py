"""What the commands that read or write a group's Leases from outside share: their cluster flags, how
they find the kubeconfig (as ``shardlease run`` does), and how they word a failed connection or request.

``shardlease status`` and ``shardlease reshard`` both run from a laptop against any cluster; a user who
mistyped a context must get the same message from either.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

__all__ = ["ConnectFailed", "add_cluster_flags", "api_failure", "connect", "connection_settings", "kubeconfig_tried",
           "reason"]


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """``--group``, ``--namespace``, ``--kubeconfig`` and ``--context``."""
    parser.add_argument("--group", required=True, help="the shard group")
    parser.add_argument("--namespace", default="default", help="namespace of the Leases (default: default)")
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
