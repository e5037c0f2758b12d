"""The official Python client's ``kubernetes.leaderelection`` LeaseLock elector, unchanged, elects
exactly one leader among two candidate processes on both servers (see
tests/devserver/test_leaderelection.py for failover and pauses, which are dev-server only)."""

from __future__ import annotations

import uuid
from pathlib import Path

import kubernetes
from devserver.elector import (  # tests/ is on sys.path
    candidate_processes,
    wait_for_single_leader,
)

from .conftest import Server

#: The fastest timings the official elector accepts (whole seconds, lease > deadline > 1.2 * retry).
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4, 2, 1


def test_one_leader_among_two(server: Server, api_client: kubernetes.client.ApiClient, ns: str,
                              tmp_path: Path) -> None:
    leases = kubernetes.client.CoordinationV1Api(api_client)

    def holder(name: str) -> str | None:
        spec = leases.read_namespaced_lease(name, ns).spec
        assert spec is not None
        return spec.holder_identity

    lock = "elector-" + uuid.uuid4().hex[:6]
    with candidate_processes(server.kubeconfig, ns, tmp_path, LEASE_DURATION, RENEW_DEADLINE,
                             RETRY_PERIOD) as spawn:
        journal, procs = spawn(lock, ["cand-a", "cand-b"])
        leader = wait_for_single_leader(journal, procs, lock, holder, tmp_path, timeout=30.0,
                                        settle=LEASE_DURATION + RETRY_PERIOD + 1.0)
    spec = leases.read_namespaced_lease(lock, ns).spec
    assert spec is not None
    assert leader.identity in ("cand-a", "cand-b") and spec.lease_duration_seconds == LEASE_DURATION
