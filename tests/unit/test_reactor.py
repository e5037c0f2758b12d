"""The reactor as a table: given what it knows and what just happened, which commands does it issue?

No server, no threads, no sleeping: a ``FakeClock``, a ``LeaseCache`` fed by hand (as the watch would),
and write results built the way the API server would answer. Every test checks the reactor's own
invariants after each step. Scaled timings: lease 2 s, renew deadline 1.2 s, retry 0.3 s, grace 0.6 s.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.elector import Timing
from shardlease.core.reactor import (
    CRASH_LOOP_ERRORS,
    Command,
    ExtendHandler,
    HandlerExited,
    HandlerRaised,
    Reactor,
    StartHandler,
    StopHandler,
    Write,
    WriteDone,
    WriteKind,
)
from shardlease.core.records import ANNOTATION_EPOCH, ANNOTATION_INCARNATION, LeaseRecord
from shardlease.errors import ApiError, Conflict, NetworkError, RequestTimeout, ServerError

TIMING = Timing(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3, handoff_grace=0.6, drain_timeout=1.0)


class Table:
    """One reactor and the world as the test tells it: the server's objects, the cache, the clock."""

    def __init__(self, identity: str = "a", shards: int = 2, incarnation: str = "inc-a",
                 timing: Timing = TIMING, wall: datetime.datetime | None = None) -> None:
        self.clock = FakeClock(wall=wall)
        self.cache = LeaseCache(self.clock)
        self.reactor = Reactor(group="g", namespace="default", identity=identity, incarnation=incarnation,
                               shards=shards, timing=timing, cache=self.cache, clock=self.clock,
                               jitter=lambda low, high: high)
        self.rv = 100
        self.objects: dict[str, dict[str, Any]] = {}
        self.cache.replace_all([], "100")

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def step(self) -> list[Command]:
        commands = self.reactor.step(self.now)
        self.reactor.check_invariants()
        return commands

    def writes(self, commands: list[Command], kind: WriteKind | None = None) -> list[Write]:
        return [c for c in commands if isinstance(c, Write) and (kind is None or c.kind is kind)]

    def server_apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the API server stores and answers for a successful create/replace (and the watch echoes)."""
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    def put_foreign(self, body: dict[str, Any]) -> None:
        """Another writer's object arrives through the watch."""
        record = LeaseRecord.from_object(self.server_apply(body))
        assert record is not None
        self.cache.apply(record)

    def succeed(self, write: Write, started: float | None = None) -> None:
        obj = None if write.body is None else self.server_apply(write.body)
        if write.kind in (WriteKind.REFRESH, WriteKind.MEMBER_REFRESH, WriteKind.GROUP_CHECK):
            obj = copy.deepcopy(self.objects.get(write.name))
        self.reactor.handle(WriteDone(write, self.now if started is None else started, obj), self.now)

    def fail(self, write: Write, error: ApiError) -> None:
        self.reactor.handle(WriteDone(write, self.now, error=error), self.now)

    def bootstrap(self) -> list[Command]:
        """Start up alone: create the member Lease, then (the oldest member) the group Lease; returns the
        commands of the step that reads the group Lease back."""
        (member,) = self.writes(self.step(), WriteKind.MEMBER_CREATE)
        self.succeed(member)
        (group,) = self.writes(self.step())
        assert group.kind is WriteKind.GROUP_CREATE and group.name == "g-group"
        self.succeed(group)
        return self.step()

    def join(self) -> list[Command]:
        """Start up: create the member Lease and the group Lease, then acquire every shard; returns the
        commands after."""
        acquisitions = self.writes(self.bootstrap())
        assert {w.kind for w in acquisitions} == {WriteKind.CREATE}
        for write in acquisitions:
            self.succeed(write)
        return self.confirm()

    def confirm(self) -> list[Command]:
        """After creating shard Leases: the read of the group Lease that confirms our generation; returns
        the commands of the step after its answer (where the handlers start)."""
        commands = self.step()
        assert not any(isinstance(c, StartHandler) for c in commands), "started before the group check"
        (check,) = self.writes(commands, WriteKind.GROUP_CHECK)
        self.succeed(check)
        return self.step()


def starts(commands: list[Command]) -> dict[int, StartHandler]:
    return {c.shard: c for c in commands if isinstance(c, StartHandler)}


