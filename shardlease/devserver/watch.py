"""Watch streams: newline-delimited JSON events over a chunked response.

A :class:`Watcher` is registered with the store and receives every committed event of its resource
synchronously (on the event loop), filters it, and queues it; its own coroutine drains the queue to
the socket. This split keeps writers fast (no I/O while holding the store lock), lets a freeze hold
events back without losing them, and lets a cut close every stream at once.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from .faults import Faults
from .httpserver import Stream
from .resources import LEASES, Resource
from .selectors import FieldSelector, LabelSelector
from .shardselector import ShardSelector
from .store import Event, Store, Stored, dumps
from .tables import COLUMNS, row

#: A watcher this far behind is closed (kube-apiserver likewise drops watchers that cannot keep up).
MAX_PENDING = 200_000
#: Default lifetime of a watch without timeoutSeconds: kube-apiserver picks 1x-2x minRequestTimeout.
MIN_REQUEST_TIMEOUT = 1800.0


def error_event(status: dict[str, Any]) -> bytes:
    return b'{"type":"ERROR","object":' + dumps(status) + b"}\n"


class Watcher:
    """One open watch: its filters, its queue of pending events and its output stream."""

    def __init__(self, resource: Resource, namespace: str | None, labels: LabelSelector,
                 fields: FieldSelector, client: str, stream: Stream, table_include: str | None,
                 bookmarks: bool, on_delivered: Callable[[str, int], None] | None = None,
                 shard: ShardSelector | None = None) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.client = client
        self.stream = stream
        self.table_include = table_include
        self.bookmarks = bookmarks
        #: KEP-5866 shard selector; uid and namespace never change, so an object never moves out.
        self.shard = shard
        #: Told how many object events went to this watch's client (the server's fan-out counter).
        self.on_delivered = on_delivered
        self.pending: deque[tuple[str, Stored]] = deque()
        self.wakeup = asyncio.Event()
        self.closing = False  # end gracefully at the next wake-up
        self._columns_sent = False
        #: The newest resourceVersion this watch has told its client about; like kube's watch cache,
        #: a periodic bookmark is sent only when the store has moved past it.
        self.sent_rv = 0

    def offer(self, event: Event) -> None:
        """Queue ``event`` if it concerns this watch; selector moves become ADDED/DELETED."""
        if self.namespace is not None and event.namespace != self.namespace:
            return
        if not self.fields.empty and not self.fields.matches(event.namespace, event.name):
            return
        if self.shard is not None and not self.shard.matches(event.stored.obj):
            return
        kind = event.type
        labels = self.labels
        if not labels.empty:
            now_matches = labels.matches(event.stored.labels)
            if kind == "MODIFIED":
                was_matching = labels.matches(event.old_labels)
                if not now_matches and not was_matching:
                    return
                if not now_matches:
                    kind = "DELETED"
                elif not was_matching:
                    kind = "ADDED"
            elif not now_matches:
                return
        self.pending.append((kind, event.stored))
        if len(self.pending) > MAX_PENDING:
            self.pending.clear()
            self.stream.abort()
        self.wakeup.set()

    def close(self, graceful: bool) -> None:
        if graceful:
            self.closing = True
            self.wakeup.set()
        else:
            self.stream.abort()
            self.wakeup.set()

    def _render(self, kind: str, stored: Stored) -> bytes:
        self.sent_rv = max(self.sent_rv, stored.rv)
        if self.table_include is None:
            return b'{"type":"' + kind.encode() + b'","object":' + stored.raw + b"}\n"
        now = _dt.datetime.now(_dt.timezone.utc)
        obj: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                               "metadata": {"resourceVersion": str(stored.rv)},
                               "columnDefinitions": None if self._columns_sent else COLUMNS[self.resource],
                               "rows": [row(self.resource, stored, self.table_include, now)]}
        self._columns_sent = True
        return b'{"type":"' + kind.encode() + b'","object":' + dumps(obj) + b"}\n"

    def _bookmark(self, rv: int, initial_end: bool = False) -> bytes:
        self.sent_rv = max(self.sent_rv, rv)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj: dict[str, Any] = {"kind": self.resource.kind, "apiVersion": self.resource.api_version,
                               "metadata": meta}
        if self.resource is LEASES:
            obj["spec"] = {}
        return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"

    async def run(self, store: Store, initial: list[Event], faults: Faults, timeout: float | None,
                  bookmark_interval: float, initial_end_bookmark: bool, since: int | None = None) -> None:
        """Stream until timeout, client disconnect, cut, or server stop.

        ``initial_end_bookmark``: end the initial events with the ``k8s.io/initial-events-end``
        bookmark (kube-apiserver sends it for sendInitialEvents, and for any watch without a
        resourceVersion that allows bookmarks). ``since``: the resourceVersion watched from."""
        self.sent_rv = since or 0
        loop = asyncio.get_running_loop()
        self.stream.start()
        for event in initial:
            self.offer(event)
        head = [self._bookmark(store.rv, True)] if initial_end_bookmark else []
        if timeout is None:
            timeout = MIN_REQUEST_TIMEOUT * (1 + random.random())
        deadline = loop.time() + timeout
        next_bookmark = _next_bookmark(loop.time(), bookmark_interval, deadline)
        eof_watch = asyncio.ensure_future(_wait_for_eof(self.stream.reader, self))
        try:
            while not self.stream.closed:
                frozen = faults.watches_frozen
                if (self.pending or head) and not frozen:
                    chunk = [self._render(k, s) for k, s in self.pending]
                    self.pending.clear()
                    if chunk and self.on_delivered is not None:
                        self.on_delivered(self.client, len(chunk))
                    self.stream.send(b"".join(chunk + head))
                    head = []
                    await self.stream.flush()
                    continue
                if self.closing:
                    break
                now = loop.time()
                if not frozen:
                    if now >= deadline:
                        break
                    if self.bookmarks and now >= next_bookmark:
                        next_bookmark = _next_bookmark(now, bookmark_interval, deadline)
                        if store.rv > self.sent_rv:
                            self.stream.send(self._bookmark(store.rv))
                            await self.stream.flush()
                        continue
                wait = min(deadline, next_bookmark if self.bookmarks else deadline) - now
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=max(wait, 0.0) if not frozen else 1.0)
                except TimeoutError:
                    pass
        except (ConnectionError, RuntimeError):
            self.stream.closed = self.stream.aborted = True
        finally:
            store.unsubscribe(self)
            self.stream.finish()
            eof_watch.cancel()
            # Wait until the reader is really released: the connection may serve its next request.
            await asyncio.gather(eof_watch, return_exceptions=True)


def _next_bookmark(now: float, interval: float, deadline: float) -> float:
    """When to send the next bookmark: every ``interval``, and (as kube-apiserver's watch cache
    does) once 2 s before the watch times out, so a client can resume from a fresh resourceVersion."""
    at = min(now + interval, deadline - 2.0)
    return at if at > now else math.inf


async def _wait_for_eof(reader: asyncio.StreamReader, watcher: Watcher) -> None:
    """A watch client sends nothing more; EOF (or an error) means it went away."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, asyncio.CancelledError):
        return
    # The peer closed its side: nothing can be delivered any more.
    watcher.stream.closed = watcher.stream.aborted = True
    watcher.wakeup.set()

