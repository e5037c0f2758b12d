"""The real kube-apiserver + etcd behind the ``kube_apiserver`` fixture, used the way users use it:
kubectl and the official Python client through the written kubeconfig. One control plane for the
session (the fixture skips without assets, and fails under CI=true)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from shardlease.controlplane import RealControlPlane


def kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH")
    return subprocess.run([binary, *args], env=dict(os.environ, KUBECONFIG=kubeconfig),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def leases(kube_apiserver_kubeconfig: str) -> Any:
    client = kubernetes.config.new_client_from_config(config_file=kube_apiserver_kubeconfig)
    yield CoordinationV1Api(client)
    client.close()


def lease(name: str, holder: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def test_fixture_reports_a_real_ready_server(kube_apiserver: RealControlPlane) -> None:
    assert kube_apiserver.kind == "real" and kube_apiserver.faults is None
    assert kube_apiserver.running
    assert kube_apiserver.url.startswith("https://127.0.0.1:")
    assert kube_apiserver.version.startswith("v1.36."), kube_apiserver.version
    assert kube_apiserver.ready_seconds is not None and kube_apiserver.ready_seconds < 90
    assert kube_apiserver.apiserver_log.stat().st_size > 0 and kube_apiserver.etcd_log.stat().st_size > 0


def test_kubectl_version_reports_the_built_server(kube_apiserver_kubeconfig: str) -> None:
    done = kubectl(kube_apiserver_kubeconfig, "version", "-o", "json")
    assert done.returncode == 0, done.stderr
    server = json.loads(done.stdout)["serverVersion"]
    assert (server["major"], server["minor"]) == ("1", "36")
    assert server["gitVersion"].startswith("v1.36."), server


def test_kubectl_lists_leases_across_namespaces(kube_apiserver_kubeconfig: str, leases: Any) -> None:
    name = "kubectl-" + uuid.uuid4().hex[:8]
    leases.create_namespaced_lease("default", lease(name, "me"))
    done = kubectl(kube_apiserver_kubeconfig, "get", "leases", "-A")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["default", name, "me"] == rows[[r[1] for r in rows].index(name)][:3]
    # kube-apiserver's own identity Lease: proof this is not the dev-server.
    assert any(r[0] == "kube-system" and r[1].startswith("apiserver-") for r in rows), done.stdout


def test_python_client_creates_and_reads_a_lease(leases: Any) -> None:
    name = "py-" + uuid.uuid4().hex[:8]
    created = leases.create_namespaced_lease("default", lease(name, "replica-0"))
    read = leases.read_namespaced_lease(name, "default")
    assert read.spec.holder_identity == "replica-0"
    assert read.spec.lease_duration_seconds == 15
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.resource_version == created.metadata.resource_version


def test_stale_resource_version_is_a_409_conflict(leases: Any) -> None:
    name = "conflict-" + uuid.uuid4().hex[:8]
    first = leases.create_namespaced_lease("default", lease(name, "a"))
    first.spec.holder_identity = "b"
    leases.replace_namespaced_lease(name, "default", first)  # moves the resourceVersion on
    first.spec.holder_identity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease(name, "default", first)
    assert caught.value.status == 409
    status = json.loads(caught.value.body or "{}")
    assert status["reason"] == "Conflict" and status["kind"] == "Status"
    assert leases.read_namespaced_lease(name, "default").spec.holder_identity == "b"
