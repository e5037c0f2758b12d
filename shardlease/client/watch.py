"""Keeping the local picture of one group's Leases (``shardlease.core.cache.LeaseCache``) current.

A ``LeaseWatcher`` is one thread that talks to the watch endpoint: list, then watch from the list's
resourceVersion with bookmarks; on a clean end of stream it resumes from the last version it saw; on
``Expired`` (410) it relists; a silent connection is cut by a client-side read timeout. In steady state
this is the only read traffic: no polling GETs.

A replica runs two: one on the group's member Leases (fixed), and one on the shard Leases that matter to
it (held, assigned, or inherited if a peer fails), which :meth:`LeaseWatcher.retarget` points at a new
set when membership changes. Each list speaks only for its own scope of the shared cache.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shardlease.core.cache import COVERAGE_UNCHANGED, CoverageUnchanged, LeaseCache
from shardlease.core.records import LeaseRecord
from shardlease.errors import ApiError, Expired, RequestTimeout, Throttled, Unauthorized

if TYPE_CHECKING:
    from shardlease.client.store import LeaseStore

__all__ = ["LeaseWatcher"]


class LeaseWatcher:
    """List+watch thread feeding a ``LeaseCache``.

    ``read_timeout`` should be shorter than the lease duration: in a live group some member Lease is
    renewed every retry period, so a stream silent for that long is a dead connection, and noticing it
    before peers' Leases would look expired keeps membership honest.
    """

    def __init__(self, client: LeaseStore, cache: LeaseCache, selector: str | None, *, read_timeout: float,
                 logger: logging.LoggerAdapter[Any] | logging.Logger,
                 on_error: Callable[[str], None] | None = None, max_backoff: float = 5.0,
                 scope: Callable[[str], bool] | None = None, sync: bool = True, name: str = "watch") -> None:
        self._client = client
        self._cache = cache
        self._selector = selector
        self._scope = scope
        #: The shards this watch covers, as the cache is told with each list; a watch that is never
        #: re-targeted (the member watch) leaves coverage alone.
        self._covered: frozenset[int] | None | CoverageUnchanged = COVERAGE_UNCHANGED
        self._forget: frozenset[str] = frozenset()
        self._sync = sync
        self._pending: tuple[str | None, Callable[[str], bool] | None, frozenset[int] | None,
                             frozenset[str]] | None = None
        self._retargeted = threading.Event()
        self._lock = threading.Lock()
        self._read_timeout = read_timeout
        self._log = logger
        self._on_error = on_error
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shardlease-{name}", daemon=True)
        self.resource_version = ""
        self.relists = 0
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._retargeted.set()
        self._client.close_watch()
        self._thread.join(timeout)

    def retarget(self, selector: str | None, *, scope: Callable[[str], bool] | None,
                 covered: frozenset[int] | None, forget: frozenset[str] = frozenset()) -> None:
        """Watch ``selector`` from now on (``None``: nothing): cut the running watch and list afresh.

        ``scope``: the cache names the new list speaks for; ``covered``: the shards it covers, reported
        by the cache once listed; ``forget``: names of the old target to drop from the cache.
        """
        with self._lock:
            self._pending = (selector, scope, covered, forget)
        self._retargeted.set()
        self._client.close_watch()

    def _take_retarget(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        self._selector, self._scope, self._covered, forget = pending
        self._forget = self._forget | forget
        self.resource_version = ""

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            delivered = self.events
            self._take_retarget()
            if self._selector is None:
                if self._forget or self._covered != frozenset():
                    self._cache.replace_all([], "", scope=lambda _name: False, forget=self._forget,
                                            covered=frozenset(), sync=self._sync)
                    self._forget, self._covered = frozenset(), frozenset()
                self._retargeted.wait()
                self._retargeted.clear()
                continue
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
                if self._pending is not None:
                    continue  # our own cut for a re-target, not a failure
                if self.events > delivered:
                    # The stream worked before it broke: this is a first failure, not one more in a row.
                    # Backing off as if the server had been down all along left replicas blind to
                    # member renewals for longer than a lease (found by the chaos suite, seed 5).
                    failures = 0
                failures += 1
                if self._on_error is not None:
                    self._on_error(err.label)
                if isinstance(err, Throttled):  # the server's wait, not ours: no jitter
                    delay = err.retry_after or min(self._max_backoff, 0.2 * 2 ** min(failures, 6))
                elif isinstance(err, Unauthorized):
                    # The token has just been re-read from its source (see client.credentials); the one
                    # written next should be used at once, and a 401 costs the server little: retry within
                    # a second however long the rejection has lasted.
                    delay = min(self._max_backoff, 1.0, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
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
        assert self._selector is not None
        items, rv = self._client.list(self._selector, timeout=max(5.0, self._read_timeout))
        if self._pending is not None:
            return  # re-targeted meanwhile: this list answers a question nobody asks any more
        records = [r for r in (LeaseRecord.from_object(i) for i in items) if r is not None]
        self._cache.replace_all(records, rv, scope=self._scope, forget=self._forget, covered=self._covered,
                                sync=self._sync)
        self._forget = frozenset()
        self.resource_version = rv
        self.relists += 1

    #: Watch events received so far (bookmarks included): tells a stream that worked from one that never did.
    events = 0

    def _known(self, name: str, resource_version: str) -> bool:
        """Whether an event is one we hold already (the echo of our own write): then it is dropped
        before decoding, and only its version is kept to resume from."""
        if self._cache.has_version(name, resource_version):
            self.events += 1
            self.resource_version = resource_version
            return True
        return False

    def _watch_once(self) -> None:
        if not self.resource_version or self._selector is None:
            return  # the list was for an old target
        self.restarts += 1
        stream = self._client.watch(self._selector, self.resource_version,
                                    timeout_seconds=random.randint(240, 360), read_timeout=self._read_timeout,
                                    skip=self._known)
        if self._pending is not None:
            return  # re-targeted while the request was on its way: close_watch had nothing to cut
        for event in stream:
            if self._stop.is_set() or self._pending is not None:
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