def test_join_creates_the_member_lease_then_takes_every_shard_with_token_0() -> None:
    t = Table(shards=2)
    first = t.step()
    assert [(w.kind, w.name) for w in t.writes(first)] == [(WriteKind.MEMBER_CREATE, "g-member-a")]
    assert not t.reactor.health(t.now)["ready"]
    (member,) = t.writes(first)
    t.succeed(member)
    (group,) = t.writes(t.step())
    assert group.kind is WriteKind.GROUP_CREATE  # the first member creates the group's count, generation 1
    t.succeed(group)
    acquisitions = t.writes(t.step())
    assert sorted(w.name for w in acquisitions) == ["g-shard-0", "g-shard-1"]
    assert all(w.body is not None and w.body["metadata"]["annotations"][ANNOTATION_INCARNATION] == "inc-a"
               for w in acquisitions)
    started = t.now
    for write in acquisitions:
        t.succeed(write)
    commands = t.confirm()       # a created Lease waits for a read of the group Lease (our generation?)
    runs = starts(commands)
    # Token: transitions 0 on top of the new Lease's creation epoch.
    epochs = {int(w.name.rsplit("-", 1)[1]): int(w.body["metadata"]["annotations"][ANNOTATION_EPOCH])
              for w in acquisitions if w.body is not None}
    assert sorted(runs) == [0, 1] and all(r.token == epochs[i] << 20 and r.valid_until == started + 1.2
                                          for i, r in runs.items())
    assert t.reactor.owned() == frozenset({0, 1})  # published when acquired, before the check
    assert t.reactor.health(t.now)["ready"]


def test_renewal_is_due_one_retry_period_after_the_last_one_started_and_extends_validity() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    assert t.writes(t.step(), WriteKind.RENEW) == []
    assert t.reactor.next_wakeup(t.now) <= t.now + 0.3 + 1e-9
    t.clock.advance(0.3)
    (renew,) = t.writes(t.step(), WriteKind.RENEW)
    assert renew.sent_rv == t.objects["g-shard-0"]["metadata"]["resourceVersion"]
    assert renew.deadline == pytest.approx(t.now - 0.3 + 1.2)   # bounded by the renew deadline
    t.succeed(renew)
    extended = [c for c in t.step() if isinstance(c, ExtendHandler)]
    assert extended == [ExtendHandler(0, runs[0].run, t.now + 1.2)]


def test_a_renew_interval_spaces_renewals_while_failures_are_retried_every_retry_period() -> None:
    timing = Timing(lease_duration=2.0, renew_deadline=1.2, retry_period=0.3, handoff_grace=0.6,
                    drain_timeout=1.0, renew_interval=0.8)
    t = Table(shards=1, timing=timing)
    t.join()
    t.clock.advance(0.7)
    assert t.writes(t.step(), WriteKind.RENEW) == []               # not due before the interval
    t.clock.advance(0.1)
    (renew,) = t.writes(t.step(), WriteKind.RENEW)
    t.fail(renew, ServerError("HTTP 503", status=503))
    t.clock.advance(0.2)
    assert t.writes(t.step(), WriteKind.RENEW) == []
    t.clock.advance(0.1)                                          # a retry period after the failure
    assert t.writes(t.step(), WriteKind.RENEW)


def test_failed_renewals_until_the_deadline_lose_the_shard_stop_the_handler_and_pause_the_next_try() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    acquired_at = t.now
    seen: list[Command] = []
    for _ in range(20):
        t.clock.advance(0.1)
        commands = t.step()
        seen += commands
        for write in t.writes(commands, WriteKind.RENEW):
            t.fail(write, ServerError("HTTP 500", status=500))
        if t.reactor.owned() == frozenset():
            break
    assert t.now >= acquired_at + 1.2                             # never given up before the deadline
    assert t.reactor.owned() == frozenset() and StopHandler(0, runs[0].run) in seen
    assert len(t.writes(seen, WriteKind.RENEW)) >= 3              # it kept trying until then
    t.reactor.handle(HandlerExited(0, runs[0].run), t.now)
    # The Lease still names us (our last renewal may even have landed): taken back, but not at once.
    assert t.writes(t.step(), WriteKind.ACQUIRE) == []
    t.clock.advance(0.31)
    (again,) = t.writes(t.step(), WriteKind.ACQUIRE)
    assert again.body is not None and again.body["spec"]["leaseTransitions"] == 1   # a new tenure, a new token


