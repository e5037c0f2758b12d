"""``DevServer``: the embedded API server's lifecycle -- socket, event-loop thread, start and stop.

Each DevServer owns its own event loop in one daemon thread, so several can run in one process and
none of them touches the caller's loop. The socket is bound in ``start()`` on the caller's thread,
so a bad host or a taken port raises right there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from . import kubeconfig, namespaces, shardselector
from .api import Api
from .counters import RequestCounter
from .faults import Faults
from .httpserver import HttpServer
from .store import Store

log = logging.getLogger("shardlease.devserver")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DevServer:
    """A Kubernetes API server for Leases and ConfigMaps, in memory, on loopback, over plain HTTP.

    ``faults=True`` also serves the admin endpoint (``/_shardlease/faults``, ``/_shardlease/requests``);
    the in-process ``srv.faults`` works either way. ``history_limit``/``history_seconds`` bound the
    watch event log (a watch from an older resourceVersion gets 410 Expired); ``bookmark_interval``
    is how often watches that allow bookmarks get one. ``strict_namespaces=True`` makes a write
    into a namespace that does not exist fail with 404 as on kube-apiserver; by default that
    namespace is created on the fly (see ``namespaces.py`` for why). ``feature_gates`` turns
    kube-apiserver feature gates on or off, like its ``--feature-gates``; the one known today is
    ``ShardedListAndWatch`` (KEP-5866 ``shardSelector``, off by default as on kube-apiserver), and an
    unknown name is a ``ValueError``, as kube-apiserver refuses to start with one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, faults: bool = False, *,
                 allow_remote: bool = False, history_limit: int = 10_000,
                 history_seconds: float = 300.0, bookmark_interval: float = 5.0,
                 seed: int | None = None, strict_namespaces: bool = False,
                 feature_gates: Mapping[str, bool] | None = None) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"refusing to bind non-loopback host {host!r}: the dev-server has no "
                             f"authentication; pass allow_remote=True (--allow-remote) to do it anyway")
        self.feature_gates = shardselector.check_feature_gates(feature_gates)
        self.host = host
        self.port = port
        self.store = Store(history_limit, history_seconds)
        namespaces.create_defaults(self.store)
        self.faults = Faults(seed)
        self._counter = RequestCounter()
        self._api = Api(self.store, self.faults, self._counter, admin=faults,
                        bookmark_interval=bookmark_interval, address=lambda: f"{self.host}:{self.port}",
                        strict_namespaces=strict_namespaces, feature_gates=self.feature_gates)
        self._http = HttpServer(self._api.handle)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.faults.bind(lambda client, graceful: self._in_loop(self._api.cut_watches, client, graceful),
                         lambda: self._in_loop(self._api.wake_watches))

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> DevServer:
        """Bind, start the serving thread, and return once requests are being accepted."""
        if self._thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host.strip("[]"), self.port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True,
                                        name=f"shardlease-devserver:{self.port}")
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise RuntimeError("dev-server failed to start") from self._startup_error
        return self

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(sock))
        except BaseException as exc:  # pragma: no cover - reported to start(), or logged
            if self._ready.is_set():
                log.exception("the dev-server event loop failed")
            else:
                self._startup_error = exc
                self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    async def _main(self, sock: socket.socket) -> None:
        self._stop_requested = asyncio.Event()
        await self._http.listen(sock)
        self._ready.set()
        await self._stop_requested.wait()
        await self._http.close()

    def stop(self) -> None:
        """Close the listener and every connection (watches included) and join the thread."""
        if self._thread is None or self._stopped.is_set():
            return
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop already closed
        if threading.current_thread() is not self._thread:
            self._thread.join(10)

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called, e.g. from a signal handler."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ conveniences

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return kubeconfig.write(path, self.url)

    def request_counts(self) -> dict[tuple[str, str], int]:
        """API requests served so far by (Kubernetes verb, resource), faulted ones included."""
        return self._counter.snapshot()

    def watch_event_counts(self) -> dict[str, int]:
        """Watch events (ADDED/MODIFIED/DELETED, not bookmarks) delivered so far, by client: the
        ``X-Shardlease-Client`` header if sent, else the User-Agent. Reset with the request counts."""
        return self._counter.watch_events()

    def reset_request_counts(self) -> None:
        self._counter.reset()

    def compact(self) -> None:
        """Forget the watch event history: any watch resuming from an older RV gets 410."""
        self._in_loop(self.store.compact)

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the server's loop and wait for it (directly if already on that loop)."""
        loop = self._loop
        if loop is None or self._stopped.is_set() or loop.is_closed():
            return fn(*args)
        if threading.current_thread() is self._thread:
            return fn(*args)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return done.result(timeout=10)
