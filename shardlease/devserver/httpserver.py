"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length or chunked request bodies,
and chunked streaming responses for watches.

Why not ``http.server``: a thread per connection makes long-lived watches, held-back (frozen) events
and injected latency expensive, and its per-request overhead caps throughput well below what the
benchmarks need. One event loop handles thousands of requests per second and any number of idle
watches, and because all handlers run on that loop, store mutations are naturally serialised.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("shardlease.devserver")

MAX_BODY = 3 * 1024 * 1024
MAX_HEADER = 256 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024

_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: Who is asking, for partitions: the X-Shardlease-Client header, else the exact User-Agent.
    client: str = ""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON as Go reads it: no NaN/Infinity, valid UTF-8, no lone surrogates.

    Raises ValueError for anything Go's decoder would refuse, so no unencodable value ever reaches
    the store (where it would break every later read of the object).
    """
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("exceeded max depth") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8: {exc}") from None
    if b"\\ud" in body or b"\\uD" in body:  # only a \uD800-\uDFFF escape can make a lone surrogate
        _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("invalid Unicode in string (lone surrogate)") from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers or {})


class Stream:
    """A chunked response in progress; the watch code writes events through it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self._writer = writer
        self.closed = False  # nothing more may be written
        self.aborted = False  # the connection is gone, not merely the response finished

    def start(self, status: int = 200, content_type: str = "application/json") -> None:
        self._writer.write(
            f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\nContent-Type: {content_type}\r\n"
            f"Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )

    def send(self, data: bytes) -> None:
        if data and not self.closed:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def flush(self) -> None:
        await self._writer.drain()

    def finish(self) -> None:
        """End the stream cleanly (a zero-length chunk): clients see a normal end of the watch."""
        if not self.closed:
            self._writer.write(b"0\r\n\r\n")
            self.closed = True

    def abort(self) -> None:
        """Drop the connection mid-stream, as a network cut or a crashed server would."""
        self.closed = self.aborted = True
        self._writer.transport.abort()


Handler = Callable[[Request, Stream], Awaitable[Response | None]]


class HttpServer:
    """Accepts connections on one socket and feeds parsed requests to ``handler``.

    ``handler`` returns a :class:`Response`, or ``None`` after streaming one itself through the
    :class:`Stream` it was given (the connection is then closed).
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEADER)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError,
                asyncio.LimitOverrunError, ValueError):
            pass  # the peer went away or sent garbage we cannot frame: just close
        except Exception:  # a bug must cost one connection, never the server
            log.exception("closing a connection after an unexpected error")
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must close."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            self._write(writer, _plain_error(431, "request header too large"), close=True)
            return False
        try:
            request, keep_alive, length, chunked = _parse_head(head)
        except ValueError as exc:
            self._write(writer, _plain_error(400, str(exc)), close=True)
            return False
        if request.headers.get("expect", "").lower() == "100-continue" and length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length > MAX_BODY:
            # Read (and drop) a moderately oversized body first, so the client gets to see the 413
            # instead of a broken pipe while it is still sending.
            if length <= DRAIN_LIMIT:
                remaining = length
                while remaining:
                    remaining -= len(await reader.readexactly(min(remaining, 1 << 16)))
            self._write(writer, _too_large(), close=True)
            return False
        if chunked:
            body = await _read_chunked(reader)
            if body is None:
                self._write(writer, _too_large(), close=True)
                return False
            request.body = body
        elif length:
            request.body = await reader.readexactly(length)
        stream = Stream(reader, writer)
        response = await self._handler(request, stream)
        if response is None:
            if not stream.closed:
                stream.finish()
            if stream.aborted:
                return False
            await writer.drain()
            # A cleanly finished chunked stream leaves the connection reusable, and clients (urllib3's
            # pool, client-go) do reuse it: closing it here would reset their next request.
            return keep_alive
        self._write(writer, response, close=not keep_alive)
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()
        return keep_alive

    @staticmethod
    def _write(writer: asyncio.StreamWriter, response: Response, close: bool) -> None:
        lines = [f"HTTP/1.1 {response.status} {_PHRASES.get(response.status, '')}",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}"]
        for name, value in response.headers.items():
            lines.append(f"{name}: {value}")
        if close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)


def _parse_head(head: bytes) -> tuple[Request, bool, int, bool]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise ValueError("undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    path, _, raw_query = target.partition("?")
    query = dict(parse_qsl(raw_query, keep_blank_values=True)) if raw_query else {}
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    try:
        length = int(headers.get("content-length", "0") or 0)
    except ValueError:
        raise ValueError("malformed Content-Length") from None
    if length < 0:
        raise ValueError("malformed Content-Length")
    client = headers.get("x-shardlease-client") or headers.get("user-agent", "")
    return Request(method, unquote(path), query, headers, b"", client), keep_alive, length, chunked


async def _read_chunked(reader: asyncio.StreamReader) -> bytes | None:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            return None
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


def _plain_error(code: int, message: str) -> Response:
    return Response(code, _status_body(code, "BadRequest", message))


def _too_large() -> Response:
    return Response(413, _status_body(413, "RequestEntityTooLarge",
                                      f"Request entity too large: limit is {MAX_BODY}"))
