"""Which shard Leases a replica watches, and when it asks for a new watch (targeted watching).

A replica need not read every renewal of every shard. It watches the member Leases (always) plus the
shard Leases it holds, is assigned, or would inherit if any one peer failed, by the rule the owners come
from (:func:`~shardlease.core.assignment.inheritable` for the count assignment,
:func:`~shardlease.core.loadplan.inheritable_under` under a load snapshot), so that failover still finds
the dead holder's Leases observed for a whole lease. During a switch between generations it watches every shard below the span
(the barrier reads them all), and the oldest member also watches the retired ones until it has deleted
them.

A wider set is asked for at once: a shard that may become ours must be observed now. A narrower one is
asked for a lease duration after the set first shrank, so a rebalance that frees shards one by one costs
one relist rather than one per shard.

Pure: :class:`WatchPlan` takes the wanted set and the time and answers with a
:class:`~shardlease.core.messages.WatchShards` command or nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from shardlease.core.messages import WatchShards

__all__ = ["WatchPlan", "wanted_shards"]


def wanted_shards(*, count: int, span: int, switching: bool, desired: frozenset[int],
                  inheritable: frozenset[int], held: frozenset[int] | set[int], sweeper: bool) -> frozenset[int]:
    """The shard Leases worth watching (see the module docstring).

    ``switching``: the generation's barrier has not passed yet; ``sweeper``: this replica deletes the
    retired shards' Leases (the oldest member).
    """
    if switching:
        return frozenset(range(span))
    wanted = desired | inheritable | frozenset(held)
    if sweeper and span > count:
        wanted |= frozenset(range(count, span))
    return wanted


class WatchPlan:
    """The watched set, and the pending shrink. Disabled (``enabled=False``) it never asks for anything."""

    def __init__(self, *, lease_duration: float, enabled: bool) -> None:
        self.enabled = enabled
        self._lease_duration = lease_duration
        #: The set last asked for; ``None`` before the first request.
        self.watching: frozenset[int] | None = None
        #: The shards this replica would take over if any one peer failed (kept current by the reactor).
        self.inheritable: frozenset[int] = frozenset()
        #: Something the wanted set depends on changed since the last :meth:`update`.
        self.dirty = enabled
        self.shrink_at = float("inf")

    def mark(self) -> None:
        """The wanted set may have changed: recompute it at the next :meth:`update`."""
        if self.enabled:
            self.dirty = True

    def update(self, now: float, wanted: Callable[[], frozenset[int]], span: int) -> WatchShards | None:
        """The watch to ask for now, if any: when the wanted set grew (at once) or shrank (later)."""
        if self.dirty:
            self.dirty = False
            target = wanted()
            current = self.watching
            if current is None or not target <= current:
                return self._emit(target, span)
            if target != current:
                if self.shrink_at == float("inf"):
                    self.shrink_at = now + self._lease_duration
            else:
                self.shrink_at = float("inf")
        if now >= self.shrink_at:
            return self._emit(wanted(), span)
        return None

    def _emit(self, shards: frozenset[int], span: int) -> WatchShards | None:
        self.shrink_at = float("inf")
        if shards == self.watching:
            return None
        self.watching = shards
        return WatchShards(shards, span)
