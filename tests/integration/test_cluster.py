"""Several replica processes against the dev-server: placement, rebalancing, handoff, failover,
partition. Each scenario ends with the journal check in :func:`conftest.finish` (no overlapping work
on any shard, fencing tokens strictly increasing, no process left behind). Balance at start, SIGTERM
handoff and SIGKILL failover run on the real kube-apiserver too (ids ``dev`` / ``real``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from shardlease.harness.journal import Overlap, handler_starts, last_work_end, takeovers
from shardlease.harness.localcluster import LocalCluster, Replica, Snapshot, Timings

from .conftest import BOTH_SERVERS, SETTLE_TIMEOUT, SHARDS, TIMINGS, balanced_cap, dump, finish, record_figure

LEASE = TIMINGS.lease_duration


def settle(cluster: LocalCluster) -> Snapshot:
    """All shards held as assigned, and each holder's handler running."""
    return cluster.wait_working(timeout=SETTLE_TIMEOUT)


def held_elsewhere(identity: str, shards: list[int]) -> Callable[[Snapshot], bool]:
    """Condition: every one of ``shards`` is held, and not by ``identity``."""
    return lambda snap: all(snap.holders()[i] not in (None, identity) for i in shards)


def settled_with_victim(make_cluster, index: int) -> tuple[LocalCluster, Replica, list[int]]:
    """Three settled replicas; the one at ``index`` and the shards it holds."""
    cluster = make_cluster(3)
    settle(cluster)
    victim = cluster.replicas[index]
    shards = cluster.snapshot().held_by(victim.identity)
    assert shards, f"{victim.identity} holds nothing\n{cluster.diagnostics()}"
    return cluster, victim, shards


@BOTH_SERVERS
def test_every_shard_held_once_and_balanced(make_cluster, request) -> None:
    cluster = make_cluster(3)
    started = time.monotonic()
    snap = settle(cluster)
    record_figure(request, "start to settled (3 replicas, 12 shards)", snap.taken - started)

    holders = snap.holders()
    assert sorted(holders) == list(range(SHARDS)) and all(holders.values())
    cap = balanced_cap(SHARDS, 3)
    assert all(n <= cap for n in snap.load().values()), dump(snap.load())
    assert set(snap.load()) == set(cluster.running_identities())

    time.sleep(1.0)  # let every holder do some work, so the journal check has something to check
    entries = finish(cluster)
    worked = {e.shard for e in entries if e.kind == "work"}
    assert worked == set(range(SHARDS)), f"shards never worked on: {set(range(SHARDS)) - worked}"


def _assert_only_necessary_moves(cluster: LocalCluster, before: dict[int, str | None],
                                 after: Snapshot, desired_before: dict[int, str],
                                 desired_after: dict[int, str], since: float) -> set[int]:
    """Shards whose desired owner stayed the same kept their holder and were not restarted."""
    stable = {s for s in range(SHARDS) if desired_before[s] == desired_after[s]}
    holders = after.holders()
    moved_anyway = {s: (before[s], holders[s]) for s in stable if holders[s] != before[s]}
    assert not moved_anyway, f"shards moved although their desired owner did not change: {moved_anyway}"
    restarted = sorted({e.shard for e in cluster.journal()
                        if e.kind == "handler_start" and e.shard in stable and e.start >= since})
    assert not restarted, f"handlers restarted on shards that did not need to move: {restarted}"
    return stable


def test_scale_up_and_down_moves_only_what_must_move(make_cluster, request) -> None:
    cluster = make_cluster(3)
    snap = settle(cluster)
    desired3 = cluster.desired()
    starts_at_settle = handler_starts(cluster.journal())

    # Scale up 3 -> 4.
    step = time.monotonic()
    cluster.add_replica()
    desired4 = cluster.desired()
    snap4 = settle(cluster)
    record_figure(request, "scale-up 3->4 settled after", snap4.taken - step)
    stable_up = _assert_only_necessary_moves(cluster, snap.holders(), snap4, desired3, desired4, step)

    # Scale down 4 -> 3 by SIGTERM of one of the original replicas.
    victim = cluster.replicas[0]
    step = victim.terminate()
    assert victim.wait(15) == 0, f"SIGTERM did not end {victim.identity} cleanly\n{cluster.diagnostics()}"
    desired3b = cluster.desired()
    snap3 = settle(cluster)
    record_figure(request, "scale-down 4->3 settled after", snap3.taken - step)
    stable_down = _assert_only_necessary_moves(cluster, snap4.holders(), snap3, desired4, desired3b, step)

    # Shards whose owner never had to change over both steps: their handler start counts (per
    # shard and replica) are exactly what they were once the group first settled.
    never_moved = stable_up & stable_down
    assert never_moved, "the scenario moved every shard; it proves nothing about minimal moves"
    starts_now = handler_starts(cluster.journal())
    changed = {s: {who: (starts_at_settle[(s, who)], starts_now[(s, who)])
                   for who in cluster.running_identities() + [victim.identity]
                   if starts_at_settle[(s, who)] != starts_now[(s, who)]}
               for s in never_moved}
    assert not any(changed.values()), f"handlers (re)started on unmoved shards: {dump(changed)}"
    assert all(starts_now[(s, desired3[s])] >= 1 for s in never_moved)
    finish(cluster)


