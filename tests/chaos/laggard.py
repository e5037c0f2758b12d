"""A deliberately broken replica for the chaos suite's own test: the journaling handler, but it learns
that its shard is gone ``LAG`` seconds late, as if the runtime stopped handlers (and turned
``valid()`` false) 1.5 s after its renew deadline instead of at it.

1.5 s is more than the safety margin (lease 2 s - renew deadline 1.2 s = 0.8 s), so a replica
cut off from the API keeps working after a peer may have taken over. The chaos run must report that
as overlapping work -- proof that the checks catch a runtime that is unsafe, and are not passing
vacuously. Used only by the slow test ``test_chaos_catches_a_runtime_that_stops_handlers_late``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from shardlease.harness import journal

LAG = 1.5


class _LateEvent:
    """``is_set()`` turns true only ``LAG`` seconds after the real event was first seen set."""

    def __init__(self, real: threading.Event) -> None:
        self._real = real
        self._seen: float | None = None

    def is_set(self) -> bool:
        if not self._real.is_set():
            return False
        now = time.monotonic()
        if self._seen is None:
            self._seen = now
        return now >= self._seen + LAG

    def wait(self, timeout: float | None = None) -> bool:
        return self._real.wait(timeout)


class _LateShard:
    """The shard as a lagging runtime would present it."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.id = shard.id
        self.token = shard.token
        self.identity = getattr(shard, "identity", "")
        self.stopped = _LateEvent(shard.stopped)

    def valid(self) -> bool:
        until = getattr(self._shard, "_valid_until", float("inf"))
        return not self.stopped.is_set() and time.monotonic() < until + LAG


def handle(shard: Any) -> None:
    journal.handle(_LateShard(shard))  # type: ignore[arg-type]
