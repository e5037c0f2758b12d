"""``shard.objects(...)``: the Kubernetes objects of one held shard, as a stream of events.

One feed per resource (api_version, resource, namespace, label selector, hash field) and shard count
per replica, shared by all the shards the replica holds: one LIST + WATCH whose ``shardSelector`` names
the hash ranges of exactly the shards that have a stream open (adjacent ranges merged), so with the
``ShardedListAndWatch`` gate on, the API server sends this replica only its own objects (events ~
total / N). When the set of streamed shards changes, the feed re-targets: it cuts its watch, lists again
with the new selector and hands each stream the difference to what it already delivered (informer
style), so a shard that stays sees no gap and no repeat, and a shard that arrives starts from a fresh
list of its objects. On 410 it relists the same way; transient failures (timeouts, 5xx, 429) resume
the watch from the last resourceVersion after a back-off. A failure no retry can heal (an unknown
resource, missing RBAC, a bad argument, or any unexpected exception, i.e. a bug) is raised from every
stream of the feed instead, so each handler fails loudly and is restarted with back-off, and a restart
opens its streams afresh.

The shard count is part of the feed's key. The hash ranges (and so the ``shardSelector`` and the
client-side placement) depend on it, and a stream is served with the count of its shard's generation
(``shard.count``): after a reshard, the new generation's streams open a feed of the new count with a
fresh list, and never share one with a stream of the old count. The switch's barrier (docs/resharding.md)
makes the hand-over safe: a replica stops every handler of the old generation (their streams end the
moment ``shard.stopped`` is set) before any handler of the new one starts, so a feed of the old count and
one of the new never deliver at the same time. A feed with no stream left closes itself after
``idle_timeout`` (its watch is cut at once; the thread and connections go then), so the feed of an old
count does not linger.

Every item is placed by the client too (:func:`shardlease.core.objects.shard_for_hash`), whatever the
server did: on a cluster without the feature (no ``shardInfo`` in the list) the server sends everything
and the feed drops what is not ours, so behaviour is the same everywhere and only the traffic differs.

Exclusivity comes from the shard: a stream delivers only while its shard is held by this process (it
ends when the shard is stopped, and when the handler run it was opened in ends), and the Lease is
released only after the handler has returned. A handler that writes should still fence its writes with
``shard.fence`` (see docs/objects.md).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shardlease.client.objects import ObjectClient, resource_path
from shardlease.core.objects import ShardBy, object_hash, selector_for_shards, shard_for_hash
from shardlease.errors import (
    ApiError,
    Expired,
    Forbidden,
    Invalid,
    InvalidArgument,
    NotFound,
    RequestTimeout,
    Throttled,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from shardlease.runtime.metrics import ManagerMetrics

__all__ = ["ObjectEvent", "ObjectFeeds", "ObjectStream"]

EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNCED"]

#: Errors a retry will not fix (a wrong resource name, missing RBAC): given to the handler, which raises.
_FATAL = (NotFound, Forbidden, Invalid)


@dataclass(frozen=True)
class ObjectEvent:
    """One change of an object of the shard. ``SYNCED`` (with an empty ``object``) marks the end of the
    initial list: every object that existed when the stream started has been delivered as ``ADDED``."""

    type: EventType
    object: dict[str, Any]
    shard: int

    @property
    def uid(self) -> str:
        meta = self.object.get("metadata")
        return str(meta.get("uid", "")) if isinstance(meta, dict) else ""


class ObjectStream:
    """What ``shard.objects(...)`` returns: iterate with ``for`` (sync handler) or ``async for``.

    Ends (``StopIteration``) when the shard is stopped, or :meth:`close` is called. A failure a retry
    cannot fix (``NotFound`` for an unknown resource, ``Forbidden`` without RBAC) is raised from the
    iteration, so the handler fails loudly and is restarted with back-off like any raising handler.
    """

    def __init__(self, feed: _Feed, shard: int, count: int, stopped: threading.Event) -> None:
        self._feed = feed
        self.shard = shard
        self.count = count
        self._stopped = stopped
        self._cond = threading.Condition()
        self._queue: collections.deque[ObjectEvent | BaseException] = collections.deque()
        self._closed = False
        self.synced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None

    # ---- fed by the feed thread ----

    def _put(self, item: ObjectEvent | BaseException) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append(item)
            self._cond.notify()
        self._wake_async()

    def _end(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake_async()

    def _wake_async(self) -> None:
        """Wake an ``async for`` waiting on this stream (its loop's event is only set from that loop)."""
        with self._cond:
            loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    # ---- the handler's side ----

    def close(self) -> None:
        """Stop receiving (also done automatically when the shard stops or the handler run ends)."""
        self._end()
        self._feed.unsubscribe(self)

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self) -> ObjectEvent | BaseException | None:
        """The next item, or None when the stream is over. Caller holds the condition."""
        if self._closed or self._stopped.is_set():
            # A stopped shard gets nothing more, not even what is queued: it may already be held elsewhere.
            self._closed = True
            return None
        if self._queue:
            return self._queue.popleft()
        raise LookupError  # nothing yet

    def __iter__(self) -> ObjectStream:
        return self

    def __next__(self) -> ObjectEvent:
        with self._cond:
            while True:
                try:
                    item = self._take()
                except LookupError:
                    self._cond.wait(0.5)  # the stop callback notifies; the timeout is only a safety net
                    continue
                break
        if item is None:
            self._feed.unsubscribe(self)
            raise StopIteration
        return self._deliverable(item)

    def _deliverable(self, item: ObjectEvent | BaseException) -> ObjectEvent:
        """The event to hand out; a failure the feed passed on is raised instead (and ends the stream).

        Each stream raises its own copy: the feed hands one exception to every stream, and raising one
        object in several handler threads at once would splice their tracebacks together."""
        if isinstance(item, BaseException):
            self.close()
            try:
                error = copy.copy(item)
            except Exception:  # an exception type that cannot be rebuilt from its args: raise the original
                error = item
            else:
                error.__cause__ = item.__cause__
            raise error
        return item

    def __aiter__(self) -> ObjectStream:
        with self._cond:
            self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
        return self

    async def __anext__(self) -> ObjectEvent:
        wakeup = self._wakeup
        assert wakeup is not None, "use 'async for' (which calls __aiter__ first)"
        while True:
            with self._cond:
                try:
                    item = self._take()
                except LookupError:
                    wakeup.clear()
                    item = None
                    waiting = True
                else:
                    waiting = False
            if not waiting:
                break
            await wakeup.wait()
        if item is None:
            self._feed.unsubscribe(self)
            raise StopAsyncIteration
        return self._deliverable(item)


