"""``Shard`` (what a handler receives) and the runners that execute handlers.

A sync handler gets its own thread per held shard; an ``async def`` handler runs as a task on one event
loop thread shared by the manager. Revoking a shard sets ``shard.stopped`` (and cancels the task); the
runner reports back when the handler has really returned, because the Lease may only be released after
that: releasing earlier would let the next owner start while our code still runs.

A handler that raises is logged with its traceback and started again after a backoff (1 s doubling to
30 s) while the shard is still held: a transient failure should not leave a shard unprocessed until the
next rebalance. A handler that *returns* normally while the shard is held is not restarted (it decided it
is done); the shard stays held so nobody else picks it up.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shardlease.core.clock import Clock, SystemClock
from shardlease.core.fencing import (
    ANNOTATION_FENCE,
    ANNOTATION_FENCE_WRITE,
    LABEL_FENCED_GROUP,
    LABEL_FENCED_SHARD,
    format_fence,
)
from shardlease.core.loadmeter import LoadMeter, check_load
from shardlease.errors import HandlerSignatureError, InvalidArgument, ShardleaseError
from shardlease.runtime.logs import set_log_context

if TYPE_CHECKING:
    from shardlease.core.objects import ShardBy
    from shardlease.runtime.objects import ObjectFeeds, ObjectStream

_Body = TypeVar("_Body")

__all__ = ["HandlerRun", "HandlerRunner", "Shard", "check_handler_signature", "is_async_handler"]


class Shard:
    """One shard this replica holds, as seen by the handler.

    ``token`` is the fencing token: the Lease's ``leaseTransitions`` after our acquisition, which grows
    with every change of holder, so a store that remembers the highest token it has seen can reject a
    write from a holder that was paused past its lease. ``count`` and ``generation`` are the group's
    shard count and generation this run belongs to: after a reshard a key may belong to another shard
    id, so a store compares ``fence`` (``(generation, token)``), which only grows for every key across
    switches (docs/resharding.md). ``valid()`` lets code that may have been paused
    check before acting: it is False once ``stopped`` is set or once ``renew_deadline`` has passed since
    the start of the last successful renewal (after which another replica may soon hold the shard).
    """

    __slots__ = ("id", "count", "token", "generation", "identity", "group", "stopped", "_clock", "_valid_until",
                 "_feeds", "_streams", "_lock", "_load")

    def __init__(self, id: int, count: int, token: int, *, identity: str = "", group: str = "",
                 clock: Clock | None = None, valid_until: float = float("inf"),
                 objects: ObjectFeeds | None = None, generation: int = 1, load: LoadMeter | None = None) -> None:
        self.id = id
        self.count = count
        self.token = token
        self.generation = generation
        self.identity = identity
        self.group = group
        self.stopped = threading.Event()
        self._clock = clock or SystemClock()
        self._valid_until = valid_until
        self._feeds = objects
        self._streams: list[ObjectStream] = []
        self._lock = threading.Lock()
        self._load = load

    def report_load(self, value: float) -> None:
        """Report what this shard costs now: a finite number >= 0 in a unit of your choice, the same
        for every shard of the group (items per second, bytes per second, busy seconds per second).

        Call it as often as you like. The replica smooths the reports (a moving average with a
        half-life of ``load_half_life`` seconds, default 30), publishes the result with the renewals
        it sends anyway, and the group moves shards so that no replica carries much more than its
        capacity's share of the total (docs/load.md). Raises :class:`InvalidArgument` for anything
        else than such a number.
        """
        load = check_load(value)
        if self._load is not None:
            self._load.report(load, self._clock.monotonic())

    def objects(self, api_version: str, resource: str, *, namespace: str | None = None,
                label_selector: str | None = None, by: ShardBy = "uid") -> ObjectStream:
        """The Kubernetes objects of this shard, as events: every current object (``ADDED``), then one
        ``SYNCED``, then ``ADDED`` / ``MODIFIED`` / ``DELETED`` as they happen, until the shard stops.

        ``for event in shard.objects("v1", "configmaps"): ...`` in a sync handler, ``async for`` in an
        async one; ``event.object`` is the object as a plain dict. An object belongs to the shard whose
        hash range holds the FNV-1a hash of its ``metadata.uid`` (``by="namespace"``: of its namespace),
        see :func:`shardlease.shard_for_object`; the API server does the filtering when its
        ``ShardedListAndWatch`` gate is on, and this replica does it otherwise. ``resource`` is the plural
        name (``"configmaps"``, ``"deployments"`` with ``api_version="apps/v1"``); ``namespace=None``
        watches all namespaces. The ranges are those of ``self.count``, the count of this run's
        generation: after a reshard, the new generation's handlers get streams of the new ranges, each
        starting from a fresh list (docs/objects.md, "Across a change of the shard count").
        """
        if self._feeds is None:
            raise ShardleaseError("shard.objects() needs the Kubernetes API, but this manager was built with "
                                  "store= and no api_client=; pass api_client= (or drop store=) to sync objects")
        stream = self._feeds.stream(self.id, self.count, self.stopped, api_version, resource, namespace=namespace,
                                    label_selector=label_selector, by=by)
        with self._lock:
            self._streams.append(stream)
        if self.stopped.is_set():  # stopped while we subscribed: end it, as _stop would have
            self._close_streams()
        return stream

    def _close_streams(self) -> None:
        """End every object stream opened on this shard (the shard stopped, or the handler run ended)."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def _stop(self) -> None:
        self.stopped.set()
        self._close_streams()

    def valid(self) -> bool:
        return not self.stopped.is_set() and self._clock.monotonic() < self._valid_until

    def _extend(self, valid_until: float) -> None:
        """Called by the manager after each successful renewal (a float store is atomic)."""
        self._valid_until = valid_until

    @property
    def fence(self) -> tuple[int, int]:
        """``(generation, token)``: compare these, not ``token`` alone, when the count may change."""
        return (self.generation, self.token)

    @property
    def fence_annotation(self) -> str:
        """This tenure's fence as the object annotation carries it: ``<group>/<shard>/<generation>/<token>``."""
        return format_fence(self.group, self.id, self.generation, self.token)

    def stamp(self, body: _Body) -> _Body:
        """Put this tenure's fence on ``body`` before writing it, and return ``body``.

        Sets the annotations ``shardlease.io/fence`` (:attr:`fence_annotation`) and
        ``shardlease.io/fence-write`` (a new random id, which tells a holder's write from another
        client's edit that keeps the stamp it read: only the former is checked), and the labels
        ``shardlease.io/fenced-group`` and ``shardlease.io/fenced-shard`` on a create, update or patch
        body: a plain dict (``metadata`` is created if missing) or a ``kubernetes`` client model with a
        ``metadata`` attribute. With ``shardlease fencing install`` for the resource, the API server then
        refuses the write once another replica has taken the shard (docs/fencing.md); without it the
        stamp is what a handler compares to skip objects a newer holder has written. To delete a fenced
        object, stamp and update it first, then delete with that write's ``resourceVersion`` as a
        precondition: the API server checks a delete against the fence the object carries."""
        labels = {LABEL_FENCED_GROUP: self.group, LABEL_FENCED_SHARD: str(self.id)}
        stamp = {ANNOTATION_FENCE: self.fence_annotation, ANNOTATION_FENCE_WRITE: secrets.token_hex(8)}
        if isinstance(body, dict):
            meta = body.get("metadata")
            if meta is None:
                meta = body["metadata"] = {}
            if not isinstance(meta, dict):
                raise InvalidArgument(f"shard.stamp(): body['metadata'] must be a dict, got {type(meta).__name__}")
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
            meta["annotations"] = {**(meta.get("annotations") or {}), **stamp}
            return body
        meta = getattr(body, "metadata", None)
        if meta is None or not hasattr(meta, "labels") or not hasattr(meta, "annotations"):
            raise InvalidArgument("shard.stamp() takes a dict or a kubernetes model with metadata (e.g. "
                                  f"V1ConfigMap(metadata=V1ObjectMeta(...))); got {type(body).__name__}")
        meta.labels = {**(meta.labels or {}), **labels}
        meta.annotations = {**(meta.annotations or {}), **stamp}
        return body

    def __repr__(self) -> str:
        return (f"Shard(id={self.id}, count={self.count}, generation={self.generation}, token={self.token}, "
                f"stopped={self.stopped.is_set()})")


