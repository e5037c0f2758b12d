"""A shard Lease deleted and created again hands out fences above every fence the shard had before.

``leaseTransitions`` starts at 0 in a new Lease object, so a token read from it alone went backwards
when an operator deleted a shard Lease or the API server lost its Leases. Here replica processes work
on a group while an operator deletes one shard Lease, and then every Lease of the group at once (what
the replicas see when an API server loses its state or the namespace's Leases are wiped); on both
servers, every shard must come back with a fence above every fence it had, and the journal's check
(:func:`conftest.finish`: no overlap, fences strictly increasing per shard) must hold across it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes.client import CoordinationV1Api

from shardlease.core.records import group_selector, shard_lease_name
from shardlease.harness.localcluster import LocalCluster, Snapshot

from .conftest import BOTH_SERVERS, SETTLE_TIMEOUT, SHARDS, dump, finish


def _fences(snap: Snapshot) -> dict[int, tuple[int, int]]:
    generation = snap.view.generation or 1
    return {shard: (generation, token) for shard, token in snap.tokens().items() if token is not None}


def _back_above(before: dict[int, tuple[int, int]], shards: list[int]) -> Callable[[Snapshot], bool]:
    """Condition: each of ``shards`` held again, under a fence above the one it had before."""
    return lambda snap: all(bool(snap.holders()[s]) and _fences(snap).get(s, (0, -1)) > before[s] for s in shards)


@BOTH_SERVERS
def test_fences_rise_across_an_operator_delete_and_the_loss_of_every_lease(make_cluster) -> None:
    cluster: LocalCluster = make_cluster(3)
    snap = cluster.wait_working(timeout=SETTLE_TIMEOUT)
    # A handoff first, so the Lease to delete has leaseTransitions above 0 (3 -> 0 was the bug).
    leaving = snap.holders()[0]
    assert leaving is not None
    cluster.replica(leaving).terminate()
    cluster.wait_working(timeout=SETTLE_TIMEOUT, members=set(cluster.running_identities()) - {leaving})
    before = _fences(cluster.snapshot())
    assert (before[0][1] & ((1 << 20) - 1)) >= 1, dump(before)

    leases = CoordinationV1Api(cluster.api_client())
    leases.delete_namespaced_lease(shard_lease_name(cluster.group, 0), cluster.namespace)
    after_one = cluster.wait_for(_back_above(before, [0]), timeout=SETTLE_TIMEOUT,
                                 what="shard 0 held again with a larger fence")
    highest = {s: max(before[s], _fences(after_one)[s]) for s in before}

    # Every Lease of the group gone at once: the replicas keep running and create them all again.
    time.sleep(0.5)  # some work under the re-created Lease, so the journal has a tenure to compare
    leases.delete_collection_namespaced_lease(cluster.namespace, label_selector=group_selector(cluster.group))
    cluster.wait_for(_back_above(highest, list(range(SHARDS))), timeout=SETTLE_TIMEOUT,
                     what="every shard held again with a fence above all it had")
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    time.sleep(0.5)
    finish(cluster)
