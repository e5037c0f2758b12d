"""A replica terminated at any moment of its start-up exits cleanly and leaves no Lease held.

In Kubernetes a pod can get SIGTERM while it is still importing (a rollout superseded, a node drained).
Each case starts a real ``shardlease run`` process against the dev-server, waits for one observable point
of its start-up, sends the signal, and checks exit status 0 and that no Lease names it afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

SHARDS = 4


@pytest.fixture(scope="module")
def leases(kubeconfig: str) -> Iterator[client.CoordinationV1Api]:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield client.CoordinationV1Api(api)


def _group_leases(api: client.CoordinationV1Api, group: str) -> list[Any]:
    return list(api.list_namespaced_lease("default", label_selector=f"shardlease.io/group={group}").items)


def _imports_started(proc: subprocess.Popen[bytes], _api: client.CoordinationV1Api, _group: str) -> bool:
    """pydantic's compiled core is mapped: the CLI is importing the configuration, long before the
    manager exists (and after ``catch_early``, which the CLI calls before any sub-command import)."""
    try:
        return "pydantic_core" in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


def _member_created(proc: subprocess.Popen[bytes], api: client.CoordinationV1Api, group: str) -> bool:
    return any(lease.metadata.name == f"{group}-member-r" for lease in _group_leases(api, group))


def _held(count: int) -> Callable[[subprocess.Popen[bytes], client.CoordinationV1Api, str], bool]:
    def check(proc: subprocess.Popen[bytes], api: client.CoordinationV1Api, group: str) -> bool:
        held = [lease for lease in _group_leases(api, group)
                if "-shard-" in lease.metadata.name and lease.spec.holder_identity == "r"]
        return len(held) >= count
    return check


POINTS: dict[str, Callable[[subprocess.Popen[bytes], client.CoordinationV1Api, str], bool]] = {
    "importing": _imports_started,
    "member-lease-created": _member_created,
    "first-shard-held": _held(1),
    "all-shards-held": _held(SHARDS),
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("point", list(POINTS))
def test_signal_during_start_up_exits_cleanly_and_releases_everything(
        point: str, signum: signal.Signals, kubeconfig: str, leases: client.CoordinationV1Api,
        tmp_path: Path) -> None:
    group = f"sig-{point}-{signum.name.lower()}"
    env = {**os.environ, "KUBECONFIG": kubeconfig, "SHARDLEASE_JOURNAL_DIR": str(tmp_path)}
    log = open(tmp_path / "replica.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardlease", "run", "shardlease.harness.journal:handle", "--group", group,
         "--shards", str(SHARDS), "--identity", "r", "--lease-duration", "3", "--renew-deadline", "2",
         "--retry-period", "0.3", "--drain-timeout", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        reached = POINTS[point]
        deadline = time.monotonic() + 30
        while not reached(proc, leases, group):
            assert proc.poll() is None, f"replica exited before {point}: {(tmp_path / 'replica.log').read_text()}"
            assert time.monotonic() < deadline, f"replica never reached {point}"
            time.sleep(0.002 if point == "importing" else 0.02)
        proc.send_signal(signum)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "replica.log").read_text()
    assert code == 0, f"{signum.name} at {point}: exit status {code}, log:\n{text}"
    assert "Traceback" not in text, text
    left = [(lease.metadata.name, lease.spec.holder_identity) for lease in _group_leases(leases, group)
            if lease.spec.holder_identity == "r"]
    assert left == [], f"{signum.name} at {point}: Leases still held by the replica: {left}\nlog:\n{text}"
