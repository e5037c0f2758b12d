"""Starting and stopping the real control plane: nothing left behind (checked by PID) whether it is
stopped, restarted, or its parent dies; and clear errors for every bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta

from shardlease.controlplane import ControlPlaneError, RealControlPlane
from shardlease.testing import require_kube_assets

from .helpers import alive, wait_gone

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets() -> Path:
    return require_kube_assets()


@pytest.fixture
def fake_assets(tmp_path: Path, assets: Path) -> Iterator[Path]:
    """An assets dir whose etcd is the real one (a symlink), for breaking kube-apiserver."""
    directory = tmp_path / "assets"
    directory.mkdir()
    (directory / "etcd").symlink_to(assets / "etcd")
    yield directory


def test_start_restart_stop_leaves_nothing(assets: Path, tmp_path: Path) -> None:
    plane = RealControlPlane(assets, work_dir=tmp_path / "cp").start()
    try:
        pids = [plane.etcd_pid, plane.apiserver_pid]
        assert all(pid is not None and alive(pid) for pid in pids)
        kubeconfig = plane.write_kubeconfig(tmp_path / "kubeconfig")
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        leases = CoordinationV1Api(client)
        leases.create_namespaced_lease("default", V1Lease(metadata=V1ObjectMeta(name="survivor"),
                                                          spec=V1LeaseSpec(holder_identity="x")))
        url, first_apiserver = plane.url, plane.apiserver_pid
        assert first_apiserver is not None

        plane.restart_apiserver()
        assert plane.url == url and plane.apiserver_pid != first_apiserver
        assert not wait_gone([first_apiserver], 5)
        pids.append(plane.apiserver_pid)
        # etcd kept: the object written before the crash is still there, same kubeconfig works.
        survivor = leases.read_namespaced_lease("survivor", "default")
        assert survivor.spec is not None and survivor.spec.holder_identity == "x"
        client.close()
    finally:
        plane.stop()
    assert not plane.running
    assert wait_gone([pid for pid in pids if pid is not None], 5) == []
    assert not plane.etcd_data_dir.exists()  # preallocated WAL files do not pile up in /tmp
    plane.stop()  # idempotent


def test_children_die_with_a_sigkilled_parent(assets: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from shardlease.controlplane import RealControlPlane
        plane = RealControlPlane({str(assets)!r}, work_dir={str(tmp_path / "cp")!r}).start()
        print(plane.etcd_pid, plane.apiserver_pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(alive(p) for p in pids), line
    finally:
        parent.kill()  # no atexit, no finally: only the kernel's PDEATHSIG can clean up
        parent.wait(10)
    assert wait_gone(pids, 10) == [], "etcd/kube-apiserver outlived their SIGKILLed parent"


def test_cli_serves_until_sigterm_then_leaves_nothing(assets: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "real.kubeconfig"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KUBEBUILDER_ASSETS", None)  # the flag alone must be enough
    process = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "dev-server", "--kube-assets", str(assets),
         "--port", "0", "--kubeconfig", str(kubeconfig)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert "real kube-apiserver v1.36." in lines[1], lines
        assert lines[2].strip() == f"kubeconfig written to {kubeconfig.resolve()}", lines
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        assert client.configuration.host.startswith("https://127.0.0.1:")
        names = [n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_namespace().items
                 if n.metadata is not None]
        assert "kube-system" in names
        client.close()
        children = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children")
                    .read_text().split()]
        assert len(children) == 2 and all(alive(p) for p in children)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "shardlease dev-server stopped" in out
    work_dir = Path(lines[0].split("(logs in ")[1].rstrip(")\n"))
    assert not work_dir.exists()  # a clean stop leaves no temporary files either
    assert wait_gone(children, 5) == []


def test_apiserver_that_exits_early_is_reported_with_its_log(assets: Path, fake_assets: Path,
                                                             tmp_path: Path) -> None:
    (fake_assets / "kube-apiserver").symlink_to(assets / "kube-apiserver")
    plane = RealControlPlane(fake_assets, feature_gates={"NoSuchGateForShardlease": True},
                             work_dir=tmp_path / "cp")
    with pytest.raises(ControlPlaneError) as caught:
        plane.start(timeout=60)
    message = str(caught.value)
    assert message.startswith("kube-apiserver exited with code")
    assert str(plane.apiserver_log) in message
    assert "NoSuchGateForShardlease" in message  # the log's own words about it
    assert "--feature-gates" in message  # the fix
    assert plane.etcd_pid is not None and wait_gone([plane.etcd_pid], 5) == []


def test_missing_assets_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ControlPlaneError, match=r"kube assets directory .*nowhere does not exist.*"
                                                r"scripts/build-kube-assets"):
        RealControlPlane(missing)
    assert not any(tmp_path.iterdir())


def test_missing_binary(fake_assets: Path) -> None:
    with pytest.raises(ControlPlaneError,
                       match=r"kube-apiserver: binary .*/kube-apiserver is missing.*build-kube-assets"):
        RealControlPlane(fake_assets)


def test_binary_not_executable(fake_assets: Path) -> None:
    binary = fake_assets / "kube-apiserver"
    binary.write_bytes(b"")
    binary.chmod(0o644)
    with pytest.raises(ControlPlaneError, match=r"kube-apiserver: .* not an executable file.*chmod \+x"):
        RealControlPlane(fake_assets)


def test_port_in_use(assets: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plane = RealControlPlane(assets, port=port, work_dir=tmp_path / "cp")
        with pytest.raises(ControlPlaneError, match=rf"kube-apiserver: port {port} on 127.0.0.1 is in "
                                                    r"use .*--secure-port.*0 picks a free one"):
            plane.start()
    assert plane.etcd_pid is None and plane.apiserver_pid is None  # nothing was started


@pytest.mark.parametrize(("gates", "field"), [({"A=B": True}, "'A=B'"), ({"Gate": "yes"}, "Gate")])
def test_bad_feature_gates(assets: Path, gates: dict[str, object], field: str) -> None:
    with pytest.raises(ControlPlaneError, match=f"feature_gates.*{field}"):
        RealControlPlane(assets, feature_gates=gates)  # type: ignore[arg-type]


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["--kube-assets", "{missing}"], 1, "kube assets directory {missing} does not exist"),
    (["--kube-assets", "{assets}", "--faults"], 2, "fault injection is dev-server-only"),
    (["--feature-gates", "A=true"], 2, "the embedded server does not know A"),
    (["--kube-assets", "{assets}", "--feature-gates", "A"], 2, "'A' is not NAME=true or NAME=false"),
])
def test_cli_bad_input(argv: list[str], code: int, says: str, assets: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from shardlease.cli import main

    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    values = {"missing": str(tmp_path / "missing"), "assets": str(assets)}
    args = ["dev-server", *(a.format(**values) for a in argv), "--kubeconfig", str(tmp_path / "k")]
    assert main(args) == code
    assert says.format(**values) in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_cli_faults_refused_when_env_chooses_the_real_server(
        assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shardlease.cli import main

    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    assert main(["dev-server", "--faults", "--kubeconfig", str(tmp_path / "k")]) == 2
    assert "chosen by $KUBEBUILDER_ASSETS" in capsys.readouterr().err
