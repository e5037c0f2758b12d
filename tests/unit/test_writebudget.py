"""The write budget (``--max-write-rate``): the pure spacing rule as a table, then the reactor run under it
with a fake clock and every write answered at once, as the API server would.

Scaled timings: lease 2 s, renew deadline 1.2 s, retry period (= renew interval) 0.3 s, so the bound on
a renewal's lateness is ``renew_deadline - retry_period`` = 0.9 s after the last successful one.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections import defaultdict

import pytest
from test_reactor import TIMING, Table

from shardlease.core.elector import Timing
from shardlease.core.reactor import Write, WriteKind
from shardlease.core.records import ANNOTATION_PROBLEMS
from shardlease.core.writebudget import WriteBudget, longest_renew_gap

BOUND = 0.9
STEP = 0.005  # the simulated loop's tick: a renewal may go up to one tick after its time


def budget(rate: float) -> WriteBudget:
    return WriteBudget(rate, renew_every=0.3, renew_deadline=1.2, retry_period=0.3)


@pytest.mark.parametrize(
    ("rate", "held", "interval", "planned", "exceeded"),
    [
        # Plenty of budget: the plain renew interval, (held + 1) / RI writes a second.
        (100.0, 10, 0.3, 10 / 0.3 + 1 / 0.3, False),
        # The member Lease keeps its 1/RI; the shards share the rest: 40 / (50 - 3.33) s each.
        (50.0, 40, 40 / (50 - 1 / 0.3), 50.0, False),
        # Even every 0.9 s (the bound) 40 shards need 47.8 writes/s: exceeded, renew at the bound.
        (20.0, 40, BOUND, 40 / BOUND + 1 / 0.3, True),
        # Nothing held: only the member Lease.
        (5.0, 0, 0.3, 1 / 0.3, False),
    ],
)
def test_plan_spaces_the_shards_within_the_rate_left_by_the_member_lease(
        rate: float, held: int, interval: float, planned: float, exceeded: bool) -> None:
    plan = budget(rate).plan_for(held)
    assert plan.interval == pytest.approx(interval)
    assert plan.planned == pytest.approx(planned)
    assert plan.asked == pytest.approx((held + 1) / 0.3)
    assert plan.exceeded is exceeded


def test_the_bound_leaves_a_retry_period_before_the_deadline_unless_the_interval_is_longer() -> None:
    assert longest_renew_gap(2.0, 10.0, 2.0) == 8.0   # the defaults: 10 - 2
    assert longest_renew_gap(0.3, 1.2, 0.3) == pytest.approx(0.9)
    assert longest_renew_gap(2.0, 2.4, 2.0) == 2.0   # a renew interval longer than that stays the bound


def test_a_burst_of_renewals_takes_slots_one_per_1_over_w_and_none_past_the_bound() -> None:
    b = budget(10.0)   # a slot every 0.1 s
    slots = [b.reserve(5.0, renew_started=4.7) for _ in range(8)]
    # Due together at 5.0 (started 4.7): slots 5.0, 5.1, ... up to the bound 4.7 + 0.9 = 5.6; later ones
    # go at the bound without taking a slot.
    assert slots == pytest.approx([5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.6])
    assert b.reserve(5.0, renew_started=5.0) == pytest.approx(5.7)  # the next slot is still free for others


def test_over_budget_the_slots_come_at_the_rate_that_renews_each_shard_just_inside_the_bound() -> None:
    b = budget(20.0)
    turned = b.replan(40)
    assert turned is not None and turned.exceeded   # reported once, when it starts
    assert b.replan(40) is None and b.replan(41) is None   # no new report while it stays exceeded
    first, second = b.reserve(5.0, renew_started=4.7), b.reserve(5.0, renew_started=4.7)
    assert second - first == pytest.approx(1 / ((41 / BOUND + 1 / 0.3) * 1.03))
    met = b.replan(2)
    assert met is not None and not met.exceeded   # and once when it ends


def test_writes_that_cannot_wait_push_the_renewals_behind_them() -> None:
    b = budget(10.0)
    b.spend(1.0)
    b.spend(1.0)
    assert b.reserve(1.0, renew_started=0.7) == pytest.approx(1.2)


def test_the_budget_must_be_a_positive_finite_rate() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_write_rate"):
            budget(bad)


@dataclasses.dataclass
class Run:
    table: Table
    writes: list[float]            # times of every Lease write (not reads)
    gaps: dict[str, list[float]]   # per shard Lease: time between two renewals
    member_bodies: list[dict[str, object]]


def simulate(shards: int, rate: float | None, seconds: float) -> Run:
    """One replica alone holds ``shards`` shards; every request is answered at once (as sent)."""
    t = Table(shards=shards, timing=dataclasses.replace(TIMING, max_write_rate=rate))
    t.join()
    run = Run(t, [], defaultdict(list), [])
    last: dict[str, float] = {}
    end = t.now + seconds
    while t.now < end:
        for command in t.step():
            if not isinstance(command, Write):
                continue
            if command.kind.store_call != "get":
                run.writes.append(t.now)
            if command.kind is WriteKind.RENEW:
                if command.name in last:
                    run.gaps[command.name].append(t.now - last[command.name])
                last[command.name] = t.now
            if command.kind is WriteKind.MEMBER_RENEW and command.body is not None:
                run.member_bodies.append(command.body)
            t.succeed(command)
        t.clock.advance(STEP)
    return run


def busiest_second(times: list[float], since: float) -> int:
    times = [x for x in times if x >= since]
    return max(bisect.bisect_left(times, x + 1.0) - i for i, x in enumerate(times))


def test_without_a_budget_every_held_lease_is_renewed_every_renew_interval() -> None:
    run = simulate(shards=20, rate=None, seconds=3.0)
    worst = max(max(g) for g in run.gaps.values())
    assert worst <= 0.3 + STEP + 1e-9
    assert run.table.reactor.health(run.table.now)["write_budget"] is None


def test_renewals_are_spaced_to_the_budget_without_a_gap_past_the_bound_or_a_loss() -> None:
    # 40 shards + the member Lease would write 137 times a second at RI 0.3 s; the budget is 50.
    run = simulate(shards=40, rate=50.0, seconds=8.0)
    reactor = run.table.reactor
    assert len(reactor.owned()) == 40
    steady = run.writes[0] + 2.0
    served = sum(1 for x in run.writes if x >= steady) / (run.table.now - steady)
    assert served <= 50 * 1.05
    assert served >= 50 * 0.9   # the budget is used, not wasted: renewals come as often as it allows
    assert busiest_second(run.writes, steady) <= 50 * 1.05
    assert max(max(g) for g in run.gaps.values()) <= BOUND + STEP + 1e-9
    health = reactor.health(run.table.now)["write_budget"]
    assert health["exceeded"] is False and health["max_write_rate"] == 50.0
    assert health["renew_interval"] == pytest.approx(40 / (50 - 1 / 0.3), abs=1e-3)


def test_a_budget_the_shards_cannot_meet_renews_near_the_bound_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shardlease")
    run = simulate(shards=40, rate=20.0, seconds=8.0)
    reactor = run.table.reactor
    assert len(reactor.owned()) == 40   # nothing is given up for the budget
    gaps = [g for shard in run.gaps.values() for g in shard]
    assert max(gaps) <= BOUND + STEP + 1e-9
    # Close to the fewest safe writes (every shard every 0.9 s: 47.8/s), spread out rather than together,
    # once the burst of taking every shard at once has passed.
    steady = run.writes[0] + 3.0
    served = sum(1 for x in run.writes if x >= steady) / (run.table.now - steady)
    assert 47.8 * 0.97 <= served <= 47.8 * 1.05
    assert busiest_second(run.writes, steady) <= 47.8 * 1.1
    warnings = [r.getMessage() for r in caplog.records if "write budget cannot be met" in r.getMessage()]
    assert len(warnings) == 1
    assert "40 shard Leases + the member Lease need 47.8 writes/s" in warnings[0]
    assert "max_write_rate 20" in warnings[0] and "raise --max-write-rate" in warnings[0]
    assert reactor.health(run.table.now)["write_budget"]["exceeded"] is True
    # `shardlease status` reads it from the member Lease.
    annotations = run.member_bodies[-1]["metadata"]["annotations"]  # type: ignore[index]
    assert annotations[ANNOTATION_PROBLEMS] == "write-budget=47.8/20"


def test_timing_reads_the_budget_from_the_config() -> None:
    from shardlease.config import ShardConfig

    timing = Timing.from_config(ShardConfig(group="g", shards=4, max_write_rate=25))
    assert timing.max_write_rate == 25.0
    assert Timing.from_config(ShardConfig(group="g", shards=4)).max_write_rate is None