def test_a_conflict_waits_for_the_watch_then_reads_the_lease_once() -> None:
    t = Table(shards=1)
    t.join()
    t.clock.advance(0.3)
    (renew,) = t.writes(t.step(), WriteKind.RENEW)
    t.fail(renew, Conflict("HTTP 409", status=409, reason="Conflict"))
    assert t.writes(t.step()) == []                               # the watch may explain it: wait
    t.clock.advance(0.3)
    (refresh,) = t.writes(t.step(), WriteKind.REFRESH)
    assert refresh.name == "g-shard-0"


def lost_answer(**unknown: bool) -> NetworkError:
    return NetworkError("POST ...: connection closed by the server before any response", **unknown)


def shard_writes(t: Table) -> list[Write]:
    """The writes of the next step that concern shard Leases (member renewals go on meanwhile)."""
    return [w for w in t.writes(t.step()) if w.shard is not None]


@pytest.mark.parametrize("landed", [True, False], ids=["create-landed", "create-lost"])
def test_a_create_whose_answer_was_lost_is_read_back_before_anything_is_sent_again(landed: bool) -> None:
    """The connection closed after the create went out: the server may have applied it. Sent again it
    would meet itself as AlreadyExists; instead the reactor waits for the watch, then reads the Lease,
    and only then decides: a conditional take-over of what landed, or the create again if nothing did."""
    t = Table(shards=1)
    (create,) = t.writes(t.bootstrap(), WriteKind.CREATE)
    if landed:
        t.server_apply(create.body or {})                          # applied, the answer lost, the watch slow
    t.fail(create, lost_answer(outcome_unknown=True))
    assert shard_writes(t) == []
    t.clock.advance(TIMING.retry_period)                           # when a back-off would have sent it again
    (refresh,) = shard_writes(t)
    assert (refresh.kind, refresh.name) == (WriteKind.REFRESH, "g-shard-0")
    t.succeed(refresh)
    (again,) = shard_writes(t)
    if landed:
        assert again.kind is WriteKind.ACQUIRE
        assert again.sent_rv == t.objects["g-shard-0"]["metadata"]["resourceVersion"]
    else:
        assert again.kind is WriteKind.CREATE


def test_a_create_whose_answer_was_lost_waits_for_the_watch_to_show_it() -> None:
    t = Table(shards=1)
    (create,) = t.writes(t.bootstrap(), WriteKind.CREATE)
    t.fail(create, lost_answer(outcome_unknown=True))
    t.put_foreign(create.body or {})                               # the watch brings what landed
    (take,) = shard_writes(t)                                   # no GET needed, no blind create
    assert take.kind is WriteKind.ACQUIRE and take.sent_rv == t.objects["g-shard-0"]["metadata"]["resourceVersion"]


def test_a_create_that_provably_never_went_out_is_retried_after_the_back_off() -> None:
    t = Table(shards=1)
    (create,) = t.writes(t.bootstrap(), WriteKind.CREATE)
    t.fail(create, lost_answer())                                  # e.g. connection refused: outcome known
    t.clock.advance(TIMING.retry_period)
    assert [w.kind for w in shard_writes(t)] == [WriteKind.CREATE]


def test_reads_after_a_lost_answer_back_off_while_they_keep_failing() -> None:
    """The server unreachable: the create's answer was lost, and so are the reads that would tell whether
    it landed. They come a retry period apart at first, then further apart, as failed writes do."""
    t = Table(shards=1)
    (create,) = t.writes(t.bootstrap(), WriteKind.CREATE)
    t.fail(create, lost_answer(outcome_unknown=True))
    sent: list[float] = []
    end = t.now + 8.0
    while t.now < end:
        t.clock.advance(0.05)
        for write in shard_writes(t):
            assert write.kind is WriteKind.REFRESH
            sent.append(t.now)
            t.fail(write, RequestTimeout("GET timed out"))
    gaps = [round(later - earlier, 2) for earlier, later in zip(sent, sent[1:])]
    assert gaps[0] <= TIMING.retry_period + 0.05 and max(gaps) >= TIMING.lease_duration - 0.05, gaps


