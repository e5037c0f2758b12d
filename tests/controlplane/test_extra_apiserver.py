"""A second kube-apiserver on the same etcd (the high-availability chaos variant): it serves the same
objects, survives a crash of itself (start again on the same port), and nothing outlives stop()."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta

from shardlease.client.connect import load_api_client
from shardlease.controlplane import ControlPlaneError, RealControlPlane
from shardlease.testing import require_kube_assets

from .helpers import wait_gone


def _lease(name: str) -> V1Lease:
    return V1Lease(metadata=V1ObjectMeta(name=name),
                   spec=V1LeaseSpec(holder_identity="a", lease_duration_seconds=5))


def _holder(api: CoordinationV1Api, name: str) -> str | None:
    spec = api.read_namespaced_lease(name, "default").spec
    return spec.holder_identity if spec is not None else None


@pytest.mark.slow
def test_two_apiservers_share_etcd_and_one_can_crash_and_return(tmp_path: Path) -> None:
    plane = RealControlPlane(require_kube_assets(), work_dir=tmp_path / "cp")
    with pytest.raises(ControlPlaneError, match="start"):
        plane.add_apiserver()
    with plane:
        second = plane.add_apiserver()
        assert second.url != plane.url and second.log_path.exists()
        first_api = CoordinationV1Api(load_api_client(kubeconfig=plane.write_kubeconfig(tmp_path / "k1")))
        second_api = CoordinationV1Api(load_api_client(
            kubeconfig=second.write_kubeconfig(tmp_path / "k2")))
        first_api.create_namespaced_lease("default", _lease("via-first"))
        assert _holder(second_api, "via-first") == "a"

        pid = second.pid
        assert pid is not None
        second.kill()
        assert not second.running and wait_gone([pid], 5) == []
        with pytest.raises(Exception):  # a refused connection, as urllib3 wraps it
            second_api.read_namespaced_lease("via-first", "default", _request_timeout=2)
        first_api.create_namespaced_lease("default", _lease("while-down"))   # the first still serves
        second.start()
        assert _holder(second_api, "while-down") == "a"
        pids = [p for p in (second.pid, plane.apiserver_pid, plane.etcd_pid) if p]
    assert wait_gone(pids, 10) == [], "an apiserver outlived stop()"
