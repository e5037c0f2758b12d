"""The real kubectl against the dev-server: discovery, tables, YAML, describe, apply, label, watch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import CoordinationV1Api, CoreV1Api
from support import poll as wait_for

from .helpers import lease_body

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None,
                       reason="kubectl not on PATH: these tests prove the dev-server speaks to the real kubectl"),
]

LEASE_YAML = """\
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: demo
  labels:
    app: demo
spec:
  holderIdentity: {holder}
  leaseDurationSeconds: 15
"""

CONFIGMAP_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  colour: {colour}
  size: "3"
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(home))
        self.cache = str(home / "cache")

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", "--cache-dir", self.cache, *args]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(self.argv(*args), env=self.env, input=stdin, capture_output=True,
                              text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stdout}{done.stderr}")
        return done.stdout + (done.stderr if not check else "")


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path_factory.mktemp("kubectl-home"))


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_version_and_discovery(kubectl: Kubectl) -> None:
    out = kubectl("version", "-o", "json")
    assert '"gitVersion": "v1.32.0-shardlease"' in out
    resources = kubectl("api-resources", "--no-headers")
    assert any(r[0] == "leases" and "coordination.k8s.io/v1" in r for r in rows(resources))
    assert any(r[0] == "configmaps" for r in rows(resources))


def test_get_table_with_holder_and_all_namespaces(kubectl: Kubectl, coord: CoordinationV1Api,
                                                  ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("one", holder="pod-a", labels={"tier": "x"}))
    coord.create_namespaced_lease(ns, lease_body("two", holder=""))
    table = rows(kubectl("get", "leases", "-n", ns))
    assert table[0] == ["NAME", "HOLDER", "AGE"]
    assert table[1][:2] == ["one", "pod-a"] and table[1][2].endswith("s")
    assert table[2][0] == "two" and len(table[2]) == 2  # empty holder, then age
    everywhere = rows(kubectl("get", "leases", "-A", "--show-labels", "-l", "tier=x"))
    assert everywhere[0] == ["NAMESPACE", "NAME", "HOLDER", "AGE", "LABELS"]
    assert [r for r in everywhere if r[0] == ns] == [[ns, "one", "pod-a", everywhere[1][3], "tier=x"]]


def test_get_yaml_and_describe(kubectl: Kubectl, coord: CoordinationV1Api, ns: str) -> None:
    created = coord.create_namespaced_lease(
        ns, lease_body("demo", renewTime="2024-05-01T10:05:42.654321Z"))
    out = kubectl("get", "lease", "demo", "-n", ns, "-o", "yaml")
    assert "kind: Lease" in out and "holderIdentity: pod-a" in out
    assert 'renewTime: "2024-05-01T10:05:42.654321Z"' in out
    assert f"uid: {created.metadata.uid}" in out
    described = kubectl("describe", "lease", "demo", "-n", ns)
    assert "Holder Identity:" in described and "pod-a" in described
    assert "Events:" in described and "<none>" in described


def test_apply_create_and_update(kubectl: Kubectl, coord: CoordinationV1Api, ns: str) -> None:
    assert "created" in kubectl("apply", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="a"))
    assert coord.read_namespaced_lease("demo", ns).spec.holder_identity == "a"
    assert "unchanged" in kubectl("apply", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="a"))
    assert "configured" in kubectl("apply", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="b"))
    assert coord.read_namespaced_lease("demo", ns).spec.holder_identity == "b"
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="c") + "  bogus: 1\n",
                  check=False)
    assert 'unknown field "spec.bogus"' in out


def test_create_f_and_delete(kubectl: Kubectl, coord: CoordinationV1Api, ns: str) -> None:
    kubectl("create", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="a"))
    out = kubectl("create", "-n", ns, "-f", "-", stdin=LEASE_YAML.format(holder="a"), check=False)
    assert "AlreadyExists" in out or "already exists" in out
    assert 'lease.coordination.k8s.io "demo" deleted' in kubectl("delete", "lease", "demo", "-n", ns)
    assert coord.list_namespaced_lease(ns).items == []
    assert "NotFound" in kubectl("delete", "lease", "demo", "-n", ns, check=False)


def test_label_and_annotate(kubectl: Kubectl, coord: CoordinationV1Api, core: CoreV1Api, ns: str) -> None:
    coord.create_namespaced_lease(ns, lease_body("demo"))
    kubectl("label", "lease", "demo", "-n", ns, "team=blue")
    kubectl("annotate", "lease", "demo", "-n", ns, "note=hello")
    lease = coord.read_namespaced_lease("demo", ns)
    assert lease.metadata.labels == {"team": "blue"}
    assert lease.metadata.annotations == {"note": "hello"}
    kubectl("label", "lease", "demo", "-n", ns, "team-")
    assert not coord.read_namespaced_lease("demo", ns).metadata.labels
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    kubectl("label", "configmap", "c", "-n", ns, "team=red")
    kubectl("annotate", "cm", "c", "-n", ns, "note=hi")
    cm = core.read_namespaced_config_map("c", ns)
    assert cm.metadata.labels == {"team": "red"} and cm.metadata.annotations == {"note": "hi"}


def test_configmaps(kubectl: Kubectl, core: CoreV1Api, ns: str) -> None:
    kubectl("apply", "-n", ns, "-f", "-", stdin=CONFIGMAP_YAML.format(colour="red"))
    kubectl("apply", "-n", ns, "-f", "-", stdin=CONFIGMAP_YAML.format(colour="blue"))
    assert core.read_namespaced_config_map("settings", ns).data == {"colour": "blue", "size": "3"}
    kubectl("create", "configmap", "literal", "-n", ns, "--from-literal=a=1", "--from-literal=b=2")
    assert core.read_namespaced_config_map("literal", ns).data == {"a": "1", "b": "2"}
    table = rows(kubectl("get", "cm", "-n", ns))
    assert table == [["NAME", "DATA", "AGE"], ["literal", "2", table[1][2]], ["settings", "2", table[2][2]]]
    assert "colour:" in kubectl("describe", "configmap", "settings", "-n", ns)
    kubectl("delete", "configmap", "settings", "literal", "-n", ns)
    assert core.list_namespaced_config_map(ns).items == []


@pytest.fixture
def watcher(kubectl: Kubectl, ns: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = subprocess.Popen(kubectl.argv("get", "leases", "-n", ns, "-w", "--request-timeout=20s"),
                               env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    yield process, lines
    process.kill()
    process.wait(5)


def test_get_watch_prints_changes(watcher: tuple[subprocess.Popen[str], list[str]],
                                  coord: CoordinationV1Api, ns: str) -> None:
    _, lines = watcher
    time.sleep(1.0)  # let kubectl list and start watching
    coord.create_namespaced_lease(ns, lease_body("watched", holder="first"))
    assert wait_for(lambda: any(l.split()[:2] == ["watched", "first"] for l in lines)), lines
    coord.patch_namespaced_lease("watched", ns, {"spec": {"holderIdentity": "second"}})
    assert wait_for(lambda: any(l.split()[:2] == ["watched", "second"] for l in lines)), lines


def test_auth_can_i_and_whoami_answer_as_the_admin_the_server_is(kubectl: Kubectl, ns: str) -> None:
    """``kubectl auth can-i`` / ``whoami`` work as against kube-apiserver (which answers them for the
    ``--kube-assets`` admin the same way), instead of failing with 404."""
    assert kubectl("auth", "can-i", "create", "leases", "-n", ns).strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "configmaps", "--all-namespaces").strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").strip() == "yes"
    table = rows(kubectl("auth", "whoami"))
    assert table[0] == ["ATTRIBUTE", "VALUE"] and ["Username", "shardlease-admin"] in table
    review = json.loads(kubectl("auth", "whoami", "-o", "json"))
    assert review["kind"] == "SelfSubjectReview" and review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["status"]["userInfo"] == {"username": "shardlease-admin", "uid": "shardlease-admin",
                                            "groups": ["system:masters", "system:authenticated"]}
    resources = rows(kubectl("api-resources", "--no-headers"))
    assert ["selfsubjectaccessreviews", "authorization.k8s.io/v1", "false", "SelfSubjectAccessReview"] in resources
    assert ["selfsubjectreviews", "authentication.k8s.io/v1", "false", "SelfSubjectReview"] in resources
