"""A replica started with another shard count than its group's follows the group's and takes shards.

A rolling update that changes ``--shards`` starts new pods next to old ones. They must neither idle (the
capacity cliff of the rule before resharding) nor take shards under another numbering (keys would hash
to two owners): they run the group's count, and the group switches once, when most members ask for the
new count (docs/resharding.md). Multi-process, on both servers: the count and generation come from the
group Lease and the member Leases as the API server returns them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from shardlease.harness.localcluster import LocalCluster, Snapshot

from .conftest import BOTH_SERVERS_DEV_SLOW, SETTLE_TIMEOUT, SHARDS, finish

OTHER_COUNT = 8


def _status(cluster: LocalCluster) -> dict[str, object]:
    report = subprocess.run(
        [sys.executable, "-m", "shardlease", "status", "--group", cluster.group, "--namespace",
         cluster.namespace, "--kubeconfig", str(cluster.kubeconfig), "--output", "json"],
        capture_output=True, text=True, timeout=60, env=cluster.base_env(), cwd=cluster.cwd)
    assert report.returncode == 0, report.stderr
    out: dict[str, object] = json.loads(report.stdout)
    return out


@BOTH_SERVERS_DEV_SLOW
def test_a_replica_with_another_count_runs_the_groups_and_a_majority_switches_the_group_once(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(2)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    old = cluster.running_identities()
    # The later --shards wins (argparse), as a changed Deployment flag would.
    cluster.add_replica("new-a", extra_args=["--shards", str(OTHER_COUNT)])

    # One vote of three: the group keeps its count, and the new replica takes its share of it.
    members = [*old, "new-a"]
    snap = cluster.wait_for(lambda s: s.all_held() and s.holders() == cluster.desired(members), SETTLE_TIMEOUT,
                            what="the new replica to take its share of the group's count")
    state = cluster.group_state()
    assert state is not None and (state.count, state.generation) == (SHARDS, 1), state
    assert snap.shards == SHARDS and snap.held_by("new-a"), snap.render()
    assert not _status(cluster)["problems"], "a member configured with another count is not a problem"

    # Two of three: after a lease duration of steady majority the oldest member switches the group.
    cluster.add_replica("new-b", extra_args=["--shards", str(OTHER_COUNT)])
    cluster.replica(old[0]).terminate()
    assert cluster.replica(old[0]).wait(20) == 0
    members = [old[1], "new-a", "new-b"]

    def switched(s: Snapshot) -> bool:
        return s.shards == OTHER_COUNT and s.all_held() and s.holders() == cluster.desired(members)

    cluster.wait_for(switched, SETTLE_TIMEOUT, what=f"the group to switch to {OTHER_COUNT} shards")
    state = cluster.group_state()
    assert state is not None and (state.count, state.generation, state.basis) == (OTHER_COUNT, 2, OTHER_COUNT)
    # The old replica still configured with the old count runs the new one, and nothing switches back.
    assert cluster.snapshot().held_by(old[1])
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        state = cluster.group_state()
        assert state is not None and state.generation == 2, f"the group switched again: {state}"
        time.sleep(0.2)
    finish(cluster)