@BOTH_SERVERS
def test_sigterm_hands_off_at_once(make_cluster, request) -> None:
    cluster, victim, shards = settled_with_victim(make_cluster, 1)
    others = [r.identity for r in cluster.running() if r is not victim]

    sent = victim.terminate()
    snap = cluster.wait_for(lambda s: all(s.holders()[i] in others for i in shards), 2 * LEASE,
                            what=f"{victim.identity}'s shards {shards} to be held by {others}",
                            interval=0.02)
    assert victim.wait(15) == 0
    assert victim.identity not in cluster.snapshot().members(), "member Lease left behind on SIGTERM"

    entries = cluster.journal()
    starts = takeovers(entries, shards, previous=victim.identity, after=sent)
    assert all(starts.values()), dump(starts)
    handoff = max(e.start for e in starts.values() if e) - sent
    record_figure(request, "SIGTERM -> last of its shards' handlers started elsewhere", handoff)
    record_figure(request, "SIGTERM -> all its shards held elsewhere (polled)", snap.taken - sent)
    # Handoff on SIGTERM must not wait for expiry.
    assert handoff < LEASE, f"handoff took {handoff:.2f} s, not less than the lease duration {LEASE} s"
    finish(cluster)


@BOTH_SERVERS
def test_sigkill_fails_over_after_expiry(make_cluster, request) -> None:
    cluster, victim, shards = settled_with_victim(make_cluster, 2)

    killed = victim.kill()
    victim.wait(5)
    bound = LEASE + 6.0  # expiry, plus detection, grace and a noisy machine
    cluster.wait_for(held_elsewhere(victim.identity, shards),
                     bound, what=f"failover of {victim.identity}'s shards {shards}", interval=0.05)

    entries = cluster.journal()
    starts = takeovers(entries, shards, previous=victim.identity, after=killed)
    assert all(starts.values()), dump(starts)
    delays = {s: e.start - killed for s, e in starts.items() if e}
    record_figure(request, "SIGKILL -> first shard re-held elsewhere", min(delays.values()))
    record_figure(request, "SIGKILL -> last shard re-held elsewhere", max(delays.values()))
    # Peers may only take a shard once its Lease could have expired. The victim's last successful
    # renewal of a shard began at most renew_deadline before the kill (else it had already given
    # the shard up), so no takeover may come earlier than lease - renew_deadline after the kill.
    earliest = LEASE - TIMINGS.renew_deadline
    too_early = {s: round(d, 3) for s, d in delays.items() if d < earliest}
    assert not too_early, f"shards taken before their Lease could have expired: {too_early}"
    assert max(delays.values()) < bound
    for shard in shards:
        end = last_work_end(entries, shard, victim.identity)
        start = starts[shard]
        assert end is not None and start is not None and end <= start.start, (shard, end, start)
    finish(cluster)


def test_newcomer_after_a_crash_balances_without_waiting_a_lease(make_cluster, request) -> None:
    """A pod crashes, its shards fail over, then a replacement starts. The replacement's first list
    shows the dead member's Lease; judged only from when it was first seen, that member would look
    alive for a whole lease duration and the newcomer's ring would disagree with its peers'. Its
    renewTime, older than the renew deadline, says it is gone (see elector.member_expiry)."""
    timings = Timings(lease_duration=6.0, renew_deadline=4.0, retry_period=1.0)
    cluster = make_cluster(3, timings=timings)
    cluster.wait_working(timeout=SETTLE_TIMEOUT)
    victim = cluster.replicas[0]
    shards = cluster.snapshot().held_by(victim.identity)
    victim.kill()
    victim.wait(5)
    cluster.wait_for(held_elsewhere(victim.identity, shards), 6.0 + 10.0, what="failover")
    newcomer = cluster.add_replica("replica-new")
    joined = cluster.wait_for(lambda s: newcomer.identity in s.members(), SETTLE_TIMEOUT,
                              what="the newcomer's member Lease").taken
    settled = cluster.wait_settled(timeout=SETTLE_TIMEOUT).taken
    record_figure(request, "crash, failover, then a new replica: balanced after its member Lease appeared",
                  settled - joined)
    # Without the renewTime hint this takes at least one lease duration (6 s).
    assert settled - joined < timings.lease_duration / 2, settled - joined
    finish(cluster)


