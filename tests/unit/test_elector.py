"""The per-shard decision table (``shardlease.core.elector.decide``), driven by a fake clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlease.core.clock import FakeClock
from shardlease.core.elector import (
    Action,
    HandlerPhase,
    ShardView,
    Timing,
    decide,
    expiry_of,
    held_retry_at,
    member_expiry,
)
from shardlease.core.records import LeaseRecord, format_microtime, shard_labels

ME = "me"
PEER = "peer"
T = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0, handoff_grace=4.0, drain_timeout=30.0)


def lease(holder: Any = PEER, *, rv: str = "10", duration: Any = 15, transitions: Any = 3,
          renew: dt.datetime | None = None, spec: dict[str, Any] | None = None) -> LeaseRecord:
    body: dict[str, Any] = {"holderIdentity": holder, "leaseDurationSeconds": duration, "leaseTransitions": transitions}
    if renew is not None:
        body["renewTime"] = format_microtime(renew)
    if spec is not None:
        body = spec
    record = LeaseRecord.from_object({"metadata": {"name": "g-shard-0", "resourceVersion": rv,
                                                   "labels": shard_labels("g", 0)}, "spec": body})
    assert record is not None
    return record


def view(record: LeaseRecord | None = None, *, observed: float = 1000.0, desired: str | None = ME,
         **kw: Any) -> ShardView:
    return ShardView(identity=ME, record=record, observed=observed, desired=desired, **kw)


def held_view(record: LeaseRecord | None = None, *, renew_started: float = 1000.0, **kw: Any) -> ShardView:
    kw.setdefault("handler", HandlerPhase.RUNNING)
    return view(record if record is not None else lease(ME), held=True, renew_started=renew_started, **kw)


# ---- acquisition -------------------------------------------------------------------------------

def test_absent_lease_is_acquired_when_desired() -> None:
    assert decide(view(None), 1000.0, T).action is Action.ACQUIRE


def test_released_lease_is_acquired_when_desired() -> None:
    assert decide(view(lease("")), 1000.0, T).action is Action.ACQUIRE


def test_missing_holder_field_counts_as_released() -> None:
    record = lease(spec={"leaseDurationSeconds": 15})
    assert decide(view(record), 1000.0, T).action is Action.ACQUIRE


def test_live_foreign_lease_is_not_acquired_and_wait_ends_at_expiry() -> None:
    d = decide(view(lease(PEER), observed=1000.0), 1010.0, T)
    assert d.action is Action.WAIT
    assert d.at == pytest.approx(1015.0)


def test_expired_foreign_lease_is_acquired() -> None:
    assert decide(view(lease(PEER), observed=1000.0), 1015.0, T).action is Action.ACQUIRE


def test_expiry_uses_the_records_duration_not_ours() -> None:
    record = lease(PEER, duration=40)
    assert decide(view(record, observed=1000.0), 1030.0, T).action is Action.WAIT
    assert decide(view(record, observed=1000.0), 1040.0, T).action is Action.ACQUIRE


@pytest.mark.parametrize("skew_seconds", [-3600 * 24, -60, 0, 60, 3600 * 24 * 365])
def test_expiry_ignores_renew_time_and_wall_clock(skew_seconds: int) -> None:
    clock = FakeClock()
    renew = clock.now() + dt.timedelta(seconds=skew_seconds)
    record = lease(PEER, renew=renew)
    # Observed just now: live for a full duration whatever renewTime says.
    assert decide(view(record, observed=clock.monotonic()), clock.monotonic() + 14.9, T).action is Action.WAIT
    assert decide(view(record, observed=clock.monotonic()), clock.monotonic() + 15.0, T).action is Action.ACQUIRE


@pytest.mark.parametrize("duration", [None, 0, -5, "15", True])
def test_broken_duration_falls_back_to_our_lease_duration(duration: Any) -> None:
    record = lease(PEER, duration=duration)
    assert decide(view(record, observed=1000.0), 1014.0, T).action is Action.WAIT
    assert decide(view(record, observed=1000.0), 1015.0, T).action is Action.ACQUIRE


def test_holder_of_wrong_type_is_an_unknown_holder_that_must_expire() -> None:
    record = lease(12345)
    assert record.holder is None
    assert decide(view(record, observed=1000.0), 1001.0, T).action is Action.WAIT
    assert decide(view(record, observed=1000.0), 1015.0, T).action is Action.ACQUIRE


def test_not_eligible_never_acquires() -> None:
    for record in (None, lease(""), lease(PEER)):
        assert decide(view(record, eligible=False), 5000.0, T).action is Action.WAIT


def test_shutting_down_never_acquires() -> None:
    assert decide(view(None, shutting_down=True), 5000.0, T).action is Action.WAIT


def test_no_live_members_waits() -> None:
    assert decide(view(lease(""), desired=None), 5000.0, T).action is Action.WAIT


def test_backoff_delays_acquisition() -> None:
    d = decide(view(None, retry_at=1003.0), 1001.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1003.0)
    assert decide(view(None, retry_at=1003.0), 1003.0, T).action is Action.ACQUIRE


def test_no_acquire_while_write_in_flight_or_old_handler_running() -> None:
    assert decide(view(None, in_flight=True), 1000.0, T).action is Action.WAIT
    for phase in (HandlerPhase.RUNNING, HandlerPhase.STOPPING):
        assert decide(view(None, handler=phase), 1000.0, T).action is Action.WAIT


# ---- grace fallback ----------------------------------------------------------------------------

def test_free_shard_desired_elsewhere_waits_for_grace_then_is_taken() -> None:
    record = lease("")
    d = decide(view(record, observed=1000.0, desired=PEER), 1001.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1004.0)
    assert decide(view(record, observed=1000.0, desired=PEER), 1004.0, T).action is Action.ACQUIRE


def test_grace_for_expired_lease_counts_from_expiry() -> None:
    record = lease(PEER)
    d = decide(view(record, observed=1000.0, desired="other"), 1016.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1019.0)
    assert decide(view(record, observed=1000.0, desired="other"), 1019.0, T).action is Action.ACQUIRE


def test_fallback_holder_keeps_shard_during_minimum_hold_then_hands_off() -> None:
    v = held_view(desired=PEER, hold_until=1015.0)
    assert decide(v, 1001.0, T).action is Action.WAIT
    assert decide(v, 1002.0, T).action is Action.RENEW
    later = dataclasses.replace(v, renew_started=1014.0)
    assert decide(later, 1015.0, T).action is Action.STOP_HANDLER


@pytest.mark.parametrize(("wanted", "may_start", "expected"), [
    (True, True, Action.START_HANDLER),  # a created Lease, its group read just confirmed: work now
    (True, False, Action.WAIT),          # still waiting for the confirmation (or a switch): hold only
    (False, True, Action.WAIT),          # nothing to start
])
def test_fallback_holder_whose_handler_waited_for_a_confirmation_starts_it_during_the_hold(
        wanted: bool, may_start: bool, expected: Action) -> None:
    """A grace fallback that had to create the Lease (an operator deleted it) cannot start its handler
    on the acquisition; once nothing holds it back it must start within the hold, not keep the shard
    without work until the hold ends."""
    v = held_view(desired=PEER, hold_until=1015.0, handler=HandlerPhase.IDLE, handler_wanted=wanted,
                  may_start=may_start)
    assert decide(v, 1001.0, T).action is expected


# ---- renewal -----------------------------------------------------------------------------------

def test_renew_is_due_one_retry_period_after_the_last_renewal_start() -> None:
    d = decide(held_view(), 1001.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1002.0)
    assert decide(held_view(), 1002.0, T).action is Action.RENEW


def test_renew_deadline_from_the_start_of_last_renewal_means_lost() -> None:
    assert decide(held_view(renew_started=1000.0), 1009.99, T).action is Action.RENEW
    assert decide(held_view(renew_started=1000.0), 1010.0, T).action is Action.LOST


def test_lost_even_while_a_renewal_hangs() -> None:
    v = held_view(in_flight=True)
    d = decide(v, 1005.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1010.0)
    assert decide(v, 1010.0, T).action is Action.LOST


def test_backoff_after_a_failed_renewal_is_capped_by_the_deadline() -> None:
    d = decide(held_view(retry_at=1050.0), 1003.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1010.0)


def test_overwritten_lease_is_lost_at_once() -> None:
    assert decide(held_view(lease(PEER)), 1001.0, T).action is Action.LOST
    assert decide(held_view(lease("")), 1001.0, T).action is Action.LOST


def test_deleted_lease_is_lost() -> None:
    v = dataclasses.replace(held_view(), record=None)
    assert decide(v, 1001.0, T).action is Action.LOST


def test_conflict_waits_for_cache_then_refreshes() -> None:
    record = lease(ME, rv="10")
    v = held_view(record, conflict_rv="10", conflict_at=1002.0, renew_started=1000.0)
    d = decide(v, 1003.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1004.0)
    assert decide(v, 1004.0, T).action is Action.REFRESH
    # once the cache moved on, the conflict no longer matters
    moved = dataclasses.replace(v, record=lease(ME, rv="11"))
    assert decide(moved, 1004.0, T).action is Action.RENEW


def test_conflict_on_create_of_absent_lease() -> None:
    v = view(None, conflict_rv="", conflict_at=1000.0)
    assert decide(v, 1001.0, T).action is Action.WAIT
    assert decide(v, 1002.0, T).action is Action.REFRESH
    assert decide(dataclasses.replace(v, record=lease(PEER, rv="3")), 1002.0, T).action is Action.WAIT


# ---- handoff -----------------------------------------------------------------------------------

def test_handoff_sequence_stop_then_keep_renewing_then_release() -> None:
    v = held_view(desired=PEER)
    assert decide(v, 1001.0, T).action is Action.STOP_HANDLER
    draining = dataclasses.replace(v, handler=HandlerPhase.STOPPING)
    assert decide(draining, 1001.0, T).action is Action.WAIT
    assert decide(draining, 1002.0, T).action is Action.RENEW
    returned = dataclasses.replace(v, handler=HandlerPhase.IDLE)
    assert decide(returned, 1001.0, T).action is Action.RELEASE


def test_shutdown_releases_after_handler_returned() -> None:
    v = held_view(shutting_down=True)
    assert decide(v, 1001.0, T).action is Action.STOP_HANDLER
    assert decide(dataclasses.replace(v, handler=HandlerPhase.IDLE), 1001.0, T).action is Action.RELEASE


def test_stuck_handler_keeps_the_lease_renewed() -> None:
    v = held_view(desired=PEER, handler=HandlerPhase.STOPPING, renew_started=1100.0)
    assert decide(v, 1102.0, T).action is Action.RENEW


def test_count_mismatch_refusal_hands_off_held_shards() -> None:
    # Refusing replicas are excluded from the ring, so nothing is desired here and they are not eligible.
    v = held_view(desired=PEER, eligible=False)
    assert decide(v, 1001.0, T).action is Action.STOP_HANDLER
    assert decide(view(None, desired=PEER, eligible=False), 9999.0, T).action is Action.WAIT


def test_stale_lease_in_our_name_is_reacquired_when_desired_and_released_otherwise() -> None:
    record = lease(ME)
    assert decide(view(record), 1000.0, T).action is Action.ACQUIRE
    assert decide(view(record, desired=PEER), 1000.0, T).action is Action.RELEASE
    assert decide(view(record, shutting_down=True), 1000.0, T).action is Action.RELEASE


def test_release_backoff() -> None:
    v = held_view(desired=PEER, handler=HandlerPhase.IDLE, retry_at=1003.0)
    d = decide(v, 1001.0, T)
    assert (d.action, d.at) == (Action.WAIT, 1003.0)


# ---- properties --------------------------------------------------------------------------------

records = st.one_of(
    st.none(),
    st.builds(lease, holder=st.sampled_from([ME, PEER, "", None, 7]), duration=st.sampled_from([None, 1, 15, 0, "x"]),
              transitions=st.sampled_from([None, 0, 5, -1]), rv=st.sampled_from(["1", "2", "abc", ""])),
)


@settings(max_examples=400, deadline=None)
@given(record=records, held=st.booleans(), observed=st.floats(900, 1100), now=st.floats(1000, 1200),
       renew_started=st.floats(900, 1200), desired=st.sampled_from([ME, PEER, None]), eligible=st.booleans(),
       shutting_down=st.booleans(), handler=st.sampled_from(list(HandlerPhase)), in_flight=st.booleans())
def test_safety_properties(record: LeaseRecord | None, held: bool, observed: float, now: float, renew_started: float,
                           desired: str | None, eligible: bool, shutting_down: bool, handler: HandlerPhase,
                           in_flight: bool) -> None:
    v = ShardView(identity=ME, record=record, observed=observed, desired=desired, eligible=eligible,
                  shutting_down=shutting_down, held=held, renew_started=renew_started if held else None,
                  handler=handler, in_flight=in_flight)
    d = decide(v, now, T)
    if d.action is Action.ACQUIRE:
        # never while our previous handler runs, never when refusing, never over a live foreign holder
        assert not held and not in_flight and handler is HandlerPhase.IDLE
        if record is not None and record.holder not in (ME, "", None):
            assert now >= expiry_of(record, observed, T)
        if record is None or record.holder != ME:
            assert eligible and not shutting_down
    if d.action is Action.RENEW:
        assert held and now < renew_started + T.renew_deadline and not in_flight
    if d.action is Action.RELEASE:
        assert handler is HandlerPhase.IDLE and not in_flight
    if d.action is Action.START_HANDLER:
        assert held and handler is HandlerPhase.IDLE and now < renew_started + T.renew_deadline
    if held and now >= renew_started + T.renew_deadline:
        assert d.action is Action.LOST
    if d.action is Action.WAIT and d.at is not None and held:
        assert d.at <= renew_started + T.renew_deadline


def test_timing_from_config_like_object() -> None:
    class Cfg:
        lease_duration = 2.5
        renew_deadline = 1.5
        retry_period = 0.3
        handoff_grace = None
        drain_timeout = 4.0
        effective_handoff_grace = 0.6

    timing = Timing.from_config(Cfg())
    assert timing.handoff_grace == 0.6 and timing.lease_duration_seconds == 3


def test_foreign_write_under_our_name_is_lost() -> None:
    v = held_view(lease(ME, rv="12"), own_rv="11")
    assert decide(v, 1001.0, T).action is Action.LOST
    assert decide(dataclasses.replace(v, own_rv="12"), 1001.0, T).action is Action.WAIT
    # while our own write is in flight the cache may legitimately be ahead or behind
    assert decide(dataclasses.replace(v, in_flight=True), 1001.0, T).action is Action.WAIT


def test_handler_restarts_when_the_shard_is_desired_back_after_a_stop() -> None:
    # moved away, handler asked to stop, then the membership flapped back before the release
    returned = held_view(desired=ME, handler=HandlerPhase.IDLE, handler_wanted=True)
    assert decide(returned, 1001.0, T).action is Action.START_HANDLER
    # a handler that finished by itself is not restarted within the tenure
    finished = dataclasses.replace(returned, handler_wanted=False)
    assert decide(finished, 1001.0, T).action is Action.WAIT
    # never while still draining, and never past the deadline
    assert decide(dataclasses.replace(returned, handler=HandlerPhase.STOPPING), 1001.0, T).action is Action.WAIT
    assert decide(returned, 1010.0, T).action is Action.LOST


# ---- retry timing of held Leases (shards and the member Lease) ----

RETRY_TIMING = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


def test_held_retry_honours_backoff_well_before_the_deadline() -> None:
    # Renewed at t=100, failing at t=103 with a 1 s Retry-After: nothing urgent yet.
    assert held_retry_at(103.0, 100.0, 1.0, RETRY_TIMING) == 104.0


def test_held_retry_speeds_up_in_the_last_half_retry_period_before_the_deadline() -> None:
    # Deadline at 110; the last window opens at 109. A 5 s back-off would sail past the deadline, so
    # the retry is pulled in to the window, but never sooner than an eighth of a retry period.
    assert held_retry_at(108.0, 100.0, 5.0, RETRY_TIMING) == 109.0
    assert held_retry_at(109.5, 100.0, 5.0, RETRY_TIMING) == 109.5 + 0.25


def test_held_retry_after_the_deadline_is_plain_backoff_not_a_storm() -> None:
    """Regression (chaos seed 4242): a partitioned replica kept retrying its member Lease every
    retry_period/8 long after its renew deadline, 100 requests in 4.6 s."""
    for now in (110.0, 111.0, 500.0):
        assert held_retry_at(now, 100.0, 1.5, RETRY_TIMING) == now + 1.5


def test_held_retry_without_a_renewal_yet_is_plain_backoff() -> None:
    assert held_retry_at(50.0, None, 2.0, RETRY_TIMING) == 52.0



# ---- member liveness seen by a replica that has just started ----

WALL = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_member_first_seen_with_an_old_renewal_is_not_live() -> None:
    """Regression (bench: 19 s to balance after crash + scale-up at default timings): a newcomer's
    initial list showed a member dead for a lease duration as live for another whole one."""
    dead = lease(PEER, renew=WALL - dt.timedelta(seconds=15))
    assert member_expiry(dead, 1000.0, T, wall_now=WALL, seen_change=False) <= 1000.0


def test_member_first_seen_with_a_recent_renewal_keeps_client_gos_rule() -> None:
    fresh = lease(PEER, renew=WALL - dt.timedelta(seconds=1.5))
    assert member_expiry(fresh, 1000.0, T, wall_now=WALL, seen_change=False) == 1015.0


def test_member_seen_to_change_ignores_renew_time_entirely() -> None:
    # Once we have watched it renew, only observed times count, whatever the clocks say.
    skewed = lease(PEER, renew=WALL - dt.timedelta(hours=3))
    assert member_expiry(skewed, 1000.0, T, wall_now=WALL, seen_change=True) == 1015.0


def test_member_without_a_readable_renew_time_keeps_client_gos_rule() -> None:
    assert member_expiry(lease(PEER), 1000.0, T, wall_now=WALL, seen_change=False) == 1015.0


def test_after_a_loss_reacquisition_waits_but_releasing_a_stale_lease_does_not() -> None:
    ours = lease(ME)
    paused = {"acquire_after": 1005.0}
    waiting = decide(view(ours, **paused), 1001.0, T)
    assert waiting.action is Action.WAIT and waiting.at == 1005.0
    assert decide(view(ours, **paused), 1005.0, T).action is Action.ACQUIRE
    assert decide(view(None, **paused), 1001.0, T).action is Action.WAIT                # free: also paused
    assert decide(view(ours, desired=PEER, **paused), 1001.0, T).action is Action.RELEASE  # never delayed
    assert decide(view(ours, shutting_down=True, **paused), 1001.0, T).action is Action.RELEASE
