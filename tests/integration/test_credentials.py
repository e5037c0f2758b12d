"""A replica configured like a pod, whose token file holds a token the real kube-apiserver rejects.

What a pod sees when its service-account token is not (or no longer) accepted: the server answers 401
to every request. The replica must say so as ``Unauthorized`` (not ``Forbidden``: RBAC is not the
problem), log it a few times rather than per request, fail readiness while it lasts, and pick up the
valid token as soon as it is in the file (client-go re-reads on a 401; the kubernetes Python client
alone would wait up to a minute for the in-cluster file, and forever for a kubeconfig ``tokenFile``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes.config import incluster_config

from shardlease import ShardConfig, ShardManager
from shardlease.client.connect import load_api_client
from shardlease.client.leases import LeaseClient
from shardlease.controlplane import RealControlPlane
from shardlease.errors import Forbidden, Unauthorized

from .conftest import record_figure

FAST = {"lease_duration": 2.0, "renew_deadline": 1.2, "retry_period": 0.3, "drain_timeout": 3.0}
REJECTED = "not-a-token-this-server-knows"


class Lines(logging.Handler):
    """The shardlease log lines at WARNING or above, with when they were logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))

    def between(self, start: float, end: float) -> list[str]:
        return [text for at, text in self.records if start <= at <= end]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("shardlease")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def in_cluster(plane: RealControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the kubernetes client's in-cluster loader at a token file and CA of ours, with the pod's
    environment and no kubeconfig to prefer; return the token file."""
    token = tmp_path / "token"
    url = urlsplit(plane.url)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(plane.ca_file))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(url.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(url.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    return token


def kubeconfig_with_token_file(plane: RealControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig whose user reads its token from a file (``tokenFile``), as KUBECONFIG."""
    path = Path(plane.write_kubeconfig(tmp_path / "kubeconfig"))
    config = yaml.safe_load(path.read_text())
    token = tmp_path / "token"
    config["users"][0]["user"] = {"tokenFile": str(token)}
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return token


def kubeconfig_with_exec_plugin(plane: RealControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig whose user gets its token from an exec plugin (a script printing an
    ``ExecCredential`` with the token file's content, without an expiry), as KUBECONFIG."""
    path = Path(plane.write_kubeconfig(tmp_path / "kubeconfig"))
    config = yaml.safe_load(path.read_text())
    token = tmp_path / "token"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, sys\n"
        f"token = open({str(token)!r}).read().strip()\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        "           'status': {'token': token}}, sys.stdout)\n")
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                           "command": sys.executable, "args": [str(plugin)],
                                           "interactiveMode": "Never"}}
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return token


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read().decode()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("setup", [in_cluster, kubeconfig_with_token_file, kubeconfig_with_exec_plugin],
                         ids=["in-cluster", "tokenFile", "exec"])
def test_a_rejected_token_is_reported_once_per_lease_and_the_rewritten_one_used_at_once(
        kube_apiserver: RealControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: Lines,
        request: pytest.FixtureRequest, setup: Callable[[RealControlPlane, Path, pytest.MonkeyPatch], Path]) -> None:
    token = setup(kube_apiserver, tmp_path, monkeypatch)
    token.write_text(REJECTED)

    # The bare client: a 401 is Unauthorized, which is not a Forbidden (RBAC is not what to fix).
    client = LeaseClient(load_api_client(), "default")
    with pytest.raises(Unauthorized) as rejected:
        client.get("anything", timeout=5.0)
    assert not isinstance(rejected.value, Forbidden) and rejected.value.status == 401
    client.close()

    group = f"creds-{setup.__name__.replace('_', '-')}"
    manager = ShardManager(ShardConfig(group=group, shards=4, namespace="default", identity="pod-0",
                                       metrics_port=0, **FAST),  # type: ignore[arg-type]
                           lambda shard: shard.stopped.wait())
    try:
        start = time.monotonic()
        manager.start()
        port = manager.health_port
        assert port is not None
        wait_until(lambda: readyz(port)[0] == 503 and "credentials rejected" in readyz(port)[1], 10,
                   "/readyz to fail on the rejected token")
        time.sleep(4.0)  # an outage of two lease durations
        status, body = readyz(port)
        assert status == 503 and "service account token file" in body, body
        outage = lines.between(start, time.monotonic())
        # Logged once per lease duration (2 s) with what to check, not once per request (dozens).
        assert 1 <= len(outage) <= 5, outage
        record_figure(request, "log lines in a 4 s credential outage (lease 2 s)", len(outage), "lines")
        assert any("rejects our credentials" in text and "tokenFile" in text for text in outage), outage
        assert manager.owned_shards() == frozenset()

        token.write_text(kube_apiserver.token)
        written = time.monotonic()
        took = wait_until(lambda: len(manager.owned_shards()) == 4, 10, "all 4 shards with the valid token")
        wait_until(lambda: readyz(port)[0] == 200, 5, "/readyz to pass again")
        # client-go's behaviour: the token is re-read on the 401 after it was written, not a minute later.
        record_figure(request, "token file rewritten to all shards held again", took)
        assert took < 5.0, f"took {took:.1f}s to use the rewritten token"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert any(line.startswith("shardlease_credentials_rejected_total{") and not line.endswith(" 0.0")
                   for line in metrics.splitlines()), metrics
        assert 'kind="unauthorized"' in metrics
        assert any("credentials accepted again" in text for text in lines.between(written, time.monotonic()))
    finally:
        manager.stop()


