"""A replica started with another shard count than its group's: it refuses, says so, and takes nothing.

A rolling update that changes ``--shards`` starts new pods next to old ones. The new pods must not
take shards under a different numbering (keys would hash to two owners), so they refuse, log both
counts, and ``shardlease status`` flags them, while the group keeps working. Multi-process, on both
servers: the count comes from the member Leases' annotations as the API server returns them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from shardlease.harness.localcluster import LocalCluster

from .conftest import BOTH_SERVERS, SETTLE_TIMEOUT, SHARDS, finish

OTHER_COUNT = 8


@BOTH_SERVERS
def test_a_replica_with_another_shard_count_refuses_and_is_flagged(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(2)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    old = cluster.running_identities()
    # The later --shards wins (argparse), as a changed Deployment flag would.
    odd = cluster.add_replica("odd", extra_args=["--shards", str(OTHER_COUNT)])

    deadline = time.monotonic() + SETTLE_TIMEOUT
    while "shard count mismatch" not in odd.log_text():
        assert odd.running, f"the refusing replica exited:\n{odd.log_tail()}"
        assert time.monotonic() < deadline, f"no mismatch error logged:\n{odd.log_tail()}"
        time.sleep(0.1)
    text = odd.log_text()
    assert f"configured with {OTHER_COUNT} shards" in text and f"uses {SHARDS}" in text, text[-2000:]

    time.sleep(1.5)  # several retry periods: it must still hold nothing, and the group is untouched
    snap = cluster.snapshot()
    assert snap.held_by("odd") == [], snap.render()
    assert snap.all_held(by=old) and snap.holders() == cluster.desired(old), snap.render()

    report = subprocess.run(
        [sys.executable, "-m", "shardlease", "status", "--group", cluster.group, "--namespace",
         cluster.namespace, "--kubeconfig", str(cluster.kubeconfig), "--output", "json"],
        capture_output=True, text=True, timeout=60, env=cluster.base_env(), cwd=cluster.cwd)
    assert report.returncode == 0, report.stderr
    problems = json.loads(report.stdout)["problems"]
    wanted = f"member odd: configured for {OTHER_COUNT} shards, the group uses {SHARDS}"
    assert any(wanted in p for p in problems), problems

    odd.terminate()
    assert odd.wait(20) == 0, odd.log_tail()
    finish(cluster)
