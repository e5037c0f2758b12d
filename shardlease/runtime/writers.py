"""``WriterPool``: the threads that carry out the reactor's writes, as few as the API server's latency needs.

Why not ``concurrent.futures.ThreadPoolExecutor``: measured on one replica holding 1,024 shards, its
per-submit Future, Condition and lock cost about a tenth of a renewal's CPU; it grows to its maximum in
the first burst (1,024 acquisitions at start-up) and then hands each write to the thread that has waited
longest, so a steady 512 renewals/s were spread over 32 threads. Every extra thread in play is another
party to the GIL hand-off and another context switch: the process spent more time switching threads
than sending requests.

Here writes queue up and the threads at work drain the queue one after another; a parked thread is
woken (the most recently parked first, so the others stay asleep) or a new one started only when no
thread is at work or the oldest queued write has waited longer than ``max_wait`` (the threads at work
cannot keep up, or are stuck in slow requests). A thread parked for ``idle_timeout`` exits. Against a
fast server one thread carries every renewal; against a slow one (tens of milliseconds per request)
the pool grows towards ``max_threads`` so renewals never queue behind each other for long, and shrinks
again afterwards.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["WriterPool"]

T = TypeVar("T")


class _Idle:
    """One parked thread: the lock it blocks on until woken."""

    __slots__ = ("wake",)

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()


class WriterPool(Generic[T]):
    """Run ``work(item)`` for every submitted item on up to ``max_threads`` daemon threads.

    ``work`` must report its own failures; an exception it lets out is dropped.
    """

    def __init__(self, work: Callable[[T], None], *, max_threads: int, name: str, max_wait: float = 0.05,
                 idle_timeout: float = 30.0) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self._work = work
        self._max = max_threads
        self._name = name
        self._max_wait = max_wait
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []
        self._backlog: deque[tuple[float, T]] = deque()
        self._threads = 0
        self._active = 0  # threads not parked
        self._started = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads alive now."""
        return self._threads

    def submit(self, item: T) -> bool:
        """Queue ``item`` for the running threads; False (and nothing queued) once the pool is closed."""
        with self._lock:
            if self._closed:
                return False
            self._backlog.append((time.monotonic(), item))
            start = self._more_locked()
        if start is not None:
            start.start()
        return True

    def poke(self) -> None:
        """Add a thread if the oldest queued write has waited too long (every thread stuck in a slow
        request). Submitting does this too; the caller pokes when it has nothing to submit."""
        with self._lock:
            start = self._more_locked() if self._backlog else None
        if start is not None:
            start.start()

    def _more_locked(self) -> threading.Thread | None:
        """Put one more thread to work if none is, or if the oldest queued write has waited longer than
        ``max_wait``: wake the most recently parked thread, else create one (under ``max_threads``)."""
        if self._active and time.monotonic() - self._backlog[0][0] <= self._max_wait:
            return None
        if self._idle:
            self._active += 1
            self._idle.pop().wake.release()
            return None
        if self._threads >= self._max:
            return None
        self._threads += 1
        self._active += 1
        self._started += 1
        return threading.Thread(target=self._run, name=f"{self._name}-{self._started}", daemon=True)

    def _next(self, parked: _Idle) -> T | None:
        """The next item for this thread, parking while there is none; ``None`` means exit (closed, or
        parked for ``idle_timeout`` while other threads remain)."""
        while True:
            with self._lock:
                if self._closed:
                    self._threads -= 1
                    self._active -= 1
                    return None
                if self._backlog:
                    _queued_at, item = self._backlog.popleft()
                    start = self._more_locked() if self._backlog else None
                else:
                    self._active -= 1
                    self._idle.append(parked)
                    item, start = None, None
            if start is not None:
                start.start()
            if item is not None:
                return item
            if not parked.wake.acquire(timeout=self._idle_timeout):
                with self._lock:
                    if parked in self._idle and self._threads > 1:
                        self._idle.remove(parked)
                        self._threads -= 1
                        return None
                # Woken just as the wait timed out, or the last thread: park without a timeout.
                parked.wake.acquire()
            # Woken: _more_locked counted us active again; loop round to take from the backlog.

    def _run(self) -> None:
        parked = _Idle()
        work = self._work
        while True:
            item = self._next(parked)
            if item is None:
                return
            try:
                work(item)
            except Exception:  # work reports its own failures; the thread must live on
                pass

    def close(self) -> None:
        """Stop taking items; writes still queued are dropped, running ones finish; threads then exit."""
        with self._lock:
            self._closed = True
            self._backlog.clear()
            idle, self._idle = self._idle, []
            self._active += len(idle)  # as if woken for work: _next then sees the pool closed and exits
        for parked in idle:
            parked.wake.release()