def is_async_handler(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    # An instance whose __call__ is ``async def``: callable() says nothing about that.
    call = getattr(handler, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def _handler_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    if qualname is None:  # an instance with __call__, a functools.partial, ...
        return repr(handler)
    return f"{module}:{qualname}" if module else str(qualname)


def check_handler_signature(handler: Callable[..., Any], name: str | None = None) -> None:
    """Raise :class:`HandlerSignatureError` unless ``handler(shard)`` is a valid call.

    The manager calls every handler with exactly one positional argument. Checking that up front
    turns ``def handle():`` into one clear error at start instead of a ``TypeError`` per shard,
    restarted with back-off forever. Only the signature is bound (nothing is called); a callable whose
    signature Python cannot inspect (some builtins and C extensions) is accepted, since it may well
    take the argument. ``name`` is how the error names the handler (the CLI passes ``MODULE:FUNC``).
    """
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(object())
    except TypeError as exc:
        label = name or _handler_name(handler)
        # Without annotations: with postponed evaluation they print as quoted strings, and only the
        # parameters matter here.
        empty = inspect.Parameter.empty
        signature = signature.replace(
            parameters=[param.replace(annotation=empty) for param in signature.parameters.values()],
            return_annotation=inspect.Signature.empty)
        define = "async def" if is_async_handler(handler) else "def"
        raise HandlerSignatureError(
            f"handler {label}{signature} cannot be called with one argument ({exc}); a handler takes "
            f"one argument, the Shard: {define} handle(shard): ..."
        ) from None


@dataclass(eq=False)
class HandlerRun:
    """One execution (with restarts) of the handler for one tenure of a shard."""

    shard: Shard
    done: threading.Event = field(default_factory=threading.Event)
    stop_requested_at: float | None = None
    task: asyncio.Task[None] | None = None
    is_async: bool = False
    thread: threading.Thread | None = None


class HandlerRunner:
    """Starts and stops handler runs; calls ``on_exit(run)`` (from the handler's thread) when one ends."""

    def __init__(self, handler: Callable[[Shard], Any], *, on_exit: Callable[[HandlerRun], None],
                 logger: logging.LoggerAdapter[Any] | logging.Logger, clock: Clock | None = None,
                 restart_backoff: tuple[float, float] = (1.0, 30.0), name: str = "shardlease",
                 on_error: Callable[[Shard], None] | None = None) -> None:
        self._handler = handler
        self._on_error = on_error
        self._on_exit = on_exit
        self._log = logger
        self._clock = clock or SystemClock()
        self._backoff = restart_backoff
        self._name = name
        self.is_async = is_async_handler(handler)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ----

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        loop.close()

                thread = threading.Thread(target=serve, name=f"{self._name}-asyncio", daemon=True)
                thread.start()
                ready.wait(5.0)
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the event loop thread (after all runs ended or were abandoned)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    # ---- runs ----

    def start(self, shard: Shard) -> HandlerRun:
        run = HandlerRun(shard, is_async=self.is_async)
        if self.is_async:
            loop = self._ensure_loop()

            def create() -> None:
                # Report the end from the *task's* completion: a concurrent future created by
                # run_coroutine_threadsafe reports "done" the moment it is cancelled, before the handler
                # has finished unwinding, and the Lease must not be released before that.
                task = loop.create_task(self._async_main(run))
                run.task = task
                task.add_done_callback(lambda t: self._task_done(run, t))
                if run.stop_requested_at is not None:
                    task.cancel()

            loop.call_soon_threadsafe(create)
        else:
            run.thread = threading.Thread(target=self._thread_main, args=(run,),
                                          name=f"{self._name}-shard-{shard.id}", daemon=True)
            run.thread.start()
        return run

    def stop(self, run: HandlerRun) -> None:
        """Ask a run to end: set ``stopped``; cancel the task of an async handler."""
        if run.stop_requested_at is None:
            run.stop_requested_at = self._clock.monotonic()
        run.shard._stop()
        if run.is_async:
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._cancel, run)

    @staticmethod
    def _cancel(run: HandlerRun) -> None:
        if run.task is not None:
            run.task.cancel()

    def _task_done(self, run: HandlerRun, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("async handler for shard %d ended with an error", run.shard.id,
                            exc_info=task.exception(), extra={"shard": run.shard.id})
        self._finish(run)

    def _finish(self, run: HandlerRun) -> None:
        run.shard._close_streams()
        run.done.set()
        try:
            self._on_exit(run)
        except Exception:
            self._log.exception("on_exit callback failed")

    def _count_error(self, shard: Shard) -> None:
        if self._on_error is not None:
            try:
                self._on_error(shard)
            except Exception:
                pass

    @staticmethod
    def _enter_log_context(shard: Shard) -> contextvars.Token[Mapping[str, Any]]:
        """Give lines that handler code logs (any logger) this replica's identity, group and shard.

        Called first thing in the handler's own thread or task, whose context belongs to it alone.
        """
        fields: dict[str, Any] = {"shard": shard.id}
        if shard.identity:
            fields["identity"] = shard.identity
        if shard.group:
            fields["group"] = shard.group
        return set_log_context(**fields)

    def _thread_main(self, run: HandlerRun) -> None:
        shard = run.shard
        delay = self._backoff[0]
        context = self._enter_log_context(shard)
        try:
            while not shard.stopped.is_set():
                try:
                    self._handler(shard)
                    break
                except Exception:
                    shard._close_streams()  # a restarted handler opens its streams afresh
                    self._log.exception("handler for shard %d raised; restarting in %.1fs", shard.id, delay,
                                        extra={"shard": shard.id})
                    self._count_error(shard)
                if shard.stopped.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
        finally:
            context.var.reset(context)  # what on_exit logs is the manager's business, not the handler's
            self._finish(run)

    async def _async_main(self, run: HandlerRun) -> None:
        shard = run.shard
        delay = self._backoff[0]
        self._enter_log_context(shard)
        while not shard.stopped.is_set():
            try:
                await self._handler(shard)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                shard._close_streams()
                self._log.exception("handler for shard %d raised; restarting in %.1fs", shard.id, delay,
                                    extra={"shard": shard.id})
                self._count_error(shard)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