def test_a_held_renewal_whose_answer_was_lost_is_retried_within_the_deadline() -> None:
    """While held the renew deadline runs: the conditional renewal is simply sent again (it cannot apply
    twice), as after any failure."""
    t = Table(shards=1)
    t.join()
    t.clock.advance(0.3)
    (renew,) = t.writes(t.step(), WriteKind.RENEW)
    t.fail(renew, lost_answer(outcome_unknown=True))
    t.clock.advance(0.3)
    assert [w.kind for w in shard_writes(t)] == [WriteKind.RENEW]


def test_a_lease_overwritten_by_another_holder_is_lost_at_once() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    theirs = copy.deepcopy(t.objects["g-shard-0"])
    theirs["spec"]["holderIdentity"] = "b"
    t.put_foreign(theirs)
    commands = t.step()
    assert StopHandler(0, runs[0].run) in commands and t.reactor.owned() == frozenset()


def test_our_own_late_write_is_still_ours_but_an_unknown_writer_under_our_name_is_not() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    late = copy.deepcopy(t.objects["g-shard-0"])                 # our renewal that landed after a timeout
    late["spec"]["renewTime"] = "2026-01-01T00:00:01.000000Z"
    t.put_foreign(late)
    assert not [c for c in t.step() if isinstance(c, StopHandler)] and t.reactor.owned() == frozenset({0})
    tool = copy.deepcopy(t.objects["g-shard-0"])                 # a tool rewrote it without our incarnation
    del tool["metadata"]["annotations"][ANNOTATION_INCARNATION]
    t.put_foreign(tool)
    assert StopHandler(0, runs[0].run) in t.step()


def test_a_second_process_with_our_identity_refuses_marks_the_member_lease_and_is_not_ready() -> None:
    first = Table(identity="a", shards=2, incarnation="inc-1")
    first.join()
    second = Table(identity="a", shards=2, incarnation="inc-2")
    member = copy.deepcopy(first.objects["g-member-a"])
    record = LeaseRecord.from_object(member)
    assert record is not None
    second.cache.replace_all([record], member["metadata"]["resourceVersion"])
    commands = second.step()
    assert [w.kind for w in second.writes(commands)] == [WriteKind.MEMBER_MARK]
    health = second.reactor.health(second.now)
    assert not health["ready"] and health["identity_conflict"] == "inc-1"
    assert any("unique --identity" in failure for failure in health["failures"])
    second.clock.advance(0.5)
    assert second.writes(second.step()) == []                     # marked once per lease duration, no loop


def test_shutdown_deletes_the_member_stops_handlers_releases_each_shard_after_its_handler_returned() -> None:
    t = Table(shards=2)
    runs = starts(t.join())
    t.reactor.request_stop(t.now)
    commands = t.step()
    assert {c.shard for c in commands if isinstance(c, StopHandler)} == {0, 1}
    (delete,) = t.writes(commands, WriteKind.MEMBER_DELETE)
    assert t.writes(commands, WriteKind.RELEASE) == []            # not while handlers may still run
    t.succeed(delete)
    t.reactor.handle(HandlerExited(0, runs[0].run), t.now)
    (release,) = t.writes(t.step(), WriteKind.RELEASE)
    assert release.shard == 0 and release.body is not None
    assert release.body["spec"]["holderIdentity"] == "" and release.body["spec"]["leaseDurationSeconds"] == 1
    t.succeed(release)
    t.step()
    assert not t.reactor.finished                                 # shard 1's handler still runs
    t.reactor.handle(HandlerExited(1, runs[1].run), t.now)
    for write in t.writes(t.step(), WriteKind.RELEASE):
        t.succeed(write)
    t.step()
    assert t.reactor.finished and t.reactor.owned() == frozenset()


def test_a_handler_that_never_returns_is_stuck_after_the_drain_timeout_and_keeps_its_lease() -> None:
    t = Table(shards=1)
    t.join()
    t.reactor.request_stop(t.now)
    for write in t.writes(t.step(), WriteKind.MEMBER_DELETE):
        t.succeed(write)
    for _ in range(22):                                           # drain timeout 1 s + catch-up 1 s
        t.clock.advance(0.1)
        for write in t.writes(t.step(), WriteKind.RENEW):        # still renewed while it drains
            t.succeed(write)
    assert t.reactor.stuck_shards() == frozenset({0}) and t.reactor.owned() == frozenset({0})
    assert "handlers stuck past drain_timeout: shards [0]" in t.reactor.health(t.now)["failures"]