@pytest.mark.slow
def test_dead_members_lease_is_collected_but_not_early(make_cluster, request) -> None:
    """A crashed replica cannot delete its member Lease; in a Deployment every crashed pod has a new
    name, so the oldest live member deletes member Leases expired for 5 lease durations. Not earlier:
    a replica that was only paused must find its Lease where it left it."""
    cluster, victim, _ = settled_with_victim(make_cluster, 2)
    killed = victim.kill()
    victim.wait(5)
    gc_after = 5 * LEASE
    snap = cluster.wait_for(lambda s: victim.identity not in s.members(), LEASE + gc_after + 15.0,
                            what=f"member Lease of killed {victim.identity} to be deleted")
    gone_after = snap.taken - killed
    record_figure(request, "SIGKILL -> dead member Lease deleted", gone_after)
    # Expiry (at most one lease after the kill) plus the collection delay, less one retry period of
    # renewal that may have preceded the kill.
    assert gone_after >= gc_after + LEASE - TIMINGS.retry_period - 0.5, gone_after
    assert sorted(snap.live_members()) == sorted(cluster.running_identities())
    finish(cluster)


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_partitioned_replica_stops_before_others_take_over(make_cluster, request, mode) -> None:
    """``error``: every request of the victim gets a 503; ``drop``: its connections are closed
    without an answer, as a real network partition looks to an HTTP client."""
    cluster, victim, shards = settled_with_victim(make_cluster, 0)
    assert cluster.faults is not None

    cut = time.monotonic()
    cluster.faults.partition(victim.identity, mode=mode)
    try:
        cluster.wait_for(held_elsewhere(victim.identity, shards),
                         LEASE + 8.0, what=f"takeover of partitioned {victim.identity}'s shards {shards}")
        entries = cluster.journal()
        starts = takeovers(entries, shards, previous=victim.identity, after=cut)
        assert all(starts.values()), dump(starts)
        stops, gaps = [], []
        for shard in shards:
            end = last_work_end(entries, shard, victim.identity)
            start = starts[shard]
            assert end is not None and start is not None
            assert end < start.start, (
                f"shard {shard}: {victim.identity} worked until {end:.3f}, "
                f"{start.identity} started at {start.start:.3f}")
            stops.append(end - cut)
            gaps.append(start.start - end)
        record_figure(request, "partition -> victim's last work on its shards", max(stops))
        record_figure(request, "smallest gap between victim's last work and takeover", min(gaps))
        record_figure(request, "partition -> last shard taken over",
                      max(e.start for e in starts.values() if e) - cut)
        assert victim.running, "a partitioned replica should keep running (and retrying)"
    finally:
        cluster.faults.heal(victim.identity)
    # Healed, the victim rejoins and the group settles again over all three.
    snap = settle(cluster)
    assert victim.identity in snap.live_members()
    finish(cluster)


def test_frozen_replica_does_no_stale_work_after_sigcont(make_cluster, request) -> None:
    """SIGSTOP past the lease (a long GC pause, a frozen VM), then SIGCONT.

    A unit that was in flight at the freeze is recorded as lasting until the resume: it straddles the
    new holder's work, which is the hazard fencing tokens exist for and cannot be prevented by the
    replica itself; those units (and only those) are excused from the overlap check. What the runtime
    must guarantee is everything else: after resuming, the frozen replica starts no unit with its old
    token (``valid()`` is already False), stops those handlers, and rejoins.
    """
    cluster, victim, shards = settled_with_victim(make_cluster, 1)
    before = cluster.journal()
    old_tokens = {s: max(e.token for e in before if e.kind == "handler_start" and e.shard == s
                         and e.identity == victim.identity) for s in shards}
    frozen = victim.pause()
    cluster.wait_for(held_elsewhere(victim.identity, shards),
                     LEASE + 8.0, what=f"takeover of frozen {victim.identity}'s shards {shards}")
    time.sleep(0.5)
    resumed = victim.resume()
    settle(cluster)

    entries = cluster.journal()
    freeze_took_effect = frozen + 0.02  # signal delivery is not instantaneous
    stale = [e.describe() for e in entries
             if e.kind == "work" and e.identity == victim.identity and e.shard in shards
             and e.start >= freeze_took_effect and e.token == old_tokens[e.shard]]
    assert not stale, "units begun with an old token after the freeze:\n" + "\n".join(stale)
    stops = [e.start - resumed for e in entries if e.kind == "handler_stop"
             and e.identity == victim.identity and e.shard in shards and e.start >= resumed]
    assert len(stops) >= len(shards), f"handlers of the frozen replica never stopped: {stops}"
    record_figure(request, "SIGCONT -> frozen replica's stale handlers stopped", max(stops))

    def in_flight_at_freeze(overlap: Overlap) -> bool:
        return any(u.identity == victim.identity and u.start < freeze_took_effect and u.end >= resumed
                   for u in (overlap.first, overlap.second))

    finish(cluster, excuse=in_flight_at_freeze)


