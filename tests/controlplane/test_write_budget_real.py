"""The write budget across processes on a real kube-apiserver: replicas of ``shardlease run`` with
``--max-write-rate W`` keep the Lease writes the server serves within ``W`` each, and still hold every
shard, once each.

The writes are counted by kube-apiserver itself (``apiserver_request_total`` on ``/metrics``), not by
the replicas, so a budget the runtime only believed it kept would show here.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from shardlease.controlplane import RealControlPlane
from shardlease.core.writebudget import WriteBudget
from shardlease.harness.localcluster import LocalCluster, Timings, runtime_missing
from shardlease.testing import require_kube_assets

#: Timings of the test: renew interval (= retry period) 0.5 s, so the member Lease costs 2 writes/s and
#: the longest safe renewal gap is renew_deadline - retry_period = 1.9 s.
TIMINGS = Timings(lease_duration=4.0, renew_deadline=2.4, retry_period=0.5)
SHARDS = 16
REPLICAS = 3
#: Without a budget 16 shards over 3 replicas ask (5.3 + 1) / 0.5 = 12.7 writes/s per replica; 6 spaces
#: each one's renewals to about every 1.3-1.5 s, inside the 1.9 s bound for the 6 shards one may hold.
RATE = 6.0
_WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")
_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def served_lease_writes(plane: RealControlPlane) -> int:
    """Lease writes kube-apiserver has completed so far (``apiserver_request_total``, every code)."""
    request = urllib.request.Request(f"{plane.url}/metrics", headers={"Authorization": f"Bearer {plane.token}"})
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    with urllib.request.urlopen(request, timeout=20, context=context) as response:
        text = response.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels_part, _, value = line.rpartition(" ")
            labels = dict(_LABELS.findall(labels_part))
            if labels.get("resource") == "leases" and labels.get("verb") in _WRITE_VERBS:
                total += int(float(value))
    return total


@pytest.mark.slow
def test_replicas_keep_their_write_budget_on_the_real_server(tmp_path: Path) -> None:
    missing = runtime_missing()
    if missing:
        pytest.skip(missing)
    assets = require_kube_assets()  # under CI=true: fails without the binaries, never skips
    cluster = LocalCluster(devserver="real", assets=assets, group="budget", shards=SHARDS, namespace="budget-real",
                           work_dir=tmp_path / "lc", timings=TIMINGS,
                           extra_args=["--max-write-rate", f"{RATE:g}"])
    with cluster:
        cluster.start(replicas=REPLICAS)
        plane = cluster.control_plane
        assert plane is not None
        cluster.wait_working(timeout=60)
        time.sleep(2 * TIMINGS.lease_duration)  # acquisitions over, the budgets' turns settled
        start, before = time.monotonic(), served_lease_writes(plane)
        time.sleep(20.0)
        end, after = time.monotonic(), served_lease_writes(plane)
        leases = cluster.leases()
        running = {r.identity for r in cluster.replicas if r.running}
    measured = (after - before) / (end - start)
    # kube-apiserver renews its own identity Lease in kube-system (every 10 s): a little headroom for it.
    limit = REPLICAS * RATE * 1.05 + 0.2
    unbudgeted = (SHARDS + REPLICAS) / TIMINGS.retry_period
    print(f"served {measured:.2f} Lease writes/s over {end - start:.1f} s; limit {limit:.2f}, unbudgeted {unbudgeted:g}")
    assert measured <= limit, f"{measured:.2f} Lease writes/s served, over {REPLICAS} x {RATE:g} (+5%)"
    assert measured < 0.6 * unbudgeted, f"{measured:.2f} writes/s: the budget did not space the renewals"
    # Every shard held, by one running replica, renewed within the lease; no replica over what W can renew.
    now = dt.datetime.now(dt.timezone.utc)
    holders: dict[int, str] = {}
    for lease in leases:
        labels = lease["metadata"].get("labels") or {}
        if labels.get("shardlease.io/role") != "shard":
            continue
        spec = lease["spec"]
        renewed = dt.datetime.fromisoformat(str(spec["renewTime"]).replace("Z", "+00:00"))
        assert spec.get("holderIdentity") in running, lease
        assert (now - renewed).total_seconds() < TIMINGS.lease_duration + 3.0, lease
        holders[int(labels["shardlease.io/shard"])] = spec["holderIdentity"]
    assert sorted(holders) == list(range(SHARDS)), holders
    budget = WriteBudget(RATE, renew_every=TIMINGS.retry_period, renew_deadline=TIMINGS.renew_deadline,
                         retry_period=TIMINGS.retry_period)
    for identity in running:
        plan = budget.plan_for(sum(1 for h in holders.values() if h == identity))
        assert not plan.exceeded and plan.interval > TIMINGS.retry_period, plan
    # No two replicas worked on one shard at a time, and every shard got work (the journal).
    cluster.check_journal()
    assert cluster.leftover_processes() == []