def test_a_process_frozen_past_the_drain_timeout_lets_its_handler_return_before_calling_it_stuck() -> None:
    """Regression (chaos seed 1325523666, and the 20-minute run with seed 20261128): SIGSTOP while a
    handler drained, SIGCONT seconds later; a pass logged "stuck" and the handler returned 2-8 ms later.
    In the second case the loop ran twice within a millisecond of waking, so the allowance is time."""
    t = Table(shards=1)
    runs = starts(t.join())
    t.reactor.request_stop(t.now)
    for write in t.writes(t.step(), WriteKind.MEMBER_DELETE):
        t.succeed(write)
    t.clock.advance(5.0)                                          # frozen far past the 1 s drain timeout
    t.step()
    t.clock.advance(0.001)
    t.step()                                                      # woken again at once (events after SIGCONT)
    assert t.reactor.stuck_shards() == frozenset()                 # not judged within the catch-up time
    t.reactor.handle(HandlerExited(0, runs[0].run), t.now)       # its thread ran as soon as it could
    assert t.writes(t.step(), WriteKind.RELEASE)
    assert t.reactor.stuck_shards() == frozenset()
    # ... but a handler that still has not returned a moment later is stuck, as before.
    u = Table(shards=1)
    u.join()
    u.reactor.request_stop(u.now)
    for write in u.writes(u.step(), WriteKind.MEMBER_DELETE):
        u.succeed(write)
    u.clock.advance(5.0)
    u.step()
    u.clock.advance(0.5)
    u.step()
    assert u.reactor.stuck_shards() == frozenset()
    u.clock.advance(0.6)
    u.step()
    assert u.reactor.stuck_shards() == frozenset({0})


def test_a_handler_that_keeps_raising_is_reported_as_crash_looping() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    for _ in range(CRASH_LOOP_ERRORS):
        t.reactor.handle(HandlerRaised(0, runs[0].run), t.now)
    assert t.reactor.crashing_shards(t.now) == [0]
    assert "handlers crash-looping: shards [0]" in t.reactor.health(t.now)["failures"]
    t.reactor.handle(HandlerRaised(0, runs[0].run + 1), t.now)    # a stale run number is ignored
    assert t.reactor._states[0].errors == CRASH_LOOP_ERRORS


def test_a_handler_that_returns_by_itself_is_not_restarted_and_the_shard_stays_held() -> None:
    t = Table(shards=1)
    runs = starts(t.join())
    t.reactor.handle(HandlerExited(0, runs[0].run), t.now)
    assert starts(t.step()) == {} and t.reactor.owned() == frozenset({0})
    t.clock.advance(0.3)
    assert t.writes(t.step(), WriteKind.RENEW)


def test_member_lease_renewals_failing_past_the_deadline_make_the_replica_not_ready() -> None:
    t = Table(shards=1)
    t.join()
    for _ in range(15):
        t.clock.advance(0.1)
        commands = t.step()
        for write in t.writes(commands, WriteKind.MEMBER_RENEW):
            t.fail(write, RequestTimeout("read timed out"))
        for write in t.writes(commands, WriteKind.RENEW):
            t.succeed(write)
    health = t.reactor.health(t.now)
    assert not health["member_lease_held"] and "member Lease not held" in health["failures"]


def join_peer(t: Table, identity: str) -> None:
    """A peer's member Lease (a copy of ours, younger) arrives through the watch."""
    peer = copy.deepcopy(t.objects["g-member-a"])
    peer["metadata"]["name"] = f"g-member-{identity}"
    peer["metadata"]["creationTimestamp"] = "2026-01-01T00:00:01Z"
    peer["spec"]["holderIdentity"] = identity
    t.put_foreign(peer)


