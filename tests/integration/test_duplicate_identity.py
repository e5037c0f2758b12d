"""Two or three processes started with one identity never work on a shard at once.

Before incarnations, two ``shardlease run`` processes with one identity both took every Lease naming
that identity as their own: 50 overlapping work intervals in 12 s and ~940 log lines a second each.
Now the member Lease decides: one process works, the others refuse, fail readiness and say why, and
``shardlease status`` flags the identity. When the working one leaves, one of the others takes over.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from support import free_port as _free_port

from shardlease.harness.journal import running_handlers
from shardlease.harness.localcluster import LocalCluster, Replica

from .conftest import BOTH_SERVERS_DEV_SLOW, SETTLE_TIMEOUT, SHARDS, finish

IDENTITY = "same"
#: Log lines a refused process may write in the ~8 s it is refused (before: ~940 per second).
MAX_REFUSED_LOG_LINES = 60


def _start(cluster: LocalCluster) -> tuple[Replica, int]:
    port = _free_port()
    return cluster.add_replica(IDENTITY, extra_args=["--metrics-port", str(port)]), port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _working_pids(cluster: LocalCluster) -> set[int]:
    live = {r.pid for r in cluster.replicas if r.running}
    return {pid for who in running_handlers(cluster.journal()).values() for _identity, pid in who if pid in live}


def _status(cluster: LocalCluster) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "shardlease", "status", "--group", cluster.group,
                          "--kubeconfig", str(cluster.kubeconfig), "--output", "json"],
                         capture_output=True, text=True, timeout=60, check=False)
    return dict(json.loads(out.stdout))


@BOTH_SERVERS_DEV_SLOW
def test_duplicates_of_one_identity_refuse_and_one_takes_over(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(0)
    first, first_port = _start(cluster)
    cluster.wait_settled(timeout=SETTLE_TIMEOUT, members=[IDENTITY])
    others = [_start(cluster) for _ in range(2)]          # three processes with one identity
    for replica, port in others:
        status, body = _wait(lambda p=port: _refused_readyz(p), SETTLE_TIMEOUT, f"{replica.pid} to report the conflict")
        assert IDENTITY in body and "--identity" in body, body
        health = json.loads(_get(port, "/health")[1])
        assert health["identity_conflict"] and health["shards_held"] == [], health
    assert _get(first_port, "/readyz")[0] == 200
    time.sleep(3.0)                                          # > a lease duration with all three running
    assert _working_pids(cluster) == {first.pid}, "only the first process may run handlers"
    assert cluster.snapshot().all_held(by=[IDENTITY])

    report = _status(cluster)
    assert report["problems"], report
    assert any("refused" in problem and IDENTITY in problem for problem in report["problems"]), report

    # The working process leaves gracefully: exactly one of the others takes every shard.
    first.terminate()
    assert first.wait(20) == 0
    _wait(lambda: len(_working_pids(cluster)) == 1 and cluster.snapshot().all_held(by=[IDENTITY]),
          SETTLE_TIMEOUT, "one of the refused processes to take over")
    successor = _working_pids(cluster).pop()
    assert successor in {replica.pid for replica, _ in others}
    time.sleep(2.0)
    assert _working_pids(cluster) == {successor}

    for replica, _port in others:
        lines = replica.log_text().splitlines()
        assert len(lines) <= MAX_REFUSED_LOG_LINES, f"{len(lines)} log lines:\n" + "\n".join(lines[-30:])
    entries = finish(cluster)                                # no overlap, tokens rise, clean exits
    assert len({(e.identity, e.pid) for e in entries if e.kind == "work"}) == 2


def test_a_restarted_process_with_the_same_name_takes_over_after_a_crash(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(0)
    first = cluster.add_replica(IDENTITY)
    peer = cluster.add_replica("peer")
    cluster.wait_settled(timeout=SETTLE_TIMEOUT, members=[IDENTITY, "peer"])
    mine = len(cluster.snapshot().held_by(IDENTITY))
    assert 0 < mine < SHARDS
    first.kill()
    restarted = cluster.add_replica(IDENTITY)               # same pod name, new process
    cluster.wait_settled(timeout=SETTLE_TIMEOUT, members=[IDENTITY, "peer"])
    _wait(lambda: restarted.pid in _working_pids(cluster), SETTLE_TIMEOUT, "the restarted process to work")
    assert peer.running
    finish(cluster)


def _refused_readyz(port: int) -> tuple[int, str] | None:
    """``/readyz``'s answer once it reports the identity conflict (503), else ``None``."""
    if not _port_open(port):
        return None
    status, body = _get(port, "/readyz")
    return (status, body) if status == 503 and "identity conflict" in body else None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
