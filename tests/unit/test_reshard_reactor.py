"""A reshard as the reactor lives it, table-style: no server, no threads, a fake clock (docs/resharding.md).

The world is ``test_reactor.Table``: a cache fed by hand, writes answered as the API server would. A
``World`` drives it: every write succeeds unless told otherwise, every stopped handler returns at once,
and every handler start is checked against the server's objects at that instant: the barrier promise
is that no handler of generation g starts while a shard Lease below the span carries an older one.
"""

from __future__ import annotations

import copy
from typing import Any

from test_reactor import Table

from shardlease.core.messages import HandlerExited, StartHandler, StopHandler, WriteKind
from shardlease.core.records import LeaseRecord, group_lease_name, shard_lease_name
from shardlease.core.resharding import GroupState, group_lease_body, reshard_state


class World(Table):
    def __init__(self, shards: int) -> None:
        super().__init__(shards=shards)
        self.started: list[StartHandler] = []
        self.stopped: list[int] = []
        self.running: dict[int, int] = {}  # shard -> run

    def generation_of(self, shard: int) -> int | None:
        obj = self.objects.get(shard_lease_name("g", shard))
        record = LeaseRecord.from_object(obj) if obj is not None else None
        return record.generation if record is not None else None

    def drive(self, rounds: int = 20, *, advance: float = 0.0, hold_exits: bool = False) -> None:
        """Step, answer every write, let stopped handlers return; ``rounds`` times."""
        for _ in range(rounds):
            commands = self.step()
            for c in commands:
                if isinstance(c, StartHandler):
                    span = max(c.count, self.span())
                    stale = [i for i in range(span) if (self.generation_of(i) or 0) < c.generation]
                    assert not stale, f"shard {c.shard} of generation {c.generation} started while {stale} " \
                                      f"were not stamped with it"
                    self.started.append(c)
                    self.running[c.shard] = c.run
                elif isinstance(c, StopHandler):
                    self.stopped.append(c.shard)
            for write in self.writes(commands):
                self.succeed(write)
                obj = self.objects.get(write.name)
                if write.kind is WriteKind.COLLECT:
                    self.objects.pop(write.name, None)
                    self.cache.delete(write.name, "")
                elif obj is not None:
                    record = LeaseRecord.from_object(obj)
                    assert record is not None
                    self.cache.apply(record)  # the watch echoes it
            if not hold_exits:
                for shard in [s for s in self.stopped if s in self.running]:
                    self.reactor.handle(HandlerExited(shard, self.running.pop(shard)), self.now)
                self.stopped.clear()
            if advance:
                self.clock.advance(advance)

    def span(self) -> int:
        obj = self.objects.get(group_lease_name("g"))
        record = LeaseRecord.from_object(obj) if obj is not None else None
        state = GroupState.from_record(record) if record is not None else None
        return state.span if state is not None else 0

    def reshard(self, shards: int) -> GroupState:
        """An operator's ``shardlease reshard``: the group Lease's next generation, seen through the watch."""
        record = LeaseRecord.from_object(self.objects[group_lease_name("g")])
        assert record is not None
        state = GroupState.from_record(record)
        assert state is not None
        new = reshard_state(state, shards, None)
        body = group_lease_body("g", "default", new, self.clock.now(), record)
        self.put_foreign(copy.deepcopy(body))
        return new

    def put_shard(self, shard: int, holder: str, generation: int, transitions: int = 0) -> None:
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": shard_lease_name("g", shard), "namespace": "default",
                         "labels": {"shardlease.io/group": "g", "shardlease.io/role": "shard",
                                    "shardlease.io/shard": str(shard)},
                         "annotations": {"shardlease.io/generation": str(generation)}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1, "leaseTransitions": transitions,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}}
        self.put_foreign(body)


def test_growing_stops_every_old_handler_and_starts_the_new_count_only_once_every_lease_is_stamped() -> None:
    w = World(shards=2)
    w.drive(5)
    assert sorted(s.shard for s in w.started) == [0, 1] and {s.generation for s in w.started} == {1}
    before = {s.shard: s.token for s in w.started}
    w.started.clear()
    w.reshard(4)
    w.drive(10)
    assert sorted(s.shard for s in w.started) == [0, 1, 2, 3]
    assert {(s.count, s.generation) for s in w.started} == {(4, 2)}
    assert all(w.generation_of(i) == 2 for i in range(4))
    # Re-acquired in place: a new tenure of the same Lease, so the token one larger than before.
    assert {s.shard: s.token for s in w.started}[0] == before[0] + 1
    assert w.reactor.health(w.now)["switching"] is False


def test_no_new_handler_starts_while_an_old_one_is_still_draining() -> None:
    w = World(shards=2)
    w.drive(5)
    w.started.clear()
    w.reshard(3)
    w.drive(10, hold_exits=True)                  # the old handlers have not returned
    assert w.started == [] and w.reactor.health(w.now)["switching"]
    assert w.generation_of(0) == 1 and w.generation_of(1) == 1  # nobody stamps a Lease whose run goes on
    w.drive(10)                                   # now they return
    assert sorted(s.shard for s in w.started) == [0, 1, 2]


