"""How the pod benchmark and the e2e tier count shard-seconds without a holder
(shardlease.harness.podgroup).

A rollout restart once reported 14.3 unowned shard-seconds while every handoff took milliseconds:
the old count multiplied each status sample's unowned shards by the whole interval since the sample
before (2-3 s of process starts), so a sample landing in the few milliseconds between a leaving pod's
release of its 8 shards and their takeover counted 8 x 1.8 s. These tests pin the two counts that
replaced it: exact, from the Lease watch's timeline, and from samples only what two samples in a row saw.
"""

from __future__ import annotations

import time
from typing import Any

from shardlease.harness.podgroup import LeaseWatch, PodGroup


def watch_with(changes: list[tuple[float, int, str | None]]) -> LeaseWatch:
    group = PodGroup("/nonexistent", namespace="ns", deployment="d", group="g", shards=4)
    watch = LeaseWatch(group)  # never entered: no kubectl runs, only the timeline is read
    watch.changes = changes
    return watch


def test_unowned_seconds_follow_the_lease_timeline() -> None:
    watch = watch_with([
        (0.0, 0, "a"), (0.0, 1, "a"), (0.0, 2, "b"), (0.0, 3, "b"),   # the initial list
        (10.0, 0, None), (10.05, 0, "c"),                            # a handoff: 50 ms unowned
        (12.0, 1, None),                                             # released, never taken in the window
        (13.0, 3, None), (13.5, 3, None), (14.0, 3, "c"),            # a second event while unowned
        (2.0, 2, "b"),                                               # a renewal changes nothing
    ])
    idle = watch.unowned_seconds(5.0, 15.0)
    assert idle.keys() == {0, 1, 3}
    assert abs(idle[0] - 0.05) < 1e-9
    assert abs(idle[1] - 3.0) < 1e-9  # clamped to the window's end
    assert abs(idle[3] - 1.0) < 1e-9


def test_unowned_before_the_window_counts_only_inside_it() -> None:
    watch = watch_with([(0.0, 0, None), (8.0, 0, "a")])
    assert watch.unowned_seconds(5.0, 20.0) == {0: 3.0}
    assert watch.unowned_seconds(9.0, 20.0) == {}


def test_first_time_the_holders_satisfy_a_condition() -> None:
    watch = watch_with([
        (0.0, 0, "old"), (0.0, 1, "a"),
        (10.0, 0, None), (10.2, 0, "a"), (10.2, 1, "a"),  # two events read in one go share a stamp
    ])
    handed_off = lambda holders: all(h == "a" for h in holders.values())  # noqa: E731
    assert watch.first_time(5.0, handed_off) == 10.2
    assert watch.first_time(11.0, handed_off) == 11.0  # already true when the window opens
    assert watch.first_time(5.0, lambda holders: "b" in holders.values()) is None


class ScriptedStatus(PodGroup):
    """``status()`` answers from a script instead of running ``shardlease status``; each answer can
    take a while, as a process start does on a busy machine."""

    def __init__(self, script: list[tuple[float, list[int]]]) -> None:
        super().__init__("/nonexistent", namespace="ns", deployment="d", group="g", shards=8)
        self.script = script
        self.calls = 0

    def status(self) -> dict[str, Any]:
        delay, unowned = self.script[self.calls]
        self.calls += 1
        time.sleep(delay)
        return {"summary": {"unowned": unowned, "expired": []}, "switch_pending": []}


def test_a_shard_seen_idle_by_one_sample_is_not_charged_the_interval() -> None:
    # Shard 3 is caught in the middle of a handoff by one sample after a long (0.4 s) interval: the
    # old count charged it 0.4 s. Shard 5 is idle in two samples in a row, 0.1 s apart: that counts.
    group = ScriptedStatus([(0.4, [3]), (0.0, []), (0.0, [5]), (0.1, [5]), (0.0, [])])
    elapsed, gap = group.unworked_seconds_until(lambda: group.calls == 5, timeout=10)
    assert group.calls == 5
    assert 0.09 <= gap < 0.3, gap
    assert elapsed >= 0.5