#: (api_version, resource, namespace, label_selector, by, shard count).
FeedKey = tuple[str, str, "str | None", "str | None", str, int]


@dataclass
class _Known:
    """The objects of the covered shards as last delivered: uid -> (shard, object)."""

    items: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def of_shard(self, shard: int) -> list[dict[str, Any]]:
        return [obj for s, obj in self.items.values() if s == shard]


def _uid(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("uid") or "") if isinstance(meta, dict) else ""


def _rv(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion", "")) if isinstance(meta, dict) else ""


class _Feed:
    """One list+watch for one resource under one shard count, serving every stream of this replica on it.

    ``on_idle(feed)`` is asked, once the feed has had no stream for ``idle_timeout`` seconds, whether it
    may close; it answers True after forgetting the feed (then no new stream can join it)."""

    def __init__(self, client: ObjectClient, key: FeedKey, by: ShardBy, count: int, *, name: str,
                 logger: logging.LoggerAdapter[Any] | logging.Logger, metrics: ManagerMetrics | None,
                 read_timeout: float, debounce: float, idle_timeout: float = float("inf"),
                 on_idle: Callable[[_Feed], bool] | None = None) -> None:
        self._client = client
        self.key = key
        self._by = by
        self.count = count
        #: The resource, as metrics label it (feeds of two counts of one resource share the label).
        self.name = name
        #: How logs name the feed: the resource and the count it places objects by.
        self.label = f"{name} ({count} shards)"
        self._idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._log = logger
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._debounce = debounce
        self._lock = threading.RLock()
        self._streams: dict[int, list[ObjectStream]] = {}
        self._covered: frozenset[int] = frozenset()
        #: The shards of the list in flight, if any (see subscribe).
        self._listing: frozenset[int] | None = None
        self._known = _Known()
        self._resource_version = ""
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shardlease-objects-{name}-{count}", daemon=True)
        self._started = False
        self.server_filtered: bool | None = None
        self.lists = 0

    @property
    def running(self) -> bool:
        """The feed's thread is alive (False once it stopped or closed itself for lack of streams)."""
        return self._thread.is_alive()

    @property
    def stream_count(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._streams.values())

    # ---- streams ----

    def subscribe(self, stream: ObjectStream) -> None:
        with self._lock:
            self._streams.setdefault(stream.shard, []).append(stream)
            if stream.shard in self._covered and (self._listing is None or stream.shard in self._listing):
                self._start_stream(stream)  # the feed already has this shard's objects: no relist needed
                return
            if not self._started and not self._stop.is_set():
                self._started = True
                self._thread.start()
        self._retarget()

    def unsubscribe(self, stream: ObjectStream) -> None:
        with self._lock:
            streams = self._streams.get(stream.shard)
            if streams is None or stream not in streams:
                return
            streams.remove(stream)
            if streams:
                return
            del self._streams[stream.shard]
        # Narrow the selector too (after the debounce, so a rebalance that moves many shards at once
        # costs one relist): until then, events of the shard are dropped on our side.
        self._retarget()

    def _start_stream(self, stream: ObjectStream) -> int:
        """Give a new stream the shard's current objects and the SYNCED marker; returns how many objects."""
        objects = self._known.of_shard(stream.shard)
        for obj in objects:
            stream._put(ObjectEvent("ADDED", obj, stream.shard))
        stream._put(ObjectEvent("SYNCED", {}, stream.shard))
        stream.synced = True
        return len(objects)

    def _retarget(self) -> None:
        self._changed.set()
        self._client.close_watch()

    def stop(self) -> None:
        self._stop.set()
        self._client.close_watch()
        with self._lock:
            streams = [s for group in self._streams.values() for s in group]
            self._streams.clear()
        for stream in streams:
            stream._end()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._client.close()  # the thread closes it too when it ends; closing twice is harmless

    # ---- the thread ----

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._client.close()

    def _serve(self) -> None:
        failures = 0
        relist = True
        idle_since: float | None = None
        while not self._stop.is_set():
            if self._changed.is_set():
                self._stop.wait(self._debounce)
                self._changed.clear()
                relist = True
            with self._lock:
                wanted = frozenset(self._streams)
                if not wanted:
                    self._covered = frozenset()
                    self._known = _Known()
                elif relist or wanted != self._covered:
                    # From here until the list is adopted, a stream for a shard outside ``wanted`` must
                    # wait for the next list, even if the shard is covered now: this list drops it.
                    self._listing = wanted
            if not wanted:
                # No stream: no watch either (the last unsubscribe cut it). Close for good after the
                # idle timeout (the feed of a count the group no longer runs never gets one back).
                now = time.monotonic()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= self._idle_timeout and self._on_idle is not None and self._on_idle(self):
                    self._log.debug("objects %s: no stream for %.1fs; closed", self.label, now - idle_since)
                    return
                self._changed.wait(max(0.01, min(1.0, idle_since + self._idle_timeout - now)))
                relist = True
                continue
            idle_since = None
            try:
                if self._listing is not None:
                    try:
                        self._relist(wanted)
                    finally:
                        with self._lock:
                            self._listing = None
                    relist = False
                self._watch()
                failures = 0
            except Expired:
                self._log.info("objects %s: watch history expired; relisting", self.label)
                relist = True
            except _FATAL as err:
                self._fail(err)
                relist = True
            except ApiError as err:
                if self._stop.is_set() or self._changed.is_set():
                    continue
                if isinstance(err, RequestTimeout) and not relist:
                    continue  # a quiet stream outlived the read timeout: resume, nothing failed
                failures += 1
                if self._metrics is not None:
                    self._metrics.api_error(err.label)
                delay = (err.retry_after if isinstance(err, Throttled) and err.retry_after else
                         min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(0.5, 1.0))
                self._log.warning("objects %s: %s; retrying in %.2fs", self.label, err, delay)
                self._stop.wait(delay)
            except Exception as err:
                if self._stop.is_set() or self._changed.is_set():
                    continue  # the watch was cut on purpose (re-target, stop): whatever it raised, go on
                # A bug or a bad argument (InvalidArgument): the same request would fail the same way,
                # so retrying would only repeat this line forever while the shard gets nothing. Fail
                # the streams instead: each handler raises it, is counted and restarted with back-off.
                self._fail(err)
                relist = True

    def _fail(self, err: Exception) -> None:
        """A failure no retry fixes: every stream raises it; the feed idles until streams come back."""
        if isinstance(err, ApiError):
            self._log.error("objects %s: %s", self.label, err)
        else:
            self._log.error("objects %s: unexpected error in the feed; failing its streams", self.label,
                            exc_info=err)
        with self._lock:
            streams = [s for group in self._streams.values() for s in group]
            self._streams.clear()
            self._covered = frozenset()
            self._known = _Known()
        for stream in streams:
            stream._put(err)

    def _place(self, obj: dict[str, Any]) -> int | None:
        """The object's shard; None for something that is not an API object (no uid): never delivered."""
        if not _uid(obj):
            return None
        try:
            return shard_for_hash(object_hash(obj, self._by), self.count)
        except InvalidArgument:
            return None

    def _relist(self, wanted: frozenset[int]) -> None:
        selector = selector_for_shards(wanted, self.count, self._by)
        listed = self._client.list(selector, timeout=max(10.0, self._read_timeout))
        self.lists += 1
        self.server_filtered = listed.applied_selector is not None
        fresh: dict[str, tuple[int, dict[str, Any]]] = {}
        filtered = 0
        for obj in listed.items:
            shard = self._place(obj)
            if shard is None or shard not in wanted:
                filtered += 1
                continue
            fresh[_uid(obj)] = (shard, obj)
        if self._metrics is not None:
            self._metrics.object_list(self.name, self.server_filtered)
            if filtered:
                self._metrics.object_events(self.name, "filtered", filtered)
        delivered = 0
        with self._lock:
            old_known, old_covered = self._known.items, self._covered
            for uid, (shard, obj) in fresh.items():
                previous = old_known.get(uid)
                if shard in old_covered:
                    if previous is None:
                        delivered += self._deliver(ObjectEvent("ADDED", obj, shard))
                    elif _rv(previous[1]) != _rv(obj):
                        delivered += self._deliver(ObjectEvent("MODIFIED", obj, shard))
            for uid, (shard, obj) in old_known.items():
                if shard in old_covered and shard in wanted and uid not in fresh:
                    delivered += self._deliver(ObjectEvent("DELETED", obj, shard))
            self._known = _Known(fresh)
            self._covered = wanted
            self._resource_version = listed.resource_version
            for shard, streams in self._streams.items():
                for stream in streams:
                    if not stream.synced and shard in wanted:
                        delivered += self._start_stream(stream)
        if self._metrics is not None and delivered:
            self._metrics.object_events(self.name, "delivered", delivered)
        self._log.debug("objects %s: listed %d items (%d ours) for %d shards, server filtering %s",
                        self.label, len(listed.items), len(fresh), len(wanted), self.server_filtered)

    def _deliver(self, event: ObjectEvent) -> int:
        """To every synced stream of the event's shard; the lock is held. Returns 1 if anyone got it."""
        streams = [s for s in self._streams.get(event.shard, ()) if s.synced]
        for stream in streams:
            stream._put(event)
        return 1 if streams else 0

    def _watch(self) -> None:
        selector = selector_for_shards(self._covered, self.count, self._by)
        stream = self._client.watch(selector, self._resource_version,
                                    timeout_seconds=random.randint(240, 360), read_timeout=self._read_timeout)
        if self._changed.is_set() or self._stop.is_set():
            # Re-targeted while the request was on its way (close_watch had nothing to close yet).
            self._client.close_watch()
            return
        for event in stream:
            if self._stop.is_set() or self._changed.is_set():
                return
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            rv = _rv(obj)
            if kind == "BOOKMARK":
                if rv:
                    self._resource_version = rv
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            shard = self._place(obj)
            with self._lock:
                if rv:
                    self._resource_version = rv
                if shard is None or shard not in self._covered:
                    outcome = "filtered"
                else:
                    uid = _uid(obj)
                    if kind == "DELETED":
                        if self._known.items.pop(uid, None) is None:
                            continue
                    else:
                        kind = "MODIFIED" if uid in self._known.items else "ADDED"
                        self._known.items[uid] = (shard, obj)
                    # Covered but with no stream (closed a moment ago): read, but nobody's.
                    outcome = "delivered" if self._deliver(ObjectEvent(kind, obj, shard)) else "filtered"  # type: ignore[arg-type]
            if self._metrics is not None:
                self._metrics.object_events(self.name, outcome)


class ObjectFeeds:
    """The feeds of one manager: one per resource and shard count, created by the first
    ``shard.objects(...)`` that needs it and closed once it has had no stream for ``idle_timeout``."""

    def __init__(self, api_client: ApiClient, *, logger: logging.LoggerAdapter[Any] | logging.Logger,
                 metrics: ManagerMetrics | None = None, read_timeout: float = 90.0, debounce: float = 0.05,
                 idle_timeout: float = 5.0) -> None:
        self._api_client = api_client
        self._log = logger
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._debounce = debounce
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._feeds: dict[FeedKey, _Feed] = {}
        self._closed = False

    def stream(self, shard: int, count: int, stopped: threading.Event, api_version: str, resource: str, *,
               namespace: str | None = None, label_selector: str | None = None,
               by: ShardBy = "uid") -> ObjectStream:
        """A stream of shard ``shard``'s objects, placed by the hash ranges of ``count`` shards (the
        count of the shard's generation): served by the feed of that resource and count."""
        path = resource_path(api_version, resource, namespace)
        if by not in ("uid", "namespace"):
            raise InvalidArgument(f"by must be 'uid' or 'namespace', got {by!r}")
        if label_selector is not None and not isinstance(label_selector, str):
            raise InvalidArgument(f"label_selector must be a string like 'app=web', got {label_selector!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be the group's shard count, a positive integer, got {count!r}")
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < count:
            raise InvalidArgument(f"shard must be an integer in 0..{count - 1} (shards={count}), got {shard!r}")
        key: FeedKey = (api_version, resource, namespace, label_selector or None, by, count)
        # Joined under the lock that also decides whether an idle feed closes (_retire): a feed found
        # here cannot close before this stream is on it.
        with self._lock:
            if self._closed:
                raise InvalidArgument("shard.objects(): the manager is stopping; no new streams")
            feed = self._feeds.get(key)
            if feed is None:
                name = resource if api_version == "v1" else f"{api_version.split('/')[0]}/{resource}"
                feed = _Feed(ObjectClient(self._api_client, path, label_selector=label_selector or None), key, by,
                             count, name=name, logger=self._log, metrics=self._metrics,
                             read_timeout=self._read_timeout, debounce=self._debounce,
                             idle_timeout=self._idle_timeout, on_idle=self._retire)
                self._feeds[key] = feed
            stream = ObjectStream(feed, shard, count, stopped)
            feed.subscribe(stream)
        return stream

    def _retire(self, feed: _Feed) -> bool:
        """Called by an idle feed's thread: forget it (True) unless a stream joined it meanwhile."""
        with self._lock:
            if feed.stream_count:
                return False
            if self._feeds.get(feed.key) is feed:
                del self._feeds[feed.key]
            feed._stop.set()
            return True

    def feeds(self) -> list[_Feed]:
        with self._lock:
            return list(self._feeds.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            feeds = list(self._feeds.values())
            self._feeds.clear()
        for feed in feeds:
            feed.stop()
