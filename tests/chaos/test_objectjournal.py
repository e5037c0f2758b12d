"""The per-object checks of the chaos workload, on synthetic journals: each rule passes what the
runtime may do and fails what it must not, so the chaos runs are known to check what they claim.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardlease.harness.chaos import OPERATOR_KINDS, ChaosConfig, fault_counts, plan_faults
from shardlease.harness.journal import Entry
from shardlease.harness.objectjournal import (
    MAX_WRITE_SECONDS,
    ObjectJournal,
    ObjectWrite,
    UserChange,
    check_placement,
    check_reconciled,
    check_write_fences,
    classify_write_overlaps,
    find_write_overlaps,
    load_object_journal,
    object_shard,
)

UID = "7c1f3c1e-0000-4000-8000-000000000001"
SHARD = object_shard(UID, 16)
MARGIN, RD = 0.8, 1.2


def write(identity: str, pid: int, start: float, end: float, *, token: int = 1, generation: int = 1,
          shard: int = SHARD, count: int = 16, rv: int | None = None, version: int = 1,
          outcome: str = "written", uid: str = UID) -> ObjectWrite:
    return ObjectWrite(uid=uid, key="default/cm", identity=identity, pid=pid, shard=shard, count=count,
                       generation=generation, token=token, version=version, start=start, end=end,
                       outcome=outcome, rv=rv, source="synthetic")


def started(identity: str, pid: int, t: float, *, token: int, generation: int = 1, shard: int = SHARD,
            count: int = 16, kind: str = "handler_start") -> Entry:
    return Entry(kind=kind, identity=identity, pid=pid, shard=shard, token=token, start=t, end=t, count=count,
                 generation=generation)


def judge(*writes: ObjectWrite, starts: tuple[Entry, ...] = (),
          acts: dict[int, list[tuple[float, float]]] | None = None) -> list[str]:
    return [j.excuse or "VIOLATION" for j in classify_write_overlaps(
        find_write_overlaps(writes), margin=MARGIN, renew_deadline=RD, handler_starts=starts, operator_acts=acts)]


# ---------------------------------------------------------------- one write at a time per object


def test_writes_one_after_the_other_do_not_overlap() -> None:
    assert judge(write("a", 1, 1.0, 1.1, token=1), write("b", 2, 1.1, 1.2, token=2)) == []
    # One process may have two writes for one object in flight (two events, two threads): not a pair.
    assert judge(write("a", 1, 1.0, 2.0), write("a", 1, 1.5, 1.6)) == []


def test_two_holders_inside_a_write_at_once_fail() -> None:
    assert judge(write("a", 1, 1.0, 1.5, token=1), write("b", 2, 1.2, 1.3, token=2)) == ["VIOLATION"]
    assert judge(write("a", 1, 1.0, 1.5, token=2), write("b", 2, 1.2, 1.3, token=2)) == ["VIOLATION"]


def test_a_stale_write_still_in_flight_after_the_margin_is_excused_by_its_lower_fence() -> None:
    stale = write("a", 1, 1.0, 3.0, token=1)          # decided at 1.0, answer held up by latency
    newer = write("b", 2, 2.5, 2.6, token=2)
    assert judge(stale, newer, starts=(started("b", 2, 2.0, token=2),)) == ["in flight"]
    # The newer tenure began within the margin: the runtime let it in too early.
    assert judge(stale, newer, starts=(started("b", 2, 1.5, token=2),)) == ["VIOLATION"]
    # The stale write carries the higher fence: nothing would reject it.
    assert judge(write("a", 1, 1.0, 3.0, token=3), newer, starts=(started("b", 2, 2.0, token=2),)) == ["VIOLATION"]
    # A process that lost the shard and still *began* a write after the new holder began: never excused.
    assert judge(write("b", 2, 2.5, 2.6, token=2), write("a", 1, 2.55, 2.7, token=1),
                 starts=(started("b", 2, 1.0, token=2),)) == ["VIOLATION"]


def test_a_cut_short_write_lasts_as_long_as_a_request_may() -> None:
    journal_writes = [write("a", 1, 1.0, 1.0 + MAX_WRITE_SECONDS, token=1), write("b", 2, 3.0, 3.1, token=2)]
    assert len(find_write_overlaps(journal_writes)) == 1


def test_an_operator_who_deletes_a_lease_excuses_a_quick_takeover_only_with_a_higher_fence() -> None:
    stale, newer = write("a", 1, 1.0, 1.2, token=3), write("b", 2, 1.15, 1.18, token=4)
    starts = (started("b", 2, 1.1, token=4),)
    assert judge(stale, newer, starts=starts) == ["VIOLATION"]
    assert judge(stale, newer, starts=starts, acts={SHARD: [(1.05, 1.06)]}) == ["operator"]
    assert judge(stale, newer, starts=starts, acts={SHARD + 1: [(1.05, 1.06)]}) == ["VIOLATION"]
    # The token started over on the re-created Lease: the new holder's fence is the lower one.
    assert judge(stale, write("b", 2, 1.15, 1.18, token=0), starts=(started("b", 2, 1.1, token=0),),
                 acts={SHARD: [(1.05, 1.06)]}) == ["VIOLATION"]
    # A delete long before the stale write was decided explains nothing.
    assert judge(stale, newer, starts=starts, acts={SHARD: [(-5.0, -4.9)]}) == ["VIOLATION"]


# ---------------------------------------------------------------- fences over accepted writes


def test_fences_over_accepted_writes_follow_the_server_order() -> None:
    ok = [write("a", 1, 1.0, 1.1, token=1, rv=10), write("a", 1, 2.0, 2.1, token=1, rv=12),
          write("b", 2, 3.0, 3.1, token=2, rv=15), write("c", 3, 4.0, 4.1, token=0, generation=2, rv=20),
          write("a", 1, 5.0, 5.1, token=1, rv=None, outcome="conflict")]
    assert check_write_fences(ok) == []
    backwards = [write("a", 1, 1.0, 1.1, token=3, rv=10), write("b", 2, 2.0, 2.1, token=0, rv=11)]
    assert "went backwards" in check_write_fences(backwards)[0]
    reused = [write("a", 1, 1.0, 1.1, token=3, rv=10), write("b", 2, 2.0, 2.1, token=3, rv=11)]
    assert "used by two processes" in check_write_fences(reused)[0]
    # The order is the server's (resourceVersion), not the order the answers came back in.
    swapped = [write("a", 1, 1.0, 3.0, token=1, rv=20), write("b", 2, 2.0, 2.1, token=2, rv=11)]
    assert "went backwards" in check_write_fences(swapped)[0]


def test_a_write_for_an_object_of_another_shard_is_a_placement_failure() -> None:
    assert check_placement([write("a", 1, 1.0, 1.1)]) == []
    wrong = (SHARD + 1) % 16
    assert f"belongs to shard {SHARD}/16" in check_placement([write("a", 1, 1.0, 1.1, shard=wrong)])[0]
    # After a reshard to 24 the writer's own count decides.
    assert check_placement([write("a", 1, 1.0, 1.1, shard=object_shard(UID, 24), count=24)]) == []


# ---------------------------------------------------------------- reconciled after the faults


def _journal(*writes: ObjectWrite, version: int = 5) -> ObjectJournal:
    return ObjectJournal(writes=list(writes), changes=[UserChange(UID, "default/cm", version, 50.0, 99)])


def test_the_final_holder_must_write_the_last_change_in_time() -> None:
    final = object_shard(UID, 32)
    handlers = [started("a", 1, 10.0, token=4, shard=SHARD),
                started("a", 1, 30.0, token=4, shard=SHARD, kind="handler_stop"),
                started("b", 2, 40.0, token=0, generation=2, shard=final, count=32)]
    good = write("b", 2, 51.0, 51.1, token=0, generation=2, shard=final, count=32, version=5, rv=100)
    problems, times = check_reconciled(_journal(good), handlers, since=49.0, bound=5.0, at=60.0)
    assert problems == [] and times == {"default/cm": pytest.approx(2.1)}
    late = write("b", 2, 57.0, 57.1, token=0, generation=2, shard=final, count=32, version=5, rv=100)
    assert "bound 5.00 s" in check_reconciled(_journal(late), handlers, since=49.0, bound=5.0, at=60.0)[0][0]
    old_version = write("b", 2, 51.0, 51.1, token=0, generation=2, shard=final, count=32, version=4, rv=100)
    assert "never written" in check_reconciled(_journal(old_version), handlers, since=49.0, bound=5.0,
                                               at=60.0)[0][0]
    # Written by the old holder under the old count: not the final holder.
    stale = write("a", 1, 51.0, 51.1, token=4, version=5, rv=100)
    assert "never written" in check_reconciled(_journal(stale), handlers, since=49.0, bound=5.0, at=60.0)[0][0]
    # The holder's process was SIGKILLed (never journaled a stop): its handler does not count.
    assert "no handler" in check_reconciled(_journal(good), handlers, since=49.0, bound=5.0, at=60.0,
                                            live_pids=[1])[0][0]


# ---------------------------------------------------------------- reading, planning


def test_the_journal_reader_pairs_writes_and_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    lines = [
        {"event": "handler_start", "shard": SHARD, "token": 1, "t": 0.5, "pid": 1, "identity": "a"},
        {"event": "write_begin", "op": 0, "t": 1.0, "uid": UID, "key": "default/cm", "shard": SHARD, "count": 16,
         "generation": 1, "token": 1, "version": 2, "pid": 1, "identity": "a"},
        {"event": "write_end", "op": 0, "t": 1.1, "outcome": "written", "rv": 42, "uid": UID, "pid": 1},
        {"event": "write_begin", "op": 1, "t": 2.0, "uid": UID, "key": "default/cm", "shard": SHARD, "count": 16,
         "generation": 1, "token": 1, "version": 3, "pid": 1, "identity": "a"},
    ]
    (tmp_path / "a.1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "wri')
    (tmp_path / "user.9.jsonl").write_text(
        json.dumps({"event": "change", "uid": UID, "key": "default/cm", "version": 3, "rv": 50, "t": 1.9}) + "\n"
        + json.dumps({"event": "marker", "name": "faults_cleared", "t": 3.0}) + "\n")
    journal = load_object_journal(tmp_path)
    done, cut = journal.writes
    assert (done.rv, done.outcome, done.complete, done.version) == (42, "written", True, 2)
    assert (cut.outcome, cut.complete, cut.end) == (None, False, 2.0 + MAX_WRITE_SECONDS)
    assert journal.last_changes()[UID].version == 3 and journal.markers == {"faults_cleared": 3.0}


def test_object_plans_hold_operator_faults_and_key_plans_do_not() -> None:
    seen: set[str] = set()
    for seed in range(8):
        seen |= set(fault_counts(plan_faults(ChaosConfig(seed=seed, duration=60.0))))
        assert not set(fault_counts(plan_faults(ChaosConfig(seed=seed, duration=60.0, workload="keys")))) \
            & set(OPERATOR_KINDS)
    assert set(OPERATOR_KINDS) <= seen


def test_bad_workload_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="workload"):
        ChaosConfig(seed=1, workload="pods")
    with pytest.raises(ValueError, match="change_rate"):
        ChaosConfig(seed=1, change_rate=0.0)


def test_a_handler_started_late_under_a_deleted_leases_old_fence_is_fenced_only_after_an_operator_act() -> None:
    """Seen in a long run: an operator deleted shard 6's Lease while its holder was partitioned; a
    replica re-created it under a new epoch and started, and 45 ms later the cut-off holder started
    its handler under the old, lower fence (it could not know). Excused only next to that act."""
    from shardlease.harness.chaos import analyse_journal

    newer = started("b", 2, 10.0, token=2_000_000, shard=6)
    stale = started("a", 1, 10.05, token=1_000_006, shard=6)
    assert [v.kind for v in analyse_journal([newer, stale], [], 0.5)[0]] == ["token"]
    violations, fenced = analyse_journal([newer, stale], [], 0.5, operator_acts={6: [(9.7, 9.71)]},
                                         renew_deadline=RD)
    assert violations == [] and len(fenced) == 1
    # Long after the act (past a renew deadline), the old fence is a real regression.
    late = started("a", 1, 12.0, token=1_000_006, shard=6)
    assert [v.kind for v in analyse_journal([newer, late], [], 0.5, operator_acts={6: [(9.7, 9.71)]},
                                            renew_deadline=RD)[0]] == ["token"]
