"""Further users of a real control plane (``RealControlPlane(users=...)``): each gets its own bearer
token and kubeconfig, and kube-apiserver authenticates it as that user in those groups. The local node
runs the kubelet, kube-proxy, controller-manager and scheduler this way, as the users Kubernetes'
built-in roles are bound to."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shardlease.controlplane import ControlPlaneError, RealControlPlane
from shardlease.testing import require_kube_assets

pytestmark = pytest.mark.kubectl


def test_each_user_authenticates_as_itself(tmp_path: Path) -> None:
    plane = RealControlPlane(require_kube_assets(), work_dir=tmp_path / "cp",
                             users={"system:node:n1": ("system:nodes",), "system:kube-proxy": ()})
    with plane:
        for user, groups in (("system:node:n1", ["system:nodes", "system:authenticated"]),
                             ("system:kube-proxy", ["system:authenticated"])):
            config = plane.write_kubeconfig(tmp_path / f"{user.replace(':', '-')}.kubeconfig", user=user)
            proc = subprocess.run(["kubectl", "auth", "whoami", "-o", "json"], capture_output=True, text=True,
                                  env={**os.environ, "KUBECONFIG": config}, timeout=60)
            assert proc.returncode == 0, proc.stderr
            info = json.loads(proc.stdout)["status"]["userInfo"]
            assert info["username"] == user
            assert info["groups"] == groups
        with pytest.raises(ControlPlaneError, match="user 'bob' is not one of the users"):
            plane.write_kubeconfig(tmp_path / "bob.kubeconfig", user="bob")


def test_bad_service_cidr_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ControlPlaneError, match="service_cidr: '10.0.0.0/33' is not a network"):
        RealControlPlane(require_kube_assets(), work_dir=tmp_path / "cp", service_cidr="10.0.0.0/33")
