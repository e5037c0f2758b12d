"""Handler runs: which run of the user's handler is live on which shard, and what became of it.

Each start of a handler on a shard is a numbered *run*; the shell reports back by run number
(:class:`~shardlease.core.messages.HandlerExited`, :class:`~shardlease.core.messages.HandlerRaised`), so
a late report of an earlier run never touches the current one. For every shard this module tracks the
run's phase (idle, running, stopping), whether its holder still wants it started, when it was asked to
stop, and its raises; it produces the :class:`~shardlease.core.messages.StartHandler` and
:class:`~shardlease.core.messages.StopHandler` commands. Its rules:

* one run per shard at a time; a stop is sent once per run, however often it is asked for;
* a handler that returns without being asked to stop is not started again in the same tenure (it
  finished its work; restarting it would loop);
* a handler past its drain deadline is judged stuck only ``STUCK_CATCH_UP`` after the control loop
  first saw the deadline passed (a frozen process sees every deadline pass at once);
* a handler that raised ``CRASH_LOOP_ERRORS`` times in one run, the last within ``CRASH_LOOP_WINDOW``,
  is crash-looping.

When to start or stop a handler is decided elsewhere
(:func:`~shardlease.core.elector.decide`, :class:`~shardlease.core.elections.ShardElections`); this
module only keeps the books. Pure: times are passed in, no I/O, no logging.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shardlease.core.elector import HandlerPhase
from shardlease.core.messages import HandlerExited, HandlerRaised, StartHandler, StopHandler

__all__ = [
    "CRASH_LOOP_ERRORS",
    "CRASH_LOOP_WINDOW",
    "STUCK_CATCH_UP",
    "Exit",
    "HandlerRun",
    "HandlerRuns",
    "Stuck",
]

#: How long after the control loop first sees a handler's drain deadline passed it is judged stuck. A
#: process that was frozen (SIGSTOP, a VM or GC pause) sees every deadline pass at once, while its
#: handler threads were frozen too: they get this long (of time, not of loop passes: several passes can
#: run within a millisecond of waking up) to be scheduled and return before they count as stuck.
STUCK_CATCH_UP = 1.0

#: A handler counts as crash-looping after this many raises in one run, while the last was recent.
CRASH_LOOP_ERRORS = 3
CRASH_LOOP_WINDOW = 90.0  # seconds; the runner's restart back-off caps at 30 s


@dataclass(slots=True)
class HandlerRun:
    """The handler of one shard on this replica: its current run (``None``: none), phase and history."""

    shard: int
    run: int | None = None
    phase: HandlerPhase = HandlerPhase.IDLE
    #: The holder wants a handler on this shard in the current tenure (cleared when the handler
    #: returned on its own, or when the shard was acquired while stopping).
    wanted: bool = False
    stop_requested_at: float | None = None
    past_drain_seen_at: float | None = None
    stuck: bool = False
    errors: int = 0
    last_error_at: float = float("-inf")


class Exit(enum.Enum):
    """What a reported exit meant."""

    STALE = "an earlier run's exit: ignored"
    STOPPED = "returned after being asked to stop"
    STUCK_RETURNED = "a handler judged stuck finally returned"
    ON_ITS_OWN = "returned without being asked to stop"


class Stuck(enum.Enum):
    """Whether a stopping handler is stuck, as :meth:`HandlerRuns.check_stuck` judges it now."""

    NO = "not stuck (not stopping, already judged, or its drain deadline not reached)"
    NOT_YET = "past its drain deadline; judged once it had ``STUCK_CATCH_UP`` to return"
    NOW = "judged stuck now"


class HandlerRuns:
    """The handler run of every shard (see the module docstring)."""

    def __init__(self, drain_timeout: float) -> None:
        self._drain_timeout = drain_timeout
        self._runs = 0
        self.by_shard: list[HandlerRun] = []

    def ensure(self, n: int) -> None:
        """Track shards ``0..n-1`` (never shrinks)."""
        for i in range(len(self.by_shard), n):
            self.by_shard.append(HandlerRun(i))

    def __getitem__(self, shard: int) -> HandlerRun:
        return self.by_shard[shard]

    # ------------------------------------------------------------------ starting and stopping

    def start(self, shard: int, *, token: int, count: int, valid_until: float, generation: int) -> StartHandler:
        """A new run on ``shard`` (which has none): numbered, running, wanted, its raises forgotten."""
        h = self.by_shard[shard]
        assert h.run is None, (shard, h.run)
        self._runs += 1
        h.run = self._runs
        h.stop_requested_at = None
        h.past_drain_seen_at = None
        h.phase = HandlerPhase.RUNNING
        h.wanted = True
        h.errors = 0
        h.last_error_at = float("-inf")
        return StartHandler(shard, h.run, token, count, valid_until, generation)

    def stop(self, shard: int, now: float) -> StopHandler | None:
        """Ask the run on ``shard`` to stop: the command the first time it is asked, ``None`` after
        that (or when no run is live, which leaves the shard idle)."""
        h = self.by_shard[shard]
        if h.run is None:
            h.phase = HandlerPhase.IDLE
            return None
        h.phase = HandlerPhase.STOPPING
        if h.stop_requested_at is not None:
            return None
        h.stop_requested_at = now
        return StopHandler(shard, h.run)

    def exited(self, event: HandlerExited) -> Exit:
        """The shell reports a run returned; the shard is idle again if it was the current run."""
        h = self.by_shard[event.shard]
        if h.run != event.run:
            return Exit.STALE
        stop_requested = h.stop_requested_at is not None
        h.run = None
        h.stop_requested_at = None
        h.past_drain_seen_at = None
        h.phase = HandlerPhase.IDLE
        if h.stuck:
            h.stuck = False
            return Exit.STUCK_RETURNED
        if not stop_requested:
            h.wanted = False  # it finished by itself: do not start it again in this tenure
            return Exit.ON_ITS_OWN
        return Exit.STOPPED

    def raised(self, event: HandlerRaised, now: float) -> None:
        """The shell reports the handler raised (and is being restarted); only the current run counts."""
        h = self.by_shard[event.shard]
        if h.run == event.run:
            h.errors += 1
            h.last_error_at = now

    # ------------------------------------------------------------------ drain deadline and stuck handlers

    def drain_deadline(self, shard: int) -> float | None:
        """When a stopping (not yet stuck) run's drain time is up: the shard must be looked at then."""
        h = self.by_shard[shard]
        if h.phase is HandlerPhase.STOPPING and not h.stuck and h.stop_requested_at is not None:
            return h.stop_requested_at + self._drain_timeout
        return None

    def check_stuck(self, shard: int, now: float) -> tuple[Stuck, float | None]:
        """Judge a stopping run past its drain deadline; with ``NOT_YET``, the time to judge again."""
        h = self.by_shard[shard]
        if h.phase is not HandlerPhase.STOPPING or h.stuck or h.run is None or h.stop_requested_at is None:
            return Stuck.NO, None
        if now < h.stop_requested_at + self._drain_timeout:
            return Stuck.NO, None
        if h.past_drain_seen_at is None:
            h.past_drain_seen_at = now
        if now < h.past_drain_seen_at + STUCK_CATCH_UP:
            # Had the process been frozen, the handler's exit may be just behind: judge once its thread
            # has had a moment to run and its exit to be drained.
            return Stuck.NOT_YET, h.past_drain_seen_at + STUCK_CATCH_UP
        h.stuck = True
        return Stuck.NOW, None

    # ------------------------------------------------------------------ queries

    def stuck(self) -> frozenset[int]:
        return frozenset(h.shard for h in self.by_shard if h.stuck)

    def running(self) -> frozenset[int]:
        """Shards with a run that has not returned (at exit: the abandoned ones)."""
        return frozenset(h.shard for h in self.by_shard if h.run is not None)

    def crashing(self, now: float) -> list[int]:
        """Shards whose handler raised ``CRASH_LOOP_ERRORS`` times in its current run, the last within
        ``CRASH_LOOP_WINDOW``."""
        return sorted(h.shard for h in self.by_shard if h.run is not None and h.errors >= CRASH_LOOP_ERRORS
                      and now - h.last_error_at < CRASH_LOOP_WINDOW)

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if a run's books contradict themselves."""
        for h in self.by_shard:
            assert (h.run is None) == (h.phase is HandlerPhase.IDLE), (h.shard, h.run, h.phase)
            assert not h.stuck or h.phase is HandlerPhase.STOPPING, (h.shard, "stuck while not stopping")
            assert h.stop_requested_at is None or h.run is not None, (h.shard, "stop time without a run")
