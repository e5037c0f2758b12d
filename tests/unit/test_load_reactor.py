"""Load-aware assignment as the reactor lives it (no server, no threads, a fake clock): loads ride on
the renewals, the oldest member publishes a snapshot when the group is out of balance, and a replica
hands off exactly the shards the snapshot moves, with the usual release."""

from __future__ import annotations

import copy
from typing import Any

from test_reactor import TIMING
from test_reshard_reactor import World

from shardlease.core.assignment import assign
from shardlease.core.loadbalance import LoadSnapshot
from shardlease.core.loadplan import Rebalance
from shardlease.core.messages import WriteKind
from shardlease.core.reactor import Reactor
from shardlease.core.records import (
    ANNOTATION_CAPACITY,
    ANNOTATION_LOAD,
    ANNOTATION_LOAD_SNAPSHOT,
    ANNOTATION_LOADS,
    LeaseRecord,
    format_loads,
    format_microtime,
    group_lease_name,
    member_labels,
    member_lease_name,
    shard_lease_name,
)

SHARDS = 4


class LoadWorld(World):
    """Replica ``a`` with handlers reporting ``self.loads``; other members are put in by hand."""

    def __init__(self) -> None:
        super().__init__(shards=SHARDS)
        self.loads: dict[int, float] = dict.fromkeys(range(SHARDS), 10.0)
        self.writes_seen: list[Any] = []
        self.reactor = Reactor(
            group="g", namespace="default", identity="a", incarnation="inc-a", shards=SHARDS, timing=TIMING,
            cache=self.cache, clock=self.clock, jitter=lambda low, high: high, capacity=1.0,
            load_of=self.loads.get, rebalance=Rebalance(period=1.0, threshold=0.15, epsilon=0.1, max_moves=8))

    def step(self) -> list[Any]:
        commands = super().step()
        self.writes_seen.extend(self.writes(commands))
        return commands

    def annotations(self, name: str) -> dict[str, str]:
        return dict(self.objects[name]["metadata"].get("annotations") or {})

    def put_member(self, identity: str, loads: dict[int, float]) -> None:
        """Another live member, renewed now, younger than ``a``."""
        self.put_foreign({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": member_lease_name("g", identity), "namespace": "default",
                         "labels": member_labels("g"), "creationTimestamp": "2026-01-01T00:00:05Z",
                         "annotations": {"shardlease.io/shards": str(SHARDS), "shardlease.io/generation": "1",
                                         ANNOTATION_CAPACITY: "1", ANNOTATION_LOADS: format_loads(loads)}},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": 2,
                     "renewTime": format_microtime(self.clock.now())}})

    def held(self) -> set[int]:
        return set(self.reactor.owned())

    def round_with_b(self) -> None:
        """One round of a live member ``b`` that takes the shards the assignment gives it once ``a`` has
        released them (as b computes the same assignment), renews them and reports their loads
        (``self.loads``, the true loads); then two steps of ``a``, 0.1 s apart."""
        mine = {s for s, owner in self.reactor._assignment.items() if owner == "b"}
        held = set()
        for shard in sorted(mine):
            obj = self.objects.get(shard_lease_name("g", shard))
            holder = obj["spec"].get("holderIdentity") if obj is not None else None
            if obj is None or holder not in ("", "b"):
                continue
            body = copy.deepcopy(obj)
            spec = body["spec"]
            if holder == "":
                spec["leaseTransitions"] = spec.get("leaseTransitions", 0) + 1
            spec.update({"holderIdentity": "b", "leaseDurationSeconds": 2,
                         "renewTime": format_microtime(self.clock.now())})
            self.put_foreign(body)
            held.add(shard)
        self.put_member("b", {s: self.loads[s] for s in held})
        self.drive(2, advance=0.1)


def test_loads_ride_on_the_renewals_of_shard_and_member_leases() -> None:
    w = LoadWorld()
    w.loads.update({0: 12.5, 3: 0.25})
    w.drive(10, advance=0.1)
    assert w.held() == set(range(SHARDS))
    w.writes_seen.clear()
    w.drive(10, advance=0.1)
    renewals = [x for x in w.writes_seen if x.kind is WriteKind.RENEW]
    assert renewals and all(x.body["metadata"]["annotations"][ANNOTATION_LOAD] == f"{w.loads[x.shard]:.4g}"
                            for x in renewals)
    assert w.annotations(shard_lease_name("g", 0))[ANNOTATION_LOAD] == "12.5"
    member = w.annotations(member_lease_name("g", "a"))
    assert member[ANNOTATION_LOADS] == "0=12.5,1=10,2=10,3=0.25" and member[ANNOTATION_CAPACITY] == "1"
    # Alone, the group is balanced: no snapshot, no write beyond renewals.
    assert {x.kind for x in w.writes_seen} <= {WriteKind.RENEW, WriteKind.MEMBER_RENEW}