def kubectl(kubeconfig: str, *args: str) -> str:
    proc = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def test_a_service_account_token_that_stops_working_is_replaced_by_the_rotated_one(
        kube_apiserver: RealControlPlane, kube_apiserver_kubeconfig: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, lines: Lines) -> None:
    """The pod's own case: a bound service-account token (TokenRequest, as the kubelet projects it) that
    worked, then is rejected (its service account deleted and re-created), then the rotated token is
    written to the file: the cached, rejected token is dropped on the 401, not a minute later."""
    admin = kube_apiserver_kubeconfig
    kubectl(admin, "create", "serviceaccount", "creds-pod", "-n", "default")
    kubectl(admin, "create", "rolebinding", "creds-pod", "-n", "default", "--clusterrole=cluster-admin",
            "--serviceaccount=default:creds-pod")
    token = in_cluster(kube_apiserver, tmp_path, monkeypatch)
    token.write_text(kubectl(admin, "create", "token", "creds-pod", "-n", "default", "--duration=1h"))
    manager = ShardManager(ShardConfig(group="creds-rotated", shards=4, namespace="default", identity="pod-1",
                                       metrics_port=0, **FAST),  # type: ignore[arg-type]
                           lambda shard: shard.stopped.wait())
    try:
        manager.start()
        port = manager.health_port
        assert port is not None
        wait_until(lambda: len(manager.owned_shards()) == 4 and readyz(port)[0] == 200, 15,
                   "all 4 shards held with the service-account token")

        kubectl(admin, "delete", "serviceaccount", "creds-pod", "-n", "default")
        rejected_at = time.monotonic()
        # kube-apiserver caches a token it accepted for 10 s (TokenSuccessCacheTTL in its authentication
        # options), so the deleted account's token keeps working for up to 10 s more, then fails at the
        # next renewal.
        wait_until(lambda: "credentials rejected" in readyz(port)[1], 25, "/readyz to fail once the token is rejected")
        time.sleep(3.0)
        outage = lines.between(rejected_at, time.monotonic())
        # Losing the 4 shards is logged once each; the rejection itself once per lease duration (2 s).
        rejections = [text for text in outage if "401" in text or "Unauthorized" in text]
        assert 1 <= len(rejections) <= 3, outage
        assert len(outage) <= 4 + 5, outage
        assert any("rejects our credentials" in text and "service account token file" in text for text in outage)

        kubectl(admin, "create", "serviceaccount", "creds-pod", "-n", "default")
        token.write_text(kubectl(admin, "create", "token", "creds-pod", "-n", "default", "--duration=1h"))
        took = wait_until(lambda: len(manager.owned_shards()) == 4 and readyz(port)[0] == 200, 15,
                          "all 4 shards and readiness with the rotated token")
        assert took < 5.0, f"took {took:.1f}s to use the rotated token"
    finally:
        manager.stop()
        subprocess.run(["kubectl", "--kubeconfig", admin, "delete", "serviceaccount,rolebinding", "creds-pod",
                        "-n", "default", "--ignore-not-found"], capture_output=True, timeout=60)
