"""The roster on its own: who is in the group, who is the oldest, and which dead members' Leases go."""

from __future__ import annotations

import logging

import pytest

from shardlease.core.cache import LeaseCache
from shardlease.core.clock import FakeClock
from shardlease.core.elector import Timing
from shardlease.core.messages import Write, WriteDone, WriteKind
from shardlease.core.records import LeaseRecord
from shardlease.core.roster import Roster
from shardlease.errors import NotFound, ServerError

T = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


class _Metrics:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def api_error(self, label: str) -> None:
        self.errors.append(label)


def member(identity: str, created: str, *, shards: int = 8, generation: int | None = 1, rv: str = "1",
           holder: str | None = None, renewed: int = 0) -> LeaseRecord:
    annotations = {"shardlease.io/shards": str(shards)}
    if generation is not None:
        annotations["shardlease.io/generation"] = str(generation)
    obj = {"metadata": {"name": f"g-member-{identity}", "resourceVersion": rv, "creationTimestamp": created,
                        "labels": {"shardlease.io/group": "g", "shardlease.io/role": "member"},
                        "annotations": annotations},
           "spec": {"holderIdentity": identity if holder is None else holder, "leaseDurationSeconds": 15,
                    "renewTime": f"2026-01-01T00:{renewed // 60:02d}:{renewed % 60:02d}.000000Z"}}
    parsed = LeaseRecord.from_object(obj)
    assert parsed is not None
    return parsed


def setup(identity: str = "a") -> tuple[FakeClock, LeaseCache, Roster, _Metrics]:
    clock = FakeClock()
    cache = LeaseCache(clock)
    metrics = _Metrics()
    roster = Roster(group="g", identity=identity, timing=T, cache=cache, clock=clock,
                    own_member_lease=f"g-member-{identity}", log=logging.getLogger("test"), metrics=metrics)
    return clock, cache, roster, metrics


def test_live_members_their_votes_and_the_oldest() -> None:
    clock, cache, roster, _ = setup("a")
    cache.apply(member("b", "2026-01-01T00:00:02Z", shards=16, generation=2))
    cache.apply(member("a", "2026-01-01T00:00:01Z"))
    writes, changed = roster.update(clock.monotonic(), cache.take_changed(), synced_at=0.0, stopping=False,
                                    identity_conflict=False)
    assert not writes and changed
    assert roster.eligible == frozenset({"a", "b"}) and roster.oldest
    assert roster.configured_counts == [8, 16] and roster.generations == {"a": 1, "b": 2}
    assert roster.recheck_at == clock.monotonic() + T.lease_duration

    # Nothing changed and no recheck due: not recomputed, not reported as changed.
    assert roster.update(clock.monotonic() + 1, set(), synced_at=0.0, stopping=False,
                         identity_conflict=False) == ([], False)


@pytest.mark.parametrize(("conflict", "a_generation", "oldest"), [
    (False, 1, True),
    (True, 1, False),       # an identity clash: neither process may do the group's chores
    (False, None, False),   # a member from before resharding is skipped; "b" is the steward
])
def test_who_does_the_chores(conflict: bool, a_generation: int | None, oldest: bool) -> None:
    clock, cache, roster, _ = setup("a")
    cache.apply(member("a", "2026-01-01T00:00:01Z", generation=a_generation))
    cache.apply(member("b", "2026-01-01T00:00:02Z"))
    roster.update(clock.monotonic(), cache.take_changed(), synced_at=0.0, stopping=False,
                  identity_conflict=conflict)
    assert roster.oldest is oldest


def test_the_oldest_member_deletes_a_dead_member_once_it_has_been_expired_long_enough() -> None:
    clock, cache, roster, metrics = setup("a")
    cache.apply(member("a", "2026-01-01T00:00:01Z"))
    cache.apply(member("dead", "2026-01-01T00:00:00Z", holder="", rv="7"))    # released, never deleted
    start = clock.monotonic()
    writes, _ = roster.update(start, cache.take_changed(), synced_at=0.0, stopping=False, identity_conflict=False)
    assert writes == []
    due = start + T.lease_duration + roster.collect_after
    assert roster.recheck_at == min(start + T.lease_duration, due)

    clock.advance(due - start)
    cache.apply(member("a", "2026-01-01T00:00:01Z", rv="8", renewed=int(due - start)))  # "a" renews meanwhile
    writes, _ = roster.update(due, {"g-member-a"}, synced_at=0.0, stopping=False, identity_conflict=False)
    assert writes == [Write(WriteKind.COLLECT, "g-member-dead", sent_rv="7")]
    # Not sent twice while the first is in flight; a 404 answer is fine and lets it be retried.
    assert roster.update(due, {"g-member-a"}, synced_at=0.0, stopping=False, identity_conflict=False)[0] == []
    roster.on_deleted(WriteDone(writes[0], 0.0, error=NotFound("gone")))
    assert metrics.errors == [] and not roster.deleting
    writes, _ = roster.update(due, {"g-member-a"}, synced_at=0.0, stopping=False, identity_conflict=False)
    roster.on_deleted(WriteDone(writes[0], 0.0, error=ServerError("boom", status=500)))
    assert len(metrics.errors) == 1 and not roster.deleting


@pytest.mark.parametrize(("identity", "stopping"), [("b", False), ("a", True)])
def test_only_the_oldest_running_member_collects(identity: str, stopping: bool) -> None:
    clock, cache, roster, _ = setup(identity)
    cache.apply(member("a", "2026-01-01T00:00:01Z"))
    cache.apply(member("b", "2026-01-01T00:00:02Z"))
    cache.apply(member("dead", "2026-01-01T00:00:00Z", holder=""))
    due = T.lease_duration + roster.collect_after
    clock.advance(due)
    cache.apply(member("a", "2026-01-01T00:00:01Z", rv="8", renewed=int(due)))
    cache.apply(member("b", "2026-01-01T00:00:02Z", rv="9", renewed=int(due)))
    writes, _ = roster.update(clock.monotonic(), cache.take_changed(), synced_at=0.0, stopping=stopping,
                              identity_conflict=False)
    assert writes == [] and roster.eligible == frozenset({"a", "b"})
