"""Targeted watching as rules: what to watch (``inheritable``), what the cache then covers, and how the
reactor asks for a new watch and leaves uncovered shards alone. No server, no threads, a FakeClock."""

from __future__ import annotations

import copy
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reactor import TIMING, Table

from shardlease.core import assignment
from shardlease.core.assignment import assign, inheritable
from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.loadbalance import LoadSnapshot
from shardlease.core.loadplan import LoadPlanner, Rebalance, inheritable_under
from shardlease.core.reactor import HandlerExited, Reactor, StopHandler, WatchShards, WriteKind
from shardlease.core.records import (
    ANNOTATION_CAPACITY,
    ANNOTATION_LOAD_SNAPSHOT,
    LeaseRecord,
    format_microtime,
    member_labels,
    member_lease_name,
    shard_lease_name,
)
from shardlease.core.resharding import group_lease_body, initial_state


@settings(max_examples=25, deadline=None)
@given(members=st.sets(st.integers(0, 999), min_size=2, max_size=12), shards=st.sampled_from([16, 100, 256]),
       data=st.data())
def test_inheritable_holds_every_shard_a_single_failure_would_move_here(members: set[int], shards: int,
                                                                        data: st.DataObject) -> None:
    names = sorted(f"m{i}" for i in members)
    me = data.draw(st.sampled_from(names))
    before = assign("g", shards, names)
    watched = inheritable("g", shards, names, me)
    for leaving in names:
        if leaving == me:
            continue
        after = assign("g", shards, [m for m in names if m != leaving])
        gained = {s for s, owner in after.items() if owner == me and before[s] != me}
        assert gained <= watched, (leaving, sorted(gained - watched))
    assert not watched & {s for s, owner in before.items() if owner == me}


def test_inheritable_estimate_for_large_groups_is_the_ring_successor(monkeypatch: pytest.MonkeyPatch) -> None:
    members = [f"m{i}" for i in range(8)]
    exact = inheritable("g", 1024, members, "m3")
    monkeypatch.setattr(assignment, "EXACT_INHERITABLE_LIMIT", 0)
    estimate = inheritable("g", 1024, members, "m3")
    # Most of what a failure moves here is where m3 comes second on the ring; not all (cascades).
    assert len(exact & estimate) >= 0.9 * len(exact)
    assert inheritable("g", 8, ["solo"], "solo") == frozenset()
    assert inheritable("g", 8, ["a", "b"], "stranger") == frozenset()


def record(name: str, holder: str, rv: str, **labels: str) -> LeaseRecord:
    obj = {"metadata": {"name": name, "resourceVersion": rv, "labels": labels},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 2}}
    parsed = LeaseRecord.from_object(obj)
    assert parsed is not None
    return parsed


def test_a_scoped_list_speaks_only_for_its_scope_and_forgets_what_is_no_longer_watched() -> None:
    clock = FakeClock()
    cache = LeaseCache(clock, covered=frozenset())
    assert not cache.covers(0)
    members = {member_lease_name("g", "a")}
    cache.replace_all([record("g-member-a", "a", "5")], "5", scope=lambda n: n in members or n.startswith("g-member-"))
    assert cache.synced.is_set() and cache.covered == frozenset()
    shard_names = {shard_lease_name("g", i) for i in (0, 1)}
    cache.replace_all([record("g-shard-0", "a", "6")], "6", scope=shard_names.__contains__,
                      covered=frozenset({0, 1}), sync=False)
    assert cache.covers(0) and cache.covers(1) and not cache.covers(2)
    assert cache.get("g-member-a") is not None, "a shard list must not mark members absent"
    assert cache.get("g-shard-1") is None
    cache.take_changed()
    # Re-targeted to shard 1 only: shard 0 is forgotten (not tombstoned), shard 1 listed.
    cache.replace_all([record("g-shard-1", "b", "7")], "7", scope={"g-shard-1"}.__contains__,
                      forget={"g-shard-0"}, covered=frozenset({1}), sync=False)
    assert cache.get("g-shard-0") is None and cache.get("g-shard-1") is not None
    assert {"g-shard-0", "g-shard-1"} <= cache.take_changed()
    assert cache.covered == frozenset({1})
    # A member list leaves coverage alone.
    cache.replace_all([record("g-member-a", "a", "8")], "8", scope=lambda n: n.startswith("g-member-"))
    assert cache.covered == frozenset({1})


