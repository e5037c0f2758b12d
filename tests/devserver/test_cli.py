"""``shardlease dev-server`` as a user runs it: a subprocess that prints where it listens, writes a
kubeconfig that works, and exits 0 on SIGINT/SIGTERM."""

from __future__ import annotations

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
