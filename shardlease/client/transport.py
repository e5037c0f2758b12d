"""The one HTTP path every request of ours takes, authenticated the way the user's ``ApiClient`` is.

Why not the generated API classes: they (de)serialise through the model classes and re-sanitise every
body, which costs several times the HTTP round trip itself on a loopback server, and one replica holding
1,024 shards renews about 512 Leases a second. Why not the client's urllib3 pool either: its per-request
overhead is most of what is left (``bench/request_paths.py``). So the bytes travel over
:class:`~shardlease.client.wire.Wire` (persistent sockets, llhttp parsing) while everything that decides
*what* is sent stays the kubernetes client's: the server URL, TLS settings, default headers (User-Agent,
``X-Shardlease-Client``) and auth, including in-cluster token refresh via ``update_params_for_auth``.
A configuration the wire does not cover (a proxy) keeps the urllib3 pool manager of a
``kubernetes.client.rest.RESTClientObject`` built from the same ``Configuration``.

Every call is a single attempt with an explicit timeout: retrying is the caller's business, because only
the caller knows how much of a deadline is left. Failures come back as the typed ``ApiError`` subclasses
of :mod:`shardlease.errors`. :class:`~shardlease.client.leases.LeaseClient` (Leases) and
:class:`~shardlease.client.objects.ObjectClient` (any resource, for ``shard.objects``) build on it.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, Protocol

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client import rest as _rest

from shardlease.client.wire import REPLAYABLE, Reply, Stream, Wire, check_target, wire_for
from shardlease.errors import (
    ApiError,
    CredentialsError,
    Expired,
    NetworkError,
    RequestTimeout,
    UnexpectedApiError,
    api_error,
)

__all__ = ["Transport"]


def _retry_after(headers: Mapping[str, str] | None, status_obj: Mapping[str, Any] | None) -> float | None:
    """``headers`` with lower-cased names (both HTTP paths hand them over so)."""
    value: Any = None
    if headers is not None:
        value = headers.get("retry-after")
    if value is None and status_obj is not None:
        details = status_obj.get("details")
        if isinstance(details, dict):
            value = details.get("retryAfterSeconds")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _error_from_response(status: int, body: bytes, headers: Mapping[str, str] | None) -> ApiError:
    reason = ""
    message = body[:300].decode("utf-8", "replace")
    status_obj: dict[str, Any] | None = None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        status_obj = parsed
        reason = str(parsed.get("reason") or "")
        message = str(parsed.get("message") or message)
    return api_error(status, reason, message, retry_after=_retry_after(headers, status_obj))


def _transport_error(exc: BaseException, method: str = "GET") -> ApiError:
    """The typed error for a urllib3 failure. urllib3 does not say how much of a request went out, so a
    write that failed after its connection was made is reported with ``outcome_unknown`` (see
    ``shardlease.client.wire`` for what the wire path can tell apart)."""
    text = f"{type(exc).__name__}: {exc}"
    unknown = method not in REPLAYABLE and not isinstance(exc, urllib3.exceptions.ConnectTimeoutError)
    if unknown:  # NewConnectionError (refused, DNS) is a ConnectTimeoutError in urllib3: never sent
        text += "; the request may have been sent, so whether the server applied it is unknown (read it back)"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return NetworkError(text)  # refused or unresolvable, as the wire reports it: not a timeout
    timeout_types = (urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)
    if isinstance(exc, timeout_types) or "timed out" in text.lower():
        return RequestTimeout(text, outcome_unknown=unknown)
    return NetworkError(text, outcome_unknown=unknown)


#: The most of a failed watch's error body that is read (a ``Status`` is a few hundred bytes).
_ERROR_BODY_LIMIT = 65536


def _watch_error(obj: Mapping[str, Any]) -> ApiError:
    """The error an ``ERROR`` watch event carries (a ``Status``): 410 becomes ``Expired``, as if the
    server had answered the watch request itself with 410."""
    code = obj.get("code")
    status = code if isinstance(code, int) else 0
    reason = str(obj.get("reason") or "")
    message = str(obj.get("message") or "watch error event")
    if status == 410 or reason in ("Expired", "Gone"):
        return Expired(f"HTTP 410 {reason or 'Expired'}: {message}", status=410, reason=reason or "Expired")
    if not status:
        return UnexpectedApiError(f"watch error event: {message}", reason=reason)
    return api_error(status, reason, message)


def _read_all(response: urllib3.BaseHTTPResponse, method: str = "GET") -> bytes:
    """The whole body of a urllib3 response, its connection back in the pool, failures typed."""
    try:
        return response.data
    except Exception as exc:
        raise _transport_error(exc, method) from None
    finally:
        response.release_conn()


#: ``skip(name, resource_version)`` of a watch: True drops an event before it is decoded.
SkipVersion = Callable[[str, str], bool]


def _field(line: bytes, key: bytes) -> str:
    """The first string value after ``key`` in a raw watch line, or ``""``.

    In a watch event of an API server (Go's field order) and of the dev-server, the first ``"name"`` and
    the first ``"resourceVersion"`` are the object's own ``metadata`` fields: ``type``, ``object``,
    ``kind`` and ``apiVersion`` come before ``metadata``, whose ``name`` and ``resourceVersion`` come
    before labels, annotations and ``managedFields``. A wrong pick cannot drop a change anyway: a
    skip is only ever answered True for a version the caller already holds under that name."""
    at = line.find(key)
    if at < 0:
        return ""
    at += len(key)
    end = line.find(b'"', at)
    return line[at:end].decode("ascii", "replace") if end > at else ""


class _Streaming(Protocol):
    """What a watch needs of a streaming response, over either HTTP path."""

    status: int

    def pieces(self) -> Iterator[bytes]: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class _PoolStream:
    """A urllib3 streaming response seen as a :class:`_Streaming` (the proxy path)."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self.status = response.status
        self._closed = False

    def pieces(self) -> Iterator[bytes]:
        try:
            yield from self._response.stream(65536, decode_content=True)
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection, not return it: a watch dropped before its body ended would leave the
        rest of its events to be read as the answer to the next request on that connection."""
        if not self._closed:
            self._closed = True
            self._response.close()
            self._response.release_conn()

    def abort(self) -> None:
        if self._closed:
            return  # its connection may already serve another request
        try:
            shutdown = getattr(self._response, "shutdown", None)
            if shutdown is not None:
                shutdown()
            else:
                self._response.close()
        except Exception:
            pass


class Transport:
    """Authenticated requests and watch streams over connections of our own.

    One watch at a time per transport (``current_watch``), so :meth:`close_watch` can abort it from
    another thread. ``urllib3_only`` forces the proxy path (tests of that path use it).
    """

    def __init__(self, api_client: ApiClient, *, pool_size: int = 16, urllib3_only: bool = False) -> None:
        self._api_client = api_client
        config = copy.copy(api_client.configuration)
        config.connection_pool_maxsize = max(pool_size, config.connection_pool_maxsize or 1)
        # No hidden urllib3 retries: a retried PUT could outlive the renew deadline the caller budgeted.
        config.retries = False
        self._wire: Wire | None = None if urllib3_only else wire_for(config, pool_size=pool_size)
        # Our own pool, so that writer threads never overflow the user's pool (urllib3 would then open
        # and throw away a connection per request and warn about it). Only its pool manager is used:
        # it carries the TLS, proxy and CA settings of the user's Configuration.
        self._pool: urllib3.PoolManager | None = (
            _rest.RESTClientObject(config).pool_manager if self._wire is None else None)
        self._host = config.host.rstrip("/")
        self._lock = threading.Lock()
        self._head_text = ""
        self._head_map: dict[str, str] = {}
        self._auth_at = -1e9
        self.current_watch: _Streaming | None = None

    @property
    def http_path(self) -> str:
        """Which HTTP path requests take: ``"wire"`` or ``"urllib3"`` (a proxy is configured)."""
        return "wire" if self._wire is not None else "urllib3"

    # ---- plumbing ----

    def _headers(self) -> tuple[dict[str, str], str]:
        """Default headers plus auth, as a map and as rendered header lines. Re-evaluated once a second
        so refreshed tokens (and changed default headers) are used without paying for it per request."""
        now = time.monotonic()
        with self._lock:
            if now - self._auth_at > 1.0:
                auth: dict[str, str] = {}
                try:  # may refresh the token: read the in-cluster token file again, run an exec plugin
                    self._api_client.update_params_for_auth(auth, [], ["BearerToken"], "", "GET", None)
                except Exception as exc:
                    raise CredentialsError(
                        f"could not get the credentials to send ({type(exc).__name__}: {exc}); no request was "
                        "sent. Check the pod's service account token (automountServiceAccountToken, "
                        "/var/run/secrets/kubernetes.io/serviceaccount/token) or the kubeconfig user's "
                        "token file or exec plugin") from exc
                headers = dict(self._api_client.default_headers)
                headers.update(auth)
                headers["Accept"] = "application/json"
                headers["Content-Type"] = "application/json"
                for name, value in headers.items():
                    if any(c in str(name) + str(value) for c in "\r\n"):
                        raise UnexpectedApiError(f"request header {name!r} contains a line break; fix the "
                                                 "token or default header that sets it")
                    try:
                        f"{name}{value}".encode("latin-1")  # what http.client sends them as, so we do too
                    except UnicodeEncodeError:
                        raise UnexpectedApiError(f"request header {name!r} has a character latin-1 cannot "
                                                 "encode; fix the token or default header that sets it "
                                                 "(HTTP header values are latin-1)") from None
                self._head_map = headers
                self._head_text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                self._auth_at = now
            return self._head_map, self._head_text

    def _send(self, method: str, target: str, body: Any, timeout: float | None) -> Reply:
        """One request to ``target`` (a path with its query); raise the typed ``ApiError`` unless 2xx."""
        head_map, head_text = self._headers()
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if self._wire is not None:
            reply = self._wire.request(method, target, head_text, payload, timeout if timeout else 60.0)
        else:
            check_target(target)  # the wire checks its own; urllib3 would quietly percent-encode it
            reply = self._pool_request(method, target, head_map, payload, timeout)
        if not 200 <= reply.status < 300:
            raise _error_from_response(reply.status, reply.body, reply.headers)
        return reply

    def _pool_request(self, method: str, target: str, headers: dict[str, str], payload: bytes | None,
                      timeout: float | None) -> Reply:
        assert self._pool is not None
        try:
            response: urllib3.BaseHTTPResponse = self._pool.urlopen(
                method, self._host + target, body=payload, headers=headers,
                timeout=urllib3.Timeout(total=timeout) if timeout else None, retries=False, preload_content=False)
        except Exception as exc:  # urllib3 transport errors
            raise _transport_error(exc, method) from None
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                     _read_all(response, method))

    @staticmethod
    def _json(reply: Reply) -> dict[str, Any]:
        try:
            value = json.loads(reply.body)
        except ValueError as exc:
            raise UnexpectedApiError(f"response is not JSON: {exc}", status=reply.status) from None
        if not isinstance(value, dict):
            raise UnexpectedApiError("response is not a JSON object", status=reply.status)
        return value

    def _open_stream(self, target: str, connect_timeout: float, read_timeout: float) -> _Streaming:
        head_map, head_text = self._headers()
        if self._wire is not None:
            stream: Stream = self._wire.stream("GET", target, head_text, connect_timeout=connect_timeout,
                                               read_timeout=read_timeout)
            if not 200 <= stream.status < 300:
                raise _error_from_response(stream.status, self._failed_watch_body(stream, read_timeout),
                                           stream.headers)
            return stream
        assert self._pool is not None
        check_target(target)
        try:
            response: urllib3.BaseHTTPResponse = self._pool.urlopen(
                "GET", self._host + target, headers=head_map, retries=False, preload_content=False,
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))
        except Exception as exc:
            raise _transport_error(exc) from None
        pooled = _PoolStream(response)
        if not 200 <= response.status < 300:
            headers = {k.lower(): v for k, v in response.headers.items()}
            raise _error_from_response(response.status, self._failed_watch_body(pooled, read_timeout), headers)
        return pooled

    def _failed_watch_body(self, stream: _Streaming, read_timeout: float) -> bytes:
        """The error body of a watch the server refused, read for at most ``read_timeout`` in all.

        Every read is bounded by ``read_timeout`` already, but a body that trickles in a byte at a time
        never trips that; so a timer cuts the stream at the deadline, and the stream is ``current_watch``
        meanwhile, so ``close_watch`` can cut it too. Whatever arrived by then is the message: the status
        alone decides the error's class.
        """
        self.current_watch = stream
        timer = threading.Timer(read_timeout, stream.abort)
        timer.daemon = True
        timer.start()
        parts: list[bytes] = []
        size = 0
        try:
            for piece in stream.pieces():
                parts.append(piece)
                size += len(piece)
                if size >= _ERROR_BODY_LIMIT:
                    break
        except Exception:
            pass  # cut by the deadline or by close_watch, or broken: the status says enough
        finally:
            timer.cancel()
            stream.abort()  # a no-op once the body ended; otherwise its connection must not be reused
            stream.close()
            if self.current_watch is stream:
                self.current_watch = None
        return b"".join(parts)

    def _watch(self, target: str, connect_timeout: float, read_timeout: float,
               skip: SkipVersion | None = None) -> Generator[dict[str, Any], None, None]:
        """Open a watch (its request goes out now, so errors such as 410 raise here) and return its events;
        it becomes ``current_watch`` at once, so :meth:`close_watch` can cut it before the first event."""
        stream = self._open_stream(target, connect_timeout, read_timeout)
        self.current_watch = stream
        events = self._events(stream, skip)
        # A generator that is never iterated never runs its ``finally``: close the stream when it is
        # dropped (a watcher re-targeted before reading), so its socket is not left open until exit.
        weakref.finalize(events, self._dropped_watch, stream)
        return events

    def _dropped_watch(self, stream: _Streaming) -> None:
        stream.abort()
        stream.close()
        if self.current_watch is stream:
            self.current_watch = None

    def _events(self, stream: _Streaming, skip: SkipVersion | None = None) -> Generator[dict[str, Any], None, None]:
        """Decode a watch response line by line. An ``ERROR`` event is raised as its error (``Expired``
        for 410), never yielded; a broken or silent connection raises the typed transport error.

        ``skip(name, resource_version)``, read from the raw line before decoding it: True drops the event
        unread (the caller already has that version: the echo of its own write)."""
        buffer = b""
        try:
            try:
                for chunk in stream.pieces():
                    buffer = buffer + chunk if buffer else chunk
                    start = 0
                    while True:
                        newline = buffer.find(b"\n", start)
                        if newline < 0:
                            break
                        line = buffer[start:newline]
                        start = newline + 1
                        if not line.strip():
                            continue
                        if skip is not None:
                            name, version = _field(line, b'"name":"'), _field(line, b'"resourceVersion":"')
                            if name and version and skip(name, version):
                                continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if not isinstance(event, dict):
                            continue
                        if event.get("type") == "ERROR":
                            obj = event.get("object")
                            raise _watch_error(obj if isinstance(obj, dict) else {})
                        yield event
                    buffer = buffer[start:]
            except ApiError:
                raise
            except Exception as exc:
                raise _transport_error(exc) from None
        finally:
            stream.close()
            if self.current_watch is stream:
                self.current_watch = None

    def close_watch(self) -> None:
        """Abort a running watch from another thread (used on shutdown and to re-target a watch)."""
        stream = self.current_watch
        if stream is not None:
            stream.abort()

    def close(self) -> None:
        self.close_watch()
        try:
            if self._wire is not None:
                self._wire.close()
            if self._pool is not None:
                self._pool.clear()
        except Exception:
            pass
