"""Time sources, injectable so that timing decisions can be tested without sleeping.

Two clocks with different jobs: ``monotonic()`` judges every duration (expiry, renew deadlines,
grace periods) because it never jumps; ``now()`` (wall clock, UTC) fills the ``acquireTime`` /
``renewTime`` fields that humans and other tools read, and the epoch of a shard Lease a replica creates
(docs/guarantees.md). No decision compares a Lease's ``renewTime`` with the local wall clock, so clock
offsets between pods do not matter for who holds what.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Protocol

from shardlease.errors import InvalidArgument


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> _dt.datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.timezone.utc)


class FakeClock:
    """A clock that moves only when told to; wall time moves with it."""

    def __init__(self, start: float = 1000.0, wall: _dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._mono = start
        self._wall = wall or _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> _dt.datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise InvalidArgument("a clock does not go backwards")
        with self._lock:
            self._mono += seconds
            self._wall += _dt.timedelta(seconds=seconds)
