"""``shardlease status`` against a running group: all owned, then a constructed misplacement (on the
dev-server and on the real kube-apiserver)."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys

from kubernetes.client import CoordinationV1Api

from shardlease.commands.status import FLAG_MISPLACED, FLAG_UNOWNED
from shardlease.core.records import format_microtime, member_labels, member_lease_name
from shardlease.harness.localcluster import LocalCluster, Snapshot

from .conftest import BOTH_SERVERS_DEV_SLOW, SETTLE_TIMEOUT, SHARDS, finish


def status(cluster: LocalCluster, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardlease", "status", "--group", cluster.group,
         "--namespace", cluster.namespace, "--kubeconfig", str(cluster.kubeconfig), *extra],
        capture_output=True, text=True, timeout=60, env=cluster.base_env(), cwd=cluster.cwd)


@BOTH_SERVERS_DEV_SLOW
def test_status_shows_a_healthy_group_then_flags_misplaced_shards(make_cluster) -> None:
    cluster = make_cluster(3)
    cluster.wait_settled(timeout=SETTLE_TIMEOUT)

    result = status(cluster, "--output", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["shards"] == SHARDS and data["summary"]["owned"] == SHARDS
    assert data["summary"]["unowned"] == data["summary"]["misplaced"] == data["summary"]["expired"] == []
    assert sorted(m["identity"] for m in data["members"] if m["live"]) == sorted(
        cluster.running_identities())

    text = status(cluster)
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip().splitlines()[-1].startswith(f"OK: {SHARDS}/{SHARDS} shards owned")

    # Construct a misplacement: a "ghost" member that looks live but never takes a shard. The
    # replicas hand the ghost's shards over (released, then picked up by a fallback holder after
    # the handoff grace), so those -- and only those -- must show as unowned or misplaced.
    leases = CoordinationV1Api(cluster.api_client())
    now = format_microtime(_dt.datetime.now(_dt.timezone.utc))
    leases.create_namespaced_lease(cluster.namespace, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": member_lease_name(cluster.group, "ghost"), "labels": member_labels(cluster.group),
                     "annotations": {"shardlease.io/shards": str(SHARDS)}},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 3600, "acquireTime": now,
                 "renewTime": now},
    })
    ghost_shards = sorted(s for s, who in cluster.desired([*cluster.running_identities(), "ghost"]).items()
                          if who == "ghost")

    def ghost_shards_flagged(snap: Snapshot) -> bool:
        flagged = set(snap.view.flagged(FLAG_UNOWNED)) | set(snap.view.flagged(FLAG_MISPLACED))
        return sorted(flagged) == ghost_shards and all(snap.holders()[s] != "ghost" for s in ghost_shards)

    cluster.wait_for(ghost_shards_flagged, SETTLE_TIMEOUT, what=f"ghost's shards {ghost_shards} flagged")
    result = status(cluster, "--output", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert sorted(summary["unowned"] + summary["misplaced"]) == ghost_shards, summary
    text = status(cluster).stdout
    assert text.strip().splitlines()[-1].startswith("ATTENTION: ")
    assert any(flag in text for flag in (FLAG_MISPLACED, FLAG_UNOWNED))

    leases.delete_namespaced_lease(member_lease_name(cluster.group, "ghost"), cluster.namespace)
    cluster.wait_settled(timeout=SETTLE_TIMEOUT)
    finish(cluster)
