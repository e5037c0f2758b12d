"""The local picture of one group's Leases: the latest record of each, and when it was seen to change.

``LeaseCache`` stores each Lease's latest record with the monotonic time its *spec* was last seen to
change: that time, not the record's ``renewTime``, is what expiry is judged from (client-go's
``observedTime``). Writes we make ourselves are applied too, since our own response is the freshest copy
we can have; ordering between our responses and watch events is settled by resourceVersion (a number
from one global counter in practice; compared as integers when both parse, otherwise the newer arrival
wins), so a late event can never roll a record back.

A data structure, not I/O: ``shardlease.client.watch.LeaseWatcher`` fills it from the API server, tests
and simulations fill it by hand, and the reactor reads it. Thread-safe: the watcher writes from its own
thread while the control loop reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardlease.core.clock import Clock
from shardlease.core.records import LeaseRecord

if TYPE_CHECKING:
    from shardlease.core.messages import WriteDone

__all__ = ["COVERAGE_UNCHANGED", "CachedLease", "CoverageUnchanged", "LeaseCache", "apply_answer", "rv_newer"]


def _rv_int(rv: str) -> int | None:
    return int(rv) if rv.isdigit() else None


def rv_newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` may replace ``current``. Equal versions are not newer (a duplicate)."""
    if candidate == current:
        return False
    a, b = _rv_int(candidate), _rv_int(current)
    if a is None or b is None:
        return True  # opaque versions: trust arrival order
    return a > b


class CoverageUnchanged:
    """The type of :data:`COVERAGE_UNCHANGED`."""


#: ``replace_all(covered=COVERAGE_UNCHANGED)`` (the default): the list says nothing about which shards
#: are covered, as the member watch's lists do.
COVERAGE_UNCHANGED = CoverageUnchanged()


@dataclass(frozen=True, slots=True)
class CachedLease:
    record: LeaseRecord
    observed: float


class LeaseCache:
    """Thread-safe map of Lease name to its last record and observation time.

    ``on_change`` is called (outside the lock) after any change, to wake the control loop;
    ``take_changed()`` hands over the names that changed since the last call.
    """

    def __init__(self, clock: Clock, on_change: Callable[[], None] | None = None, *,
                 covered: frozenset[int] | None = None) -> None:
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._items: dict[str, CachedLease] = {}
        # name -> (since, resourceVersion of the deletion or list) for Leases known to be absent
        self._absent: dict[str, tuple[float, str]] = {}
        self._changed: set[str] = set()
        self._synced_at: float | None = None
        self._covered: frozenset[int] | None = covered
        self.synced = threading.Event()

    # ---- writers ----

    def apply(self, record: LeaseRecord) -> bool:
        """Take a record from a watch event or from one of our own responses. True if it changed."""
        now = self._clock.monotonic()
        with self._lock:
            changed = self._apply_locked(record, now)
        if changed and self._on_change is not None:
            self._on_change()
        return changed

    def _apply_locked(self, record: LeaseRecord, now: float) -> bool:
        name = record.name
        current = self._items.get(name)
        if current is not None:
            if not rv_newer(record.resource_version, current.record.resource_version):
                return False
            observed = current.observed if current.record.spec_key == record.spec_key else now
        else:
            tomb = self._absent.get(name)
            if tomb is not None and tomb[1] and not rv_newer(record.resource_version, tomb[1]):
                return False
            observed = now
            self._absent.pop(name, None)
        self._items[name] = CachedLease(record, observed)
        self._changed.add(name)
        return True

    def delete(self, name: str, resource_version: str) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            current = self._items.get(name)
            if current is not None and resource_version and not rv_newer(resource_version,
                                                                        current.record.resource_version):
                return False
            self._items.pop(name, None)
            self._absent[name] = (now, resource_version)
            self._changed.add(name)
        if self._on_change is not None:
            self._on_change()
        return True

    def replace_all(self, records: Iterable[LeaseRecord], list_rv: str, *,
                    scope: Callable[[str], bool] | None = None, forget: Iterable[str] = (),
                    covered: frozenset[int] | None | CoverageUnchanged = COVERAGE_UNCHANGED, sync: bool = True) -> None:
        """Adopt a fresh list: unchanged specs keep their observation time, vanished Leases become absent.

        ``scope`` says which names this list speaks for (default: all): a Lease in scope but not listed
        has vanished; one out of scope is another watch's business and is left alone. ``forget``: names
        no longer watched at all, dropped without being marked absent (we simply stop knowing them).
        ``covered``: the shards whose Leases are now watched (``None``: every shard; default: unchanged). ``sync``: this list
        completes the initial picture (the member list does; a shard list re-targeted later does not).
        """
        now = self._clock.monotonic()
        with self._lock:
            seen: set[str] = set()
            for record in records:
                seen.add(record.name)
                self._apply_locked(record, now)
            for name in list(self._items):
                if name in seen or (scope is not None and not scope(name)):
                    continue
                current = self._items[name]
                if list_rv and not rv_newer(list_rv, current.record.resource_version):
                    continue  # our own newer write, which the list predates
                del self._items[name]
                self._absent[name] = (now, list_rv)
                self._changed.add(name)
            for name in forget:
                if name not in seen and self._items.pop(name, None) is not None:
                    self._changed.add(name)
                self._absent.pop(name, None)
            if not isinstance(covered, CoverageUnchanged):
                self._covered = covered
            if sync and self._synced_at is None:
                self._synced_at = now
        if sync:
            self.synced.set()
        if self._on_change is not None:
            self._on_change()

    # ---- readers ----

    def get(self, name: str) -> CachedLease | None:
        with self._lock:
            return self._items.get(name)

    def has_version(self, name: str, resource_version: str) -> bool:
        """Whether ``name`` is cached at exactly this version: the watch echo of our own write, which can
        be skipped before paying for parsing it into a record."""
        current = self._items.get(name)  # a dict read is atomic; a stale answer only costs a parse
        return current is not None and current.record.resource_version == resource_version

    def absent_since(self, name: str) -> float:
        """Since when ``name`` is known to be absent (the first sync for Leases never seen)."""
        with self._lock:
            tomb = self._absent.get(name)
            if tomb is not None:
                return tomb[0]
            return self._synced_at if self._synced_at is not None else self._clock.monotonic()

    @property
    def covered(self) -> frozenset[int] | None:
        """The shards whose Leases are watched and listed (``None``: all of them)."""
        return self._covered

    def covers(self, shard: int) -> bool:
        """Whether ``shard``'s Lease is watched and listed, so its cached state (or absence) is true."""
        covered = self._covered  # one reference read: atomic
        return covered is None or shard in covered

    def snapshot(self) -> dict[str, CachedLease]:
        with self._lock:
            return dict(self._items)

    def take_changed(self) -> set[str]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed


def apply_answer(cache: LeaseCache, done: WriteDone) -> LeaseRecord | None:
    """The Lease a successful write returned, put into the cache (its watch event comes later)."""
    if done.record is not None:
        return done.record  # parsed and cached by the shell as soon as it came (see WriteDone)
    record = LeaseRecord.from_object(done.obj) if done.obj is not None else None
    if record is not None:
        cache.apply(record)
    return record