class TargetedTable(Table):
    def __init__(self, shards: int) -> None:
        self.clock = FakeClock()
        self.cache = LeaseCache(self.clock, covered=frozenset())
        self.reactor = Reactor(group="g", namespace="default", identity="a", incarnation="inc-a", shards=shards,
                               timing=TIMING, cache=self.cache, clock=self.clock, jitter=lambda low, high: high,
                               targeted=True)
        self.rv = 100
        self.objects = {}
        self.cache.replace_all([], "100", scope=lambda n: n.startswith("g-member-"))

    def cover(self, shards: frozenset[int]) -> None:
        names = {shard_lease_name("g", i) for i in shards}
        self.cache.replace_all([r for r in (LeaseRecord.from_object(o) for n, o in self.objects.items() if n in names)
                                if r is not None], str(self.rv), scope=names.__contains__, covered=shards, sync=False)


def test_the_reactor_asks_for_its_shards_and_takes_none_before_they_are_listed() -> None:
    t = TargetedTable(shards=4)
    commands = t.bootstrap()
    assert WatchShards(frozenset(range(4)), 4) in commands        # alone: everything is ours
    assert t.writes(commands, WriteKind.CREATE) == []             # not listed yet: no "missing Lease" acquire
    t.cover(frozenset(range(4)))
    assert {w.shard for w in t.writes(t.step(), WriteKind.CREATE)} == {0, 1, 2, 3}


def test_the_watch_grows_at_once_and_shrinks_one_lease_later() -> None:
    """Peers come and go while "a" renews what it holds: a set that grows is asked for in the same
    step; one that only shrinks waits a lease duration, so a rebalance costs one relist, not several."""
    t = TargetedTable(shards=24)
    peers = dict.fromkeys("bcdef")

    def peer_heartbeat(name: str) -> None:
        obj = copy.deepcopy(t.objects["g-member-a"])
        obj["metadata"]["name"] = f"g-member-{name}"
        obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:09Z"
        obj["metadata"].pop("resourceVersion", None)
        obj["spec"]["holderIdentity"] = name
        obj["spec"]["renewTime"] = f"2026-01-01T00:00:{t.now:09.6f}Z"
        t.put_foreign(obj)

    def peer_shards() -> None:
        """Peers hold the shards assigned to them, once "a" has let go (as real peers would)."""
        for shard, owner in assign("g", 24, ["a", *peers]).items():
            name = shard_lease_name("g", shard)
            current = t.objects.get(name)
            if owner == "a" or (current is not None and current["spec"].get("holderIdentity") not in ("", owner)):
                continue
            obj = {"metadata": {"name": name, "labels": {"shardlease.io/group": "g", "shardlease.io/role": "shard",
                                                        "shardlease.io/shard": str(shard)}},
                   "spec": {"holderIdentity": owner, "leaseDurationSeconds": 2,
                            "renewTime": f"2026-01-01T00:00:{t.now:09.6f}Z"}}
            t.put_foreign(obj)

    def tick(seconds: float) -> list[WatchShards]:
        """Advance in small steps: every write succeeds, every stopped handler returns, peers renew."""
        asked: list[WatchShards] = []
        for _ in range(round(seconds / 0.1)):
            t.clock.advance(0.1)
            for name in peers:
                peer_heartbeat(name)
            peer_shards()
            for command in t.step():
                if isinstance(command, WatchShards):
                    asked.append(command)
                    t.cover(command.shards)
                elif isinstance(command, StopHandler):
                    t.reactor.handle(HandlerExited(command.shard, command.run), t.now)
                elif hasattr(command, "kind"):
                    t.succeed(command)  # type: ignore[arg-type]
        return asked

    (member,) = t.writes(t.step(), WriteKind.MEMBER_CREATE)
    t.succeed(member)
    for name in peers:
        peer_heartbeat(name)
    tick(1.0)
    members = ["a", *peers]
    expected = frozenset(s for s, o in assign("g", 24, members).items() if o == "a") | \
        inheritable("g", 24, members, "a")
    assert t.reactor._watching == expected and len(expected) < 12
    assert t.reactor.owned() == frozenset(s for s, o in assign("g", 24, members).items() if o == "a")

    # "f" leaves: whatever moves here must be watched in the very next step.
    del peers["f"]
    t.cache.delete("g-member-f", "")
    t.objects.pop("g-member-f")
    asked = tick(0.1)
    members = ["a", *peers]
    grown = frozenset(s for s, o in assign("g", 24, members).items() if o == "a") | inheritable("g", 24, members, "a")
    assert asked and asked[-1].shards >= grown

    # A set that only shrinks (here: one inheritable shard fewer, as a membership change can give) is
    # asked for one lease duration later, so a rebalance that frees shards one by one costs one relist.
    reactor = t.reactor
    smaller = reactor._inheritable - {min(reactor._inheritable)}
    reactor._inheritable, reactor._watch_dirty = smaller, True
    assert not tick(TIMING.lease_duration - 0.2)
    asked = tick(0.4)
    assert asked and asked[-1].shards == reactor.desired() | smaller | reactor.owned()


