"""What a user does with kubectl 1.27, 1.30 and 1.33, on both servers: the same commands must succeed
(or fail) the same way. 1.27 still reads /openapi/v2 (protobuf) before create/apply/replace -f."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import Server, kubectl_binary

VERSIONS = ["1.27", "1.30", "1.33"]

LEASE = """\
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: demo
  labels: {{app: demo{extra_label}}}
spec:
  holderIdentity: {holder}
  leaseDurationSeconds: 15
"""


class Kubectl:
    def __init__(self, binary: str, kubeconfig: str, home: Path, namespace: str) -> None:
        self.binary = binary
        self.env = dict(os.environ, KUBECONFIG=kubeconfig, HOME=str(home))
        self.namespace = namespace
        self.cache = str(home / "cache")

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "--cache-dir", self.cache, "-n", self.namespace, *args],
                              env=self.env, input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode != 0, f"kubectl {' '.join(args)} should fail: {done.stdout}"
        return done.stderr


@pytest.fixture(params=VERSIONS)
def kubectl(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> Kubectl:
    namespace = "k-" + uuid.uuid4().hex[:10]
    tool = Kubectl(kubectl_binary(request.param), server.kubeconfig, tmp_path, namespace)
    assert tool("create", "namespace", namespace).strip() == f"namespace/{namespace} created"
    return tool


def lease_yaml(holder: str, extra_label: str = "") -> str:
    return LEASE.format(holder=holder, extra_label=extra_label)


def test_namespace_shows_in_get_ns(kubectl: Kubectl) -> None:
    rows = [line.split() for line in kubectl("get", "ns").splitlines()]
    assert rows[0] == ["NAME", "STATUS", "AGE"]
    assert [kubectl.namespace, "Active"] in [r[:2] for r in rows]
    err = kubectl.fails("create", "namespace", kubectl.namespace)
    assert f'namespaces "{kubectl.namespace}" already exists' in err


def test_client_side_verbs(kubectl: Kubectl) -> None:
    assert "lease.coordination.k8s.io/demo created" in kubectl("apply", "-f", "-", stdin=lease_yaml("a"))
    assert "unchanged" in kubectl("apply", "-f", "-", stdin=lease_yaml("a"))
    assert "configured" in kubectl("apply", "-f", "-", stdin=lease_yaml("b"))
    out = kubectl("get", "lease", "demo", "-o", "yaml")
    assert "holderIdentity: b" in out and "managedFields" not in out  # hidden by kubectl by default
    err = kubectl.fails("create", "-f", "-", stdin=lease_yaml("c"))
    assert 'leases.coordination.k8s.io "demo" already exists' in err
    assert "lease.coordination.k8s.io/demo replaced" in kubectl("replace", "-f", "-", stdin=lease_yaml("c"))
    err = kubectl.fails("apply", "-f", "-", stdin=lease_yaml("d") + "  bogus: 1\n")
    assert 'unknown field "spec.bogus"' in err
    kubectl("label", "lease", "demo", "team=blue")
    kubectl("annotate", "lease", "demo", "note=hi")
    out = kubectl("get", "lease", "demo", "-o", "jsonpath={.metadata.labels.team} {.metadata.annotations.note} "
                                                "{.spec.holderIdentity}")
    assert out == "blue hi c"
    table = [line.split() for line in kubectl("get", "leases").splitlines()]
    assert table[0] == ["NAME", "HOLDER", "AGE"] and table[1][:2] == ["demo", "c"]
    assert 'lease.coordination.k8s.io "demo" deleted' in kubectl("delete", "lease", "demo")
    assert "NotFound" in kubectl.fails("get", "lease", "demo")
    kubectl("create", "-f", "-", stdin=lease_yaml("e"))
    assert "lease.coordination.k8s.io/demo" in kubectl("get", "-f", "-", "-o", "name", stdin=lease_yaml("e"))


def test_server_side_apply(kubectl: Kubectl) -> None:
    ssa = ("apply", "--server-side", "-f", "-")
    assert "serverside-applied" in kubectl(*ssa, stdin=lease_yaml("a", ", tier: web"))
    kubectl(*ssa, stdin=lease_yaml("a"))  # the label is no longer applied: it must go
    labels = kubectl("get", "lease", "demo", "-o", "jsonpath={.metadata.labels}")
    assert labels == '{"app":"demo"}'
    err = kubectl.fails(*ssa, "--field-manager", "other", stdin=lease_yaml("b"))
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.holderIdentity' in err
    kubectl(*ssa, "--field-manager", "other", "--force-conflicts", stdin=lease_yaml("b"))
    managers = kubectl("get", "lease", "demo", "--show-managed-fields", "-o",
                       "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}")
    assert managers.split() == ["kubectl/Apply", "other/Apply"]
    assert kubectl("get", "lease", "demo", "-o", "jsonpath={.spec.holderIdentity}") == "b"


def test_create_configmap_directly(kubectl: Kubectl) -> None:
    """``kubectl create configmap`` sends JSON up to 1.31 and protobuf from 1.32 on; both servers take
    either, so examples/README.md needs no detour through YAML for any of these versions."""
    assert kubectl("create", "configmap", "direct", "--from-literal=n=1").strip() == "configmap/direct created"
    assert kubectl("get", "configmap", "direct", "-o", "jsonpath={.data.n}") == "1"
