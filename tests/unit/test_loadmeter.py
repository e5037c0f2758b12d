"""LoadMeter and shard.report_load: the smoothing users read about in docs/load.md."""

from __future__ import annotations

import pytest

from shardlease.core.clock import FakeClock
from shardlease.core.loadmeter import LoadMeter
from shardlease.errors import InvalidArgument
from shardlease.runtime.handlers import Shard


def test_first_report_is_taken_as_is_then_a_half_life_moves_half_way() -> None:
    meter = LoadMeter(half_life=10.0)
    assert meter.value is None
    meter.report(100, now=0.0)
    assert meter.value == 100.0
    meter.report(0, now=10.0)
    assert meter.value == pytest.approx(50.0)
    meter.report(0, now=30.0)
    assert meter.value == pytest.approx(12.5)


def test_the_average_depends_on_time_not_on_how_often_one_reports() -> None:
    often, seldom = LoadMeter(10.0), LoadMeter(10.0)
    often.report(0, 0.0)
    seldom.report(0, 0.0)
    for step in range(1, 101):
        often.report(40, step * 0.1)
    seldom.report(40, 10.0)
    assert often.value == pytest.approx(seldom.value) == pytest.approx(20.0)


def test_a_report_from_the_past_does_not_move_time_back() -> None:
    meter = LoadMeter(10.0)
    meter.report(10, 5.0)
    meter.report(20, 4.0)  # clock read on another thread a moment earlier: weight 0
    assert meter.value == 10.0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "3", True, None])
def test_report_load_refuses_what_is_not_a_load(bad: object) -> None:
    shard = Shard(0, 4, 1, clock=FakeClock(), load=LoadMeter(5.0))
    with pytest.raises(InvalidArgument, match=r"report_load\(value\): value must be a finite number >= 0"):
        shard.report_load(bad)  # type: ignore[arg-type]


def test_report_load_feeds_the_shards_meter_with_the_clock() -> None:
    clock = FakeClock()
    meter = LoadMeter(5.0)
    shard = Shard(0, 4, 1, clock=clock, load=meter)
    shard.report_load(8)
    clock.advance(5.0)
    shard.report_load(0.0)
    assert meter.value == pytest.approx(4.0)


def test_report_load_without_a_meter_still_checks_and_is_otherwise_harmless() -> None:
    shard = Shard(0, 4, 1)
    shard.report_load(3)
    with pytest.raises(InvalidArgument):
        shard.report_load(-3)
