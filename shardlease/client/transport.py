"""The one HTTP path every request of ours takes: the ``kubernetes`` client's pool manager, ``urlopen``.

Why not the generated API classes: they (de)serialise through the model classes and re-sanitise every
body, which costs several times the HTTP round trip itself on a loopback server, and one replica holding
1,024 shards renews about 512 Leases a second. So requests go one level lower but stay inside the
kubernetes client: the URL, default headers (User-Agent, ``X-Shardlease-Client``) and auth (including
in-cluster token refresh via ``Configuration.auth_settings()``) come from the user's ``ApiClient``, and
the bytes travel through the urllib3 pool manager of a ``kubernetes.client.rest.RESTClientObject`` built
from the same ``Configuration`` (so TLS, proxy and CA settings are the client's own).

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
from collections.abc import Generator, Mapping
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client import rest as _rest

from shardlease.errors import ApiError, Expired, NetworkError, RequestTimeout, UnexpectedApiError, api_error

__all__ = ["Transport"]


def _retry_after(headers: Mapping[str, str] | None, status_obj: Mapping[str, Any] | None) -> float | None:
    value: Any = None
    if headers is not None:
        value = headers.get("Retry-After")
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


def _transport_error(exc: BaseException) -> ApiError:
    text = f"{type(exc).__name__}: {exc}"
    timeout_types = (urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)
    if isinstance(exc, timeout_types) or "timed out" in text.lower():
        return RequestTimeout(text)
    return NetworkError(text)


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


class Transport:
    """Authenticated requests and watch streams over one connection pool of our own.

    One watch at a time per transport (``current_watch``), so :meth:`close_watch` can abort it from
    another thread.
    """

    def __init__(self, api_client: ApiClient, *, pool_size: int = 16) -> None:
        self._api_client = api_client
        config = copy.copy(api_client.configuration)
        config.connection_pool_maxsize = max(pool_size, config.connection_pool_maxsize or 1)
        # No hidden urllib3 retries: a retried PUT could outlive the renew deadline the caller budgeted.
        config.retries = False
        # Our own pool, so that writer threads never overflow the user's pool (urllib3 would then open
        # and throw away a connection per request and warn about it). Only its pool manager is used:
        # it carries the TLS, proxy and CA settings of the user's Configuration.
        self._pool: urllib3.PoolManager = _rest.RESTClientObject(config).pool_manager
        self._host = config.host.rstrip("/")
        self._lock = threading.Lock()
        self._auth_headers: dict[str, str] = {}
        self._auth_at = -1e9
        self.current_watch: urllib3.BaseHTTPResponse | None = None

    # ---- plumbing ----

    def _headers(self) -> dict[str, str]:
        """Default headers plus auth. Auth is re-evaluated once a second so refreshed tokens are used."""
        now = time.monotonic()
        with self._lock:
            if now - self._auth_at > 1.0:
                auth: dict[str, str] = {}
                self._api_client.update_params_for_auth(auth, [], ["BearerToken"], "", "GET", None)
                self._auth_headers = auth
                self._auth_at = now
            headers = dict(self._api_client.default_headers)
            headers.update(self._auth_headers)
        headers["Accept"] = "application/json"
        headers["Content-Type"] = "application/json"
        return headers

    def _send(self, method: str, url: str, body: Any, timeout: float | tuple[float, float] | None,
              *, stream: bool = False) -> urllib3.BaseHTTPResponse:
        """One request: ``urlopen`` on the pool manager with a body serialised once; raise the typed
        ``ApiError`` unless 2xx. With ``stream`` a 2xx response is returned unread (for watches)."""
        headers = self._headers()
        if isinstance(timeout, tuple):
            request_timeout: urllib3.Timeout | None = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            request_timeout = urllib3.Timeout(total=timeout) if timeout else None
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        try:
            response: urllib3.BaseHTTPResponse = self._pool.urlopen(
                method, url, body=payload, headers=headers, timeout=request_timeout, retries=False,
                preload_content=False)
        except Exception as exc:  # urllib3 transport errors
            raise _transport_error(exc) from None
        if stream and 200 <= response.status < 300:
            return response
        try:
            data = response.data
        except Exception as exc:
            raise _transport_error(exc) from None
        finally:
            response.release_conn()
        if not 200 <= response.status < 300:
            raise _error_from_response(response.status, data, response.headers)
        return response

    @staticmethod
    def _json(response: urllib3.BaseHTTPResponse) -> dict[str, Any]:
        try:
            value = json.loads(response.data)
        except ValueError as exc:
            raise UnexpectedApiError(f"response is not JSON: {exc}", status=response.status) from None
        if not isinstance(value, dict):
            raise UnexpectedApiError("response is not a JSON object", status=response.status)
        return value

    def _watch(self, url: str, connect_timeout: float, read_timeout: float) -> Generator[dict[str, Any], None, None]:
        """Open a watch (its request goes out now, so errors such as 410 raise here) and return its events;
        it becomes ``current_watch`` at once, so :meth:`close_watch` can cut it before the first event."""
        response = self._send("GET", url, None, (connect_timeout, read_timeout), stream=True)
        self.current_watch = response
        return self._events(response)

    def _events(self, response: urllib3.BaseHTTPResponse) -> Generator[dict[str, Any], None, None]:
        """Decode a watch response line by line. An ``ERROR`` event is raised as its error (``Expired``
        for 410), never yielded; a broken or silent connection raises the typed transport error."""
        buffer = b""
        try:
            try:
                for chunk in response.stream(65536, decode_content=True):
                    buffer += chunk
                    while True:
                        newline = buffer.find(b"\n")
                        if newline < 0:
                            break
                        line, buffer = buffer[:newline], buffer[newline + 1:]
                        if not line.strip():
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
            except ApiError:
                raise
            except Exception as exc:
                raise _transport_error(exc) from None
        finally:
            response.release_conn()
            self.current_watch = None

    def close_watch(self) -> None:
        """Abort a running watch from another thread (used on shutdown)."""
        response = self.current_watch
        if response is not None:
            try:
                shutdown = getattr(response, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                else:
                    response.close()
            except Exception:
                pass

    def close(self) -> None:
        self.close_watch()
        try:
            self._pool.clear()
        except Exception:
            pass
