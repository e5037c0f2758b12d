"""The local picture of one group's Leases, kept current by a single list+watch.

``LeaseCache`` stores each Lease's latest record with the monotonic time its *spec* was last seen to
change: that time, not the record's ``renewTime``, is what expiry is judged from (client-go's
``observedTime``). Writes we make ourselves are applied too, since our own response is the freshest copy
we can have; ordering between our responses and watch events is settled by resourceVersion (a number
from one global counter in practice; compared as integers when both parse, otherwise the newer arrival
wins), so a late event can never roll a record back.

``LeaseWatcher`` is the one thread per replica that talks to the watch endpoint: list, then watch from
the list's resourceVersion with bookmarks; on a clean end of stream it resumes from the last version it
saw; on ``Expired`` (410) it relists; a silent connection is cut by a client-side read timeout. In steady state
this is the only read traffic: no polling GETs.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import Clock
from .errors import ApiError, Expired, RequestTimeout, Throttled
from .records import LeaseRecord

if TYPE_CHECKING:
    from .client.store import LeaseStore

__all__ = ["CachedLease", "LeaseCache", "LeaseWatcher", "rv_newer"]


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


@dataclass(frozen=True, slots=True)
class CachedLease:
    record: LeaseRecord
    observed: float


class LeaseCache:
    """Thread-safe map of Lease name to its last record and observation time.

    ``on_change`` is called (outside the lock) after any change, to wake the control loop;
    ``take_changed()`` hands over the names that changed since the last call.
    """

    def __init__(self, clock: Clock, on_change: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._items: dict[str, CachedLease] = {}
        # name -> (since, resourceVersion of the deletion or list) for Leases known to be absent
        self._absent: dict[str, tuple[float, str]] = {}
        self._changed: set[str] = set()
        self._synced_at: float | None = None
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

    def replace_all(self, records: Iterable[LeaseRecord], list_rv: str) -> None:
        """Adopt a fresh list: unchanged specs keep their observation time, vanished Leases become absent."""
        now = self._clock.monotonic()
        with self._lock:
            seen: set[str] = set()
            for record in records:
                seen.add(record.name)
                self._apply_locked(record, now)
            for name in list(self._items):
                if name in seen:
                    continue
                current = self._items[name]
                if list_rv and not rv_newer(list_rv, current.record.resource_version):
                    continue  # our own newer write, which the list predates
                del self._items[name]
                self._absent[name] = (now, list_rv)
                self._changed.add(name)
            if self._synced_at is None:
                self._synced_at = now
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

    def snapshot(self) -> dict[str, CachedLease]:
        with self._lock:
            return dict(self._items)

    def take_changed(self) -> set[str]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed


class LeaseWatcher:
    """List+watch thread feeding a ``LeaseCache``.

    ``read_timeout`` should be shorter than the lease duration: in a live group some member Lease is
    renewed every retry period, so a stream silent for that long is a dead connection, and noticing it
    before peers' Leases would look expired keeps membership honest.
    """

    def __init__(self, client: LeaseStore, cache: LeaseCache, selector: str, *, read_timeout: float,
                 logger: logging.LoggerAdapter[Any] | logging.Logger,
                 on_error: Callable[[str], None] | None = None, max_backoff: float = 5.0) -> None:
        self._client = client
        self._cache = cache
        self._selector = selector
        self._read_timeout = read_timeout
        self._log = logger
        self._on_error = on_error
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shardlease-watch", daemon=True)
        self.resource_version = ""
        self.relists = 0
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._client.close_watch()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            delivered = self.events
            try:
                if not self.resource_version:
                    self._relist()
                self._watch_once()
                failures = 0
            except Expired as err:
                if self._stop.is_set():
                    return
                self._log.info("watch history expired (%s); relisting", err)
                self.resource_version = ""
                continue
            except ApiError as err:
                if self._stop.is_set():
                    return
                if self.events > delivered:
                    # The stream worked before it broke: this is a first failure, not one more in a row.
                    # Backing off as if the server had been down all along left replicas blind to
                    # member renewals for longer than a lease (found by the chaos suite, seed 5).
                    failures = 0
                failures += 1
                if self._on_error is not None:
                    self._on_error(err.kind)
                if isinstance(err, Throttled):  # the server's wait, not ours: no jitter
                    delay = err.retry_after or min(self._max_backoff, 0.2 * 2 ** min(failures, 6))
                else:
                    delay = min(self._max_backoff, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                level = logging.DEBUG if isinstance(err, RequestTimeout) and failures == 1 else logging.WARNING
                self._log.log(level, "watch failed (%s); retrying in %.2fs", err, delay)
                self._stop.wait(delay)
            except Exception:  # never let the watch thread die
                failures += 1
                self._log.exception("unexpected error in the watch loop")
                self._stop.wait(min(self._max_backoff, 0.2 * 2 ** min(failures, 6)))

    def _relist(self) -> None:
        items, rv = self._client.list(self._selector, timeout=max(5.0, self._read_timeout))
        records = [r for r in (LeaseRecord.from_object(i) for i in items) if r is not None]
        self._cache.replace_all(records, rv)
        self.resource_version = rv
        self.relists += 1

    #: Watch events received so far (bookmarks included): tells a stream that worked from one that never did.
    events = 0

    def _watch_once(self) -> None:
        self.restarts += 1
        stream = self._client.watch(self._selector, self.resource_version,
                                    timeout_seconds=random.randint(240, 360), read_timeout=self._read_timeout)
        for event in stream:
            if self._stop.is_set():
                return
            self.events += 1
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            meta = obj.get("metadata")
            rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
            if kind == "BOOKMARK":
                if isinstance(rv, str) and rv:
                    self.resource_version = rv
                continue
            if kind == "MODIFIED" and isinstance(rv, str) and isinstance(meta, dict) \
                    and self._cache.has_version(str(meta.get("name")), rv):
                self.resource_version = rv
                continue
            record = LeaseRecord.from_object(obj)
            if record is None:
                continue
            if kind == "DELETED":
                self._cache.delete(record.name, record.resource_version)
            elif kind in ("ADDED", "MODIFIED"):
                self._cache.apply(record)
            if isinstance(rv, str) and rv:
                self.resource_version = rv
