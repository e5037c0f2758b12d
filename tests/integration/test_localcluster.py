"""The LocalCluster harness itself: process control, snapshots, faults, and leaving nothing behind.

These use a long-running but trivial replica command (a second dev-server) so they test the harness,
not the runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shardlease.harness.localcluster import LocalCluster, RemoteFaults, Timings, _process_groups


def trivial_argv(tmp_path: Path, name: str) -> list[str]:
    """A ``shardlease`` command that runs until signalled: another dev-server."""
    return ["dev-server", "--port", "0", "--kubeconfig", str(tmp_path / f"{name}.kubeconfig")]


def gone(pid: int) -> bool:
    return pid not in _process_groups()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_signals_logs_and_clean_stop(tmp_path: Path) -> None:
    with LocalCluster(group="h", shards=3, work_dir=tmp_path / "c") as cluster:
        cluster.start()
        replica = cluster.add_replica("trivial", argv=trivial_argv(tmp_path, "t"))
        assert _eventually(lambda: "listening on" in replica.log_text(), 30), replica.log_text()
        replica.pause()
        assert _eventually(lambda: _state(replica.pid) == "T")
        replica.resume()
        assert _eventually(lambda: _state(replica.pid) in ("S", "R"))
        snap = cluster.snapshot()
        assert snap.shards == 3 and snap.unowned() == [0, 1, 2] and snap.members() == []
        replica.terminate()
        assert replica.wait(10) == 0
        assert replica.log_text().rstrip().endswith("shardlease dev-server stopped")
        second = cluster.add_replica("other", argv=trivial_argv(tmp_path, "o"))
    # Leaving the block stopped the still running replica and the dev-server.
    assert not second.running and cluster.leftover_processes() == []
    assert cluster.replica("trivial") is replica and [r.identity for r in cluster.replicas] == ["trivial", "other"]


def test_timings_become_flags() -> None:
    assert Timings(lease_duration=2, renew_deadline=1.2, retry_period=0.3, drain_timeout=5).cli_args() == [
        "--lease-duration", "2", "--renew-deadline", "1.2", "--retry-period", "0.3", "--drain-timeout", "5"]


def test_process_devserver_with_remote_faults(tmp_path: Path) -> None:
    with LocalCluster(group="h", shards=2, work_dir=tmp_path / "c", devserver="process") as cluster:
        cluster.start()
        assert isinstance(cluster.faults, RemoteFaults)
        cluster.faults.partition("shardlease-localcluster")
        with pytest.raises(Exception) as info:
            cluster.snapshot()
        assert getattr(info.value, "status", None) == 503
        assert cluster.faults.snapshot()["partitions"] == {"shardlease-localcluster": "error"}
        cluster.faults.heal()
        assert cluster.snapshot().unowned() == [0, 1]
        assert cluster.request_counts()[("list", "leases")] >= 1
        server_pid = cluster.server_pid
        assert server_pid is not None
    assert wait_gone(server_pid)


@pytest.mark.parametrize("how", ["sigkill", "no-stop"])
def test_nothing_survives_the_parent(tmp_path: Path, how: str) -> None:
    """A parent SIGKILLed mid-run (kernel PDEATHSIG) or one that never calls stop() (atexit)."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from shardlease.harness.localcluster import LocalCluster
        tmp = Path({str(tmp_path)!r})
        cluster = LocalCluster(group="h", shards=1, work_dir=tmp / "c", devserver="process").start()
        replica = cluster.add_replica("orphan", argv=["dev-server", "--port", "0",
                                                     "--kubeconfig", str(tmp / "o.kubeconfig")])
        print(replica.pid, cluster.server_pid, flush=True)
        time.sleep(60 if {how!r} == "sigkill" else 1)
    """)
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": root})
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, line
        if how == "sigkill":
            assert _eventually(lambda: (tmp_path / "o.kubeconfig").exists(), 30)
            parent.send_signal(signal.SIGKILL)
        assert parent.wait(60) in (0, -signal.SIGKILL)
        assert all(wait_gone(pid) for pid in pids), f"survivors: {[p for p in pids if not gone(p)]}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2:].split()[0]


def _eventually(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