def test_the_oldest_member_publishes_a_snapshot_and_hands_off_what_it_moves() -> None:
    w = LoadWorld()
    desired_b = {s for s, o in assign("g", SHARDS, ["a", "b"]).items() if o == "b"}
    assert len(desired_b) == 2
    # The count assignment gives a the two hot shards (10 each), b the two cheap ones (1 each).
    w.loads.update({s: (1.0 if s in desired_b else 10.0) for s in range(SHARDS)})
    w.drive(10, advance=0.1)
    assert w.held() == set(range(SHARDS))
    for _ in range(30):
        w.round_with_b()
    snapshots = [x for x in w.writes_seen if x.kind is WriteKind.GROUP_SNAPSHOT]
    assert len(snapshots) == 1, snapshots
    snap = LoadSnapshot.decode(w.annotations(group_lease_name("g"))[ANNOTATION_LOAD_SNAPSHOT])
    assert snap is not None and snap.seq == 1 and snap.generation == 1
    assert snap.reason.startswith("imbalance 1.82")                # a carried 20 of 22
    assert snap.owners == tuple(assign("g", SHARDS, ["a", "b"])[i] for i in range(SHARDS))
    # It swaps a hot shard for a cold one: 11 each (the hot one moves to bring a under 1.1 x 11, a
    # cold one comes back as a then sits just below its floor 11 / 1.1), with the usual handoffs.
    assert sorted(w.loads[s] for s in w.held()) == [1.0, 10.0]
    moved = (set(range(SHARDS)) - desired_b) - w.held()
    assert len(moved) == 1
    releases = [x.shard for x in w.writes_seen if x.kind is WriteKind.RELEASE]
    assert sorted(moved) == [s for s in releases if s in moved]
    record = LeaseRecord.from_object(w.objects[shard_lease_name("g", moved.pop())])
    assert record is not None and record.holder == "b"
    # Constant loads: no further snapshot, period after period (30 rounds of 0.2 s, the period 1 s).
    w.writes_seen.clear()
    for _ in range(30):
        w.round_with_b()
    assert not [x for x in w.writes_seen if x.kind is WriteKind.GROUP_SNAPSHOT]
    assert sorted(w.loads[s] for s in w.held()) == [1.0, 10.0]
    health = w.reactor.load_status(w.clock.now())
    assert health["mode"] == "load" and health["snapshot"]["seq"] == 1


def test_no_snapshot_for_a_lease_after_a_member_left() -> None:
    """A member that leaves leaves shards failing over to the heirs that watched them in advance; a
    snapshot in that window could give one to a replica that never looked at its Lease (a failover of
    more than one lease). The oldest member waits a lease after a leave before the next snapshot."""
    w = LoadWorld()
    desired_b = {s for s, o in assign("g", SHARDS, ["a", "b"]).items() if o == "b"}
    w.loads.update({s: (1.0 if s in desired_b else 10.0) for s in range(SHARDS)})
    w.drive(10, advance=0.1)
    for _ in range(30):
        w.round_with_b()
    assert len([x for x in w.writes_seen if x.kind is WriteKind.GROUP_SNAPSHOT]) == 1
    # A third member comes and goes (a crash: its member Lease expires, here it is simply gone).
    w.put_member("c", {})
    w.round_with_b()
    assert "c" in w.reactor.members()
    w.cache.delete(member_lease_name("g", "c"), "")
    w.objects.pop(member_lease_name("g", "c"))
    # The loads shift at once: a is far over its share (20 of 22, no shard too hot to move), and the last
    # snapshot is over a period old.
    held = w.held()
    w.loads.update({s: (10.0 if s in held else 1.0) for s in range(SHARDS)})
    w.writes_seen.clear()
    left = w.clock.monotonic()
    while w.clock.monotonic() < left + TIMING.lease_duration - 0.3:
        w.round_with_b()
    assert "c" not in w.reactor.members()
    assert not [x for x in w.writes_seen if x.kind is WriteKind.GROUP_SNAPSHOT], "a snapshot during failover"
    for _ in range(15):
        w.round_with_b()
    assert [x for x in w.writes_seen if x.kind is WriteKind.GROUP_SNAPSHOT], "no snapshot once settled"
