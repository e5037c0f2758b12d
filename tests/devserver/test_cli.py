"""``shardlease dev-server`` as a user runs it: a subprocess that prints where it listens, writes a
kubeconfig that works, and exits 0 on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import CoordinationV1Api

from .conftest import make_client
from .helpers import lease_body

REPO = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("KUBEBUILDER_ASSETS", None)  # these tests are about the embedded server, even where CI exports it
    return subprocess.Popen([sys.executable, "-m", "shardlease", "dev-server", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    kubeconfig = tmp_path / "dev.kubeconfig"
    process = start("--port", "0", "--kubeconfig", str(kubeconfig), "--faults")
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("shardlease dev-server listening on http://127.0.0.1:"), first
        url = first.split()[-1]
        second = process.stdout.readline()
        assert second.strip() == f"kubeconfig written to {kubeconfig.resolve()}"
        rest = [process.stdout.readline() for _ in range(2)]
        assert f"KUBECONFIG={kubeconfig.resolve()} kubectl get leases -A" in "".join(rest)
        api = CoordinationV1Api(make_client(kubeconfig))
        assert api.api_client.configuration.host == url
        api.create_namespaced_lease("default", lease_body("from-cli"))
        assert [l.metadata.name for l in api.list_lease_for_all_namespaces().items] == ["from-cli"]
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_cli_refuses_remote_host_without_flag(tmp_path: Path) -> None:
    process = start("--host", "0.0.0.0", "--kubeconfig", str(tmp_path / "kc"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "--host 0.0.0.0" in err and "--allow-remote" in err
    assert not (tmp_path / "kc").exists()


def test_cli_help_mentions_defaults() -> None:
    done = subprocess.run([sys.executable, "-m", "shardlease", "dev-server", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for flag in ("--host", "--port", "--kubeconfig", "--faults", "--allow-remote",
                 "shardlease-dev.kubeconfig"):
        assert flag in done.stdout


def test_a_request_for_an_unserved_type_is_answered_as_kube_does_and_logged_once_naming_kube_assets(
        tmp_path: Path) -> None:
    """A handler streaming a type the embedded server lacks gets kube-apiserver's 404, unchanged; the
    dev-server's own stderr says once per resource which type that was, and where a server with it is."""
    import urllib.error
    import urllib.request

    process = start("--port", "0", "--kubeconfig", str(tmp_path / "dev.kubeconfig"))
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        answers = []
        paths = ["/apis/apps/v1/namespaces/default/deployments"] * 3 + [
            "/apis/apps/v1/deployments?watch=true", "/api/v1/pods", "/api/v1/namespaces/x/pods/p",
            "/apis/example.com/v1/widgets", "/api/v1/namespaces/default/configmaps",  # served: no line
            "/nothing"]  # names no type: no line
        for path in paths:
            try:
                with urllib.request.urlopen(url + path, timeout=10) as response:
                    answers.append((response.status, path))
            except urllib.error.HTTPError as exc:
                answers.append((exc.code, json.loads(exc.read())))
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    not_found = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": "the server could not find the requested resource", "reason": "NotFound",
                 "details": {}, "code": 404}
    assert answers == [(404, not_found)] * 7 + [(200, "/api/v1/namespaces/default/configmaps"), (404, not_found)]
    lines = [line for line in stderr.splitlines() if "is not served by the embedded dev-server" in line]
    named = [line.split(": ", 2)[2].split(" is not served")[0] for line in lines]
    assert named == ["apps/v1 deployments", "v1 pods", "example.com/v1 widgets"], stderr
    assert all(line.startswith("shardlease dev-server: ") and "--kube-assets DIR" in line
               and "scripts/build-kube-assets" in line for line in lines), lines