def test_a_free_shard_desired_elsewhere_is_taken_only_after_the_handoff_grace() -> None:
    t = Table(identity="a", shards=4)
    runs = starts(t.join())
    # Member "b" joins: some shards are now desired there; "a" hands them over.
    join_peer(t, "b")
    moving = {c.shard for c in t.step() if isinstance(c, StopHandler)}
    assert moving and t.reactor.desired() == frozenset(range(4)) - moving
    for shard in moving:
        t.reactor.handle(HandlerExited(shard, runs[shard].run), t.now)
    releases = t.writes(t.step(), WriteKind.RELEASE)
    assert {w.shard for w in releases} == moving
    for write in releases:
        t.succeed(write)
        record = LeaseRecord.from_object(t.objects[write.name])
        assert record is not None
        t.cache.apply(record)                                     # the watch echoes the release
    freed_at = t.now
    # b never takes them (say it is stuck): a waits out the grace, then takes them back as a fallback.
    t.clock.advance(0.5)
    assert t.writes(t.step(), WriteKind.ACQUIRE) == []
    t.clock.advance(0.2)
    taken = t.writes(t.step(), WriteKind.ACQUIRE)
    assert {w.shard for w in taken} == moving and all(w.fallback for w in taken)
    assert t.now >= freed_at + TIMING.handoff_grace


def test_a_fallback_hold_doubles_while_the_same_owner_fails_but_at_most_twice() -> None:
    """Each time the same desired owner fails to take a shard again, the fallback holder keeps it twice
    as long, up to 4 leases: long enough to spare a broken owner churn, short enough that an owner that
    was only blinded by a passing fault gets its shard back soon after (a 64-lease cap once kept a
    chaos run's shard away from its recovered owner for 16 s)."""
    t = Table(identity="a", shards=4)
    runs = starts(t.join())
    join_peer(t, "b")
    moving = {c.shard for c in t.step() if isinstance(c, StopHandler)}
    shard = min(moving)
    t.reactor.handle(HandlerExited(shard, runs[shard].run), t.now)
    for write in t.writes(t.step(), WriteKind.RELEASE):
        t.succeed(write)
    t.clock.advance(TIMING.handoff_grace + 0.1)
    (take,) = [w for w in t.writes(t.step(), WriteKind.ACQUIRE) if w.shard == shard]
    assert take.fallback
    holds = []
    for _ in range(5):   # the same owner failing again and again: each fallback take counts
        started = t.now
        t.succeed(take, started=started)
        holds.append(round(t.reactor._states[shard].hold_until - started, 6))
    assert holds == [TIMING.lease_duration * k for k in (1, 2, 4, 4, 4)]


def test_a_deleted_shard_lease_is_created_again_with_a_token_above_all_it_handed_out() -> None:
    """leaseTransitions restarts at 0 in a re-created Lease; the fencing token must not (an operator's
    `kubectl delete lease`, a namespace re-created, an API server that lost its state)."""
    t = Table(shards=1)
    first = starts(t.join())[0].token
    taken = copy.deepcopy(t.objects["g-shard-0"])               # others held it since: transitions 7
    taken["spec"].update(holderIdentity="b", leaseTransitions=7)
    t.put_foreign(taken)
    t.step()
    seen = LeaseRecord.from_object(t.objects["g-shard-0"])
    assert seen is not None and seen.token > first
    # A replica whose wall clock is an hour behind saw that Lease; then it is deleted, and b is gone.
    late = Table(identity="c", shards=1, incarnation="inc-c",
                 wall=datetime.datetime(2025, 12, 31, 23, 0, tzinfo=datetime.timezone.utc))
    late.objects = copy.deepcopy(t.objects)
    late.rv = t.rv
    for obj in late.objects.values():
        if obj["metadata"]["name"] != "g-member-a":
            record = LeaseRecord.from_object(obj)
            assert record is not None
            late.cache.apply(record)
    for _ in range(3):                                           # c joins and watches the shard held by b
        for w in late.writes(late.step()):
            late.succeed(w)
        late.clock.advance(0.3)
    assert late.reactor.owned() == frozenset()
    assert late.cache.delete("g-shard-0", str(late.rv + 1))
    del late.objects["g-shard-0"]
    late.clock.advance(TIMING.lease_duration * 2)
    creates: list[Write] = []
    for _ in range(40):                                          # join as a member, then take the shard
        for w in late.writes(late.step()):
            if w.name == "g-shard-0":
                creates.append(w)
            else:
                late.succeed(w)
        if creates:
            break
        late.clock.advance(0.3)
    (create,) = creates
    assert create.kind is WriteKind.CREATE and create.body is not None
    created = LeaseRecord.from_object(late.server_apply(create.body))
    assert created is not None and created.transitions == 0
    assert created.token > seen.token > first
