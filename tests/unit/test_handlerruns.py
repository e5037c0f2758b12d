"""The books of handler runs on their own: run numbers, start and stop commands, exits, raises, the drain
deadline and stuck or crash-looping handlers. Times are plain numbers; nothing runs."""

from __future__ import annotations

import pytest

from shardlease.core.elector import HandlerPhase
from shardlease.core.handlerruns import (
    CRASH_LOOP_ERRORS,
    CRASH_LOOP_WINDOW,
    STUCK_CATCH_UP,
    Exit,
    HandlerRuns,
    Stuck,
)
from shardlease.core.messages import HandlerExited, HandlerRaised, StartHandler, StopHandler

DRAIN = 5.0


def runs(shards: int = 2) -> HandlerRuns:
    books = HandlerRuns(drain_timeout=DRAIN)
    books.ensure(shards)
    return books


def start(books: HandlerRuns, shard: int) -> StartHandler:
    return books.start(shard, token=7, count=2, valid_until=100.0, generation=1)


def test_each_start_is_a_new_numbered_run_with_its_fence_and_deadline() -> None:
    books = runs()
    first = start(books, 0)
    second = start(books, 1)
    assert first == StartHandler(0, 1, 7, 2, 100.0, 1)
    assert second.run == 2                         # numbered across shards: a run number names one run
    assert books[0].phase is HandlerPhase.RUNNING and books[0].wanted
    assert books.running() == {0, 1}
    with pytest.raises(AssertionError):            # one run per shard at a time
        start(books, 0)
    books.check_invariants()


def test_a_stop_is_sent_once_per_run_however_often_asked() -> None:
    books = runs()
    run = start(books, 0).run
    assert books.stop(0, now=10.0) == StopHandler(0, run)
    assert books.stop(0, now=11.0) is None
    assert books[0].phase is HandlerPhase.STOPPING and books[0].stop_requested_at == 10.0
    assert books.stop(1, now=10.0) is None         # nothing runs there: stays idle
    assert books[1].phase is HandlerPhase.IDLE
    books.check_invariants()


@pytest.mark.parametrize(("stop_first", "expected", "still_wanted"), [
    (True, Exit.STOPPED, True),
    (False, Exit.ON_ITS_OWN, False),  # returned by itself: not started again in this tenure
])
def test_what_an_exit_means(stop_first: bool, expected: Exit, still_wanted: bool) -> None:
    books = runs()
    run = start(books, 0).run
    if stop_first:
        books.stop(0, now=10.0)
    assert books.exited(HandlerExited(0, run)) is expected
    assert books[0].phase is HandlerPhase.IDLE and books[0].run is None
    assert books[0].wanted is still_wanted
    books.check_invariants()


def test_an_earlier_runs_exit_or_raise_does_not_touch_the_current_run() -> None:
    books = runs()
    old = start(books, 0).run
    books.stop(0, now=1.0)
    books.exited(HandlerExited(0, old))
    current = start(books, 0).run
    assert books.exited(HandlerExited(0, old)) is Exit.STALE
    books.raised(HandlerRaised(0, old), now=2.0)
    assert books[0].run == current and books[0].errors == 0


def test_the_drain_deadline_is_due_only_while_stopping_and_not_yet_stuck() -> None:
    books = runs()
    start(books, 0)
    assert books.drain_deadline(0) is None
    books.stop(0, now=10.0)
    assert books.drain_deadline(0) == 10.0 + DRAIN


@pytest.mark.parametrize(("now", "verdict", "again_at"), [
    (10.0 + DRAIN - 0.1, Stuck.NO, None),                    # drain time not up
    (10.0 + DRAIN, Stuck.NOT_YET, 10.0 + DRAIN + STUCK_CATCH_UP),
    (10.0 + DRAIN + 30.0, Stuck.NOT_YET, 10.0 + DRAIN + 30.0 + STUCK_CATCH_UP),  # a frozen process wakes up
])
def test_a_handler_past_its_drain_deadline_gets_a_moment_before_it_is_stuck(
        now: float, verdict: Stuck, again_at: float | None) -> None:
    books = runs()
    start(books, 0)
    books.stop(0, now=10.0)
    assert books.check_stuck(0, now) == (verdict, again_at)
    assert books.stuck() == frozenset()


def test_stuck_once_the_catch_up_passed_and_cleared_when_it_finally_returns() -> None:
    books = runs()
    run = start(books, 0).run
    books.stop(0, now=10.0)
    seen = 10.0 + DRAIN + 3.0
    assert books.check_stuck(0, seen)[0] is Stuck.NOT_YET
    assert books.check_stuck(0, seen + STUCK_CATCH_UP - 0.01)[0] is Stuck.NOT_YET
    assert books.check_stuck(0, seen + STUCK_CATCH_UP) == (Stuck.NOW, None)
    assert books.stuck() == {0} and books.drain_deadline(0) is None
    assert books.check_stuck(0, seen + 60.0) == (Stuck.NO, None)   # judged once
    books.check_invariants()
    assert books.exited(HandlerExited(0, run)) is Exit.STUCK_RETURNED
    assert books.stuck() == frozenset()


def test_a_running_handler_is_never_stuck() -> None:
    books = runs()
    start(books, 0)
    assert books.check_stuck(0, 1e9) == (Stuck.NO, None)


def test_crash_looping_takes_enough_recent_raises_in_one_run() -> None:
    books = runs()
    run = start(books, 0).run
    for i in range(CRASH_LOOP_ERRORS - 1):
        books.raised(HandlerRaised(0, run), now=float(i))
    assert books.crashing(now=10.0) == []
    books.raised(HandlerRaised(0, run), now=10.0)
    assert books.crashing(now=10.0) == [0]
    assert books.crashing(now=10.0 + CRASH_LOOP_WINDOW) == []     # the last raise is too old
    books.stop(0, now=11.0)
    books.exited(HandlerExited(0, run))
    start(books, 0)                                            # a new run starts with a clean slate
    assert books[0].errors == 0 and books.crashing(now=12.0) == []
