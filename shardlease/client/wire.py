"""HTTP/1.1 to the API server over persistent sockets, parsed by llhttp (the ``httptools`` binding).

Why not urllib3, the kubernetes client's own stack: a replica renews every held Lease every renew
interval, so the client's CPU per request bounds how many shards one process can hold. Measured per
conditional Lease PUT against the dev-server in another process (``bench/request_paths.py``), urllib3's
``urlopen`` costs about 200 us of client CPU, http.client alone about 95 us (much of it parsing the
response headers with the ``email`` package), and this path about 40 us: the request head is formatted
in one step, the response is parsed in C by a parser kept per connection, and a pooled connection is
checked with one ``poll`` before reuse. Only the framing is ours; TLS is the standard library's ``ssl``
configured from the user's ``kubernetes.client.Configuration`` (CA, client certificate, ``verify_ssl``,
``tls_server_name``), so the trust decisions stay the client's. Configurations this path does not cover
(an HTTP or SOCKS proxy, an ``assert_hostname`` that differs from the server name) keep urllib3:
:func:`wire_for` returns ``None`` for them and :class:`~shardlease.client.transport.Transport` uses the
pool manager instead.

Errors are the typed ``ApiError`` subclasses of :mod:`shardlease.errors`: ``RequestTimeout`` when a
deadline passes, ``NetworkError`` for everything else on the connection. Either carries
``outcome_unknown=True`` when a write went out and no complete answer came back: the server may have
applied it, so the caller must read the object back before deciding anything from the failure. Status
codes are not judged here; the transport turns a non-2xx reply into its error.

When a request is sent again
----------------------------
At most once, always on a newly opened connection, and only on a connection that had carried an earlier
request (a fresh connection that fails is the server's answer, not a stale pool entry):

* when the very first ``send`` of the request raised: the kernel took no byte of it, so the server
  cannot have seen it (for TLS: not one complete record, and a partial one cannot be decrypted);
* when the method is GET, HEAD or OPTIONS and the connection ended (closed or reset) before any byte of
  a response: repeating a read changes nothing on the server.

Anything else, in particular a write whose bytes the kernel accepted, is never sent again: a ``send``
into a connection the server has already half-closed succeeds locally, and a closed connection looks
the same whether the server dropped an idle connection or applied the write and lost the answer.

Where this path intentionally differs from urllib3 (``retries=False``)
----------------------------------------------------------------------
* The re-send above. urllib3 with ``retries=False`` never sends twice, so a GET that meets a keep-alive
  connection the server closed at that moment fails there with ``NetworkError``; here it is repeated
  once on a new connection (Go's ``net/http`` transport does the same for replayable requests). Writes
  behave identically: one attempt, then ``NetworkError`` with ``outcome_unknown``.
* The same error carries ``outcome_unknown`` on both paths, but only here is it decided from what was
  sent (nothing of the request accepted by the kernel: ``False``); urllib3 does not say how far it got,
  so the transport marks every write failure after the connection was made as unknown.
* The request target must be ASCII without spaces or control characters (:func:`check_target`, checked
  for both paths): urllib3 would percent-encode such a target, which hides a caller's encoding bug and
  could address another object than the one named.
* Every ``1xx`` interim response is skipped and the final one read. http.client (under urllib3) skips
  only ``100 Continue`` and hands back any other, e.g. a proxy's ``103 Early Hints``, as if it were the
  answer (an ``UnexpectedApiError`` there). A ``101`` (never asked for) is a ``NetworkError`` here.

Everything else is meant to match: keep-alive unless ``Connection: close`` or HTTP/1.0, bodies framed by
``Content-Length``, chunking or the end of the connection, a liveness check of a pooled connection before
every reuse, header values sent as latin-1, the whole call (connect, a re-send's connect included) within
its timeout.
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

from shardlease.errors import ApiError, InvalidArgument, NetworkError, RequestTimeout

__all__ = ["REPLAYABLE", "Reply", "Stream", "Wire", "check_target", "wire_for"]

#: Methods repeated once on a new connection when a pooled one ended before any response byte: they
#: change nothing on the server, so a second copy is harmless.
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS"})
_RECV = 65536
_UNKNOWN = "; the request was sent, so whether the server applied it is unknown (read it back before deciding)"
_POLL_EVENTS = getattr(select, "POLLIN", 1) | getattr(select, "POLLPRI", 2)


def check_target(target: str) -> None:
    """Refuse a request target that is not an absolute, percent-encoded path with its query.

    A CR or LF would end the request line early and let the rest of the string act as headers or as a
    second request; spaces and other control characters make it ambiguous. Every caller of ours
    encodes names with ``urllib.parse.quote``; this keeps a future one from getting it wrong silently.
    """
    if not target.startswith("/") or not target.isascii() or not target.isprintable() or " " in target:
        raise InvalidArgument(f"request target {target!r} must be an absolute path (with its query) in ASCII "
                              "without spaces or control characters such as CR/LF; percent-encode names and "
                              "values (urllib.parse.quote, urllib.parse.urlencode)")


class _Message:
    """llhttp callbacks for one response at a time on one connection: status, lower-cased headers, body.

    A ``1xx`` interim response (``100 Continue``, ``103 Early Hints``) is a complete message to llhttp;
    it is forgotten here, so the final response is the one read.
    """

    __slots__ = ("body", "complete", "head_done", "headers", "interim", "on_piece", "parser", "trailing")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.head_done = False
        self.complete = False
        self.interim = False
        #: Bytes of another message followed the response: the connection is not reusable.
        self.trailing = False
        #: For streams: called with each body piece instead of keeping it.
        self.on_piece: Any = None
        self.parser: Any = None

    def reset(self) -> None:
        self.headers = {}
        self.body = []
        self.head_done = self.complete = self.interim = self.trailing = False

    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            self.interim = True
            self.headers = {}
            return
        self.head_done = True

    def on_body(self, piece: bytes) -> None:
        if self.on_piece is not None:
            self.on_piece(piece)
        else:
            self.body.append(piece)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True

    def ends_at_eof(self) -> bool:
        """Whether the body runs to the end of the connection (no length, not chunked), so that the
        server closing it completes the response instead of cutting it."""
        if not self.head_done or "content-length" in self.headers:
            return False
        return "chunked" not in self.headers.get("transfer-encoding", "").lower()


class Reply:
    """A complete response: status, lower-cased headers, body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection:
    """One socket with its response parser (llhttp parses the responses of a keep-alive connection one
    after another) and a ``poll`` object for the liveness check."""

    __slots__ = ("message", "parser", "poller", "reused", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Carried a request before: a failure may be a keep-alive connection the server closed meanwhile.
        self.reused = False
        self.message = _Message()
        self.parser = httptools.HttpResponseParser(self.message)
        self.message.parser = self.parser
        self.poller: Any = None

    def dropped(self) -> bool:
        """Whether an idle keep-alive connection was closed by the server (or it sent something unasked):
        readable means either, and neither leaves it usable. ``poll``, not ``select``: ``select`` fails
        for descriptors >= 1024, which a process with many open files has."""
        try:
            if self.poller is None:
                if not hasattr(select, "poll"):  # Windows
                    return bool(select.select([self.sock], [], [], 0)[0])
                self.poller = select.poll()
                self.poller.register(self.sock, _POLL_EVENTS)
            return bool(self.poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.message.parser = None  # break the cycle, so the parser goes as soon as the connection does
        try:
            self.sock.close()
        except OSError:
            pass


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (socket.timeout, TimeoutError))


def _socket_error(exc: BaseException, what: str, unknown: bool = False) -> ApiError:
    text = f"{what}: {type(exc).__name__}: {exc}"
    if unknown:
        text += _UNKNOWN
    if _is_timeout(exc):
        return RequestTimeout(text, outcome_unknown=unknown)
    return NetworkError(text, outcome_unknown=unknown)


class _Unsent(Exception):
    """The first ``send`` of a request raised: the kernel took none of it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")


class _NoAnswer(Exception):
    """The request went out and the connection ended (closed or reset) before any byte of a response."""


class Stream:
    """A streaming response (a watch): its status and headers, then body pieces as they arrive.

    ``abort()`` may be called from any thread; the reading thread then sees the stream end with a
    ``NetworkError``, like any cut connection.
    """

    def __init__(self, connection: _Connection, pending: list[bytes]) -> None:
        self._connection = connection
        self._message = connection.message
        self._pending = pending
        self.status: int = connection.parser.get_status_code()
        self.headers = self._message.headers
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
                    if self.aborted:
                        raise NetworkError("watch stream: closed by the client")
                    if message.ends_at_eof():
                        return  # a body without length or chunking ends with the connection
                    raise NetworkError("watch stream: connection closed by the server")
                try:
                    self._connection.parser.feed_data(data)
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
        self._closed = False
        default_port = 443 if ssl_context is not None else 80
        shown = f"[{host}]" if ":" in host else host
        self._host_header = shown if port == default_port else f"{shown}:{port}"

    # ---- connections ----

    def _connect(self, deadline: float) -> _Connection:
        """A new connection, opened (TLS handshake included) within the time left before ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"connect to {self._host_header}: no time left of the request's timeout")
        try:
            sock = socket.create_connection(self._address, timeout=remaining)
        except (OSError, ssl.SSLError) as exc:
            raise _socket_error(exc, f"connect to {self._host_header}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, option, value in self._socket_options:
                sock.setsockopt(level, option, value)
            if self._ssl is not None:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock = self._ssl.wrap_socket(sock, server_hostname=self._server_hostname)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise _socket_error(exc, f"TLS handshake with {self._host_header}") from None
        return _Connection(sock)

    def _checkout(self, deadline: float) -> _Connection:
        """A pooled connection that still looks open (checked before every reuse, as urllib3 does), or a
        new one."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(deadline)
            if not connection.dropped():
                connection.reused = True
                return connection
            connection.close()

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._pool_size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection; one in use is closed when its request ends instead of being pooled.
        Later requests still work, each on a connection of its own."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # ---- requests ----

    def _head(self, method: str, target: str, head: str, body: bytes | None) -> bytes:
        check_target(target)
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        text = f"{method} {self._prefix}{target} HTTP/1.1\r\nHost: {self._host_header}\r\n{head}{length}\r\n"
        try:
            return text.encode("latin-1")  # as http.client encodes header values
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"request header {text[max(0, exc.start - 40):exc.end + 10]!r} has a character "
                                  "latin-1 cannot encode; HTTP header values must be latin-1 (encode the value, "
                                  "e.g. percent-encode or base64 it)") from None

    def request(self, method: str, target: str, head: str, body: bytes | None, timeout: float) -> Reply:
        """Send one request and read its whole response within ``timeout`` seconds (connecting included).

        A pooled connection may turn out closed by the server; the request is then sent once more on a
        new connection, but only when that is provably harmless (see the module docstring). Otherwise
        the failure is raised with ``outcome_unknown`` set for a write the server may have applied.
        """
        deadline = time.monotonic() + timeout
        data = self._head(method, target, head, body) + (body or b"")
        replayable = method in REPLAYABLE
        connection = self._checkout(deadline)
        try:
            return self._exchange(connection, data, deadline, method)
        except _Unsent as unsent:
            connection.close()
            if not connection.reused:
                raise NetworkError(f"send to {self._host_header}: {unsent}; the request was not sent") from None
        except _NoAnswer as ended:
            connection.close()
            if not (connection.reused and replayable):
                raise NetworkError(f"{method} {target}: {ended} before any response"
                                   f"{'' if replayable else _UNKNOWN}", outcome_unknown=not replayable) from None
        except BaseException:
            connection.close()
            raise
        # The one re-send, on a new connection, within what is left of the timeout.
        connection = self._connect(deadline)
        try:
            return self._exchange(connection, data, deadline, method)
        except _Unsent as unsent:
            connection.close()
            raise NetworkError(f"send to {self._host_header}: {unsent}; the request was not sent") from None
        except _NoAnswer as ended:
            connection.close()
            raise NetworkError(f"{method} {target}: {ended} before any response, also on a new connection"
                               f"{'' if replayable else _UNKNOWN}", outcome_unknown=not replayable) from None
        except BaseException:
            connection.close()
            raise

    def _exchange(self, connection: _Connection, data: bytes, deadline: float, method: str) -> Reply:
        sock = connection.sock
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout("request timed out before it was sent")
        try:
            sock.settimeout(remaining)
            sent = sock.send(data)
        except (OSError, ssl.SSLError) as exc:
            if _is_timeout(exc):
                raise RequestTimeout(f"send: {type(exc).__name__}: {exc}; the request was not sent") from None
            raise _Unsent(exc) from None
        unknown = method not in REPLAYABLE
        message, parser = connection.message, connection.parser
        message.reset()
        try:
            if sent < len(data):
                sock.sendall(memoryview(data)[sent:])
        except (OSError, ssl.SSLError) as exc:
            raise _socket_error(exc, "send", unknown) from None
        received = ran_to_eof = False
        while not message.complete:
            try:
                chunk = sock.recv(_RECV)
            except (OSError, ssl.SSLError) as exc:
                if not received and not _is_timeout(exc):
                    raise _NoAnswer(f"connection reset ({type(exc).__name__}: {exc})") from None
                raise _socket_error(exc, "response", unknown) from None
            if not chunk:
                if not received:
                    raise _NoAnswer("connection closed by the server")
                if message.ends_at_eof():
                    message.complete = ran_to_eof = True  # the body ran to the end of the connection
                    break
                raise NetworkError("response: connection closed by the server before the response ended"
                                   + (_UNKNOWN if unknown else ""), outcome_unknown=unknown)
            received = True
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise NetworkError(f"response: malformed HTTP from the server: {exc}"
                                   + (_UNKNOWN if unknown else ""), outcome_unknown=unknown) from None
            if message.head_done and method == "HEAD":
                break  # no body follows, whatever its headers say; the parser cannot tell, so not pooled
            if not message.complete:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout("response: timed out" + (_UNKNOWN if unknown else ""),
                                         outcome_unknown=unknown)
                sock.settimeout(remaining)
        reply = Reply(parser.get_status_code(), message.headers, b"".join(message.body))
        # llhttp's should_keep_alive() reads false once the message is complete, so decide by the rule:
        # HTTP/1.1 keeps the connection unless the server says "Connection: close".
        if parser.get_http_version() == "1.1" and message.complete and not message.trailing \
                and not ran_to_eof and method != "HEAD" \
                and "close" not in message.headers.get("connection", "").lower():
            self._checkin(connection)
        else:
            connection.close()
        return reply

    def stream(self, method: str, target: str, head: str, *, connect_timeout: float, read_timeout: float) -> Stream:
        """Send a request whose response body streams (a watch); return once its status and headers are in.

        ``read_timeout`` bounds every wait for data, so a silent connection raises ``RequestTimeout``.
        Watch connections are never pooled: each stream owns its connection and closes it at the end.
        """
        data = self._head(method, target, head, None)
        connection = self._connect(time.monotonic() + connect_timeout)
        sock = connection.sock
        pending: list[bytes] = []
        message = connection.message
        message.on_piece = pending.append
        try:
            sock.settimeout(read_timeout)
            sock.sendall(data)
            while not message.head_done:
                chunk = sock.recv(_RECV)
                if not chunk:
                    raise NetworkError("watch: connection closed by the server before the response")
                connection.parser.feed_data(chunk)
        except httptools.HttpParserError as exc:
            connection.close()
            raise NetworkError(f"watch: malformed HTTP from the server: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            raise _socket_error(exc, "watch") from None
        except BaseException:
            connection.close()
            raise
        return Stream(connection, pending)


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
