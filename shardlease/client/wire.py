"""HTTP/1.1 to the API server over persistent sockets, parsed by llhttp (the ``httptools`` binding).

Why not urllib3, the kubernetes client's own stack: a replica renews every held Lease every renew
interval, so the client's CPU per request bounds how many shards one process can hold. Measured per
conditional Lease PUT against the dev-server in another process (``bench/request_paths.py``), urllib3's
``urlopen`` costs about 200 us of client CPU, http.client alone about 95 us (much of it parsing the
response headers with the ``email`` package), and this path about 40 us: the request head is formatted
in one step, the response is parsed in C, and a pooled connection is reused without a liveness probe
per request. Only the framing is ours; TLS is the standard library's ``ssl`` configured from the
user's ``kubernetes.client.Configuration`` (CA, client certificate, ``verify_ssl``, ``tls_server_name``),
so the trust decisions stay the client's. Configurations this path does not cover (an HTTP or SOCKS
proxy, an ``assert_hostname`` that differs from the server name) keep urllib3:
:func:`wire_for` returns ``None`` for them and :class:`~shardlease.client.transport.Transport` uses the
pool manager instead.

Errors are the typed ``ApiError`` subclasses of :mod:`shardlease.errors`: ``RequestTimeout`` when a
deadline passes, ``NetworkError`` for everything else on the connection. Status codes are not judged
here; the transport turns a non-2xx reply into its error.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httptools

from shardlease.errors import ApiError, NetworkError, RequestTimeout

__all__ = ["Reply", "Stream", "Wire", "wire_for"]

#: A pooled connection idle for longer than this is probed (one zero-timeout ``select``) before reuse:
#: the API server may have closed it. Busier connections skip the probe; if one was closed anyway, the
#: request is retried once on a fresh connection (see :meth:`Wire.request`).
_PROBE_AFTER_IDLE = 1.0
_RECV = 65536


class _Message:
    """llhttp callbacks for one response: status, lower-cased headers, body pieces."""

    __slots__ = ("body", "complete", "head_done", "headers", "on_piece")

    def __init__(self, on_piece: Any = None) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.head_done = False
        self.complete = False
        #: For streams: called with each body piece instead of keeping it.
        self.on_piece = on_piece

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, piece: bytes) -> None:
        if self.on_piece is not None:
            self.on_piece(piece)
        else:
            self.body.append(piece)

    def on_message_complete(self) -> None:
        self.complete = True


class Reply:
    """A complete response: status, lower-cased headers, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection:
    __slots__ = ("idle_since", "reused", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = 0.0
        self.reused = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _socket_error(exc: BaseException, what: str) -> ApiError:
    text = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return RequestTimeout(text)
    return NetworkError(text)


class Stream:
    """A streaming response (a watch): its status and headers, then body pieces as they arrive.

    ``abort()`` may be called from any thread; the reading thread then sees the stream end with a
    ``NetworkError``, like any cut connection.
    """

    def __init__(self, connection: _Connection, parser: Any, message: _Message, first: list[bytes]) -> None:
        self._connection = connection
        self._parser = parser
        self._message = message
        self._pending = first
        self.status: int = parser.get_status_code()
        self.headers = message.headers
        self.aborted = False

    def pieces(self) -> Iterator[bytes]:
        """Body pieces (for a chunked body, each chunk as read); ends when the server ends the body."""
        message, sock = self._message, self._connection.sock
        try:
            while True:
                while self._pending:
                    yield self._pending.pop(0)
                if message.complete:
                    return
                try:
                    data = sock.recv(_RECV)
                except (OSError, ssl.SSLError) as exc:
                    raise _socket_error(exc, "watch stream") from None
                if not data:
                    raise NetworkError("watch stream: connection closed by the server"
                                       if not self.aborted else "watch stream: closed by the client")
                try:
                    self._parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise NetworkError(f"watch stream: malformed HTTP from the server: {exc}") from None
        finally:
            self.close()

    def abort(self) -> None:
        """Cut the connection under a reader blocked in ``recv`` (safe from another thread)."""
        self.aborted = True
        try:
            # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would tear down the TLS
            # state the reading thread is using.
            socket.socket.shutdown(self._connection.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self._connection.close()


class Wire:
    """Persistent HTTP/1.1 connections to one API server, pooled, one request at a time per connection.

    ``target`` arguments are paths with their query (``/apis/...?labelSelector=...``); the path prefix of
    the server URL (a proxy path such as Rancher's) is prepended here. ``head`` is the pre-rendered
    header block (``Name: value\\r\\n`` lines) the transport keeps for its default and auth headers.
    """

    def __init__(self, host: str, port: int, *, prefix: str = "", ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, socket_options: Iterable[tuple[int, int, int]] = (),
                 pool_size: int = 16) -> None:
        self._address = (host, port)
        self._prefix = prefix
        self._ssl = ssl_context
        self._server_hostname = server_hostname or host
        self._socket_options = list(socket_options)
        self._pool_size = pool_size
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        default_port = 443 if ssl_context is not None else 80
        shown = f"[{host}]" if ":" in host else host
        self._host_header = shown if port == default_port else f"{shown}:{port}"

    # ---- connections ----

    def _connect(self, timeout: float) -> _Connection:
        try:
            sock = socket.create_connection(self._address, timeout=timeout)
        except (OSError, ssl.SSLError) as exc:
            raise _socket_error(exc, f"connect to {self._host_header}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, option, value in self._socket_options:
                sock.setsockopt(level, option, value)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._server_hostname)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise _socket_error(exc, f"TLS handshake with {self._host_header}") from None
        return _Connection(sock)

    def _checkout(self, timeout: float) -> _Connection:
        now = time.monotonic()
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(timeout)
            if now - connection.idle_since < _PROBE_AFTER_IDLE or not _dropped(connection.sock):
                connection.reused = True
                return connection
            connection.close()

    def _checkin(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection (those in use close when their request ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # ---- requests ----

    def _head(self, method: str, target: str, head: str, body: bytes | None) -> bytes:
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        return f"{method} {self._prefix}{target} HTTP/1.1\r\nHost: {self._host_header}\r\n{head}{length}\r\n".encode()

    def request(self, method: str, target: str, head: str, body: bytes | None, timeout: float) -> Reply:
        """Send one request and read its whole response within ``timeout`` seconds.

        A reused connection the server had closed meanwhile (the request could not be sent, or the
        connection ended before any byte of a response) is replaced and the request sent once more:
        the server never processed it, and a Kubernetes write is conditional or idempotent anyway.
        """
        deadline = time.monotonic() + timeout
        data = self._head(method, target, head, body) + (body or b"")
        while True:
            connection = self._checkout(timeout)
            try:
                return self._exchange(connection, data, deadline)
            except _Stale:
                connection.close()
                continue
            except BaseException:
                connection.close()
                raise

    def _exchange(self, connection: _Connection, data: bytes, deadline: float) -> Reply:
        sock = connection.sock
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout("request timed out before it was sent")
        try:
            sock.settimeout(remaining)
            sock.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            if connection.reused and not isinstance(exc, (socket.timeout, TimeoutError)):
                raise _Stale() from None
            raise _socket_error(exc, "send") from None
        message = _Message()
        parser = httptools.HttpResponseParser(message)
        received = False
        while not message.complete:
            try:
                chunk = sock.recv(_RECV)
            except (OSError, ssl.SSLError) as exc:
                if connection.reused and not received and not isinstance(exc, (socket.timeout, TimeoutError)):
                    raise _Stale() from None
                raise _socket_error(exc, "response") from None
            if not chunk:
                if connection.reused and not received:
                    raise _Stale()
                raise NetworkError("response: connection closed by the server before the response ended")
            received = True
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise NetworkError(f"response: malformed HTTP from the server: {exc}") from None
            if not message.complete:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout("response: timed out")
                sock.settimeout(remaining)
        reply = Reply(parser.get_status_code(), message.headers, b"".join(message.body))
        # llhttp's should_keep_alive() reads false once the message is complete, so decide by the rule:
        # HTTP/1.1 keeps the connection unless the server says "Connection: close".
        if parser.get_http_version() == "1.1" and "close" not in message.headers.get("connection", "").lower():
            self._checkin(connection)
        else:
            connection.close()
        return reply

    def stream(self, method: str, target: str, head: str, *, connect_timeout: float, read_timeout: float) -> Stream:
        """Send a request whose response body streams (a watch); return once its status and headers are in.

        ``read_timeout`` bounds every wait for data, so a silent connection raises ``RequestTimeout``.
        Watch connections are never pooled: each stream owns its connection and closes it at the end.
        """
        connection = self._connect(connect_timeout)
        sock = connection.sock
        pending: list[bytes] = []
        message = _Message(pending.append)
        parser = httptools.HttpResponseParser(message)
        try:
            sock.settimeout(read_timeout)
            sock.sendall(self._head(method, target, head, None))
            while not message.head_done:
                chunk = sock.recv(_RECV)
                if not chunk:
                    raise NetworkError("watch: connection closed by the server before the response")
                parser.feed_data(chunk)
        except httptools.HttpParserError as exc:
            connection.close()
            raise NetworkError(f"watch: malformed HTTP from the server: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            raise _socket_error(exc, "watch") from None
        except BaseException:
            connection.close()
            raise
        return Stream(connection, parser, message, pending)


class _Stale(Exception):
    """A pooled connection turned out closed before the request reached the server."""


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle keep-alive connection was closed (or sent something unasked): readable means
    either, and neither leaves it usable."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def wire_for(configuration: Any, *, pool_size: int) -> Wire | None:
    """The :class:`Wire` for a ``kubernetes.client.Configuration``, or ``None`` where urllib3 must stay
    (a proxy in use, a hostname check against a name other than the one connected to)."""
    url = urlsplit(str(configuration.host))
    if url.scheme not in ("http", "https") or not url.hostname:
        return None
    if getattr(configuration, "proxy", None):
        try:
            from kubernetes.client.rest import should_bypass_proxies
        except ImportError:  # older clients: no no_proxy support, so the proxy is always used
            return None
        if not should_bypass_proxies(configuration.host, getattr(configuration, "no_proxy", None) or ""):
            return None
    server_name = getattr(configuration, "tls_server_name", None) or url.hostname
    assert_hostname = configuration.assert_hostname
    if isinstance(assert_hostname, str) and assert_hostname and assert_hostname != server_name:
        return None
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None,
                                             cadata=getattr(configuration, "ca_cert_data", None) or None)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif assert_hostname is False:
            context.check_hostname = False
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
        context.set_alpn_protocols(["http/1.1"])
    options: list[tuple[int, int, int]] = []
    if getattr(configuration, "socket_options", None) is not None:
        options = list(configuration.socket_options)
    elif getattr(configuration, "keep_alive", False):
        from kubernetes.utils.keepalive import tcp_keepalive_socket_options  # present when keep_alive is

        options = list(tcp_keepalive_socket_options())
    port = url.port or (443 if url.scheme == "https" else 80)
    return Wire(url.hostname, port, prefix=url.path.rstrip("/"), ssl_context=context,
                server_hostname=server_name, socket_options=options, pool_size=pool_size)