def test_slow_to_stop_handler_keeps_its_shard_until_it_returns(make_cluster, request) -> None:
    """Handlers that take 1 s to return after a stop (a drain): on SIGTERM the shards may only be
    released -- and so taken by others -- once each handler has returned."""
    cluster = make_cluster(3, env={"SHARDLEASE_JOURNAL_LINGER": "1.0"})
    settle(cluster)
    victim = cluster.replicas[1]
    shards = cluster.snapshot().held_by(victim.identity)
    sent = victim.terminate()
    assert victim.wait(20) == 0
    cluster.wait_for(held_elsewhere(victim.identity, shards),
                     2 * LEASE, what=f"{victim.identity}'s shards {shards} taken over")
    entries = cluster.journal()
    starts = takeovers(entries, shards, previous=victim.identity, after=sent)
    for shard in shards:
        stops = [e.start for e in entries if e.kind == "handler_stop" and e.shard == shard
                 and e.identity == victim.identity]
        start = starts[shard]
        assert stops and start is not None
        assert max(stops) <= start.start, (
            f"shard {shard}: taken over at {start.start:.3f} before the old handler returned at "
            f"{max(stops):.3f}")
    record_figure(request, "SIGTERM with 1 s drain -> last shard taken over",
                  max(e.start for e in starts.values() if e) - sent)
    finish(cluster)


def test_handler_stuck_past_drain_timeout_keeps_its_shard_and_exits_3(make_cluster) -> None:
    """A handler that ignores ``stopped`` for longer than the drain timeout: the replica still exits
    on SIGTERM, but with status 3 and without releasing those shards, so a newcomer must wait for
    the Leases to expire (releasing them would let a second handler start next to the stuck one)."""
    cluster = make_cluster(1, shards=4, env={"SHARDLEASE_JOURNAL_LINGER": "60"},
                           extra_args=["--drain-timeout", "0.5"])
    settle(cluster)
    victim = cluster.replicas[0]
    victim.terminate()
    assert victim.wait(20) == 3, victim.log_tail()
    assert "still running after the drain timeout" in victim.log_text()
    assert cluster.snapshot().held_by(victim.identity) == [0, 1, 2, 3], "abandoned shards were released"

    joined = time.monotonic()
    newcomer = cluster.add_replica("replica-new")
    snap = cluster.wait_for(lambda s: s.held_by(newcomer.identity) == [0, 1, 2, 3], 4 * LEASE + 10,
                            what="the newcomer to take the abandoned shards after expiry")
    # The newcomer first sees the Leases when it lists them, after it joined; it may take them only
    # one lease duration later. A released Lease would have been taken at once.
    assert snap.taken - joined >= LEASE, snap.taken - joined
    cluster.stop(grace=5.0)
    assert not cluster.leftover_processes()


def test_shard_desired_back_while_its_handler_stops_is_worked_on_again(make_cluster) -> None:
    """A membership flap shorter than a handler's drain: a replica joins (some shards start moving
    to it; their handlers are asked to stop, and take 1 s to return), then leaves again before it
    got any of them. The shards are the first owner's again and must get a handler again.

    Regression test: such shards used to stay held and renewed with no handler, indefinitely."""
    cluster = make_cluster(1, shards=6, env={"SHARDLEASE_JOURNAL_LINGER": "1.0"})
    settle(cluster)
    owner = cluster.replicas[0]
    joiner = cluster.add_replica("joiner")
    cluster.wait_for(lambda s: sorted(s.live_members()) == sorted([owner.identity, "joiner"]),
                     SETTLE_TIMEOUT, what="the joiner's member Lease")
    time.sleep(0.2)  # the owner is now stopping the handlers of the shards that move to the joiner
    joiner.terminate()
    assert joiner.wait(20) == 0
    time.sleep(1.5)  # let the lingering handlers return: until then they still count as running
    cluster.wait_working(timeout=3 * LEASE)  # a release/acquire round or a restart, generously
    finish(cluster)