# Under a load snapshot the owners come from the snapshot rule (``LoadSnapshot.assign`` over the live
# members), and so do the heirs when a member fails. Each row: capacities of a, b, c (and d), and the
# shards that are five times as hot as the others, chosen so that the snapshot moves a shard away from
# its count owner to a peer whose failure hands it to "a" (checked below, not assumed).
SNAPSHOT_ROWS = [
    pytest.param({"a": 1.0, "b": 1.0, "c": 1.0}, (0, 1), id="back-to-its-count-owner"),
    pytest.param({"a": 1.0, "b": 1.0, "c": 1.0}, (0, 2), id="back-to-its-count-owner-2"),
    pytest.param({"a": 1.0, "b": 2.0, "c": 1.0, "d": 1.0}, (0, 1), id="to-a-third-member"),
    pytest.param({"a": 1.0, "b": 2.0, "c": 1.0, "d": 1.0}, (1, 6), id="to-a-third-member-2"),
]


@pytest.mark.parametrize(("capacities", "hot"), SNAPSHOT_ROWS)
def test_under_a_load_snapshot_the_heir_of_a_moved_shard_watches_it_in_advance(
        capacities: dict[str, float], hot: tuple[int, ...]) -> None:
    """"a" watches every shard the snapshot rule would give it if any one peer failed, so a failover
    times the dead holder's expiry from observations a whole lease old: taken over within one lease."""
    shards = 8
    members = sorted(capacities)
    base = assign("g", shards, members)
    snap = LoadSnapshot(generation=1, count=shards, seq=1, taken_at=FakeClock().now(),
                        loads=tuple(5000 if i in hot else 1000 for i in range(shards)),
                        owners=tuple(base[i] for i in range(shards)), reason="test", epsilon=0.1, max_moves=8)
    owners = snap.assign(capacities).owners
    heirs: set[int] = set()      # what "a" takes over when one peer fails, by rerunning the rule
    moved_here: set[int] = set()  # of those, shards the snapshot moved off their count owner
    for peer in members:
        if peer == "a":
            continue
        after = snap.assign({m: c for m, c in capacities.items() if m != peer}).owners
        gained = {s for s in range(shards) if after[s] == "a" and owners[s] != "a"}
        heirs |= gained
        moved_here |= {s for s in gained if owners[s] != base[s]}
    assert moved_here, "row does not exercise a shard moved by the snapshot"

    t = TargetedTable(shards=shards)
    wall = t.clock.now()
    for peer in members:
        if peer == "a":
            continue
        t.put_foreign({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": member_lease_name("g", peer), "namespace": "default", "labels": member_labels("g"),
                         "creationTimestamp": "2025-12-31T00:00:00Z",
                         "annotations": {"shardlease.io/shards": str(shards), "shardlease.io/generation": "1",
                                         ANNOTATION_CAPACITY: f"{capacities[peer]:g}"}},
            "spec": {"holderIdentity": peer, "leaseDurationSeconds": 2, "renewTime": format_microtime(wall)}})
    group = group_lease_body("g", "default", initial_state([shards], oldest=shards), wall)
    group["metadata"].setdefault("annotations", {})[ANNOTATION_LOAD_SNAPSHOT] = snap.encode()
    t.put_foreign(group)
    (member,) = t.writes(t.step(), WriteKind.MEMBER_CREATE)
    t.succeed(member)
    for _ in range(5):
        for command in t.step():
            if isinstance(command, WatchShards):
                t.cover(command.shards)
            elif hasattr(command, "kind"):
                t.succeed(command)  # type: ignore[arg-type]
    mine = frozenset(s for s in range(shards) if owners[s] == "a")
    assert t.reactor.desired() == mine, "the replica does not run the snapshot's owners"
    watching = t.reactor._watching
    assert watching is not None
    assert heirs <= watching, f"shards {sorted(heirs - watching)} would be inherited unwatched"
    # The pure rule the reactor uses names the same shards.
    planner_heirs = inheritable_under(snap, capacities, "a")
    assert planner_heirs == frozenset(heirs)


def test_without_a_snapshot_the_inheritable_set_is_the_count_rule() -> None:
    planner = LoadPlanner(group="g", namespace="default", settings=Rebalance(), cache=LeaseCache(FakeClock()),
                          clock=FakeClock(), log=logging.getLogger("test"), metrics=None)
    for members in (["a", "b"], ["a", "b", "c", "d", "e"]):
        caps = dict.fromkeys(members, 1.0)
        assert planner.inheritable("g", 24, caps, "a", 1.0) == inheritable("g", 24, members, "a")
    assert planner.inheritable("g", 24, {}, "a", 1.0) == frozenset()