def test_shrinking_releases_the_removed_shards_stamped_and_the_oldest_member_deletes_them_later() -> None:
    w = World(shards=4)
    w.drive(5)
    w.started.clear()
    w.reshard(2)
    w.drive(10)
    assert sorted(s.shard for s in w.started) == [0, 1]
    assert w.generation_of(2) == 2 and w.generation_of(3) == 2      # released under the new generation
    assert not LeaseRecord.from_object(w.objects[shard_lease_name("g", 3)]).is_held  # type: ignore[union-attr]
    w.drive(40, advance=0.1)                      # a lease duration later, every member on generation 2
    assert shard_lease_name("g", 2) not in w.objects and shard_lease_name("g", 3) not in w.objects
    assert w.span() == 2


def test_the_oldest_member_retires_a_removed_shard_nobody_ever_created() -> None:
    w = World(shards=3)
    w.drive(5)
    w.objects.pop(shard_lease_name("g", 2))       # as if never created (or deleted by hand)
    w.cache.delete(shard_lease_name("g", 2), "")
    w.reshard(2)
    commands = []
    for _ in range(10):
        step = w.step()
        commands += step
        for c in step:
            if isinstance(c, StopHandler) and c.shard in w.running:
                w.reactor.handle(HandlerExited(c.shard, w.running.pop(c.shard)), w.now)
        for write in w.writes(step):
            w.succeed(write)
            record = LeaseRecord.from_object(w.objects[write.name])
            assert record is not None
            w.cache.apply(record)
    retire = [c for c in w.writes(commands) if c.kind is WriteKind.RETIRE_CREATE]
    assert [c.shard for c in retire] == [2] and w.generation_of(2) == 2


def test_a_lease_stamped_by_a_newer_generation_is_neither_taken_nor_deleted_by_a_member_behind() -> None:
    """Regression (chaos seed 1057320433): the oldest member, still on generation 3 after a partition,
    saw through its shard watch a Lease that generation 4 had released, before its member watch brought
    the group Lease. Shard 24 was retired for it, so it deleted the Lease; generation 4 then created it
    again and two holders used token 0 within one generation."""
    w = World(shards=4)
    w.drive(5)
    w.reshard(2)
    w.drive(40, advance=0.1)                      # generation 2: 2 shards, Leases 2..3 deleted
    assert w.span() == 2
    # Generation 3 (4 shards) happened without us seeing its group Lease yet, only its shard 3. Our
    # own state still says span 4, as before our clean-up lowered it.
    body = copy.deepcopy(w.objects[group_lease_name("g")])
    body["metadata"]["annotations"]["shardlease.io/span"] = "4"
    w.put_foreign(body)
    w.put_shard(3, "", 3)                         # released by a generation-3 member
    assert w.span() == 4
    commands = []
    for _ in range(30):
        commands += w.step()
        w.clock.advance(0.1)
    assert [c for c in w.writes(commands) if c.kind in (WriteKind.COLLECT, WriteKind.CREATE, WriteKind.ACQUIRE)
            and c.name == shard_lease_name("g", 3)] == []


def test_a_replica_behind_that_creates_a_shard_lease_reads_the_group_lease_before_starting_it() -> None:
    """Regression (chaos seed 7): a replica cut off while the group shrank, and the clean-up deleted
    the removed shards' Leases, created one of them again under its old generation (a create is the
    one write that is not conditional on what it saw) and ran it beside the new generation. A created
    Lease's handler now waits for a read of the group Lease that began after the create."""
    w = World(shards=2)
    (member,) = w.writes(w.step(), WriteKind.MEMBER_CREATE)
    w.succeed(member)
    (group,) = w.writes(w.step(), WriteKind.GROUP_CREATE)
    w.succeed(group)
    record = LeaseRecord.from_object(w.objects[group_lease_name("g")])
    assert record is not None
    # Our cache has generation 1 (the write's answer). The server moves on (generation 2, one shard)
    # and our watch does not tell us.
    state = GroupState.from_record(record)
    assert state is not None
    w.server_apply(group_lease_body("g", "default", reshard_state(state, 1, None), w.clock.now(), record))
    creates = w.writes(w.step(), WriteKind.CREATE)
    assert sorted(c.shard for c in creates if c.shard is not None) == [0, 1]
    for write in creates:
        w.succeed(write)
    w.drive(20)
    assert [(s.shard, s.count, s.generation) for s in w.started] == [(0, 1, 2)]
    assert w.generation_of(1) == 2 and not LeaseRecord.from_object(  # type: ignore[union-attr]
        w.objects[shard_lease_name("g", 1)]).is_held


def test_a_failed_stamp_during_a_switch_is_retried_after_the_back_off_not_at_once() -> None:
    """Regression (CI chaos seed 1138509644): a release under the new generation failed (503, then
    'no time left before the renew deadline') and was sent again in the same pass, 67 times in 7 ms.
    The stamping writes of a switch follow the same back-off as every other write."""
    from shardlease.errors import ServerError

    w = World(shards=2)
    w.drive(5)
    w.reshard(1)
    sent: list[float] = []
    for _ in range(40):
        commands = w.step()
        for c in commands:
            if isinstance(c, StopHandler) and c.shard in w.running:
                w.reactor.handle(HandlerExited(c.shard, w.running.pop(c.shard)), w.now)
        for write in w.writes(commands):
            if write.kind is WriteKind.RELEASE and write.shard == 1:
                sent.append(w.now)
                w.fail(write, ServerError("injected"))
            elif write.body is not None or write.kind is WriteKind.GROUP_CHECK:
                w.succeed(write)
        w.clock.advance(0.01)
    assert len(sent) >= 2, sent
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) >= 0.3 / 8 - 1e-9, gaps   # at least an eighth of a retry period, never at once
