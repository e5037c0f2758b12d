"""A real Kubernetes control plane (etcd + kube-apiserver) on this machine, for tests and local runs.

The binaries come from ``scripts/build-kube-assets`` (built from the Go module proxy) or from any
envtest-style directory named by ``$KUBEBUILDER_ASSETS``::

    from shardlease.controlplane import RealControlPlane, find_assets

    with RealControlPlane(find_assets()) as cp:      # etcd + kube-apiserver, ready on return
        kubeconfig = cp.write_kubeconfig("kubeconfig")   # CA embedded, admin bearer token
        ...                                              # kubectl, the Python client, shardlease run

This package imports nothing from the shardlease runtime (manager, elector, cache...), so the
dev-server command, the pytest plugin and :mod:`shardlease.harness.localcluster` can use it without
pulling the runtime in, and ``cryptography`` is only imported when certificates are generated.
"""

from __future__ import annotations

from .assets import ASSETS_ENV, find_assets
from .errors import ControlPlaneError
from .plane import ExtraApiServer, RealControlPlane
from .toxiproxy import Proxy, Toxiproxy

__all__ = ["ASSETS_ENV", "ControlPlaneError", "ExtraApiServer", "Proxy", "RealControlPlane", "Toxiproxy",
           "find_assets"]
